// Command dumpee builds known goroutine populations and dumps them, so the
// goroutines package can be tested on real output of the Go runtime.
//
//	dumpee -scenario broadcast|mutex|mutexes|labels|net|deadlock|panic -out debug1|debug2|wait [-msgs N]
//
// With -out wait it prints "ready" and blocks until killed (send SIGQUIT for
// a traceback). Counts are fixed so tests can check them exactly.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

// hub mimics a WebSocket broadcast hub whose subscribers stopped reading.
type hub struct {
	subs []chan []byte
}

func (h *hub) deliver(sub chan []byte, msg []byte) {
	sub <- msg // nobody reads: each delivery goroutine leaks here
}

func (h *hub) publisher(in chan []byte) {
	for msg := range in {
		for _, s := range h.subs {
			go h.deliver(s, msg)
		}
	}
}

// store is guarded by one mutex held for a long time.
type store struct {
	mu sync.Mutex
	n  int
}

func (s *store) update() {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
}

func (s *store) holdLock(d time.Duration) {
	s.mu.Lock()
	time.Sleep(d)
	s.mu.Unlock()
}

// shard is guarded by its own mutex; the first caller of apply holds it
// while it waits for a reply that never comes.
type shard struct {
	mu    sync.Mutex
	reply chan int
}

func (s *shard) apply() {
	s.mu.Lock()
	<-s.reply // the holder waits here, the lock held
	s.mu.Unlock()
}

func serveConn(ctx context.Context, in chan int) {
	<-in
}

func acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go handleConn(c)
	}
}

func handleConn(c net.Conn) {
	buf := make([]byte, 1)
	c.Read(buf) // clients never write: blocks in IO wait
}

func waitEither(a, b chan int) {
	select {
	case <-a:
	case <-b:
	}
}

func waitJob(wg *sync.WaitGroup, jobs chan int) {
	defer wg.Done()
	<-jobs // nobody sends
}

func worker(id int, jobs chan int) {
	if id == 3 {
		time.Sleep(50 * time.Millisecond)
		panic(fmt.Sprintf("worker %d failed", id))
	}
	<-jobs
}

func main() {
	scenario := flag.String("scenario", "broadcast", "broadcast, mutex, mutexes, labels, net, deadlock or panic")
	out := flag.String("out", "debug2", "debug1, debug2 or wait")
	msgs := flag.Int("msgs", 10, "messages published in the broadcast scenario")
	flag.Parse()
	var wg sync.WaitGroup
	switch *scenario {
	case "broadcast":
		// 4 subscribers x 10 messages = 40 deliver goroutines blocked on send,
		// created by the publisher goroutine, which stays alive receiving.
		h := &hub{}
		for i := 0; i < 4; i++ {
			h.subs = append(h.subs, make(chan []byte))
		}
		in := make(chan []byte)
		go h.publisher(in)
		for i := 0; i < *msgs; i++ {
			in <- []byte(fmt.Sprint("msg ", i))
		}
	case "mutex":
		s := &store{}
		locked := make(chan struct{})
		go func() {
			s.mu.Lock()
			close(locked)
			time.Sleep(time.Hour)
		}()
		<-locked
		for i := 0; i < 12; i++ {
			go s.update()
		}
	case "mutexes":
		// 10 shards, each locked by one apply waiting for a reply, with 4
		// more applies waiting for its lock: 10 holders, 40 waiters.
		for i := 0; i < 10; i++ {
			s := &shard{reply: make(chan int)}
			go s.apply()
			for s.mu.TryLock() { // not held yet
				s.mu.Unlock()
				time.Sleep(time.Millisecond)
			}
			for j := 0; j < 4; j++ {
				go s.apply()
			}
		}
	case "labels":
		in := make(chan int)
		for i := 0; i < 10; i++ {
			room := "r1"
			if i >= 7 {
				room = "r2"
			}
			pprof.Do(context.Background(), pprof.Labels("handler", "ws", "room", room), func(ctx context.Context) {
				go serveConn(ctx, in)
			})
		}
	case "net":
		// 5 connections blocked reading, 1 accept loop, 4 goroutines in a select.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go acceptLoop(ln)
		var conns []net.Conn
		for i := 0; i < 5; i++ {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			conns = append(conns, c)
		}
		a, b := make(chan int), make(chan int)
		for i := 0; i < 4; i++ {
			go waitEither(a, b)
		}
		defer func() { _ = conns }()
	case "deadlock":
		jobs := make(chan int)
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go waitJob(&wg, jobs)
		}
		time.Sleep(100 * time.Millisecond)
		wg.Wait() // all goroutines are asleep - deadlock!
		return
	case "panic":
		jobs := make(chan int)
		for i := 0; i < 6; i++ {
			go worker(i, jobs)
		}
		time.Sleep(time.Hour)
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", *scenario)
		os.Exit(2)
	}
	time.Sleep(200 * time.Millisecond) // let every goroutine block
	switch *out {
	case "debug1":
		pprof.Lookup("goroutine").WriteTo(os.Stdout, 1)
	case "debug2":
		pprof.Lookup("goroutine").WriteTo(os.Stdout, 2)
	case "wait":
		fmt.Println("ready")
		time.Sleep(time.Hour) // a sleeping main keeps the deadlock detector quiet
	}
}

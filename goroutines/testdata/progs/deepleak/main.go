// Command deepleak deadlocks with a deep stack (to get "...N frames
// elided..."), a labelled goroutine and a goroutine locked to its thread.
// With -leak (build with GOEXPERIMENT=goroutineleakprofile) it writes the
// goroutineleak profile at debug=2 and debug=1 instead.
package main

import (
	"context"
	"flag"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

func deep(n int, ch chan int) {
	if n == 0 {
		ch <- 1
		return
	}
	deep(n-1, ch)
}

func main() {
	leak := flag.Bool("leak", false, "write the goroutineleak profile")
	flag.Parse()
	ch, labelled := make(chan int), make(chan int)
	go deep(200, ch)
	pprof.Do(context.Background(), pprof.Labels("handler", "ws"), func(ctx context.Context) {
		go func() { <-labelled }()
	})
	go func() { runtime.LockOSThread(); select {} }()
	time.Sleep(100 * time.Millisecond)
	if *leak {
		runtime.GC()
		p := pprof.Lookup("goroutineleak")
		if p == nil {
			os.Stderr.WriteString("build with GOEXPERIMENT=goroutineleakprofile\n")
			os.Exit(2)
		}
		p.WriteTo(os.Stdout, 2)
		p.WriteTo(os.Stdout, 1)
		return
	}
	var x chan int
	x <- 1 // fatal error: all goroutines are asleep - deadlock!
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain fails the package if goroutines outlive the tests: every
// proxy, server and connection a test starts must be gone by then.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines after the tests, %d before\n%s\n", n, before, buf)
			code = 1
		}
	}
	os.Exit(code)
}

// quietLogger keeps test output readable; failures print their own detail.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// startProxy runs a proxy to upstream with faults f until the test ends.
func startProxy(t *testing.T, upstream string, f Faults) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", upstream, f)
	if err != nil {
		t.Fatal(err)
	}
	p.SetLogger(quietLogger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return within 5s of cancel")
		}
	})
	return p
}

// server is an in-test TCP server that runs handle on each connection and
// closes everything when the test ends.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t *testing.T, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// startEcho runs a server that echoes every byte back.
func startEcho(t *testing.T) *server {
	return startServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// dial connects to addr and closes the connection when the test ends.
func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// minRTT sends a byte n times through an echo and returns the fastest round trip.
func minRTT(t *testing.T, c net.Conn, n int) time.Duration {
	t.Helper()
	best := time.Duration(1 << 62)
	b := []byte{0}
	for i := range n {
		b[0] = byte(i)
		start := time.Now()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Fatalf("ping %d write: %v", i, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("ping %d read: %v", i, err)
		}
		if b[0] != byte(i) {
			t.Fatalf("ping %d: echoed %d", i, b[0])
		}
		best = min(best, time.Since(start))
	}
	_ = c.SetDeadline(time.Time{})
	return best
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isReset reports whether err is a connection reset seen by a reader.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

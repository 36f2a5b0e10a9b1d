package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/internal/leakcheck"
)

// heldClose is a Handler whose OnClose waits until release is closed, as a
// session's cleanup may wait on a slow broker.
type heldClose struct {
	opened  chan struct{}
	release chan struct{}
}

func (h *heldClose) OnOpen(*Conn)            { h.opened <- struct{}{} }
func (h *heldClose) OnMessage(*Conn, []byte) {}
func (h *heldClose) OnClose(*Conn, error)    { <-h.release }

// Shutdown whose ctx ends while a close handler still runs returns the
// ctx's error, and the event loop still stops once the handler returns:
// none of its goroutines outlive it.
func TestShutdownPastItsDeadlineStillStopsTheLoop(t *testing.T) {
	before := goleak.IgnoreCurrent()
	h := &heldClose{opened: make(chan struct{}, 1), release: make(chan struct{})}
	s, err := New(Config{Addr: "127.0.0.1:0"}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	handshake(t, s)
	<-h.opened

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline: %v, want %v", err, context.DeadlineExceeded)
	}
	close(h.release)
	if err := leakcheck.Find(before); err != nil {
		t.Fatalf("the event loop outlived its last close handler: %v", err)
	}
}

// Shutdown with a ctx that has already ended stops the event loop all the same.
func TestShutdownWithAnEndedContext(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s, err := New(Config{Addr: "127.0.0.1:0"}, &echo{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	handshake(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an ended ctx: %v, want %v", err, context.Canceled)
	}
	if err := leakcheck.Find(before); err != nil {
		t.Fatalf("the event loop outlived Shutdown: %v", err)
	}
}

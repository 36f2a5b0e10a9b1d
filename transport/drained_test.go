package transport

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// drainer is a Handler that implements DrainHandler and counts its calls.
type drainer struct {
	mu      sync.Mutex
	c       *Conn
	drained chan *Conn
}

func (d *drainer) OnOpen(c *Conn)              { d.mu.Lock(); d.c = c; d.mu.Unlock() }
func (d *drainer) OnMessage(*Conn, []byte)     {}
func (d *drainer) OnClose(*Conn, error)        {}
func (d *drainer) OnDrained(c *Conn)           { d.drained <- c }
func (d *drainer) conn() *Conn                 { d.mu.Lock(); defer d.mu.Unlock(); return d.c }
func (d *drainer) calls() int                  { return len(d.drained) }
func (d *drainer) waitConn(t *testing.T) *Conn { t.Helper(); return waitValue(t, "OnOpen", d.conn) }

func waitValue[T comparable](t *testing.T, what string, f func() T) T {
	t.Helper()
	var zero T
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v := f(); v != zero {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A connection that asked with AwaitDrain while bytes were pending is told
// once, when the kernel has taken the last of them; one that did not ask
// is never told.
func TestAwaitDrain(t *testing.T) {
	h := &drainer{drained: make(chan *Conn, 4)}
	s := serve(t, Config{MaxMessageSize: 1 << 16}, h)
	w := handshake(t, s)
	if err := w.c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil { // so that the kernel holds a small part of what is written
		t.Fatal(err)
	}
	c := h.waitConn(t)

	// Not asked: written and read, no call.
	if err := c.Write(AppendFrame(nil, OpText, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	if _, p := w.read(); string(p) != "hello" {
		t.Fatalf("read %q", p)
	}
	waitValue(t, "the kernel to take the first frame", func() bool { return c.Pending() == 0 })
	if n := h.calls(); n != 0 {
		t.Fatalf("%d OnDrained calls for a connection that did not ask", n)
	}

	// The client reads nothing while 8 MB are written: bytes stay pending.
	frame := AppendFrame(nil, OpBinary, make([]byte, 128<<10))
	var total int64
	for range 64 {
		if err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		total += int64(len(frame))
	}
	if c.Pending() == 0 {
		t.Fatal("nothing pending after 8 MB to a client that does not read")
	}
	c.AwaitDrain()
	if n := h.calls(); n != 0 {
		t.Fatalf("%d OnDrained calls while bytes are pending", n)
	}
	_ = w.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.CopyN(io.Discard, w.r, total); err != nil {
		t.Fatalf("reading the 8 MB: %v", err)
	}
	select {
	case got := <-h.drained:
		if got != c {
			t.Fatal("OnDrained for another connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no OnDrained call after the client read everything; pending %d", c.Pending())
	}
	if c.Pending() != 0 {
		t.Fatalf("OnDrained with %d bytes pending", c.Pending())
	}

	// One call per AwaitDrain: more bytes, written and read, make no second.
	if err := c.Write(AppendFrame(nil, OpText, []byte("again"))); err != nil {
		t.Fatal(err)
	}
	if _, p := w.read(); string(p) != "again" {
		t.Fatalf("read %q", p)
	}
	waitValue(t, "the kernel to take the last frame", func() bool { return c.Pending() == 0 })
	if n := h.calls(); n != 0 {
		t.Fatalf("%d more OnDrained calls without AwaitDrain", n)
	}
}

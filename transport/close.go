package transport

import (
	"context"
	"net"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// Closing a connection sends its close frame after whatever is still
// queued for it, then closes the socket once the kernel took the frame. A
// peer that reads nothing gets CloseGrace; then the connection is reset,
// so a slow consumer's memory is freed in bounded time. A frame is never
// cut off by the close itself.

// Close queues a close frame with code and reason and closes the socket
// when it has been written, or resets it after the close grace. A stream
// ends its response instead; a unidirectional WebSocket (Conn.Uni) gets
// the Handler's last message (StreamEnder) before its close frame.
func (c *Conn) Close(code int, reason string) {
	if c.stream != StreamNone {
		c.closeWith(c.srv.streamEnd(c, code, reason)) // a stream ends with its response
		return
	}
	frame := CloseFrame(code, reason)
	if e, ok := c.srv.h.(StreamEnder); ok && c.uni {
		if last := e.StreamEnd(c, code, reason); last != nil {
			frame = append(last, frame...)
		}
	}
	c.closeWith(frame)
}

// closeWith is Close with the close frame given.
func (c *Conn) closeWith(frame []byte) {
	if !c.flags.take(flagClosed) {
		return
	}
	_ = c.Write(frame)
	c.flags.set(flagClosing)
	if c.flushed() {
		c.end(false)
		return
	}
	c.endTimer.Store(time.AfterFunc(c.srv.cfg.CloseGrace, func() { c.end(true) }))
	c.flags.set(flagLingering)
	if c.flushed() { // written meanwhile, before lingering was seen
		c.end(false)
	}
}

// flushed reports whether the kernel took every byte handed to the event loop.
func (c *Conn) flushed() bool { return c.written.Load() >= c.handed.Load() }

// end closes the socket once: gracefully when flushed, with a reset when
// the close grace ran out (the rest of what was queued is dropped).
func (c *Conn) end(reset bool) {
	if !c.flags.take(flagEnded) {
		return
	}
	if t := c.endTimer.Load(); t != nil {
		t.Stop()
	}
	if reset {
		if nc := nbioConn(c.nc); nc != nil {
			_ = nc.SetLinger(1, 0) // close sends RST and drops the send buffer
		}
	}
	_ = c.nc.Close()
}

// nbioConn finds the event loop's connection under the HTTP layer's wrapper.
func nbioConn(c net.Conn) *nbio.Conn {
	if hc, ok := c.(*nbhttp.Conn); ok {
		c = hc.Conn
	}
	nc, _ := c.(*nbio.Conn)
	return nc
}

// closer ends the connections whose close frame the kernel took; the event
// loop reports that while it holds the connection's lock, so the close
// happens here instead. mu guards q; the Server starts and stops it.
type closer struct {
	mu      sync.Mutex
	q       []*Conn
	wake    chan struct{}
	done    chan struct{}
	quit    chan struct{}
	started bool // guarded by mu
}

func newCloser() *closer {
	return &closer{wake: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan struct{})}
}

func (cl *closer) push(c *Conn) {
	cl.mu.Lock()
	cl.q = append(cl.q, c)
	cl.mu.Unlock()
	select {
	case cl.wake <- struct{}{}:
	default:
	}
}

func (cl *closer) start() {
	cl.mu.Lock()
	cl.started = true
	cl.mu.Unlock()
	go pprof.Do(context.Background(), pprof.Labels("spindle.task", "transport.closer"), func(context.Context) {
		defer close(cl.done)
		for {
			select {
			case <-cl.wake:
			case <-cl.quit:
				return
			}
			cl.mu.Lock()
			batch := cl.q
			cl.q = nil
			cl.mu.Unlock()
			for _, c := range batch {
				c.end(false)
			}
		}
	})
}

// stop ends the closer goroutine; the engine's shutdown closed every socket.
func (cl *closer) stop() {
	cl.mu.Lock()
	started := cl.started
	cl.mu.Unlock()
	select {
	case <-cl.quit:
	default:
		close(cl.quit)
		if started {
			<-cl.done
		}
	}
}

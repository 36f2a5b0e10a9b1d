package transport

import (
	"context"
	"net"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// Closing a connection sends its close frame after whatever is still
// queued for it; once the kernel took the frame, a close the server began
// half-closes the socket (FIN) and reads and drops what the peer still
// sends until the peer closes its side, as RFC 6455 §7.1.1 asks of a
// server. Closing at once answered the peer's next bytes with a reset,
// which can cost the peer the close frame. A close the peer began (its
// close frame read, it sends nothing more) and a stream's end close the
// socket at once. Either way the whole close gets CloseGrace: then the
// connection is reset, so a peer that reads nothing, or never closes,
// costs bounded time and memory. A frame is never cut off by the close
// itself.

// Close queues a close frame with code and reason and ends the connection
// when it has been written, or resets it after the close grace. A stream
// ends its response instead; a unidirectional WebSocket (Conn.Uni) gets
// the Handler's last message (StreamEnder) before its close frame.
func (c *Conn) Close(code int, reason string) {
	if c.stream != StreamNone {
		c.closeWith(c.srv.streamEnd(c, code, reason), false) // a stream ends with its response
		return
	}
	frame := CloseFrame(code, reason)
	if e, ok := c.srv.h.(StreamEnder); ok && c.uni {
		if last := e.StreamEnd(c, code, reason); last != nil {
			frame = append(last, frame...)
		}
	}
	c.closeWith(frame, true)
}

// closeWith is Close with the close frame given; with halfClose the
// socket waits for the peer's FIN once the frame is written.
func (c *Conn) closeWith(frame []byte, halfClose bool) {
	if !c.flags.take(flagClosed) {
		return
	}
	if halfClose {
		c.flags.set(flagHalfClose)
	}
	_ = c.write(frame)
	c.flags.set(flagClosing)
	if !halfClose && c.flushed() {
		c.end()
		return
	}
	c.endTimer.Store(time.AfterFunc(c.srv.cfg.CloseGrace, c.reset))
	c.flags.set(flagFlushing)
	if c.flushed() { // written meanwhile, before flushing was seen
		c.end()
	}
}

// flushed reports whether the kernel took every byte handed to the event loop.
func (c *Conn) flushed() bool { return c.written.Load() >= c.handed.Load() }

// end finishes a close whose frame the kernel took, once: it half-closes
// the socket (flagHalfClose), leaving the rest to the peer's FIN or the
// close grace, or closes it.
func (c *Conn) end() {
	if !c.flags.take(flagEnded) {
		return
	}
	if c.flags.has(flagHalfClose) {
		c.onSocket(func(fd int) { _ = syscall.Shutdown(fd, syscall.SHUT_WR) })
		return
	}
	c.stopGrace()
	_ = c.nc.Close()
}

// reset ends the close grace: the socket closes with a reset, dropping
// what is still queued for the peer. A socket already closed is left alone.
func (c *Conn) reset() {
	c.flags.set(flagEnded)
	c.onSocket(func(fd int) {
		_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	})
	_ = c.nc.Close()
}

// stopGrace stops the close grace timer, if Close started one.
func (c *Conn) stopGrace() {
	if t := c.endTimer.Load(); t != nil {
		t.Stop()
	}
}

// onSocket runs f on the connection's socket unless nbio closed it: under
// nbio's lock, so that a descriptor closed meanwhile, and maybe reused by
// another connection, is never touched.
func (c *Conn) onSocket(f func(fd int)) {
	nc := nbioConn(c.nc)
	if nc == nil {
		return
	}
	nc.Lock()
	defer nc.Unlock()
	if closed, _ := nc.IsClosed(); !closed {
		f(nc.Hash())
	}
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
// loop reports that while it holds the connection's lock, so the half-close
// or close happens here instead. mu guards q; the Server starts and stops it.
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
				c.end()
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

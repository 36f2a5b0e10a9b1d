package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"golang.org/x/sys/unix"
)

// The front door: every TCP connection comes in here first. It takes a
// place in the gate (or is refused with a 503), then has the handshake
// timeout to send a whole request head. The head is only peeked at, not
// consumed: a WebSocket upgrade goes to the event loop, which reads it as
// if it had accepted the connection itself; anything else goes to a
// net/http server for the server API, which checks the key on the headers
// before it reads a byte of the body.

const (
	maxHead         = 16 << 10              // bytes of request head read before refusing with 431
	maxRefusing     = 256                   // refusals being written at once; past it, connections are just closed
	refuseLinger    = 50 * time.Millisecond // how long a refusal reads what the client sent, so closing does not reset
	apiReadTimeout  = 30 * time.Second      // a whole API request, body included
	apiWriteTimeout = 30 * time.Second
)

var errHeadTooLarge = errors.New("request head too large")

// frontDoor is owned by its Server: Start starts it, Shutdown stops it.
type frontDoor struct {
	s        *Server
	ln       net.Listener
	gate     *gate
	api      *http.Server
	apiConns *connQueue
	refusing chan struct{} // a slot per refusal being written

	ctx    context.Context // ends when the front door stops
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop, handshakes, refusals, API server
}

func newFrontDoor(s *Server, ln net.Listener) *frontDoor {
	f := &frontDoor{
		s:        s,
		ln:       ln,
		gate:     newGate(s.cfg.MaxPending, s.cfg.MaxPendingPerIP),
		apiConns: newConnQueue(ln.Addr()),
		refusing: make(chan struct{}, maxRefusing),
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	handler := s.cfg.HTTP
	if handler == nil {
		handler = http.NotFoundHandler()
	}
	handler = s.streamsFirst(handler) // a stream's request on a kept-alive API connection
	f.api = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ReadTimeout:       apiReadTimeout,
		WriteTimeout:      apiWriteTimeout,
		IdleTimeout:       s.cfg.APIIdleTimeout,
		MaxHeaderBytes:    maxHead,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				f.gate.leave(addrIP(c.RemoteAddr()))
			}
		},
	}
	return f
}

// start runs the accept loop and the API server.
func (f *frontDoor) start() {
	f.goNamed("transport.api", func() {
		if err := f.api.Serve(f.apiConns); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.s.log.Error("server API listener stopped", "err", err)
		}
	})
	f.goNamed("transport.accept", f.acceptLoop)
}

func (f *frontDoor) goNamed(name string, fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		pprof.Do(f.ctx, pprof.Labels("spindle.task", name), func(context.Context) { fn() })
	}()
}

// stopAccepting closes the listening socket; connections already in keep
// going.
func (f *frontDoor) stopAccepting() { _ = f.ln.Close() }

// shutdown stops accepting, lets API calls in flight finish until ctx
// ends, and waits for the front door's goroutines.
func (f *frontDoor) shutdown(ctx context.Context) error {
	f.stopAccepting()
	err := f.api.Shutdown(ctx)
	if err != nil {
		_ = f.api.Close()
	}
	f.cancel()
	f.wg.Wait()
	if err != nil {
		return fmt.Errorf("server API: %w", err)
	}
	return nil
}

func (f *frontDoor) acceptLoop() {
	backoff := 5 * time.Millisecond
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of files or a transient error: wait instead of spinning.
			f.s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-f.ctx.Done():
				return
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		ip := addrIP(c.RemoteAddr())
		if why, ok := f.gate.enter(ip); !ok {
			f.refuse(c, why)
			continue
		}
		f.goNamed("transport.handshake", func() { f.handshake(c, ip) })
	}
}

// refuse answers a connection past the gate's bounds with a 503 and closes
// it; when too many refusals are being written already, it just closes.
func (f *frontDoor) refuse(c net.Conn, why refusal) {
	if f.s.cfg.Refused != nil {
		f.s.cfg.Refused(string(why))
	}
	select {
	case f.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	f.goNamed("transport.refuse", func() {
		defer func() { <-f.refusing }()
		writeRefusal(c, http.StatusServiceUnavailable, "too many connections not yet upgraded ("+string(why)+")")
	})
}

// writeRefusal writes a minimal HTTP error response, half-closes, and
// reads what the client sent for a moment, so that closing does not reset
// the connection before the client read the answer.
func writeRefusal(c net.Conn, status int, msg string) {
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.SetReadDeadline(time.Now().Add(refuseLinger))
	if _, err := io.WriteString(c, refusalResponse(status, msg)); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// turnAway refuses an upgrade whose head (n bytes, peeked) is all the
// client sent: it reads the head, so that closing sends a FIN and not a
// reset, answers 503 with Retry-After and closes at once. It is the
// cheapest refusal there is, for a storm against a full node; writeRefusal
// lingers instead, for clients that may still be sending.
func turnAway(c net.Conn, n int, msg string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	pb := headBufs.Get().(*[]byte)
	_, err := io.ReadFull(c, (*pb)[:n])
	headBufs.Put(pb)
	if err != nil {
		return
	}
	_, _ = io.WriteString(c, refusalResponse(http.StatusServiceUnavailable, msg))
}

// refusalResponse is a minimal HTTP error response that closes the connection.
func refusalResponse(status int, msg string) string {
	body := msg + "\n"
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// handshake waits for the connection's request head and sends the
// connection where it belongs. It owns c and its gate place until then.
func (f *frontDoor) handshake(c net.Conn, ip netip.Addr) {
	deadline := time.Now().Add(f.s.cfg.HandshakeTimeout)
	head, err := peekHead(c, deadline, f.ctx)
	switch {
	case errors.Is(err, errHeadTooLarge):
		f.gate.leave(ip)
		writeRefusal(c, http.StatusRequestHeaderFieldsTooLarge, "request head over 16 KiB")
		return
	case err != nil:
		f.s.log.Debug("no request head in time", "remote", c.RemoteAddr(), "err", err)
		f.gate.leave(ip)
		_ = c.Close()
		return
	}
	if f.isUpgrade(head) {
		if f.s.cfg.Turnaway != nil {
			if why := f.s.cfg.Turnaway(); why != "" {
				f.gate.leave(ip)
				if f.s.cfg.Refused != nil {
					f.s.cfg.Refused(why)
				}
				// Refusals go to the back of the line: in a storm against a
				// full node thousands of them are runnable at once, and the
				// established sessions' deliveries must not wait behind them.
				runtime.Gosched()
				turnAway(c, len(head), "refused: "+why)
				return
			}
		}
		f.handOff(c, ip, time.Until(deadline))
		return
	}
	if !f.apiConns.push(c) {
		f.gate.leave(ip)
		_ = c.Close()
	}
}

// handOff gives a connection whose upgrade request waits unread to the
// event loop, with what is left of its handshake time. The loop gets no
// read deadline of its own: nbio arms it after the connection is already
// polled, so a fast upgrade could clear it first and a session would then
// be cut when it fired. The gate's timer closes the connection instead,
// unless it settles (upgraded or closed) first.
func (f *frontDoor) handOff(c net.Conn, ip netip.Addr, left time.Duration) {
	remote := c.RemoteAddr().String()
	nbc, err := nbio.NBConn(c) // takes over the socket; c is closed
	if err != nil {
		f.s.log.Warn("hand a connection to the event loop", "remote", remote, "err", err)
		f.gate.leave(ip)
		_ = c.Close()
		return
	}
	hc := &nbhttp.Conn{Conn: nbc}
	hc.Parser = nbhttp.NewParser(hc, f.s.engine, nbhttp.NewServerProcessor(), false, nbc.Execute)
	nbc.SetSession(hc.Parser)
	nbc.OnData(f.s.engine.DataHandler)
	f.gate.handed(remote, ip, max(left, 0), func() { _ = nbc.Close() })
	if f.s.raceHandOff != nil {
		f.s.raceHandOff()
	}
	if err := f.s.engine.AddTransferredConn(nbc); err != nil {
		f.s.log.Warn("event loop refused a connection", "remote", remote, "err", err)
		f.gate.settle(remote)
	}
}

// isUpgrade reports whether head asks for a session on the event loop: a
// WebSocket upgrade at the endpoint's path (Config.Path or Config.UniPath:
// GET, the path, and "Upgrade: websocket"), or a stream's request at a
// stream path (stream.go). It reads the
// head in place (no allocation: thousands of handshakes a second pass
// here); anything else goes to the HTTP server, which answers it properly.
func (f *frontDoor) isUpgrade(head []byte) bool {
	line, headers, _ := bytes.Cut(head, []byte("\r\n"))
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return false
	}
	target, _, _ := bytes.Cut(rest, []byte(" "))
	path, _, _ := bytes.Cut(target, []byte("?"))
	if k, _ := f.s.streamAt(path); k != StreamNone {
		return streamMethod(k, method)
	}
	if string(method) != http.MethodGet {
		return false
	}
	if string(path) != f.s.cfg.Path && (f.s.cfg.UniPath == "" || string(path) != f.s.cfg.UniPath) {
		return false
	}
	for len(headers) > 0 {
		var h []byte
		h, headers, _ = bytes.Cut(headers, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Upgrade")) {
			return bytes.EqualFold(bytes.TrimSpace(value), []byte("websocket"))
		}
	}
	return false
}

// headBufs holds the buffers heads are peeked into, so that a connection
// storm does not turn into garbage at 16 KiB a connection.
var headBufs = sync.Pool{New: func() any { b := make([]byte, maxHead); return &b }}

// peekHead returns the request head waiting on c without consuming it
// (MSG_PEEK), once it is complete, within deadline.
func peekHead(c net.Conn, deadline time.Time, ctx context.Context) ([]byte, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("not a TCP connection: %T", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	pb := headBufs.Get().(*[]byte)
	defer headBufs.Put(pb)
	buf := *pb
	wait := time.Millisecond
	for {
		var n int
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, perr = unix.Recvfrom(int(fd), buf, unix.MSG_PEEK)
			return perr != unix.EAGAIN
		})
		switch {
		case err != nil:
			return nil, err // the deadline passed with nothing new
		case perr != nil:
			return nil, perr
		case n == 0:
			return nil, io.EOF
		}
		if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
			return bytes.Clone(buf[:i+4]), nil
		}
		if n == len(buf) {
			return nil, errHeadTooLarge
		}
		// Part of a head: the socket stays readable, so look again a little
		// later rather than at once.
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("request head incomplete after %d bytes: %w", n, context.DeadlineExceeded)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wait = min(wait*2, 100*time.Millisecond)
	}
}

// connQueue is the net.Listener the API server accepts from: the front
// door pushes the connections that are not upgrades.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the API server; false once the queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

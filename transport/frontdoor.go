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
	"strconv"
	"sync"
	"time"
	"unsafe"

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
	labels   sync.Map      // task name → f.ctx with its pprof label (goNamed)
	// onData is the event loop's data handler, taken once: a method value
	// made per connection would be 16 bytes each connection keeps.
	onData func(c *nbio.Conn, data []byte)

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
		onData:   s.engine.DataHandler,
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
	labelled := f.labelled(name)
	go func() {
		defer f.wg.Done()
		pprof.SetGoroutineLabels(labelled)
		fn()
	}()
}

// labelled is the door's context with the pprof label of a task name,
// made once per name: a storm starts thousands of handshakes a second.
func (f *frontDoor) labelled(name string) context.Context {
	if ctx, ok := f.labels.Load(name); ok {
		return ctx.(context.Context)
	}
	ctx, _ := f.labels.LoadOrStore(name, pprof.WithLabels(f.ctx, pprof.Labels("spindle.task", name)))
	return ctx.(context.Context)
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
	if _, err := c.Write(refusalResponse(status, msg)); err != nil {
		return
	}
	hearOut(c, maxHeard)
}

// hearOut half-closes a refused connection after its answer and reads up
// to limit bytes of what the client still sends, so that the close that
// follows is a FIN and not a reset that could cost the client the answer.
func hearOut(c net.Conn, limit int64) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, limit))
}

// maxHeard is the most of a refused client's bytes the door reads before
// it closes; past it, the close is a reset.
const maxHeard = 64 << 10

// turnAway refuses a session's request whose head (n bytes, peeked) has
// arrived: it reads the head, answers 503 with Retry-After, reads the body
// the head declares (a stream's POST; at most maxHeard) and closes,
// so that closing sends a FIN and not a reset that could cost the client
// the answer. An upgrade has no body: it is closed at once, the cheapest
// refusal there is, for a storm against a full node. writeRefusal lingers
// instead, for clients whose head may not have arrived.
func turnAway(c net.Conn, n int, msg string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	pb := getHeadBuf()
	_, err := io.ReadFull(c, (*pb)[:n])
	body := declaredBody((*pb)[:n])
	putHeadBuf(pb)
	if err != nil {
		return
	}
	if _, err := c.Write(refusalResponse(http.StatusServiceUnavailable, msg)); err != nil || body == 0 {
		return
	}
	hearOut(c, body)
}

// declaredBody is how many bytes of body a request head announces, at most
// maxHeard: its Content-Length, or maxHeard for a chunked one (read until
// the client stops).
func declaredBody(head []byte) int64 {
	if v := headerValue(head, "Content-Length"); v != nil {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < 0 {
			return 0
		}
		return min(n, maxHeard)
	}
	if headerValue(head, "Transfer-Encoding") != nil {
		return maxHeard
	}
	return 0
}

// headerValue is the value of the first header called name in a request
// head (its request line first), trimmed; nil when there is none. It reads
// the head in place, without allocating.
func headerValue(head []byte, name string) []byte {
	_, headers, _ := bytes.Cut(head, []byte("\r\n"))
	for len(headers) > 0 {
		var h []byte
		h, headers, _ = bytes.Cut(headers, []byte("\r\n"))
		k, v, ok := bytes.Cut(h, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}

// refusalResponse is a minimal HTTP error response that closes the
// connection, made once per status and message (a storm's refusals are
// thousands a second, of a handful of kinds); it is shared: never write it.
func refusalResponse(status int, msg string) []byte {
	key := refusalKey{status, msg}
	if b, ok := refusals.Load(key); ok {
		return b.([]byte)
	}
	body := msg + "\n"
	b := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	refusals.Store(key, b)
	return b
}

type refusalKey struct {
	status int
	msg    string
}

var refusals sync.Map // refusalKey → its response

// turnaway asks Config.Turnaway about an upgrade, once per upgrade (it may
// spend an admission), and reports a refusal to Config.Refused.
func (f *frontDoor) turnaway() string {
	if f.s.cfg.Turnaway == nil {
		return ""
	}
	why := f.s.cfg.Turnaway()
	if why != "" && f.s.cfg.Refused != nil {
		f.s.cfg.Refused(why)
	}
	return why
}

// handshake waits for the connection's request head and sends the
// connection where it belongs. It owns c and its gate place until then.
func (f *frontDoor) handshake(c net.Conn, ip netip.Addr) {
	deadline := time.Now().Add(f.s.cfg.HandshakeTimeout)
	n, upgrade, err := peekHead(c, deadline, f.ctx, f.isUpgrade)
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
	if upgrade {
		if why := f.turnaway(); why != "" {
			f.gate.leave(ip)
			// Refusals go to the back of the line: in a storm against a
			// full node thousands of them are runnable at once, and the
			// established sessions' deliveries must not wait behind them.
			runtime.Gosched()
			turnAway(c, n, "refused: "+why)
			return
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
	nbc, err := takeOver(c)
	if err != nil {
		f.s.log.Warn("hand a connection to the event loop", "remote", remote, "err", err)
		f.gate.leave(ip)
		_ = c.Close()
		return
	}
	hc := &nbhttp.Conn{Conn: nbc}
	hc.Parser = nbhttp.NewParser(hc, f.s.engine, nbhttp.NewServerProcessor(), false, nbc.Execute)
	nbc.SetSession(hc.Parser)
	nbc.OnData(f.onData)
	f.gate.handed(remote, ip, max(left, 0), func() {
		f.s.log.Debug("upgrade not finished within the handshake timeout: closed", "remote", remote, "left", left)
		_ = nbc.Close()
	})
	if err := f.s.addToLoop(nbc); err != nil {
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
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
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
	return bytes.EqualFold(headerValue(head, "Upgrade"), []byte("websocket"))
}

// headBufs keeps the buffers heads are peeked into, so that a connection
// storm does not turn into garbage at 16 KiB a connection. A free list,
// not a sync.Pool: a pool is emptied at each collection, and a storm
// collects every second or so.
var headBufs = make(chan *[]byte, 256)

func getHeadBuf() *[]byte {
	select {
	case b := <-headBufs:
		return b
	default:
		b := make([]byte, maxHead)
		return &b
	}
}

func putHeadBuf(b *[]byte) {
	select {
	case headBufs <- b:
	default:
	}
}

// peek reads what fd has received into buf without consuming it or
// waiting for more, and without allocating (unix.Recvfrom makes the
// sender's address each call).
func peek(fd uintptr, buf []byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(len(buf)), unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// peekHead waits for the request head on c, within deadline, without
// consuming it (MSG_PEEK); once it is complete it returns its length and
// what judge says of it. A buffer is held only while a look lasts, not
// while the client takes its time.
func peekHead(c net.Conn, deadline time.Time, ctx context.Context, judge func(head []byte) bool) (int, bool, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false, fmt.Errorf("not a TCP connection: %T", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return 0, false, err
	}
	defer c.SetReadDeadline(time.Time{})
	wait := time.Millisecond
	for {
		var n, head int
		var verdict bool
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			pb := getHeadBuf()
			defer putHeadBuf(pb)
			buf := *pb
			n, perr = peek(fd, buf)
			if perr == unix.EAGAIN {
				return false // wait until readable
			}
			if i := bytes.Index(buf[:max(n, 0)], []byte("\r\n\r\n")); perr == nil && i >= 0 {
				head, verdict = i+4, judge(buf[:i+4])
			}
			return true
		})
		switch {
		case err != nil:
			return 0, false, err // the deadline passed with nothing new
		case perr != nil:
			return 0, false, perr
		case n == 0:
			return 0, false, io.EOF
		case head > 0:
			return head, verdict, nil
		case n == maxHead:
			return 0, false, errHeadTooLarge
		}
		// Part of a head: the socket stays readable, so look again a little
		// later rather than at once.
		if time.Now().Add(wait).After(deadline) {
			return 0, false, fmt.Errorf("request head incomplete after %d bytes: %w", n, context.DeadlineExceeded)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, false, ctx.Err()
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

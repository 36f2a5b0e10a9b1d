// Package transport serves WebSocket connections, and HTTP streams
// (stream.go), on an event loop (github.com/lesismal/nbio): no goroutine
// waits on an idle connection.
// Reads arrive as callbacks, serialized per connection; writes never block.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// Handler receives connection events. OnMessage calls for one connection
// never overlap and come in order; they run on a bounded goroutine pool, so
// a handler may wait briefly (a broker call) but must not block for long.
type Handler interface {
	// OnOpen is called once after the upgrade, before any message.
	OnOpen(c *Conn)
	// OnMessage receives one complete message; data is only valid during the call.
	OnMessage(c *Conn, data []byte)
	// OnClose is called once when the connection is gone.
	OnClose(c *Conn, err error)
}

// OpHandler is optional: a Handler that implements it receives every
// message through OnMessageOp, with its opcode (OpText or OpBinary),
// instead of through OnMessage.
type OpHandler interface {
	// OnMessageOp receives one complete message; data is only valid during the call.
	OnMessageOp(c *Conn, op byte, data []byte)
}

// Config sets up a Server.
type Config struct {
	Addr           string                     // listen address, e.g. 127.0.0.1:8000
	Path           string                     // WebSocket endpoint, e.g. /connection/websocket
	UniPath        string                     // a second endpoint whose sessions are unidirectional (Conn.Uni), e.g. /connection/uni_websocket; "": none
	MaxMessageSize int                        // larger client messages close the connection with 1009
	IdleTimeout    time.Duration              // backstop read deadline, refreshed by every message
	CheckOrigin    func(r *http.Request) bool // nil allows every origin
	// Admit reserves a place for a new connection before its upgrade, or
	// refuses it (503 with Retry-After) with an error. release gives the
	// place back when the upgrade then fails; once OnOpen is called the
	// place is the connection's, and the Handler frees it after OnClose.
	Admit    func(r *http.Request) (release func(), err error)
	HTTP     http.Handler // serves every other path (the server API), on net/http
	MaxConns int          // WebSocket sessions at once; the event loop holds these plus MaxPending
	Logger   *slog.Logger

	// The front door (frontdoor.go): connections that are not sessions.
	HandshakeTimeout time.Duration       // a new connection must send its whole request head within this; 0: 5 s
	MaxPending       int                 // connections not upgraded at once (handshakes, API); 0: 1024
	MaxPendingPerIP  int                 // of those, from one source address; 0: 256
	APIIdleTimeout   time.Duration       // an idle keep-alive API connection is closed after this; 0: 30 s
	Refused          func(reason string) // told of each connection refused at the door ("pending", "pending_per_ip", or Turnaway's reason)
	// Turnaway, when set, is asked once an upgrade request's head has
	// arrived: a reason refuses it at the door with 503, before the event
	// loop takes the connection (the cheap refusal a connection storm
	// against a full node gets); "" lets it through to Admit.
	Turnaway func() (reason string)

	CloseGrace time.Duration // how long a closing connection may take to write out its close frame before it is reset; 0: 3 s

	KeepHeaders []string // request headers Conn.Header keeps from the upgrade (e.g. for a backend proxy); the rest are dropped

	// Subprotocols are the WebSocket subprotocols offered, in order of
	// preference: the first one the client also offers is named in the
	// 101 response (Conn.Subprotocol).
	Subprotocols []string
	// Binary, when set, tells from the upgrade request and the negotiated
	// subprotocol whether the session speaks in binary messages
	// (Conn.Binary); the transport itself passes either kind of message.
	Binary func(r *http.Request, subprotocol string) bool

	// Streams (stream.go): HTTP endpoints whose responses are sessions
	// (Conn.Stream), on the event loop too; "": none. At the Uni paths the
	// session only receives (Conn.Uni); at the others it is the server half
	// of a bidirectional emulation, whose commands arrive by other requests.
	UniSSEPath        string // Server-Sent Events, GET or POST, e.g. /connection/uni_sse
	UniHTTPStreamPath string // chunked HTTP streaming, POST, e.g. /connection/uni_http_stream
	SSEPath           string // Server-Sent Events, emulation, e.g. /connection/sse
	HTTPStreamPath    string // chunked HTTP streaming, emulation, e.g. /connection/http_stream
}

// Server is a listening WebSocket endpoint with the server API beside it.
type Server struct {
	cfg      Config
	h        Handler
	engine   *nbhttp.Engine // the event loop of upgraded connections
	upgrader *websocket.Upgrader
	door     *frontDoor // set by Start
	closer   *closer    // closes connections whose close frame went out
	oh       OpHandler  // h, when it implements OpHandler
	// raceHandOff is set in race builds only (race.go).
	raceHandOff func()
	log         *slog.Logger
	// upgrading is read-locked by each upgrade in flight, from before nbio
	// writes the 101 until the Conn is attached to it (see onData).
	upgrading sync.RWMutex
	// pending is the bytes handed to the event loop that the kernel has
	// not accepted yet, over the open connections (see Conn.gone).
	pending atomic.Int64
}

// Conn is one session's connection: a WebSocket, or an HTTP stream
// (Stream). Write and Close are safe for concurrent use.
type Conn struct {
	ws *websocket.Conn // nil for a stream
	nc net.Conn        // the connection under the protocol: ws.Conn, or a stream's; set before OnOpen, read-only after
	// Session belongs to the Handler; set it in OnOpen.
	Session any

	handed   atomic.Int64 // bytes given to the event loop
	written  atomic.Int64 // bytes the kernel accepted
	progress atomic.Int64 // monotonic nanoseconds of the last kernel write
	endTimer atomic.Pointer[time.Timer]
	srv      *Server
	rx       rxState // the frame check's, on the event loop only (recv.go)
	req      *kept   // what is kept of the request; nil when nothing is; set before OnOpen, read-only after

	flags  connFlags // closing, lingering, gone, drain, closed, ended; atomic, any goroutine (who sets which: flags.go)
	binary bool      // Config.Binary's answer; set before OnOpen, read-only after
	uni    bool      // upgraded at Config.UniPath, or a Uni stream; set before OnOpen, read-only after
	stream Stream    // the kind of HTTP stream, StreamNone for a WebSocket; set before OnOpen, read-only after
}

var monoStart = time.Now()

// Mono returns monotonic nanoseconds since the process started; every
// deadline in the gateway is measured with it.
func Mono() int64 { return int64(time.Since(monoStart)) }

// New prepares a server; Start begins listening.
func New(cfg Config, h Handler) (*Server, error) {
	if cfg.Path == "" {
		cfg.Path = "/connection/websocket"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 64 << 10
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.MaxPendingPerIP <= 0 {
		cfg.MaxPendingPerIP = 256
	}
	if cfg.APIIdleTimeout <= 0 {
		cfg.APIIdleTimeout = 30 * time.Second
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = 3 * time.Second
	}
	s := &Server{cfg: cfg, h: h, log: cfg.Logger, closer: newCloser()}
	s.oh, _ = h.(OpHandler)
	useNbioLogger(cfg.Logger)

	u := websocket.NewUpgrader()
	u.MessageLengthLimit = 0 // no limit in nbio: the frame check (recv.go) enforces MaxMessageSize, in order
	u.KeepaliveTime = cfg.IdleTimeout
	u.CheckOrigin = cfg.CheckOrigin
	u.Subprotocols = cfg.Subprotocols
	if u.CheckOrigin == nil {
		u.CheckOrigin = func(*http.Request) bool { return true }
	}
	u.OnMessage(func(ws *websocket.Conn, mt websocket.MessageType, data []byte) {
		if c, ok := ws.Session().(*Conn); ok {
			s.deliver(c, byte(mt), data)
		}
	})
	u.OnClose(func(ws *websocket.Conn, err error) {
		if c, ok := ws.Session().(*Conn); ok {
			s.closed(c, err)
		}
	})
	// Control replies go through Conn.Write so pending-byte accounting sees every byte.
	u.SetPingHandler(func(ws *websocket.Conn, data string) {
		if c, ok := ws.Session().(*Conn); ok {
			_ = c.Write(AppendFrame(nil, OpPong, []byte(data)))
		}
	})
	// Close frames never reach nbio: the frame check answers them (recv.go).
	s.upgrader = u

	// The event loop listens on nothing: the front door hands it the
	// connections that ask for an upgrade, with their heads unread.
	// Whatever else reaches it (a second request on an upgrade's
	// connection) gets 404.
	mux := http.NewServeMux()
	mux.HandleFunc(cfg.Path, s.serveUpgrade)
	if cfg.UniPath != "" && cfg.UniPath != cfg.Path {
		mux.HandleFunc(cfg.UniPath, s.serveUpgrade)
	}
	for _, p := range []string{cfg.UniSSEPath, cfg.UniHTTPStreamPath, cfg.SSEPath, cfg.HTTPStreamPath} {
		if p != "" {
			mux.HandleFunc(p, s.serveStream)
		}
	}
	maxLoad := 0
	if cfg.MaxConns > 0 {
		maxLoad = cfg.MaxConns + cfg.MaxPending + 64 // never below what the gateway and the door admit
	}
	s.engine = nbhttp.NewEngine(nbhttp.Config{
		Name:                    "spindle",
		Network:                 "tcp",
		Handler:                 mux,
		MaxLoad:                 maxLoad,
		KeepaliveTime:           cfg.HandshakeTimeout, // after a failed upgrade's answer, the connection goes
		ReleaseWebsocketPayload: true,
		MaxHTTPBodySize:         cfg.MaxMessageSize, // a stream's request; upgrades have no body
		MessageHandlerPoolSize:  runtime.GOMAXPROCS(0) * 256,
	})
	// The frame check sees every byte of a session first (onData), and
	// has validated each text message and close reason before nbio has it.
	s.engine.Engine.OnData(s.onData)
	s.engine.CheckUtf8 = func([]byte) bool { return true }
	if raceHooks != nil {
		s.raceHandOff = raceHooks(s.engine)
	}
	s.engine.OnClose(func(c net.Conn, _ error) {
		if s.door != nil {
			s.door.gate.settle(c.RemoteAddr().String())
		}
	})
	s.engine.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
		if c := connOf(nc); c != nil {
			c.written.Add(int64(n))
			if !c.flags.has(flagGone) {
				s.pending.Add(-int64(n))
			}
			c.progress.Store(Mono())
			if c.flags.has(flagDrain) {
				s.drained(c)
			}
			if c.flags.has(flagFlushing) && c.flushed() {
				s.closer.push(c) // not here: nbio holds the connection's lock
			}
		}
	})
	return s, nil
}

// Start listens and serves until Shutdown.
//
// The socket is bound first, and the event loop starts only when that
// worked: nbio starts its pollers before its listeners, and stopping them
// again after a failed listen could hang (a busy port hung start-up).
func (s *Server) Start() error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	if err := s.engine.Start(); err != nil {
		_ = l.Close()
		return fmt.Errorf("start event loop on %s: %w", s.cfg.Addr, err)
	}
	s.closer.start()
	s.door = newFrontDoor(s, l)
	s.door.start()
	return nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() net.Addr {
	if s.door == nil {
		return nil
	}
	return s.door.ln.Addr()
}

// Pending is the number of connections that are not sessions: handshakes
// being read, API connections, upgrades not finished.
func (s *Server) Pending() int {
	if s.door == nil {
		return 0
	}
	return s.door.gate.pending()
}

// StopAccepting closes the listening socket: new connections are refused by
// the kernel while existing ones keep working.
func (s *Server) StopAccepting() {
	if s.door != nil {
		s.door.stopAccepting()
	}
}

// Shutdown stops accepting, lets server API calls in flight finish, then
// closes every connection and stops the event loop; ctx bounds the waiting.
// When ctx ends before every connection's OnClose returned, Shutdown
// returns its error and the event loop stops by itself after the last one.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.door != nil {
		errs = append(errs, s.door.shutdown(ctx))
	}
	if err := s.stopLoop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("transport shutdown: %w", err))
	}
	return errors.Join(errs...)
}

// stopLoop closes every connection and stops the event loop once their
// close handlers returned. nbhttp's Shutdown given a deadline stops waiting
// at it and leaves the pollers running for good, so it gets none: it runs
// in a goroutine of its own, and ctx bounds only how long stopLoop waits.
func (s *Server) stopLoop(ctx context.Context) error {
	done := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels("spindle.task", "transport.stop"), func(context.Context) {
		err := s.engine.Shutdown(context.Background())
		s.closer.stop()
		done <- err
	})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("connections still closing: %w", ctx.Err())
	}
}

func (s *Server) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	release := func() {}
	if s.cfg.Admit != nil {
		var err error
		if release, err = s.cfg.Admit(r); err != nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	s.upgrading.RLock()
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.upgrading.RUnlock()
		release()
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	if testHookUpgraded != nil {
		testHookUpgraded()
	}
	c := &Conn{ws: ws, nc: ws.Conn, srv: s}
	c.uni = s.cfg.UniPath != "" && r.URL.Path == s.cfg.UniPath
	c.req = s.keep(r, c.uni)
	if !c.uni && s.cfg.Binary != nil {
		c.binary = s.cfg.Binary(r, ws.Subprotocol())
	}
	c.progress.Store(Mono())
	c.rx.attached.Store(true)
	ws.SetSession(c)
	s.upgrading.RUnlock()
	if s.door != nil {
		s.door.gate.settle(r.RemoteAddr) // a session now: the gateway's limit holds it
	}
	// Messages run on this connection's executor too, after this returns.
	s.h.OnOpen(c)
}

// kept is what a connection keeps of its request, apart from the
// connection itself: most keep nothing (the request is not kept, a
// connection would cost its header maps otherwise).
type kept struct {
	header http.Header // Config.KeepHeaders of the request
	query  string      // the raw query, at Config.UniPath and of streams
}

// keep returns what a connection keeps of r: the headers of
// Config.KeepHeaders, and with withQuery the raw query; nil for nothing.
func (s *Server) keep(r *http.Request, withQuery bool) *kept {
	k := kept{header: keptHeaders(r.Header, s.cfg.KeepHeaders)}
	if withQuery {
		k.query = r.URL.RawQuery
	}
	if k.header == nil && k.query == "" {
		return nil
	}
	return &k
}

// Header returns the upgrade request's headers named by Config.KeepHeaders; nil when none.
func (c *Conn) Header() http.Header {
	if c.req == nil {
		return nil
	}
	return c.req.header
}

// Subprotocol is the WebSocket subprotocol negotiated at the upgrade; "" when none.
func (c *Conn) Subprotocol() string {
	if c.ws == nil {
		return ""
	}
	return c.ws.Subprotocol()
}

// Binary reports what Config.Binary said of the upgrade: the session's
// messages are binary.
func (c *Conn) Binary() bool { return c.binary }

// Uni reports whether the connection was upgraded at Config.UniPath, or
// is a stream at a Uni path: the session only receives.
func (c *Conn) Uni() bool { return c.uni }

// Query is the request's query parameters at Config.UniPath and of a
// stream; nil on other connections.
func (c *Conn) Query() url.Values {
	if !c.uni && c.stream == StreamNone {
		return nil
	}
	if c.req == nil {
		return url.Values{}
	}
	q, _ := url.ParseQuery(c.req.query) // a malformed pair is left out, as net/http does
	return q
}

func keptHeaders(h http.Header, keep []string) http.Header {
	var out http.Header
	for _, k := range keep {
		if v := h.Values(k); len(v) > 0 {
			if out == nil {
				out = make(http.Header, len(keep))
			}
			out[http.CanonicalHeaderKey(k)] = slices.Clone(v)
		}
	}
	return out
}

// Write hands already framed bytes to the event loop. It never blocks: what
// the kernel does not take at once is kept by the event loop and counted by
// Pending. Once Close was called it writes nothing and returns ErrClosing:
// nothing may follow the close frame.
func (c *Conn) Write(b []byte) error {
	if c.flags.has(flagClosed) {
		return ErrClosing
	}
	return c.write(b)
}

// ErrClosing is Write's error once the connection is closing.
var ErrClosing = errors.New("transport: connection is closing")

// write is Write without the closing check: closeWith writes the close frame with it.
func (c *Conn) write(b []byte) error {
	n := int64(len(b))
	c.handed.Add(n)
	counted := !c.flags.has(flagGone)
	if counted {
		c.srv.pending.Add(n)
	}
	if _, err := c.nc.Write(b); err != nil {
		c.handed.Add(-n) // never to be written: not pending
		if counted {
			c.srv.pending.Add(-n)
		}
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Pending is the number of bytes written to the connection that the kernel
// has not accepted yet; 0 once the connection is closing, when nothing more
// is owed to the peer (a peer that closed is not a slow consumer).
func (c *Conn) Pending() int64 {
	if c.flags.has(flagClosing) {
		return 0
	}
	p := c.handed.Load() - c.written.Load()
	if p < 0 {
		return 0
	}
	return p
}

// Unwritten is the bytes handed to the event loop that the kernel has not
// accepted yet, over all open connections.
func (s *Server) Unwritten() int64 { return max(s.pending.Load(), 0) }

// Handed and Written count the bytes given to the event loop and the bytes
// the kernel accepted, since the connection opened.
func (c *Conn) Handed() int64  { return c.handed.Load() }
func (c *Conn) Written() int64 { return c.written.Load() }

// LastProgress is when (Mono) the kernel last accepted bytes for this connection.
func (c *Conn) LastProgress() int64 { return c.progress.Load() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// closed tells the Handler that c is gone; the close grace stops and what
// was not written leaves srv.pending.
func (s *Server) closed(c *Conn, err error) {
	c.stopGrace()
	if c.flags.take(flagGone) {
		s.pending.Add(c.written.Load() - c.handed.Load())
	}
	s.h.OnClose(c, err)
}

// testHookUpgraded, set by tests only, runs between nbio's 101 and the
// Conn being attached.
var testHookUpgraded func()

// raceHooks is set in race builds only, see race.go; it returns what the
// front door calls before handing a connection to the event loop.
var raceHooks func(*nbhttp.Engine) (handOff func())

// nbio logs through one process-wide logger, read by every engine's
// goroutines (a server's, and a bench client's): install it once and swap
// the slog.Logger behind it atomically; the latest server's logger wins.
var (
	nbioLogOnce sync.Once
	nbioLog     atomic.Pointer[slog.Logger]
)

func useNbioLogger(l *slog.Logger) {
	nbioLog.Store(l)
	nbioLogOnce.Do(func() { logging.SetLogger(nbioLogger{}) })
}

type nbioLogger struct{}

func (nbioLogger) SetLevel(int) {}
func (nbioLogger) Debug(format string, v ...any) {
	nbioLog.Load().Debug("nbio: " + fmt.Sprintf(format, v...))
}
func (nbioLogger) Info(format string, v ...any) {
	nbioLog.Load().Debug("nbio: " + fmt.Sprintf(format, v...))
}
func (nbioLogger) Warn(format string, v ...any) {
	nbioLog.Load().Warn("nbio: " + fmt.Sprintf(format, v...))
}
func (nbioLogger) Error(format string, v ...any) {
	nbioLog.Load().Error("nbio: " + fmt.Sprintf(format, v...))
}

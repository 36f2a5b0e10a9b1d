// Package transport serves WebSocket connections on an event loop
// (github.com/lesismal/nbio): no goroutine waits on an idle connection.
// Reads arrive as callbacks, serialized per connection; writes never block.
package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
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

// Config sets up a Server.
type Config struct {
	Addr           string                     // listen address, e.g. 127.0.0.1:8000
	Path           string                     // WebSocket endpoint, e.g. /connection/websocket
	MaxMessageSize int                        // larger client messages close the connection with 1009
	IdleTimeout    time.Duration              // backstop read deadline, refreshed by every message
	CheckOrigin    func(r *http.Request) bool // nil allows every origin
	// Admit reserves a place for a new connection before its upgrade, or
	// refuses it (503 with Retry-After) with an error. release gives the
	// place back when the upgrade then fails; once OnOpen is called the
	// place is the connection's, and the Handler frees it after OnClose.
	Admit    func(r *http.Request) (release func(), err error)
	HTTP     http.Handler // serves every other path (the server API)
	MaxConns int          // the event loop refuses connections past this
	Logger   *slog.Logger
}

// Server is a listening WebSocket endpoint.
type Server struct {
	cfg      Config
	h        Handler
	engine   *nbhttp.Engine
	upgrader *websocket.Upgrader
	ln       *drainListener
	log      *slog.Logger
}

// Conn is one WebSocket connection. Write and Close are safe for concurrent use.
type Conn struct {
	ws *websocket.Conn
	// Session belongs to the Handler; set it in OnOpen.
	Session any

	handed    atomic.Int64 // bytes given to the event loop
	written   atomic.Int64 // bytes the kernel accepted
	progress  atomic.Int64 // monotonic nanoseconds of the last kernel write
	closeOnce sync.Once
	closing   atomic.Bool // a close frame was sent or received: nothing more is owed to the peer
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
	s := &Server{cfg: cfg, h: h, log: cfg.Logger}
	useNbioLogger(cfg.Logger)

	u := websocket.NewUpgrader()
	u.MessageLengthLimit = cfg.MaxMessageSize
	u.KeepaliveTime = cfg.IdleTimeout
	u.CheckOrigin = cfg.CheckOrigin
	if u.CheckOrigin == nil {
		u.CheckOrigin = func(*http.Request) bool { return true }
	}
	u.OnMessage(func(ws *websocket.Conn, _ websocket.MessageType, data []byte) {
		if c, ok := ws.Session().(*Conn); ok {
			h.OnMessage(c, data)
		}
	})
	u.OnClose(func(ws *websocket.Conn, err error) {
		if c, ok := ws.Session().(*Conn); ok {
			h.OnClose(c, err)
		}
	})
	// Control replies go through Conn.Write so pending-byte accounting sees every byte.
	u.SetPingHandler(func(ws *websocket.Conn, data string) {
		if c, ok := ws.Session().(*Conn); ok {
			_ = c.Write(AppendFrame(nil, OpPong, []byte(data)))
		}
	})
	u.SetCloseHandler(func(ws *websocket.Conn, code int, text string) {
		if c, ok := ws.Session().(*Conn); ok {
			c.closing.Store(true)
			if code == 1005 || code == 0 {
				_ = c.Write(AppendFrame(nil, OpClose, nil))
			} else {
				_ = c.Write(CloseFrame(code, text))
			}
		}
	})
	s.upgrader = u

	mux := http.NewServeMux()
	mux.HandleFunc(cfg.Path, s.serveUpgrade)
	if cfg.HTTP != nil {
		mux.Handle("/", cfg.HTTP)
	}
	maxLoad := cfg.MaxConns + 64
	if cfg.MaxConns <= 0 {
		maxLoad = 0
	}
	s.engine = nbhttp.NewEngine(nbhttp.Config{
		Name:                    "spindle",
		Network:                 "tcp",
		Addrs:                   []string{cfg.Addr},
		Handler:                 mux,
		MaxLoad:                 maxLoad,
		ReleaseWebsocketPayload: true,
		MessageHandlerPoolSize:  runtime.GOMAXPROCS(0) * 256,
		// Start binds the socket before the event loop runs; the engine
		// takes that listener.
		Listen: func(network, addr string) (net.Listener, error) {
			if s.ln == nil {
				return nil, fmt.Errorf("transport: listener for %s not bound", addr)
			}
			return s.ln, nil
		},
	})
	if raceHooks != nil {
		raceHooks(s.engine)
	}
	s.engine.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
		ws, ok := nc.Session().(*websocket.Conn)
		if !ok {
			return
		}
		if c, ok := ws.Session().(*Conn); ok {
			c.written.Add(int64(n))
			c.progress.Store(Mono())
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
	s.ln = newDrainListener(l)
	if err := s.engine.Start(); err != nil {
		_ = s.ln.Close()
		return fmt.Errorf("start event loop on %s: %w", s.cfg.Addr, err)
	}
	return nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// StopAccepting closes the listening socket: new connections are refused by
// the kernel while existing ones keep working.
func (s *Server) StopAccepting() {
	if s.ln != nil {
		s.ln.drain()
	}
}

// Shutdown closes every connection and stops the event loop.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.engine.Shutdown(ctx); err != nil {
		return fmt.Errorf("transport shutdown: %w", err)
	}
	return nil
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
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		release()
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := &Conn{ws: ws} // the request is not kept: a connection costs its header maps otherwise
	c.progress.Store(Mono())
	ws.SetSession(c)
	s.h.OnOpen(c)
}

// Write hands already framed bytes to the event loop. It never blocks: what
// the kernel does not take at once is kept by the event loop and counted by
// Pending.
func (c *Conn) Write(b []byte) error {
	c.handed.Add(int64(len(b)))
	if _, err := c.ws.Conn.Write(b); err != nil {
		c.handed.Add(-int64(len(b))) // never to be written: not pending
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Pending is the number of bytes written to the connection that the kernel
// has not accepted yet; 0 once the connection is closing, when nothing more
// is owed to the peer (a peer that closed is not a slow consumer).
func (c *Conn) Pending() int64 {
	if c.closing.Load() {
		return 0
	}
	p := c.handed.Load() - c.written.Load()
	if p < 0 {
		return 0
	}
	return p
}

// Handed and Written count the bytes given to the event loop and the bytes
// the kernel accepted, since the connection opened.
func (c *Conn) Handed() int64  { return c.handed.Load() }
func (c *Conn) Written() int64 { return c.written.Load() }

// LastProgress is when (Mono) the kernel last accepted bytes for this connection.
func (c *Conn) LastProgress() int64 { return c.progress.Load() }

// Close queues a close frame with code and reason and closes the socket at
// once; a close frame still queued behind a backlog may be lost (best
// effort: a stuck peer would not read it anyway).
func (c *Conn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		_ = c.Write(CloseFrame(code, reason))
		c.closing.Store(true)
		_ = c.ws.Conn.Close()
	})
}

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// drainListener lets the accept loop of nbhttp stop without spinning: after
// drain the real socket is closed and Accept waits for Close.
type drainListener struct {
	net.Listener
	once     sync.Once
	closed   chan struct{}
	draining chan struct{}
	dOnce    sync.Once
}

func newDrainListener(l net.Listener) *drainListener {
	return &drainListener{Listener: l, closed: make(chan struct{}), draining: make(chan struct{})}
}

func (l *drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		return c, nil
	}
	select {
	case <-l.draining:
		<-l.closed
		return nil, net.ErrClosed
	default:
		return nil, err
	}
}

func (l *drainListener) drain() {
	l.dOnce.Do(func() {
		close(l.draining)
		_ = l.Listener.Close()
	})
}

func (l *drainListener) Close() error {
	l.drain()
	l.once.Do(func() { close(l.closed) })
	return nil
}

// raceHooks is set in race builds only, see race.go.
var raceHooks func(*nbhttp.Engine)

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

// Package baseline is the benchmark baseline for Spindle: a push hub built
// the way most Go services build one, after gorilla/websocket's chat
// example. Every connection has a read pump and a write pump goroutine and a
// buffered send channel of 256 frames; one hub goroutine owns the channel
// subscriptions and fans publications out, dropping any client whose send
// channel is full.
//
// It speaks enough of the Centrifugo client protocol v2 (JSON) for the same
// load client to drive it and Spindle: connect, subscribe, unsubscribe,
// publish, ping and pong, and publication pushes with a per-channel offset.
// Its server API has publish and broadcast, like Spindle's.
//
// It is deliberately not optimised beyond that common idiom.
package baseline

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures a Server. The zero value is usable: no API key, no token
// check, and the defaults below.
type Config struct {
	// APIKey guards the server API (X-API-Key header); empty accepts any.
	APIKey string
	// TokenHMACSecret, when set, makes connect require an HS256 JWT signed
	// with it; when empty any token (or none) is accepted.
	TokenHMACSecret string

	// PingInterval is the period of server pings (default 25s, Spindle's).
	PingInterval time.Duration
	// PongTimeout is how long after a ping period a silent client is
	// disconnected (default 8s): the read deadline is PingInterval+PongTimeout.
	PongTimeout time.Duration
	// WriteTimeout bounds every write to a client (default 10s).
	WriteTimeout time.Duration
	// MaxMessageSize is the largest client frame in bytes (default 64 KiB).
	MaxMessageSize int64
	// BufferSize is the WebSocket read and write buffer size (default 1024).
	BufferSize int
	// MaxConnections refuses upgrades with 503 while this many connections
	// are open, the usual counter check; 0: no limit.
	MaxConnections int

	// Logger receives debug and warning records; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 8 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 64 << 10
	}
	if c.BufferSize <= 0 {
		c.BufferSize = 1024
	}
}

// WebSocketPath is where clients connect.
const WebSocketPath = "/connection/websocket"

// Server is the baseline hub and its HTTP endpoints: WebSocketPath,
// /api/publish and /api/broadcast. Build it with New and stop it with
// Shutdown.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub
	upgrader websocket.Upgrader
	mux      *http.ServeMux

	// pumps counts running read and write pumps. Add is only called on the
	// hub goroutine, before it returns, so Wait after hub.done is safe.
	pumps sync.WaitGroup

	connsMu sync.Mutex
	conns   map[*websocket.Conn]struct{} // open client connections

	stopOnce sync.Once
}

// New starts the hub and returns the server.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:   cfg,
		log:   logger(cfg.Logger),
		hub:   newHub(),
		conns: make(map[*websocket.Conn]struct{}),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  cfg.BufferSize,
			WriteBufferSize: cfg.BufferSize,
			// The load client and tests do not send a browser Origin; a
			// benchmark baseline has no cookies to protect.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		mux: http.NewServeMux(),
	}
	s.hub.startPumps = s.startPumps
	s.mux.HandleFunc(WebSocketPath, s.serveWS)
	s.mux.HandleFunc("/api/publish", s.serveAPI(s.apiPublish))
	s.mux.HandleFunc("/api/broadcast", s.serveAPI(s.apiBroadcast))
	go s.hub.run()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats are the hub's counters.
type Stats struct {
	Clients int64 // registered clients
	Dropped int64 // clients dropped because their send channel was full
	// Conns counts open connections: the registered clients plus those
	// dropped or unregistered whose write pump has not closed them yet.
	Conns int64
}

// Stats returns the hub's counters.
func (s *Server) Stats() Stats {
	s.connsMu.Lock()
	conns := int64(len(s.conns))
	s.connsMu.Unlock()
	return Stats{Clients: s.hub.count.Load(), Dropped: s.hub.dropped.Load(), Conns: conns}
}

// Shutdown stops the hub: every client gets a close frame and its
// connection is closed once its queued frames are written. It returns when
// all pump goroutines have ended; if ctx ends first, the remaining
// connections are closed at once and Shutdown still waits for the pumps
// (which then end promptly) but returns ctx's error. Stop the HTTP server
// (http.Server.Shutdown) first so no new connections arrive; connections
// upgraded after Shutdown are refused. Shutdown is safe to call more than
// once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.hub.quit) })
	<-s.hub.done
	finished := make(chan struct{})
	go func() { s.pumps.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	s.connsMu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.connsMu.Unlock()
	<-finished
	return fmt.Errorf("baseline shutdown: clients cut off: %w", ctx.Err())
}

// trackConn records an open connection, for Shutdown to cut off.
func (s *Server) trackConn(c *websocket.Conn, open bool) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if open {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

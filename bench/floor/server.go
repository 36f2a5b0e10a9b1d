// Package floor is the floor the benchmarks measure Spindle against: the
// least a server can do to deliver publications over WebSocket on this
// machine, so Spindle's figures can be given as a fraction of what the
// kernel's loopback path allows, measured in the same run.
//
// It speaks just enough of the Centrifugo client protocol v2 (JSON) for
// spindle bench to drive it. The WebSocket handshake is written by hand on
// a hijacked net/http connection: net/http serves the API on the same port
// anyway, the handshake and the frames are a few dozen lines, and a library
// would add work, not take it away (nbio's writes go through its own
// buffers, a queue; gorilla's through a per-connection writer). Each
// connection's reader is the goroutine net/http gave its request; it only
// wakes for client frames. Connect and subscribe get fixed replies,
// found by scanning the command for its id, its method and the channel,
// with no JSON decoding. POST /api/publish frames a publication once, as a
// push with the channel's next offset (1, 2, 3 …), and writes that one
// frame to every subscriber of the channel, one write call per subscriber,
// split over as many goroutines as cores.
//
// It has no queues and no safety. A publication is written while its
// channel's lock is held, with no write deadline: a subscriber that does
// not read blocks its writer goroutine, and with it every later
// publication to its channel, until its socket drains, it goes away or
// Shutdown closes it. There are no pings, no token check, no limit on
// connections or channels (a channel is never forgotten), and nothing else
// of the protocol: other commands get "method not found".
package floor

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spindlehq/spindle/transport"
)

// Config configures a Server; the zero value is usable.
type Config struct {
	// APIKey guards /api/publish (X-API-Key header); empty accepts any.
	APIKey string
	// Writers is how many goroutines write one publication to a channel's
	// subscribers (default GOMAXPROCS).
	Writers int
	// MaxMessageSize is the largest client frame in bytes (default 64 KiB).
	MaxMessageSize int
	// Logger receives debug records of failed connections; nil discards them.
	Logger *slog.Logger
}

// WebSocketPath is where clients connect.
const WebSocketPath = "/connection/websocket"

// minPerWriter is the fewest subscribers worth a goroutine of their own.
const minPerWriter = 32

// Server is the floor's HTTP handler: WebSocketPath and /api/publish. Serve
// it with an http.Server and stop it with Shutdown.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux

	mu       sync.Mutex // guards conns, channels and closing
	conns    map[*conn]struct{}
	channels map[string]*channel
	closing  bool

	// readers counts the connections whose reader runs; Add happens under
	// mu while closing is false, so Wait after closing is set is safe.
	readers sync.WaitGroup

	nextID        atomic.Uint64 // the last client id given out
	subscriptions atomic.Int64
	publications  atomic.Uint64
	inFlight      atomic.Int64
	writeErrors   atomic.Uint64
}

// New returns a Server; it starts no goroutine.
func New(cfg Config) *Server {
	if cfg.Writers <= 0 {
		cfg.Writers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 64 << 10
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, log: log, mux: http.NewServeMux(),
		conns: make(map[*conn]struct{}), channels: make(map[string]*channel),
	}
	s.mux.HandleFunc(WebSocketPath, s.serveWS)
	s.mux.HandleFunc("/api/publish", s.servePublish)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats are the server's counters.
type Stats struct {
	Conns         int    // open WebSocket connections
	Subscriptions int64  // (connection, channel) pairs
	Publications  uint64 // publications framed
	InFlight      int64  // publications being written now
	WriteErrors   uint64 // writes to a subscriber that failed
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return Stats{
		Conns: n, Subscriptions: s.subscriptions.Load(), Publications: s.publications.Load(),
		InFlight: s.inFlight.Load(), WriteErrors: s.writeErrors.Load(),
	}
}

// Shutdown refuses new connections, sends every connection a close frame
// (1001, going away) and closes it, which also ends any write blocked on
// it, and returns when every connection's reader has ended. The close
// frames get until ctx's deadline, at most a second. Publications being
// written run in the http.Server's handlers: shut that down after this.
// Shutdown is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	deadline := time.Now().Add(time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// One goroutine a connection: a close frame waiting behind a blocked
	// write holds up only its own connection, until the deadline.
	bye := transport.CloseFrame(1001, "shutting down")
	var closing sync.WaitGroup
	for _, c := range conns {
		closing.Go(func() {
			_ = c.nc.SetWriteDeadline(deadline) // fails only on a closed connection
			_, _ = c.nc.Write(bye)              // best effort: the connection is closed next anyway
			_ = c.nc.Close()
		})
	}
	closing.Wait()
	s.readers.Wait() // prompt: every socket is closed
	return nil
}

// channel returns the channel named name, creating it.
func (s *Server) channel(name string) *channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[name]
	if ch == nil {
		ch = newChannel(name)
		s.channels[name] = ch
	}
	return ch
}

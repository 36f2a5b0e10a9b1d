// Package admin serves the operator's listener: the admin web page at /,
// liveness and readiness probes, Prometheus metrics and pprof, on an address
// apart from clients, behind an optional admin token.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spindlehq/spindle/guard/task"
)

// Config is what the admin listener serves besides its probes.
type Config struct {
	Registry *prometheus.Registry // served at /metrics
	Info     func() any           // when set, served at /info as JSON
	Page     *Page                // when set, the web page at / and its endpoints under /admin/
	Token    string               // when set, everything but the probes, /metrics and /login asks for it
	Logger   *slog.Logger         // nil: slog.Default()
}

// Server is the admin HTTP listener. Everything but ready, check and ln is
// set by New and not changed after.
type Server struct {
	tasks *task.Group // owns the serving goroutine
	ready atomic.Bool
	check atomic.Pointer[func() error] // when set and ready, /readyz also asks it
	srv   *http.Server
	ln    net.Listener // set by Start
	mux   *http.ServeMux
	log   *slog.Logger
	gate  *gate
	page  *Page
	html  []byte // the web page, rendered once by New
	index []link // what GET /index lists
}

// link is one endpoint of the index.
type link struct{ Path, What string }

// New prepares the admin endpoints.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{mux: http.NewServeMux(), log: cfg.Logger, tasks: task.NewGroup(context.Background()),
		gate: newGate(cfg.Token), page: cfg.Page}
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if f := s.check.Load(); f != nil {
			if err := (*f)(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.mux.HandleFunc("GET /debug/tasks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"tasks": task.List()})
	})
	if cfg.Info != nil {
		s.mux.HandleFunc("/info", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(cfg.Info())
		})
	}
	s.index = []link{
		{"/healthz", "liveness: 200 while the process runs"},
		{"/readyz", "readiness: 200 while accepting clients, 503 while starting, draining or full"},
		{"/metrics", "Prometheus metrics"},
		{"/debug/pprof/", "Go profiles (goroutine, heap, profile, trace)"},
		{"/debug/tasks", "the gateway's named goroutines: name, count, oldest start (JSON)"},
	}
	if cfg.Info != nil {
		s.index = append(s.index, link{"/info", "node counters as JSON"})
	}
	if cfg.Page != nil {
		s.pageRoutes()
		s.index = append(s.index,
			link{"/admin/stats", "what the web page polls: connections, counters, admission, top channels (JSON)"},
			link{"/admin/channels", "channels with subscribers on this node, most first (JSON)"},
			link{"/debug/captures", "the watchdog's captures and their files (JSON)"})
	}
	s.index = append(s.index, link{"/index", "this list"})
	s.gate.routes(s.mux)
	// "/{$}" is the root only: every other unknown path stays 404.
	s.mux.HandleFunc("GET /{$}", s.serveRoot)
	s.mux.HandleFunc("GET /index", s.serveIndex)
	s.html = s.renderPage()
	s.srv = &http.Server{Handler: s.gate.wrap(s.mux), ReadHeaderTimeout: 10 * time.Second}
	return s
}

// serveRoot is the web page for a browser and the plain-text index for
// anything else (curl, scripts).
func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request) {
	if s.page != nil && wantsHTML(r) {
		s.servePage(w)
		return
	}
	s.serveIndex(w, r)
}

func wantsHTML(r *http.Request) bool { return strings.Contains(r.Header.Get("Accept"), "text/html") }

// serveIndex lists the endpoints: HTML for a browser, plain text otherwise.
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !wantsHTML(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var b strings.Builder
		b.WriteString("spindle admin\n\n")
		if s.page != nil {
			fmt.Fprintf(&b, "  %-15s %s\n", "/", "the admin web page (open it in a browser)")
		}
		for _, l := range s.index {
			fmt.Fprintf(&b, "  %-15s %s\n", l.Path, l.What)
		}
		_, _ = w.Write([]byte(b.String()))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>spindle admin</title><link rel=\"icon\" href=\"data:,\"></head>\n<body><h1>spindle admin</h1>\n<ul>\n")
	for _, l := range s.index {
		fmt.Fprintf(&b, "<li><a href=\"%s\">%s</a> \u2014 %s</li>\n", html.EscapeString(l.Path), html.EscapeString(l.Path), html.EscapeString(l.What))
	}
	b.WriteString("</ul>\n</body></html>\n")
	_, _ = w.Write([]byte(b.String()))
}

// Handle adds an endpoint, behind the admin token when one is set.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleFunc adds an endpoint served by f, behind the admin token when one
// is set.
func (s *Server) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	s.mux.HandleFunc(pattern, f)
}

// SetReady flips /readyz.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// SetReadyCheck makes /readyz, while ready, also answer 503 with the
// check's error, e.g. when the node is full.
func (s *Server) SetReadyCheck(check func() error) { s.check.Store(&check) }

// Start listens on addr and serves in a goroutine owned by the server.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", addr, err)
	}
	s.ln = ln
	s.tasks.Go("admin.http", func(context.Context) {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", "err", err)
		}
	})
	return nil
}

// Addr is the address the admin listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops the listener, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	s.tasks.Stop()
	if err != nil {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}

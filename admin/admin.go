// Package admin serves the operator's listener: an index at /, liveness
// and readiness probes, Prometheus metrics and pprof, on an address apart
// from clients.
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

// Server is the admin HTTP listener.
type Server struct {
	tasks *task.Group // owns the serving goroutine
	ready atomic.Bool
	check atomic.Pointer[func() error] // when set and ready, /readyz also asks it
	srv   *http.Server
	ln    net.Listener
	mux   *http.ServeMux
	log   *slog.Logger
	index []link // what GET / lists
}

// link is one endpoint of the index at /.
type link struct{ path, what string }

// New prepares the admin endpoints; info, when set, is served at /info as JSON.
func New(reg *prometheus.Registry, info func() any, log *slog.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), log: log, tasks: task.NewGroup(context.Background())}
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
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.mux.HandleFunc("GET /debug/tasks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"tasks": task.List()})
	})
	if info != nil {
		s.mux.HandleFunc("/info", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(info())
		})
	}
	s.index = []link{
		{"/healthz", "liveness: 200 while the process runs"},
		{"/readyz", "readiness: 200 while accepting clients, 503 while starting, draining or full"},
		{"/metrics", "Prometheus metrics"},
		{"/debug/pprof/", "Go profiles (goroutine, heap, profile, trace)"},
		{"/debug/tasks", "the gateway's named goroutines: name, count, oldest start (JSON)"},
	}
	if info != nil {
		s.index = append(s.index, link{"/info", "node counters as JSON"})
	}
	// "/{$}" is the root only: every other unknown path stays 404.
	s.mux.HandleFunc("GET /{$}", s.serveIndex)
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// serveIndex lists the endpoints: HTML for a browser, plain text otherwise.
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var b strings.Builder
		b.WriteString("spindle admin\n\n")
		for _, l := range s.index {
			fmt.Fprintf(&b, "  %-15s %s\n", l.path, l.what)
		}
		_, _ = w.Write([]byte(b.String()))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>spindle admin</title></head>\n<body><h1>spindle admin</h1>\n<ul>\n")
	for _, l := range s.index {
		fmt.Fprintf(&b, "<li><a href=\"%s\">%s</a> \u2014 %s</li>\n", html.EscapeString(l.path), html.EscapeString(l.path), html.EscapeString(l.what))
	}
	b.WriteString("</ul>\n</body></html>\n")
	_, _ = w.Write([]byte(b.String()))
}

// Handle adds an endpoint, e.g. the admin web page.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleFunc adds an endpoint served by f.
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

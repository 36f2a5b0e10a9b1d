package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spindlehq/spindle/guard/task"
)

// benchHub is a server the benchmarks compare Spindle against
// (baseline-hub, floor-hub): an HTTP handler with a Shutdown of its own.
type benchHub interface {
	http.Handler
	Shutdown(ctx context.Context) error
}

// hubLogger logs a hub's records to stderr: info, or debug with -v.
func hubLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// listenHub listens on addr for the command name; on failure it says so
// on stderr.
func listenHub(name, addr string, stderr io.Writer) (net.Listener, bool) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "spindle %s: %v\n", name, fmt.Errorf("listen on %s: %w", addr, err))
		return nil, false
	}
	return ln, true
}

// serveHub serves hub on ln until ctx ends or serving fails, then stops it
// within grace: the HTTP server first, then the hub, or with hubFirst the
// other way round (a hub whose handlers block until it closes its
// connections). It returns the exit status.
func serveHub(ctx context.Context, ln net.Listener, hub benchHub, hubFirst bool, grace time.Duration, log *slog.Logger) int {
	hs := &http.Server{Handler: hub, ReadHeaderTimeout: 10 * time.Second}
	tasks := task.NewGroup(context.Background())
	defer tasks.Stop()
	served := make(chan error, 1)
	tasks.Go("hub.http", func(context.Context) { served <- hs.Serve(ln) })

	code := 0
	select {
	case <-ctx.Done():
	case err := <-served:
		log.Error("http server stopped", "err", err)
		code = 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	stops := []struct {
		what string
		stop func(context.Context) error
	}{{"http shutdown", hs.Shutdown}, {"hub shutdown", hub.Shutdown}}
	if hubFirst {
		stops[0], stops[1] = stops[1], stops[0]
	}
	for _, s := range stops {
		if err := s.stop(sctx); err != nil {
			log.Warn(s.what, "err", err)
		}
	}
	if code == 0 {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
			code = 1
		}
	}
	log.Info("stopped")
	return code
}

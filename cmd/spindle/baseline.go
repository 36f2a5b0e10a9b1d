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

	"github.com/spindlehq/spindle/bench/baseline"
)

// runBaseline serves the gorilla/websocket benchmark baseline until ctx ends.
func runBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("baseline-hub", "[flags]", "Serves the benchmark baseline: a gorilla/websocket hub with a goroutine pair per connection.")
	listen := fs.String("listen", "127.0.0.1:8100", "client WebSocket and server API address")
	apiKey := fs.String("api-key", "", "X-API-Key for the server API (empty: no check)")
	secret := fs.String("token-hmac-secret", "", "HS256 secret for connection JWTs (empty: any token is accepted)")
	ping := fs.Duration("ping-interval", 25*time.Second, "server ping period")
	maxMsg := fs.Int64("max-message-size", 64<<10, "largest client message in bytes")
	grace := fs.Duration("shutdown-grace-period", 10*time.Second, "time to flush clients on shutdown before cutting them off")
	maxConns := fs.Int("max-connections", 0, "refuse upgrades with 503 while this many connections are open (0: no limit)")
	verbose := fs.Bool("v", false, "log client errors")
	pos, rc, ok := parseFlags(fs, args, false, stdout, stderr)
	if !ok {
		return rc
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "spindle baseline-hub: unexpected argument %q\n", pos[0])
		return 2
	}
	if *ping <= 0 || *maxMsg < 128 || *grace < 0 {
		fmt.Fprintln(stderr, "spindle baseline-hub: --ping-interval must be positive, --max-message-size at least 128, --shutdown-grace-period not negative")
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "spindle baseline-hub:", fmt.Errorf("listen on %s: %w", *listen, err))
		return 1
	}
	hub := baseline.New(baseline.Config{
		APIKey:          *apiKey,
		TokenHMACSecret: *secret,
		PingInterval:    *ping,
		MaxMessageSize:  *maxMsg,
		MaxConnections:  *maxConns,
		Logger:          log,
	})
	hs := &http.Server{Handler: hub, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	addr := ln.Addr().String()
	fmt.Fprintln(stdout, "spindle baseline-hub serving (gorilla/websocket, goroutine pair per connection)")
	fmt.Fprintf(stdout, "  clients: ws://%s%s\n", addr, baseline.WebSocketPath)
	fmt.Fprintf(stdout, "  api:     http://%s/api/{publish,broadcast}  (header X-API-Key)\n", addr)

	code := 0
	var serveErr error
	stopped := false
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		stopped = true
		log.Error("http server stopped", "err", serveErr)
		code = 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	// Stop accepting first; Shutdown does not wait for hijacked WebSockets.
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := hub.Shutdown(sctx); err != nil {
		log.Warn("hub shutdown", "err", err)
	}
	if !stopped {
		if serveErr = <-served; !errors.Is(serveErr, http.ErrServerClosed) {
			log.Error("http server", "err", serveErr)
			code = 1
		}
	}
	log.Info("stopped")
	return code
}

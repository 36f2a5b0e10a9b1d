package main

import (
	"context"
	"fmt"
	"io"
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
	log := hubLogger(stderr, *verbose)
	ln, ok := listenHub("baseline-hub", *listen, stderr)
	if !ok {
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
	addr := ln.Addr().String()
	fmt.Fprintln(stdout, "spindle baseline-hub serving (gorilla/websocket, goroutine pair per connection)")
	fmt.Fprintf(stdout, "  clients: ws://%s%s\n", addr, baseline.WebSocketPath)
	fmt.Fprintf(stdout, "  api:     http://%s/api/{publish,broadcast}  (header X-API-Key)\n", addr)
	// Stop accepting first; Shutdown does not wait for hijacked WebSockets.
	return serveHub(ctx, ln, hub, false, *grace, log)
}

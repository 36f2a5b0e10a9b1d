package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spindlehq/spindle/bench/floor"
)

// runFloor serves the benchmark floor until ctx ends.
func runFloor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("floor-hub", "[flags]", "Serves the benchmark floor: fixed connect and subscribe replies, each publication framed once and\n"+
		"written to every subscriber in a tight loop over as many goroutines as cores; no queues, no safety.")
	listen := fs.String("listen", "127.0.0.1:8200", "client WebSocket and server API address")
	apiKey := fs.String("api-key", "", "X-API-Key for the server API (empty: no check)")
	writers := fs.Int("writers", 0, "goroutines writing one publication (0: GOMAXPROCS)")
	maxMsg := fs.Int("max-message-size", 64<<10, "largest client message in bytes")
	grace := fs.Duration("shutdown-grace-period", 5*time.Second, "time for close frames and publications being written on shutdown")
	verbose := fs.Bool("v", false, "log connection errors")
	pos, rc, ok := parseFlags(fs, args, false, stdout, stderr)
	if !ok {
		return rc
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "spindle floor-hub: unexpected argument %q\n", pos[0])
		return 2
	}
	if *writers < 0 || *maxMsg < 128 || *grace < 0 {
		fmt.Fprintln(stderr, "spindle floor-hub: --writers must not be negative, --max-message-size at least 128, --shutdown-grace-period not negative")
		return 2
	}
	log := hubLogger(stderr, *verbose)
	ln, ok := listenHub("floor-hub", *listen, stderr)
	if !ok {
		return 1
	}
	fl := floor.New(floor.Config{APIKey: *apiKey, Writers: *writers, MaxMessageSize: *maxMsg, Logger: log})
	addr := ln.Addr().String()
	fmt.Fprintln(stdout, "spindle floor-hub serving (the benchmark floor: one write per delivery, no queues)")
	fmt.Fprintf(stdout, "  clients: ws://%s%s\n", addr, floor.WebSocketPath)
	fmt.Fprintf(stdout, "  api:     http://%s/api/publish  (header X-API-Key)\n", addr)
	// The floor first: closing its connections ends any write blocked on a
	// subscriber, so the HTTP server's publish handlers can return.
	return serveHub(ctx, ln, fl, true, *grace, log)
}

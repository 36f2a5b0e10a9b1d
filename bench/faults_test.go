package bench_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/bench"
	"github.com/spindlehq/spindle/proxy"
	"github.com/spindlehq/spindle/server"
)

// startProxy puts a fault proxy in front of the gateway's client port.
func startProxy(t *testing.T, srv *server.Server, f proxy.Faults) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New("127.0.0.1:0", srv.Addr(), f)
	if err != nil {
		t.Fatal(err)
	}
	p.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); p.Close(); <-done })
	return p
}

// Latency added by the proxy shows in connect and publish→deliver latency,
// and nothing is lost.
func TestBenchThroughLatency(t *testing.T) {
	srv := startServer(t, nil)
	p := startProxy(t, srv, proxy.Faults{Latency: 40 * time.Millisecond})
	sc := scenario(t, srv, `
stages:
  - duration: 500ms
    connections: {to: 20}
  - duration: 1500ms
    connections: {to: 20}
    publish_rate: {to: 20}
drain: 500ms
`)
	sc.URLs = []string{strings.Replace(srv.WebSocketURL(), srv.Addr(), p.Addr().String(), 1)}
	res, err := bench.Run(context.Background(), sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections.Established != 20 || res.Missing != 0 || res.Delivered != res.ExpectedDeliveries || res.Delivered == 0 {
		t.Fatalf("connections %+v, delivered %d of %d", res.Connections, res.Delivered, res.ExpectedDeliveries)
	}
	// One way server→client for deliveries; connect is two round trips
	// (upgrade, connect command) each 2×40 ms.
	if res.Latency.P50 < 40 || res.Connect.P50 < 160 {
		t.Errorf("latency p50 %.1f ms (want ≥ 40), connect p50 %.1f ms (want ≥ 160)", res.Latency.P50, res.Connect.P50)
	}
}

// Connections the proxy resets are counted as disconnects, and the bench
// keeps the connection target by opening new ones.
func TestBenchSeesResetsAsDisconnects(t *testing.T) {
	srv := startServer(t, nil)
	p := startProxy(t, srv, proxy.Faults{ResetAfter: 700 * time.Millisecond})
	sc := scenario(t, srv, `
stages:
  - duration: 2s
    connections: {to: 10}
drain: 100ms
`)
	sc.URLs = []string{strings.Replace(srv.WebSocketURL(), srv.Addr(), p.Addr().String(), 1)}
	res, err := bench.Run(context.Background(), sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var disconnects uint64
	for _, n := range res.Disconnects {
		disconnects += n
	}
	if disconnects < 10 || res.Connections.Established < 20 {
		t.Errorf("disconnects %v, established %d: want every connection reset at least once and replaced", res.Disconnects, res.Connections.Established)
	}
	if st := p.Stats(); st.Reset < 10 {
		t.Errorf("proxy reset %d connections", st.Reset)
	}
}

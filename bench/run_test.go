package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/bench"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/guard/signals"
	"github.com/spindlehq/spindle/server"
)

func startServer(t *testing.T, mod func(*config.Config)) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKey, cfg.TokenHMACSecret = "key", "secret"
	if mod != nil {
		mod(&cfg)
	}
	srv, err := server.Run(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

func scenario(t *testing.T, srv *server.Server, yaml string) *bench.Scenario {
	t.Helper()
	sc, err := bench.ParseScenario([]byte(fmt.Sprintf(`
urls: [%s]
api: %s
api_key: key
hmac_secret: secret
`, srv.WebSocketURL(), srv.APIURL()) + yaml))
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// Every publication reaches every subscriber once and in order, through the
// server API and through clients, while connections ramp up and spread over
// two workers and two source addresses.
func TestRunDeliversEverythingOnce(t *testing.T) {
	for _, via := range []string{"api", "client"} {
		t.Run(via, func(t *testing.T) {
			srv := startServer(t, func(c *config.Config) { c.Channel.AllowPublishForSubscriber = true })
			sc := scenario(t, srv, `
channels: 3
publish_via: `+via+`
workers: 2
source_addresses: [127.0.0.1, 127.0.0.2]
connect_rate: 200
stages:
  - duration: 1s
    connections: {shape: ramp, from: 0, to: 60}
    publish_rate: {shape: flat, to: 30}
  - duration: 2s
    connections: {shape: flat, to: 60}
    publish_rate: {shape: ramp, from: 30, to: 90}
drain: 1s
`)
			res, err := bench.Run(context.Background(), sc, bench.Options{Progress: os.Stderr, ServerPID: os.Getpid()})
			if err != nil {
				t.Fatal(err)
			}
			res.WriteText(os.Stderr)
			if res.Connections.Established != 60 || res.Connections.Failed != 0 {
				t.Errorf("connections %+v, want 60 established", res.Connections)
			}
			if res.Published < 100 || res.PublishFailed != 0 {
				t.Errorf("published %d (failed %d), want ≥ 100", res.Published, res.PublishFailed)
			}
			if res.ExpectedDeliveries == 0 || res.Delivered != res.ExpectedDeliveries || res.Missing != 0 || res.Duplicates != 0 || res.OutOfOrder != 0 {
				t.Errorf("delivered %d of %d expected, missing %d, dup %d, ooo %d", res.Delivered, res.ExpectedDeliveries, res.Missing, res.Duplicates, res.OutOfOrder)
			}
			// Subscribers that were there from the start got a third of everything.
			if res.ExpectedDeliveries < res.Published*60/3/2 {
				t.Errorf("expected deliveries %d implausibly low for %d publications", res.ExpectedDeliveries, res.Published)
			}
			if res.Latency.Count != res.Delivered || res.Latency.P99 <= 0 || res.Connect.Count != 60 {
				t.Errorf("histograms: latency %+v connect %+v", res.Latency, res.Connect)
			}
			if len(res.Timeline) < 3 || res.Server == nil || res.Server.RSSAtPeakBytes == 0 {
				t.Errorf("timeline %d seconds, server %+v", len(res.Timeline), res.Server)
			}
			if len(res.Errors) != 0 || len(res.Disconnects) != 0 {
				t.Errorf("errors %v disconnects %v", res.Errors, res.Disconnects)
			}
		})
	}
}

// A server that refuses publications and tokens shows it as errors by kind,
// not as missing deliveries.
func TestRunCountsErrors(t *testing.T) {
	srv := startServer(t, nil) // clients may not publish by default
	sc := scenario(t, srv, `
publish_via: client
stages:
  - duration: 1s
    connections: {to: 5}
    publish_rate: {to: 20}
drain: 200ms
`)
	res, err := bench.Run(context.Background(), sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 0 || res.PublishFailed < 10 || res.Errors["publish_error_103"] != res.PublishFailed {
		t.Errorf("published %d, failed %d, errors %v; want every publish refused with 103", res.Published, res.PublishFailed, res.Errors)
	}
	if res.Missing != 0 || res.ExpectedDeliveries != 0 {
		t.Errorf("refused publications counted as missing: %d of %d", res.Missing, res.ExpectedDeliveries)
	}

	sc = scenario(t, srv, `
stages:
  - duration: 500ms
    connections: {to: 5}
drain: 100ms
`)
	sc.HMACSecret = "wrong"
	res, err = bench.Run(context.Background(), sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections.Established != 0 || res.Connections.Failed < 5 || res.Errors["connect_disconnect_3500"] != res.Connections.Failed {
		t.Errorf("connections %+v errors %v; want every connect refused with 3500", res.Connections, res.Errors)
	}
}

func TestScenarioValidation(t *testing.T) {
	for _, bad := range []string{
		"stages: []",
		"urls: [ws://x]\nstages: [{duration: 1s, connections: {shape: wobble}}]",
		"urls: [ws://x]\nworkers: 1\nstages: [{duration: 1s, connections: {to: 50000}}]",
		"urls: [ws://x]\nsource_addresses: [10.0.0.1]\nstages: [{duration: 1s}]",
		"urls: [ws://x]\nmessage_size: 10\nstages: [{duration: 1s}]",
		"urls: [ws://x]\nstages: [{duration: 1s, publish_rate: {to: 5}}]",
		"urls: [ws://x]\nbogus: 1\nstages: [{duration: 1s}]",
	} {
		if _, err := bench.ParseScenario([]byte(bad)); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
	sc, err := bench.ParseScenario([]byte("urls: [ws://x]\nstages: [{duration: 10s, connections: {shape: ramp, from: 0, to: 100}}]"))
	if err != nil {
		t.Fatal(err)
	}
	sc.Truncate(5 * time.Second)
	if sc.Duration() != 5*time.Second || sc.MaxConnections() != 50 {
		t.Errorf("truncated ramp: %v, max %v; want 5s and 50", sc.Duration(), sc.MaxConnections())
	}
}

// While a run goes, its Prometheus endpoint shows the connections it holds.
func TestRunServesMetrics(t *testing.T) {
	srv := startServer(t, nil)
	sc := scenario(t, srv, `
stages:
  - duration: 2s
    connections: {to: 7}
drain: 100ms
`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	done := make(chan error, 1)
	go func() {
		_, err := bench.Run(context.Background(), sc, bench.Options{MetricsListen: addr})
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `bench_connections{worker="0"} 7`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("bench_connections never reached 7 on the metrics endpoint")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// An interrupt stops publishing early, and the run still reports what it
// measured so far, every publication accounted for.
func TestRunInterrupted(t *testing.T) {
	srv := startServer(t, nil)
	sc := scenario(t, srv, `
stages:
  - duration: 30s
    connections: {to: 10}
    publish_rate: {to: 50}
drain: 300ms
`)
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := bench.Run(ctx, sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("interrupted run took %v", took)
	}
	if !res.Interrupted || res.Published == 0 || res.PublishFailed != 0 {
		t.Errorf("interrupted %v, published %d, failed %d", res.Interrupted, res.Published, res.PublishFailed)
	}
	if res.Delivered == 0 || res.Delivered != res.ExpectedDeliveries || res.Missing != 0 {
		t.Errorf("delivered %d of %d, missing %d", res.Delivered, res.ExpectedDeliveries, res.Missing)
	}
}

// The headline rates are over the publishing window (first intended send to
// the end of the last one's slot, less a pause at rate 0), not stretched by
// the pause or the drain, which is reported on its own: 20 subscribers × 50
// publications/s is 1,000/s.
func TestRunRatesOverPublishingWindow(t *testing.T) {
	srv := startServer(t, nil)
	sc := scenario(t, srv, `
stages:
  - duration: 1s
    connections: {to: 20}
  - duration: 1500ms
    connections: {to: 20}
    publish_rate: {to: 50}
  - duration: 1s
    connections: {to: 20}
  - duration: 1500ms
    connections: {to: 20}
    publish_rate: {to: 50}
drain: 1s
`)
	res, err := bench.Run(context.Background(), sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 150 || res.Delivered != 3000 || res.Missing != 0 {
		t.Fatalf("published %d, delivered %d (missing %d); want 150 and 3000", res.Published, res.Delivered, res.Missing)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	num := func(k string) float64 { f, _ := m[k].(float64); return f }
	if w := num("publishing_window_s"); w < 2.99 || w > 3.01 {
		t.Errorf("publishing_window_s %v, want 3", m["publishing_window_s"])
	}
	if d := num("drain_s"); d < 1 || d > 10 {
		t.Errorf("drain_s %v, want at least the scenario's 1s", m["drain_s"])
	}
	if r := num("deliveries_per_s_over_publishing_window"); r < 990 || r > 1010 {
		t.Errorf("deliveries_per_s_over_publishing_window %v, want 1000", m["deliveries_per_s_over_publishing_window"])
	}
	if r := num("published_per_s_over_publishing_window"); r < 49.5 || r > 50.5 {
		t.Errorf("published_per_s_over_publishing_window %v, want 50", m["published_per_s_over_publishing_window"])
	}
	var text strings.Builder
	res.WriteText(&text)
	if !strings.Contains(text.String(), "1,000/s over the 3.0 s publishing window") {
		t.Errorf("text headline:\n%s", text.String())
	}
}

// Against a node that sheds load, refused publishes are counted by status
// with their Retry-After, their reply times apart from accepted ones, and
// are not expected by the subscribers; the server's goroutines are sampled.
func TestRunCountsShedPublishes(t *testing.T) {
	srv := startServer(t, nil)
	sc := scenario(t, srv, `
channels: 4
publish_senders: 4
publish_timeout: 2s
stages:
  - duration: 1s
    connections: {to: 8}
  - duration: 2s
    connections: {to: 8}
    publish_rate: {to: 40}
drain: 500ms
`)
	// Once ten publications went through, shed until the run ends.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		shedding := false
		for {
			if !shedding && srv.Node.Metrics()["spindle_publications_total"] >= 10 {
				shedding = true
			}
			if shedding {
				srv.APIAdmission().Observe(signals.Reading{At: time.Now(), SchedP99: time.Second, Fanouts: 1})
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	res, err := bench.Run(context.Background(), sc, bench.Options{ServerMetrics: "http://" + srv.AdminAddr() + "/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	refused := res.Errors["publish_http_503_retry_after"]
	if refused == 0 || res.PublishFailed != refused || res.PublishReply.Refused.Count != refused {
		t.Fatalf("refused %d, failed %d, refused reply times %d; errors %v", refused, res.PublishFailed, res.PublishReply.Refused.Count, res.Errors)
	}
	if res.Published == 0 || res.PublishReply.OK.Count != res.Published {
		t.Fatalf("published %d, accepted reply times %d", res.Published, res.PublishReply.OK.Count)
	}
	if res.Missing != 0 || res.Delivered != res.ExpectedDeliveries {
		t.Fatalf("refused publishes counted as missing: delivered %d of %d expected, missing %d", res.Delivered, res.ExpectedDeliveries, res.Missing)
	}
	if res.Server == nil || res.Server.GoroutinesMax == 0 {
		t.Fatalf("server goroutines not sampled: %+v", res.Server)
	}
}

// A publisher that cannot keep up does not pile up a backlog: what its
// sender reaches a whole publish timeout late is skipped and counted, and
// not expected by the subscribers.
func TestRunSkipsLatePublishes(t *testing.T) {
	srv := startServer(t, nil)
	sc := scenario(t, srv, `
channels: 1
publish_timeout: 1ms
stages:
  - duration: 1s
    connections: {to: 2}
  - duration: 1s
    connections: {to: 2}
    publish_rate: {to: 20000}
drain: 500ms
`)
	res, err := bench.Run(context.Background(), sc, bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	skipped := res.Errors["publish_skipped_late"]
	// One sender doing HTTP round trips on loopback cannot publish 20,000/s.
	if skipped == 0 || res.Published+res.PublishFailed != 20000 {
		t.Fatalf("skipped %d, published %d, failed %d of 20,000; errors %v", skipped, res.Published, res.PublishFailed, res.Errors)
	}
	// A publish that timed out may still have been delivered: at least
	// every accepted one arrives, twice.
	if res.Missing != 0 || res.ExpectedDeliveries != 2*res.Published || res.Delivered < res.ExpectedDeliveries {
		t.Fatalf("delivered %d (expected %d) for %d published to 2 subscribers, missing %d, dups %d; errors %v", res.Delivered, res.ExpectedDeliveries, res.Published, res.Missing, res.Duplicates, res.Errors)
	}
}

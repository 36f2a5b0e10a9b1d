package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime/debug"
	"testing"
	"time"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway"
	"github.com/spindlehq/spindle/guard/admission"
	"github.com/spindlehq/spindle/guard/signals"
)

// Shedding refuses new sessions and API calls with 503 and Retry-After and
// turns readiness off, while an established session keeps receiving; after
// calm it admits again. Scheduler latency that sheds new sessions (a
// connection storm) still lets API calls through: they feed the
// established subscribers; only far higher latency sheds them too.
func TestAdmissionSheds(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, nil)
	c.connect(token(t, "1", time.Hour))
	c.cmd("subscribe", map[string]any{"channel": "news"})

	now := time.Now()
	storm := signals.Reading{At: now, SchedP99: 300 * time.Millisecond, Fanouts: 1}
	srv.Admission().Observe(storm)
	srv.APIAdmission().Observe(storm)
	if _, resp, err := websocketDial(srv, nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade while shedding: %v %v", err, resp)
	}
	if code, out := api(t, srv, "key", "info", map[string]any{}); code != 200 {
		t.Fatalf("API call while only sessions are shed: %d %v", code, out)
	}
	srv.APIAdmission().Observe(signals.Reading{At: now, SchedP99: time.Second, Fanouts: 1})
	code, _ := api(t, srv, "key", "info", map[string]any{})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("API call while shedding: %d", code)
	}
	if st := adminStatus(t, srv, "/readyz"); st != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d while shedding", st)
	}
	if _, err := srv.Node.Publish(context.Background(), "news", json.RawMessage(`{"still":true}`), gateway.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, ok := c.nextPush(3 * time.Second); !ok || p.Pub == nil {
		t.Fatal("the established session stopped receiving while shedding")
	}
	for i := 1; i <= 100; i++ { // calm: past the 2 s of hysteresis, then back to full rate
		calm := signals.Reading{At: now.Add(time.Duration(i) * 250 * time.Millisecond)}
		srv.Admission().Observe(calm)
		srv.APIAdmission().Observe(calm)
	}
	if st, _ := srv.Admission().State(); st != admission.Calm {
		t.Fatalf("state %v after calm", st)
	}
	dial(t, srv, nil).connect(token(t, "2", time.Hour))
	if code, _ := api(t, srv, "key", "info", map[string]any{}); code != 200 {
		t.Fatalf("API after recovery: %d", code)
	}
	if v := metricValue(t, srv, "spindle_admission_shed_total"); v < 2 {
		t.Fatalf("shed counted %v", v)
	}
}

// memory_limit becomes the Go memory limit, which the heap signal of
// admission control is measured against.
func TestMemoryLimitFromConfig(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	srv := startServer(t, func(c *config.Config) { c.MemoryLimit = 3 << 30 })
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Fatalf("Go memory limit %d, want 3 GiB", got)
	}
	if got := metricValue(t, srv, "go_gc_gomemlimit_bytes"); got != 3<<30 {
		t.Fatalf("go_gc_gomemlimit_bytes = %v, want 3 GiB", got)
	}
}

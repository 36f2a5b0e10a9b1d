package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/guard/admission"
	"github.com/spindlehq/spindle/guard/signals"
	"github.com/spindlehq/spindle/server"
)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title      string
	UID        string
	Panels     []dashPanel
	Templating struct {
		List []struct {
			Name       string
			Type       string
			Definition string
		}
	}
}

type dashPanel struct {
	ID      int
	Type    string
	Title   string
	Targets []struct {
		RefID string
		Expr  string
	}
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("grafana/spindle.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/spindle.json: %v", err)
	}
	return d
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
)

// promqlMetrics returns the metric names a PromQL expression selects: the
// identifiers that are neither functions, keywords, label names (inside
// braces or grouping clauses) nor durations.
func promqlMetrics(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, " ")
	e = promqlGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, m := range promqlIdent.FindAllStringIndex(e, -1) {
		name := e[m[0]:m[1]]
		if m[0] > 0 && strings.ContainsRune("0123456789.$", rune(e[m[0]-1])) {
			continue // part of a number (1e18) or a variable
		}
		if strings.HasPrefix(strings.TrimLeft(e[m[1]:], " \t\n"), "(") || slices.Contains(promqlKeywords, strings.ToLower(name)) {
			continue // a function, an aggregation or a keyword
		}
		names = append(names, name)
	}
	return names
}

// labelValuesMetric is the metric of a label_values(metric, label) query.
var labelValuesMetric = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^}]*\})?\s*,`)

// queriedMetrics maps each metric name the dashboard, the alert rules and
// the prometheus-adapter rule query to where.
func queriedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	where := map[string][]string{}
	add := func(from, expr string) {
		names := promqlMetrics(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", from, expr)
		}
		for _, n := range names {
			where[n] = append(where[n], from)
		}
	}
	d := readDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("dashboard panel %q %s", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesMetric.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("dashboard variable %s: %q is not label_values(metric, label)", v.Name, v.Definition)
			continue
		}
		where[m[1]] = append(where[m[1]], "dashboard variable "+v.Name)
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			add("alert "+r.Alert, r.Expr)
		}
	}
	where[adapterMetric(t)] = append(where[adapterMetric(t)], "prometheus-adapter rule")
	// up is Prometheus' own series about each scrape.
	delete(where, "up")
	return where
}

// The dashboard is well formed — unique panel ids, every panel a query on
// the data source variable — and covers what an operator looks at first.
func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q: both needed for provisioning", d.Title, d.UID)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	queried := queriedMetrics(t)
	for _, name := range []string{
		"spindle_connections", "spindle_subscriptions", "spindle_publications_total", "spindle_deliveries_total",
		"spindle_slow_consumer_disconnects_total", "spindle_connections_refused_total",
		"spindle_admission_state", "spindle_admission_limit", "spindle_admission_shed_total",
		"go_goroutines", "go_memstats_heap_inuse_bytes", "spindle_watchdog_captures_total",
		"spindle_command_duration_seconds_bucket", "spindle_broker_up",
	} {
		if !slices.ContainsFunc(queried[name], func(w string) bool { return strings.HasPrefix(w, "dashboard") }) {
			t.Errorf("the dashboard does not chart %s", name)
		}
	}
}

// scrape reads and parses the admin listener's /metrics.
func scrape(t *testing.T, srv *server.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse as the Prometheus text format: %v", err)
	}
	return mfs
}

// exposed reports whether a queried name is a series of the scrape: a
// family, or the _bucket, _sum or _count series of a histogram or summary.
func exposed(mfs map[string]*dto.MetricFamily, name string) bool {
	if mf, ok := mfs[name]; ok && len(mf.GetMetric()) > 0 {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if mf, ok := mfs[base]; ok && len(mf.GetMetric()) > 0 {
			t := mf.GetType()
			if t == dto.MetricType_HISTOGRAM || (t == dto.MetricType_SUMMARY && suffix != "_bucket") {
				return true
			}
		}
	}
	return false
}

// Every metric the dashboard, the alert rules and the adapter rule query
// is on a live gateway's /metrics, once the gateway has done what the
// labelled series count: clients connected, subscribed, refused and
// disconnected, a publication delivered, a command refused, admission
// shed, the watchdog captured. The test logs which series only appear
// after such an event.
func TestQueriedMetricsExist(t *testing.T) {
	queried := queriedMetrics(t)
	srv := startServer(t)
	before := scrape(t, srv)

	produceEvents(t, srv)

	after := scrape(t, srv)
	var missing, late []string
	for name, where := range queried {
		switch {
		case !exposed(after, name):
			missing = append(missing, fmt.Sprintf("%s (in %s)", name, strings.Join(where, "; ")))
		case !exposed(before, name):
			late = append(late, name)
		}
	}
	sort.Strings(missing)
	sort.Strings(late)
	if len(missing) > 0 {
		t.Errorf("queried but not on /metrics:\n  %s", strings.Join(missing, "\n  "))
	}
	names := slices.Sorted(maps.Keys(queried))
	t.Logf("queried: %s", strings.Join(names, ", "))
	t.Logf("of those, on /metrics only after an event: %s", strings.Join(late, ", "))
}

// startServer runs a real gateway on loopback ports, stopped at cleanup.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.APIKey = "key"
	cfg.TokenHMACSecret = secret
	cfg.CaptureDir = t.TempDir()
	cfg.ShutdownGracePeriod = config.Duration(5 * time.Second)
	cfg.ShutdownReconnect = config.Duration(200 * time.Millisecond)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.Run(cfg, server.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

// produceEvents makes the gateway count one of everything the labelled
// series count.
func produceEvents(t *testing.T, srv *server.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: "42"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	c, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: tok,
		OnPublication: func(string, *protocol.Publication) {
			select {
			case got <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "news", client.SubscribeOptions{Recover: true}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	// A publication through the server API, delivered.
	if code, body := apiCall(t, srv, "publish", `{"channel":"news","data":{"n":1}}`); code != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		t.Fatalf("API publish: HTTP %d %s", code, body)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("the subscriber did not receive the publication")
	}
	// A command answered with an error: clients may not publish to plain channels.
	if err := c.Publish(ctx, "news", []byte(`{}`)); err == nil {
		t.Fatal("a client publish to a plain channel succeeded; the test counts on its error")
	}
	// A connect with a bad token.
	if bad, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: "not-a-token"}); err == nil {
		bad.Close()
		t.Fatal("connect with a bad token succeeded")
	}
	// An upgrade from a foreign Origin: refused with 403.
	if conn, resp, err := websocket.DefaultDialer.Dial(srv.WebSocketURL(), http.Header{"Origin": {"https://elsewhere.example"}}); err == nil {
		conn.Close()
		t.Fatal("an upgrade from a foreign origin succeeded")
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upgrade from a foreign origin: %v", err)
	}
	// A server-side disconnect.
	if code, body := apiCall(t, srv, "disconnect", `{"user":"42"}`); code != http.StatusOK {
		t.Fatalf("API disconnect: HTTP %d %s", code, body)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the API disconnect did not end the client's session")
	}
	// Shedding refuses a new session; then calm again, past the hysteresis.
	now := time.Now()
	srv.Admission().Observe(signals.Reading{At: now, SchedP99: time.Second, Fanouts: 1})
	if shed, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: tok}); err == nil {
		shed.Close()
		t.Fatal("a session was admitted while shedding")
	}
	for i := 1; i <= 100; i++ {
		srv.Admission().Observe(signals.Reading{At: now.Add(time.Duration(i) * 250 * time.Millisecond)})
	}
	if st, _ := srv.Admission().State(); st != admission.Calm {
		t.Fatalf("admission %v after calm", st)
	}
	// A capture, as POST /debug/capture makes.
	if _, err := srv.Capture("api: deploy test"); err != nil {
		t.Fatalf("capture: %v", err)
	}
}

// apiCall posts one server API method with the test's key.
func apiCall(t *testing.T, srv *server.Server, method, params string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.APIURL()+"/"+method, strings.NewReader(params))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", "key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b.Bytes()
}

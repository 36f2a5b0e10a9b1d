package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

// docMetricNames are the metric names docs/operations.md mentions.
func docMetricNames(t *testing.T, doc string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`\b(?:spindle|go|process)_[a-z_]*[a-z]\b`).FindAllString(doc, -1) {
		seen[m] = true
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) < 10 {
		t.Fatalf("docs/operations.md names only %d metrics: %v", len(names), names)
	}
	return names
}

func readOperationsDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every metric docs/operations.md names is served by a running gateway.
//
// A labelled vector has no series in /metrics until it has a sample, so
// the test first makes traffic (a connect, a subscribe, a publication, a
// refused upgrade, a bad token) and then accepts a name when the live
// /metrics of the admin listener has its # HELP line, or, for a vector that
// still has no sample, when the same server's registry describes it: a name
// the code does not register fails either way.
func TestOperationsDocMetricsExist(t *testing.T) {
	doc := readOperationsDoc(t)
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKey, cfg.TokenHMACSecret = "key", "secret"
	cfg.MaxConnections = 1
	srv, err := server.Run(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: "not-a-token"}); err == nil {
		t.Error("a bad token connected")
	}
	tok, _ := auth.MintConnect("secret", auth.ConnectClaims{UserID: "1"}, time.Minute)
	var c *client.Client
	for c == nil { // the refused connection may still hold its place a moment
		if c, err = client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: tok}); err != nil {
			if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.APIURL()+"/publish", strings.NewReader(`{"channel":"news","data":{"a":1}}`))
	req.Header.Set("X-API-Key", "key")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("publish: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: tok}); err == nil {
		t.Error("a connection past max_connections 1 was accepted")
	}

	resp, err := http.Get("http://" + srv.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	live := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# HELP (\S+) `).FindAllStringSubmatch(string(body), -1) {
		live[m[1]] = true
	}
	described := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	go func() { srv.Registry.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			described[m[1]] = true
		}
	}
	for _, name := range docMetricNames(t, doc) {
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b := strings.TrimSuffix(name, suf); b != name && described[b] {
				base = b
			}
		}
		switch {
		case live[base]:
		case described[base]:
			t.Logf("%s: registered, no sample yet", name)
		default:
			t.Errorf("docs/operations.md names %s, which the gateway does not serve", name)
		}
	}
}

// Every reason docs/operations.md gives for spindle_connections_refused_total
// is one the code counts (a WithLabelValues literal of the refused vector).
func TestOperationsDocRefusedReasons(t *testing.T) {
	doc := readOperationsDoc(t)
	files, err := filepath.Glob("../../gateway/*.go")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	lit := regexp.MustCompile(`\brefused\.WithLabelValues\("([^"]+)"\)`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(src), -1) {
			used[m[1]] = true
		}
	}
	if len(used) == 0 {
		t.Fatal("found no refused.WithLabelValues literals in gateway/")
	}
	mentioned := regexp.MustCompile(`spindle_connections_refused_total\{reason="([^"]+)"\}`).FindAllStringSubmatch(doc, -1)
	if len(mentioned) == 0 {
		t.Fatal(`docs/operations.md gives no spindle_connections_refused_total{reason="…"}`)
	}
	documented := map[string]bool{}
	for _, m := range mentioned {
		documented[m[1]] = true
		if !used[m[1]] {
			t.Errorf("docs/operations.md mentions reason=%q; the code counts %v", m[1], used)
		}
	}
	// and the other way round, so that a new reason gets documented
	for r := range used {
		if !documented[r] {
			t.Errorf(`the code counts spindle_connections_refused_total{reason=%q}, which docs/operations.md does not mention`, r)
		}
	}
}

// Every key flags and SPINDLE_* variables take is in the configuration
// table of docs/operations.md.
func TestOperationsDocListsEverySetting(t *testing.T) {
	doc := readOperationsDoc(t)
	for _, s := range config.Settings() {
		if !regexp.MustCompile("(?m)^\\| [^|]*`" + regexp.QuoteMeta(s.Key) + "`").MatchString(doc) {
			t.Errorf("docs/operations.md has no table row for %s", s.Key)
		}
	}
}

package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func startAdmin(t *testing.T, info func() any) string {
	t.Helper()
	s := New(Config{Registry: prometheus.NewRegistry(), Info: info, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return "http://" + s.Addr().String()
}

func get(t *testing.T, url, accept string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

var endpoints = []string{"/healthz", "/readyz", "/metrics", "/debug/pprof/", "/info", "/index"}

// Without a page, the root of the admin listener (the URL serve prints) is
// an index of its endpoints: HTML for browsers, plain text otherwise, and
// the HTML index is also at /index; each link answers.
func TestIndex(t *testing.T) {
	base := startAdmin(t, func() any { return map[string]int{"n": 1} })

	for _, p := range []string{"/", "/index"} {
		code, ctype, body := get(t, base+p, "text/html,application/xhtml+xml,*/*;q=0.8")
		if code != 200 || !strings.HasPrefix(ctype, "text/html") {
			t.Fatalf("GET %s as a browser: %d %q", p, code, ctype)
		}
		for _, e := range endpoints {
			if !strings.Contains(body, `href="`+e+`"`) {
				t.Errorf("HTML index at %s has no link to %s:\n%s", p, e, body)
			}
		}
	}
	for _, accept := range []string{"", "*/*", "text/plain"} {
		code, ctype, body := get(t, base+"/", accept)
		if code != 200 || !strings.HasPrefix(ctype, "text/plain") || strings.Contains(body, "<") {
			t.Errorf("GET / with Accept %q: %d %q %q; want plain text", accept, code, ctype, body)
		}
		for _, p := range endpoints {
			if !strings.Contains(body, p) {
				t.Errorf("text index (Accept %q) does not name %s", accept, p)
			}
		}
	}
	for _, p := range endpoints {
		if code, _, _ := get(t, base+p, ""); code != 200 {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	// only the root itself: other unknown paths stay 404
	for _, p := range []string{"/nope", "/index.html", "/healthz/x"} {
		if code, _, _ := get(t, base+p, "text/html"); code != 404 {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
}

// Without an info function there is no /info, and the index does not
// link to it.
func TestIndexWithoutInfo(t *testing.T) {
	base := startAdmin(t, nil)
	_, _, body := get(t, base+"/", "")
	if strings.Contains(body, "/info") {
		t.Errorf("index names /info, which is not served:\n%s", body)
	}
	if code, _, _ := get(t, base+"/info", ""); code != 404 {
		t.Errorf("GET /info: %d, want 404", code)
	}
}

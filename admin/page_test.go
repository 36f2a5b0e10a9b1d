package admin_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// /admin/stats reads the real node: a subscribed client shows as one
// connection, one subscription and its channel in the top channels;
// /admin/channels lists the same.
func TestStatsShowTheNode(t *testing.T) {
	srv, base := startGateway(t, adminToken)
	h := bearer(adminToken)
	st := stats(t, base, h)
	if st["connections"] != 0.0 || st["subscriptions"] != 0.0 || st["admission"] != "calm" || st["version"] != "test" {
		t.Errorf("idle node: %v", st)
	}
	subscribe(t, srv, "alice", "news")
	subscribe(t, srv, "bob", "news")
	subscribe(t, srv, "carol", "sport")
	st = stats(t, base, h)
	if st["connections"] != 3.0 || st["subscriptions"] != 3.0 || st["channels"] != 2.0 || st["users"] != 3.0 {
		t.Errorf("three subscribers: %v", st)
	}
	top, _ := st["top_channels"].([]any)
	want := `[map[channel:news subscribers:2] map[channel:sport subscribers:1]]`
	if got := strings.ReplaceAll(strings.TrimSpace(fmt.Sprint(top)), "\n", ""); got != want {
		t.Errorf("top_channels %s, want %s", got, want)
	}
	code, _, body := do(t, http.MethodGet, base+"/admin/channels?limit=1", h, "")
	if code != 200 || strings.TrimSpace(body) != `{"channels":[{"channel":"news","subscribers":2}]}` {
		t.Errorf("GET /admin/channels?limit=1: %d %s", code, body)
	}
	if code, _, body := do(t, http.MethodGet, base+"/admin/channels?limit=-1", h, ""); code != http.StatusBadRequest || !strings.Contains(body, "whole number") {
		t.Errorf("GET /admin/channels?limit=-1: %d %s; want 400", code, body)
	}
}

// POST /admin/publish refuses bad input with 400 (415 for another content
// type) and a message that says what is wrong, and publishes nothing then:
// the subscriber's first publication is the one good request, and the
// node's publication counter moved by one.
func TestPublishRejectsBadInput(t *testing.T) {
	srv, base := startGateway(t, adminToken)
	sub := subscribe(t, srv, "alice", "news")
	jsonHdr := func() http.Header {
		h := bearer(adminToken)
		h.Set("Content-Type", "application/json")
		return h
	}
	for _, tt := range []struct {
		name, ctype, body string
		code              int
		msg               string
	}{
		{"not JSON", "application/json", `channel=news`, 400, "not a publish request"},
		{"truncated", "application/json", `{"channel": "news", "data": {"a":`, 400, "not a publish request"},
		{"unknown field", "application/json", `{"channel": "news", "data": 1, "api_key": "x"}`, 400, "unknown field"},
		{"two objects", "application/json", `{"channel": "news", "data": 1} {"channel": "news", "data": 2}`, 400, "more after"},
		{"empty channel", "application/json", `{"channel": "", "data": {"text": "x"}}`, 400, "channel is empty"},
		{"no channel", "application/json", `{"data": {"text": "x"}}`, 400, "channel is empty"},
		{"no data", "application/json", `{"channel": "news"}`, 400, "data is missing"},
		{"null data", "application/json", `{"channel": "news", "data": null}`, 400, "data is missing"},
		{"unknown namespace", "application/json", `{"channel": "nope:news", "data": 1}`, 400, "unknown channel"},
		{"form post", "application/x-www-form-urlencoded", `channel=news&data=1`, 415, "application/json"},
		{"no content type", "", `{"channel": "news", "data": 1}`, 415, "application/json"},
	} {
		h := jsonHdr()
		h.Set("Content-Type", tt.ctype)
		code, hdr, body := do(t, http.MethodPost, base+"/admin/publish", h, tt.body)
		if code != tt.code || !strings.Contains(body, tt.msg) || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s; want %d with %q", tt.name, code, body, tt.code, tt.msg)
		}
	}
	if code, _, _ := do(t, http.MethodGet, base+"/admin/publish", bearer(adminToken), ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /admin/publish: %d, want 405", code)
	}
	if n := stats(t, base, bearer(adminToken))["publications_total"]; n != 0.0 {
		t.Errorf("after only bad requests publications_total = %v, want 0", n)
	}
	code, _, body := do(t, http.MethodPost, base+"/admin/publish", jsonHdr(), `{"channel": "news", "data": {"text": "good"}}`)
	if code != http.StatusOK || strings.TrimSpace(body) != `{"channel":"news","published":true}` {
		t.Fatalf("good publish: %d %s", code, body)
	}
	if got := sub.next(t); got != `news:{"text": "good"}` {
		t.Errorf("subscriber's first publication %q; a bad request published something", got)
	}
	waitFor(t, "publications_total 1", func() bool { return stats(t, base, bearer(adminToken))["publications_total"] == 1.0 })
	if got := sub.received(); len(got) != 1 {
		t.Errorf("subscriber received %q, want exactly the good publication", got)
	}
}

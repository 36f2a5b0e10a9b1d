package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

const (
	adminToken = "admin-test-token"
	hmacSecret = "admin-test-secret"
)

// startGateway runs a real gateway on loopback ports with the admin token
// (empty: an open admin listener) and returns it and its admin base URL.
func startGateway(t *testing.T, token string) (*server.Server, string) {
	t.Helper()
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKey, cfg.TokenHMACSecret, cfg.AdminToken = "key", hmacSecret, token
	cfg.CaptureDir = t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("SPINDLE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := server.Run(cfg, server.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv, "http://" + srv.AdminAddr()
}

// subscriber is a real WebSocket client subscribed to one channel; it
// keeps every publication it receives.
type subscriber struct {
	mu   sync.Mutex // guards got
	got  []string   // "channel:data" of each publication, in order
	pubs chan struct{}
}

func subscribe(t *testing.T, srv *server.Server, user, channel string) *subscriber {
	t.Helper()
	tok, err := auth.MintConnect(hmacSecret, auth.ConnectClaims{UserID: user}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{pubs: make(chan struct{}, 100)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: tok, OnPublication: func(ch string, p *protocol.Publication) {
		s.mu.Lock()
		s.got = append(s.got, ch+":"+string(p.Data))
		s.mu.Unlock()
		s.pubs <- struct{}{}
	}})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Subscribe(ctx, channel, client.SubscribeOptions{}); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	return s
}

// next waits for the next publication the subscriber receives.
func (s *subscriber) next(t *testing.T) string {
	t.Helper()
	select {
	case <-s.pubs:
	case <-time.After(10 * time.Second):
		t.Fatal("no publication within 10s")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[len(s.got)-1]
}

func (s *subscriber) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// do sends one request and returns its status, headers and body.
func do(t *testing.T, method, url string, header http.Header, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// no redirects followed: the tests look at each answer
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// stats reads GET /admin/stats with the header.
func stats(t *testing.T, base string, h http.Header) map[string]any {
	t.Helper()
	code, _, body := do(t, http.MethodGet, base+"/admin/stats", h, "")
	if code != http.StatusOK {
		t.Fatalf("GET /admin/stats: %d %s", code, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("GET /admin/stats: %v: %s", err, body)
	}
	return m
}

// waitFor polls cond until it holds or 10 seconds have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
)

// A whole server configured by the proxy keys (through Set, as flags and
// env set them): the connect proxy authenticates a client of the project's
// client package that has no token, proxy_http_headers picks the headers of
// the upgrade that reach the backend, and a proxy_publish namespace's
// publications are the backend's data.
func TestProxyServerFromConfig(t *testing.T) {
	var mu sync.Mutex
	var connectHeaders http.Header
	mux := http.NewServeMux()
	mux.HandleFunc("/connect", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		connectHeaders = r.Header.Clone()
		mu.Unlock()
		_, _ = w.Write([]byte(`{"result":{"user":"backend-user"}}`))
	})
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"result":{"data":{"rewritten":true}}}`))
	})
	backend := httptest.NewServer(mux)
	defer backend.Close()

	srv := startServer(t, func(c *config.Config) {
		for k, v := range map[string]string{
			"proxy_connect_endpoint": backend.URL + "/connect",
			"proxy_publish_endpoint": backend.URL + "/publish",
			"proxy_http_headers":     "Authorization",
		} {
			if err := c.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		ns := c.Channel
		ns.ProxyPublish = true
		c.Namespaces = append(c.Namespaces, config.Namespace{Name: "feed", ChannelOptions: ns})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Header: http.Header{"Authorization": {"Bearer app"}, "X-Forwarded-For": {"1.2.3.4"}}})
	if err != nil {
		t.Fatalf("connect with no token through the connect proxy: %v", err)
	}
	defer cl.Close()
	mu.Lock()
	if connectHeaders.Get("Authorization") != "Bearer app" || connectHeaders.Get("X-Forwarded-For") != "" {
		t.Errorf("backend got headers %v: want Authorization only", connectHeaders)
	}
	mu.Unlock()
	if err := cl.Publish(ctx, "feed:1", []byte(`{"original":true}`)); err != nil {
		t.Fatalf("publish through the publish proxy: %v", err)
	}
	_, res := api(t, srv, "key", "history", map[string]any{"channel": "feed:1", "limit": 10})
	var h struct {
		Publications []struct {
			Data json.RawMessage `json:"data"`
			Info struct {
				User string `json:"user"`
			} `json:"info"`
		} `json:"publications"`
	}
	if err := json.Unmarshal(res["result"], &h); err != nil || len(h.Publications) != 1 {
		t.Fatalf("history of feed:1: %s (%v)", res["result"], err)
	}
	if p := h.Publications[0]; string(p.Data) != `{"rewritten":true}` || p.Info.User != "backend-user" {
		t.Errorf("publication %s by %q: want the backend's data by backend-user", p.Data, p.Info.User)
	}
}

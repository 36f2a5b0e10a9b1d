package interop_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spindlehq/spindle/config"
)

// proxyBackend is the application backend of proxy.test.mjs, a real
// net/http server: every connection is user js-user, rpc echoes, and
// room:secret is refused.
func proxyBackend(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Errorf("backend: %v", err)
		}
	}
	mux.HandleFunc("/connect", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"result": map[string]any{"user": "js-user", "data": map[string]string{"greeting": "hello js-user"}}})
	})
	mux.HandleFunc("/rpc", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Method string          `json:"method"`
			Data   json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(w, map[string]any{"result": map[string]any{"data": map[string]any{"method": req.Method, "got": req.Data}}})
	})
	mux.HandleFunc("/subscribe", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel string `json:"channel"`
			User    string `json:"user"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if req.Channel == "room:secret" || req.User != "js-user" {
			reply(w, map[string]any{"error": map[string]any{"code": 403, "message": "not for you"}})
			return
		}
		reply(w, map[string]any{"result": map[string]any{}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestCentrifugeJSSDKProxy runs proxy.test.mjs: the SDK connects with no
// token through the connect proxy, calls rpc, and is refused by the
// subscribe proxy.
func TestCentrifugeJSSDKProxy(t *testing.T) {
	node := nodeWithSDK(t)
	backend := proxyBackend(t)
	cfg := gatewayConfig()
	cfg.ProxyConnectEndpoint = backend.URL + "/connect"
	cfg.ProxyRPCEndpoint = backend.URL + "/rpc"
	cfg.ProxySubscribeEndpoint = backend.URL + "/subscribe"
	room := cfg.Channel
	room.ProxySubscribe = true
	cfg.Namespaces = append(cfg.Namespaces, config.Namespace{Name: "room", ChannelOptions: room})
	srv := startGateway(t, cfg)
	runNodeTest(t, node, "proxy.test.mjs", "SPINDLE_WS_URL="+srv.WebSocketURL())
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/memory"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway"
	"github.com/spindlehq/spindle/internal/leakcheck"
)

// Every test leaves no goroutine of its own behind; nbio starts a
// process-wide task pool in its package init.
func TestMain(m *testing.M) {
	leakcheck.Main(m)
}

const testKey = "key"

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is a real gateway node with the in-memory broker, the API handler
// in front of it and a real HTTP server serving the handler.
type env struct {
	t    *testing.T
	mem  *memory.Broker
	node *gateway.Node
	h    *Handler
	srv  *httptest.Server
}

type envOptions struct {
	key     string                             // the configured API key
	broker  func(*memory.Broker) broker.Broker // wraps the broker
	log     *slog.Logger
	maxBody int64 // the handler's body limit when not 0
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	mem := memory.New()
	cfg := config.Default()
	cfg.MaxConnections = 100
	cfg.Namespaces = []config.Namespace{{Name: "np", ChannelOptions: config.ChannelOptions{}}}
	var b broker.Broker = mem
	if o.broker != nil {
		b = o.broker(mem)
	}
	node, err := gateway.New(gateway.FromConfig(cfg), gateway.Options{Broker: b, Presence: mem, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	if err := node.Start(); err != nil {
		t.Fatalf("node.Start: %v", err)
	}
	t.Cleanup(func() {
		if err := node.Close(); err != nil {
			t.Errorf("node.Close: %v", err)
		}
	})
	log := o.log
	if log == nil {
		log = discardLogger()
	}
	h := New(node, Config{Key: o.key}, log)
	if o.maxBody != 0 {
		h.maxBody = o.maxBody // before the server runs: the handler reads it unlocked
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, mem: mem, node: node, h: h, srv: srv}
}

// with is e reporting to t, for subtests.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func newTestEnv(t *testing.T) *env { return newEnv(t, envOptions{key: testKey}) }

// do sends an HTTP request to path with body and headers and returns the
// status, the response headers and the body.
func (e *env) do(method, path, body string, hdr map[string]string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

// reply is a decoded API answer.
type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *apiError       `json:"error"`
	status int
}

// post calls POST path with the right key and decodes the reply. As in
// Centrifugo, a result is 200, a malformed request 400, an unknown method
// 404, and every other error a 200 carrying it.
func (e *env) post(path, body string) reply {
	e.t.Helper()
	status, hdr, b := e.do(http.MethodPost, path, body, map[string]string{"X-API-Key": testKey})
	if status != http.StatusOK && status != http.StatusBadRequest && status != http.StatusNotFound {
		e.t.Fatalf("POST %s %s: status %d, body %q", path, body, status, b)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("POST %s: Content-Type %q, want application/json", path, ct)
	}
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatalf("POST %s: reply %q: %v", path, b, err)
	}
	if (r.Result == nil) == (r.Error == nil) {
		e.t.Fatalf("POST %s: reply %q has to carry exactly one of result and error", path, b)
	}
	r.status = status
	switch {
	case r.Result != nil && status != http.StatusOK,
		r.Error != nil && r.Error.Code == 104 && status != http.StatusNotFound,
		r.Error != nil && r.Error.Code != 104 && r.Error.Code != 107 && status != http.StatusOK:
		e.t.Errorf("POST %s %s: status %d for %q", path, body, status, b)
	}
	return r
}

// call runs method with params (a JSON string or a value to encode).
func (e *env) call(method string, params any) reply {
	e.t.Helper()
	var body string
	switch p := params.(type) {
	case string:
		body = p
	default:
		b, err := json.Marshal(p)
		if err != nil {
			e.t.Fatalf("encode params: %v", err)
		}
		body = string(b)
	}
	return e.post("/api/"+method, body)
}

// ok runs method and decodes its result into out (when not nil).
func (e *env) ok(method string, params, out any) {
	e.t.Helper()
	r := e.call(method, params)
	if r.Error != nil {
		e.t.Fatalf("%s %v: error %+v", method, params, *r.Error)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			e.t.Fatalf("%s: result %s: %v", method, r.Result, err)
		}
	}
}

// fails runs method and expects an error reply with code.
func (e *env) fails(method string, params any, code uint32) {
	e.t.Helper()
	r := e.call(method, params)
	if r.Error == nil {
		e.t.Fatalf("%s %v: result %s, want error %d", method, params, r.Result, code)
	}
	if r.Error.Code != code {
		e.t.Fatalf("%s %v: error %+v, want code %d", method, params, *r.Error, code)
	}
}

type pubResult struct {
	Offset *uint64 `json:"offset"`
	Epoch  *string `json:"epoch"`
}

type histResult struct {
	Publications []struct {
		Data   json.RawMessage `json:"data"`
		Offset uint64          `json:"offset"`
	} `json:"publications"`
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

func (h histResult) offsets() []uint64 {
	out := []uint64{}
	for _, p := range h.Publications {
		out = append(out, p.Offset)
	}
	return out
}

func (e *env) publish(ch string, data string) pubResult {
	e.t.Helper()
	var r pubResult
	e.ok("publish", fmt.Sprintf(`{"channel":%q,"data":%s}`, ch, data), &r)
	return r
}

func (e *env) history(params any) histResult {
	e.t.Helper()
	var r histResult
	e.ok("history", params, &r)
	return r
}

// everything is the whole history of ch.
func (e *env) everything(ch string) histResult {
	e.t.Helper()
	return e.history(map[string]any{"channel": ch, "limit": -1})
}

func equalOffsets(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAuth(t *testing.T) {
	e := newTestEnv(t)
	cases := []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"no key", nil, http.StatusUnauthorized},
		{"wrong X-API-Key", map[string]string{"X-API-Key": "nope"}, http.StatusUnauthorized},
		{"key with a suffix", map[string]string{"X-API-Key": testKey + "x"}, http.StatusUnauthorized},
		{"wrong apikey authorization", map[string]string{"Authorization": "apikey nope"}, http.StatusUnauthorized},
		{"bearer is not apikey", map[string]string{"Authorization": "Bearer " + testKey}, http.StatusUnauthorized},
		{"X-API-Key", map[string]string{"X-API-Key": testKey}, http.StatusOK},
		{"apikey authorization", map[string]string{"Authorization": "apikey " + testKey}, http.StatusOK},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			ch := fmt.Sprintf("auth%d", i)
			status, _, body := e.do(http.MethodPost, "/api/publish", fmt.Sprintf(`{"channel":%q,"data":{"n":1}}`, ch), c.hdr)
			if status != c.status {
				t.Fatalf("status %d (body %q), want %d", status, body, c.status)
			}
			h := e.everything(ch)
			if c.status == http.StatusUnauthorized {
				if len(body) != 0 {
					t.Errorf("401 body %q, want empty", body)
				}
				if len(h.Publications) != 0 || h.Offset != 0 {
					t.Errorf("a refused publish reached history: %+v", h)
				}
				return
			}
			var r reply
			if err := json.Unmarshal(body, &r); err != nil || r.Error != nil {
				t.Fatalf("reply %q: %v", body, err)
			}
			if len(h.Publications) != 1 {
				t.Errorf("history has %d publications, want 1", len(h.Publications))
			}
		})
	}
}

func TestAuthEmptyKeyRefusesEveryone(t *testing.T) {
	e := newEnv(t, envOptions{key: ""})
	for _, hdr := range []map[string]string{
		nil,
		{"X-API-Key": ""},
		{"X-API-Key": "anything"},
		{"Authorization": "apikey "},
		{"Authorization": "apikey anything"},
	} {
		status, _, body := e.do(http.MethodPost, "/api/info", "{}", hdr)
		if status != http.StatusUnauthorized || len(body) != 0 {
			t.Errorf("headers %v: status %d body %q, want 401 and no body", hdr, status, body)
		}
	}
}

func TestMethodNotPost(t *testing.T) {
	e := newTestEnv(t)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		status, hdr, _ := e.do(m, "/api/info", "", map[string]string{"X-API-Key": testKey})
		if status != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d, want 405", m, status)
		}
		if got := hdr.Get("Allow"); got != "POST" {
			t.Errorf("%s: Allow %q, want POST", m, got)
		}
	}
}

func TestBodyTooLarge(t *testing.T) {
	body := `{"channel":"big","data":"0123456789"}`
	e := newEnv(t, envOptions{key: testKey, maxBody: int64(len(body))})

	// At the limit the call is served.
	if r := e.publish("big", `"0123456789"`); r.Offset == nil || *r.Offset != 1 {
		t.Fatalf("publish at the limit: %+v", r)
	}
	// One byte over is refused before anything happens.
	over := `{"channel":"big","data":"0123456789x"}`
	status, _, _ := e.do(http.MethodPost, "/api/publish", over, map[string]string{"X-API-Key": testKey})
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", status)
	}
	if h := e.everything("big"); len(h.Publications) != 1 {
		t.Errorf("history has %d publications, want only the one at the limit", len(h.Publications))
	}
}

func TestLegacyForm(t *testing.T) {
	e := newTestEnv(t)
	r := e.post("/api", `{"method":"publish","params":{"channel":"legacy","data":{"x":1}}}`)
	if r.Error != nil {
		t.Fatalf("legacy publish: %+v", *r.Error)
	}
	var pr pubResult
	if err := json.Unmarshal(r.Result, &pr); err != nil || pr.Offset == nil || *pr.Offset != 1 {
		t.Fatalf("legacy publish result %s: %v", r.Result, err)
	}
	h := e.everything("legacy")
	if len(h.Publications) != 1 || string(h.Publications[0].Data) != `{"x":1}` {
		t.Fatalf("history %+v", h)
	}
	// The trailing-slash form is the same endpoint.
	if r := e.post("/api/", `{"method":"info"}`); r.Error != nil {
		t.Errorf("legacy info on /api/: %+v", *r.Error)
	}
	// A body that is not the legacy envelope is a bad request.
	if r := e.post("/api", `not json`); r.Error == nil || r.Error.Code != 107 {
		t.Errorf("legacy garbage: %+v", r)
	}
	// No method at all is an unknown method.
	if r := e.post("/api", `{"params":{}}`); r.Error == nil || r.Error.Code != 104 {
		t.Errorf("legacy without method: %+v", r)
	}
}

func TestPublishThenHistory(t *testing.T) {
	e := newTestEnv(t)
	r := e.publish("news", `{"text":"hello"}`)
	if r.Offset == nil || *r.Offset != 1 || r.Epoch == nil || *r.Epoch == "" {
		t.Fatalf("publish result %+v, want offset 1 and an epoch", r)
	}
	r2 := e.publish("news", `{"text":"again"}`)
	if r2.Offset == nil || *r2.Offset != 2 || *r2.Epoch != *r.Epoch {
		t.Fatalf("second publish %+v, want offset 2 in epoch %q", r2, *r.Epoch)
	}
	h := e.everything("news")
	if h.Epoch != *r.Epoch || h.Offset != 2 {
		t.Errorf("history position %d/%q, want 2/%q", h.Offset, h.Epoch, *r.Epoch)
	}
	if !equalOffsets(h.offsets(), []uint64{1, 2}) {
		t.Fatalf("history offsets %v, want [1 2]", h.offsets())
	}
	if string(h.Publications[0].Data) != `{"text":"hello"}` {
		t.Errorf("history data %s", h.Publications[0].Data)
	}
}

func TestPublishSkipHistory(t *testing.T) {
	e := newTestEnv(t)
	var r map[string]any
	e.ok("publish", `{"channel":"skip","data":1,"skip_history":true}`, &r)
	if len(r) != 0 {
		t.Errorf("result %v, want no position for a publication kept nowhere", r)
	}
	if h := e.everything("skip"); len(h.Publications) != 0 || h.Offset != 0 {
		t.Errorf("history %+v, want empty", h)
	}
	// A namespace without history gives no position either.
	r = nil
	e.ok("publish", `{"channel":"np:x","data":1}`, &r)
	if len(r) != 0 {
		t.Errorf("np result %v, want empty", r)
	}
	if p := e.publish("skip", "2"); p.Offset == nil || *p.Offset != 1 {
		t.Errorf("publish after skip_history: %+v, want offset 1", p)
	}
}

func TestPublishIdempotencyKey(t *testing.T) {
	e := newTestEnv(t)
	params := `{"channel":"idem","data":{"n":1},"idempotency_key":"k1"}`
	var a, b pubResult
	e.ok("publish", params, &a)
	e.ok("publish", params, &b)
	if a.Offset == nil || b.Offset == nil || *a.Offset != 1 || *b.Offset != *a.Offset || *a.Epoch != *b.Epoch {
		t.Fatalf("results %+v and %+v, want the same offset 1 twice", a, b)
	}
	if h := e.everything("idem"); len(h.Publications) != 1 {
		t.Fatalf("history has %d publications, want 1", len(h.Publications))
	}
	var c pubResult
	e.ok("publish", `{"channel":"idem","data":{"n":2},"idempotency_key":"k2"}`, &c)
	if c.Offset == nil || *c.Offset != 2 {
		t.Errorf("another key: %+v, want offset 2", c)
	}
}

func TestPublishErrors(t *testing.T) {
	e := newTestEnv(t)
	long := strings.Repeat("c", 300)
	cases := []struct {
		name   string
		params string
		code   uint32
	}{
		{"no channel", `{"data":{"a":1}}`, 107},
		{"empty channel", `{"channel":"","data":{"a":1}}`, 107},
		{"no data", `{"channel":"e1"}`, 107},
		{"no params", ``, 107},
		{"data not JSON", `{"channel":"e1","data":{nope}}`, 107},
		{"unknown namespace", `{"channel":"nope:x","data":1}`, 102},
		{"channel of 300 bytes", fmt.Sprintf(`{"channel":%q,"data":1}`, long), 107},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			e.fails("publish", c.params, c.code)
		})
	}
	if h := e.everything("e1"); len(h.Publications) != 0 {
		t.Errorf("a failed publish reached history: %+v", h)
	}
}

// An error reply carries the code and message only, never the context
// that the gateway wrapped around it.
func TestErrorReplyIsCodeAndMessageOnly(t *testing.T) {
	e := newTestEnv(t)
	status, _, body := e.do(http.MethodPost, "/api/publish", `{"channel":"nope:secret","data":1}`, map[string]string{"X-API-Key": testKey})
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	if want := `{"error":{"code":102,"message":"unknown channel"}}` + "\n"; string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestBroadcast(t *testing.T) {
	e := newTestEnv(t)
	e.publish("b2", "0") // b2 is one ahead of b1
	var r struct {
		Responses []reply `json:"responses"`
	}
	e.ok("broadcast", `{"channels":["b1","nope:x","b2",""],"data":{"m":1}}`, &r)
	if len(r.Responses) != 4 {
		t.Fatalf("%d responses, want 4: %+v", len(r.Responses), r)
	}
	wantOffsets := map[int]uint64{0: 1, 2: 2}
	for i, off := range wantOffsets {
		resp := r.Responses[i]
		if resp.Error != nil {
			t.Fatalf("response %d: error %+v", i, *resp.Error)
		}
		var p pubResult
		if err := json.Unmarshal(resp.Result, &p); err != nil || p.Offset == nil || *p.Offset != off {
			t.Errorf("response %d: %s, want offset %d", i, resp.Result, off)
		}
	}
	for i, code := range map[int]uint32{1: 102, 3: 107} {
		if resp := r.Responses[i]; resp.Error == nil || resp.Error.Code != code || resp.Result != nil {
			t.Errorf("response %d: %+v, want only error %d", i, resp, code)
		}
	}
	for _, ch := range []string{"b1", "b2"} {
		h := e.everything(ch)
		if n := len(h.Publications); n == 0 || string(h.Publications[n-1].Data) != `{"m":1}` {
			t.Errorf("%s history %+v, want the broadcast last", ch, h)
		}
	}
	e.fails("broadcast", `{"data":1}`, 107)
	e.fails("broadcast", `{"channels":[],"data":1}`, 107)
	e.fails("broadcast", `{"channels":"b1","data":1}`, 107)
}

func TestHistory(t *testing.T) {
	e := newTestEnv(t)
	var epoch string
	for i := 1; i <= 5; i++ {
		epoch = *e.publish("hist", fmt.Sprint(i)).Epoch
	}
	pos := func(off uint64, ep string) map[string]any { return map[string]any{"offset": off, "epoch": ep} }
	cases := []struct {
		name   string
		params map[string]any
		want   []uint64
	}{
		{"limit 0 is the position only", map[string]any{"channel": "hist"}, nil},
		{"limit", map[string]any{"channel": "hist", "limit": 2}, []uint64{1, 2}},
		{"all", map[string]any{"channel": "hist", "limit": -1}, []uint64{1, 2, 3, 4, 5}},
		{"reverse", map[string]any{"channel": "hist", "limit": 2, "reverse": true}, []uint64{5, 4}},
		{"since", map[string]any{"channel": "hist", "limit": -1, "since": pos(2, epoch)}, []uint64{3, 4, 5}},
		{"since with limit", map[string]any{"channel": "hist", "limit": 1, "since": pos(2, epoch)}, []uint64{3}},
		{"since the top", map[string]any{"channel": "hist", "limit": -1, "since": pos(5, epoch)}, nil},
		{"since and reverse", map[string]any{"channel": "hist", "limit": -1, "since": pos(4, epoch), "reverse": true}, []uint64{3, 2, 1}},
		{"since and reverse with limit", map[string]any{"channel": "hist", "limit": 2, "since": pos(4, epoch), "reverse": true}, []uint64{3, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			h := e.history(c.params)
			if h.Offset != 5 || h.Epoch != epoch {
				t.Errorf("position %d/%q, want 5/%q", h.Offset, h.Epoch, epoch)
			}
			if h.Publications == nil {
				t.Errorf("publications is null, want a list")
			}
			if want := c.want; !equalOffsets(h.offsets(), append([]uint64{}, want...)) {
				t.Errorf("offsets %v, want %v", h.offsets(), want)
			}
		})
	}
}

func TestHistoryErrors(t *testing.T) {
	e := newTestEnv(t)
	epoch := *e.publish("he", "1").Epoch
	cases := []struct {
		name   string
		params string
		code   uint32
	}{
		{"reverse since offset 0", fmt.Sprintf(`{"channel":"he","limit":-1,"reverse":true,"since":{"offset":0,"epoch":%q}}`, epoch), 107},
		{"wrong epoch", `{"channel":"he","limit":-1,"since":{"offset":1,"epoch":"other"}}`, 112},
		{"offset beyond the top", fmt.Sprintf(`{"channel":"he","limit":-1,"since":{"offset":9,"epoch":%q}}`, epoch), 112},
		{"namespace without history", `{"channel":"np:x","limit":-1}`, 108},
		{"unknown namespace", `{"channel":"nope:x"}`, 102},
		{"no channel", `{"limit":1}`, 107},
		{"since not an object", `{"channel":"he","since":5}`, 107},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			e.fails("history", c.params, c.code)
		})
	}
}

func TestHistoryRemove(t *testing.T) {
	e := newTestEnv(t)
	epoch := *e.publish("hr", "1").Epoch
	e.ok("history_remove", `{"channel":"hr"}`, nil)
	h := e.everything("hr")
	if len(h.Publications) != 0 || h.Epoch != epoch || h.Offset != 1 {
		t.Errorf("after history_remove: %+v, want no publications, the same epoch and offset (as Centrifugo)", h)
	}
	e.fails("history_remove", `{"channel":"nope:x"}`, 102)
	e.fails("history_remove", `{}`, 107)
}

func TestPresenceNotAvailable(t *testing.T) {
	e := newTestEnv(t)
	for _, m := range []string{"presence", "presence_stats"} {
		t.Run(m, func(t *testing.T) {
			e := e.with(t)
			e.fails(m, `{"channel":"np:room"}`, 108)
			e.fails(m, `{"channel":"nope:room"}`, 102)
			e.fails(m, `{}`, 107)
		})
	}
	// On a channel with presence both answer, empty.
	var p struct {
		Presence map[string]any `json:"presence"`
	}
	e.ok("presence", `{"channel":"room"}`, &p)
	if p.Presence == nil || len(p.Presence) != 0 {
		t.Errorf("presence %+v, want an empty map", p)
	}
	var st map[string]uint32
	e.ok("presence_stats", `{"channel":"room"}`, &st)
	if n, ok := st["num_clients"]; !ok || n != 0 || st["num_users"] != 0 {
		t.Errorf("presence_stats %v, want zero clients and users", st)
	}
}

func TestSubscribeUnsubscribeDisconnect(t *testing.T) {
	e := newTestEnv(t)
	cases := []struct {
		method string
		params string
		code   uint32 // 0: success
	}{
		{"subscribe", `{"channel":"s"}`, 0}, // user "": the anonymous sessions, as Centrifugo
		{"subscribe", `{"user":"","client":"","channel":"s"}`, 0},
		{"subscribe", `{"user":"u"}`, 107},
		{"subscribe", `{"user":"u","channel":"nope:x"}`, 102},
		{"subscribe", `{"user":"u","channel":"s"}`, 0},
		{"subscribe", `{"client":"c","channel":"s"}`, 0},
		{"unsubscribe", `{"channel":"s"}`, 0},
		{"unsubscribe", `{"user":"u"}`, 107},
		{"unsubscribe", `{"user":"u","channel":"s"}`, 0},
		{"disconnect", `{}`, 107},
		{"disconnect", `{"disconnect":{"code":4000,"reason":"bye"}}`, 107},
		{"disconnect", `{"user":"u","disconnect":{"code":2999,"reason":"low"}}`, 107},
		{"disconnect", `{"user":"u","disconnect":{"code":5000,"reason":"high"}}`, 107},
		{"disconnect", `{"user":"u","disconnect":{"code":0}}`, 107},
		{"disconnect", fmt.Sprintf(`{"user":"u","disconnect":{"code":4000,"reason":%q}}`, strings.Repeat("r", 124)), 107},
		{"disconnect", `{"user":"u","disconnect":{"code":3000,"reason":"lowest"}}`, 0},
		{"disconnect", `{"user":"u","disconnect":{"code":4999,"reason":"highest"}}`, 0},
		{"disconnect", `{"client":"c"}`, 0},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.params, func(t *testing.T) {
			e := e.with(t)
			if c.code != 0 {
				e.fails(c.method, c.params, c.code)
				return
			}
			var r map[string]any
			e.ok(c.method, c.params, &r)
			if len(r) != 0 {
				t.Errorf("result %v, want {}", r)
			}
		})
	}
}

func TestChannels(t *testing.T) {
	e := newTestEnv(t)
	for _, params := range []string{`{}`, `{"pattern":"news*"}`} {
		var r struct {
			Channels map[string]struct {
				NumClients int `json:"num_clients"`
			} `json:"channels"`
		}
		e.ok("channels", params, &r)
		if r.Channels == nil || len(r.Channels) != 0 {
			t.Errorf("channels %q: %+v, want an empty map on a node without clients", params, r)
		}
	}
}

func TestInfo(t *testing.T) {
	e := newTestEnv(t)
	var r struct {
		Nodes []map[string]json.RawMessage `json:"nodes"`
	}
	e.ok("info", `{}`, &r)
	if len(r.Nodes) != 1 {
		t.Fatalf("%d nodes, want 1", len(r.Nodes))
	}
	n := r.Nodes[0]
	for _, k := range []string{"uid", "name", "version", "num_clients", "num_users", "num_channels", "num_subs", "uptime", "metrics"} {
		if _, ok := n[k]; !ok {
			t.Errorf("nodes[0] has no %q: %v", k, n)
		}
	}
	if got := string(n["num_clients"]); got != "0" {
		t.Errorf("num_clients %s, want 0", got)
	}
	if got := string(n["name"]); got != `"spindle"` {
		t.Errorf("name %s", got)
	}
}

func TestUnknownMethod(t *testing.T) {
	e := newTestEnv(t)
	// An unknown method is 404 with error 104, as in Centrifugo.
	status, _, body := e.do(http.MethodPost, "/api/nope", `{}`, map[string]string{"X-API-Key": testKey})
	if status != http.StatusNotFound {
		t.Fatalf("status %d, want 404", status)
	}
	if want := `{"error":{"code":104,"message":"method not found"}}` + "\n"; string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
	e.fails("Publish", `{"channel":"a","data":1}`, 104) // methods are case-sensitive
}

func TestMalformedParams(t *testing.T) {
	e := newTestEnv(t)
	for _, m := range []string{"publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "presence", "presence_stats", "history", "history_remove", "channels", "batch"} {
		for _, params := range []string{`{"channel":`, `[1,2]`, `"str"`, `{"channel":1}`} {
			if (m == "channels" || m == "batch") && params == `{"channel":1}` {
				continue // no channel field to mistype
			}
			t.Run(m+" "+params, func(t *testing.T) {
				e := e.with(t)
				e.fails(m, params, 107)
			})
		}
	}
}

// batch calls the batch method and decodes its answer: {"replies": [...]}
// at the top, with no "result" around it (as Centrifugo answers).
func (e *env) batch(body string, out any) {
	e.t.Helper()
	status, _, b := e.do(http.MethodPost, "/api/batch", body, map[string]string{"X-API-Key": testKey})
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil || status != http.StatusOK {
		e.t.Fatalf("batch: status %d, body %q", status, b)
	}
	if _, ok := top["replies"]; !ok || len(top) != 1 {
		e.t.Fatalf("batch answer %q, want only replies at the top", b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		e.t.Fatal(err)
	}
}

func TestBatch(t *testing.T) {
	e := newTestEnv(t)
	var r struct {
		Replies []map[string]json.RawMessage `json:"replies"`
	}
	e.batch(`{"commands":[
		{"publish":{"channel":"bt","data":{"n":1}}},
		{"publish":{"channel":"bt","data":{"n":2}}},
		{"history":{"channel":"bt","limit":-1}},
		{"batch":{"commands":[{"info":{}}]}},
		{"publish":{"channel":"bt","data":3},"history":{"channel":"bt"}},
		{},
		{"publish":{"channel":"nope:x","data":1}},
		{"nope":{}},
		{"info":{}}
	]}`, &r)
	wantKeys := []string{"publish", "publish", "history", "error", "error", "error", "error", "error", "info"}
	if len(r.Replies) != len(wantKeys) {
		t.Fatalf("%d replies, want %d: %v", len(r.Replies), len(wantKeys), r.Replies)
	}
	for i, k := range wantKeys {
		if len(r.Replies[i]) != 1 || r.Replies[i][k] == nil {
			t.Errorf("reply %d: %v, want only %q", i, r.Replies[i], k)
		}
	}
	for i, off := range []uint64{1, 2} {
		var p pubResult
		if err := json.Unmarshal(r.Replies[i]["publish"], &p); err != nil || p.Offset == nil || *p.Offset != off {
			t.Errorf("reply %d: %s, want offset %d", i, r.Replies[i]["publish"], off)
		}
	}
	var h histResult
	if err := json.Unmarshal(r.Replies[2]["history"], &h); err != nil || !equalOffsets(h.offsets(), []uint64{1, 2}) {
		t.Errorf("history reply %s: offsets %v, want [1 2] (commands run in order)", r.Replies[2]["history"], h.offsets())
	}
	for i, code := range map[int]uint32{3: 107, 4: 107, 5: 107, 6: 102, 7: 104} {
		var ae apiError
		if err := json.Unmarshal(r.Replies[i]["error"], &ae); err != nil || ae.Code != code {
			t.Errorf("reply %d: %s, want error %d", i, r.Replies[i]["error"], code)
		}
	}
	// The refused entries ran nothing: history holds the two publications.
	if h := e.everything("bt"); !equalOffsets(h.offsets(), []uint64{1, 2}) {
		t.Errorf("history offsets %v, want [1 2]", h.offsets())
	}
	// An empty batch answers an empty list.
	var empty struct {
		Replies []json.RawMessage `json:"replies"`
	}
	e.batch(`{"commands":[]}`, &empty)
	if empty.Replies == nil || len(empty.Replies) != 0 {
		t.Errorf("empty batch: %+v", empty)
	}
	e.fails("batch", `{"commands":{"info":{}}}`, 107)
}

// failingBroker is the in-memory broker whose Publish fails: the
// gateway reports that as an internal error.
type failingBroker struct{ *memory.Broker }

func (failingBroker) Publish(context.Context, string, json.RawMessage, broker.PublishOptions) (broker.StreamPosition, error) {
	return broker.StreamPosition{}, errors.New("disk on fire")
}

func TestInternalErrorOverHTTP(t *testing.T) {
	var logs bytes.Buffer
	e := newEnv(t, envOptions{
		key:    testKey,
		log:    slog.New(slog.NewTextHandler(&logs, nil)),
		broker: func(m *memory.Broker) broker.Broker { return failingBroker{m} },
	})
	status, _, body := e.do(http.MethodPost, "/api/publish", `{"channel":"secret-channel","data":1}`, map[string]string{"X-API-Key": testKey})
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	if want := `{"error":{"code":100,"message":"internal server error"}}` + "\n"; string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
	out := logs.String()
	if n := strings.Count(out, "api call failed"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, out)
	}
	for _, s := range []string{"disk on fire", "secret-channel", "method=publish"} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %q:\n%s", s, out)
		}
	}

	// In a broadcast each failed channel is logged once, in a batch each failed entry.
	logs.Reset()
	var r struct {
		Responses []reply `json:"responses"`
	}
	e.ok("broadcast", `{"channels":["x1","x2"],"data":1}`, &r)
	for i, resp := range r.Responses {
		if resp.Error == nil || resp.Error.Code != 100 || resp.Error.Message != "internal server error" {
			t.Errorf("broadcast response %d: %+v", i, resp)
		}
	}
	if n := strings.Count(logs.String(), "api call failed"); n != 2 {
		t.Errorf("broadcast logged %d times, want 2:\n%s", n, logs.String())
	}
}

func TestReplyErr(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		code    uint32
		message string
		logged  bool
	}{
		{"plain error", errors.New("boom"), 100, "internal server error", true},
		{"wrapped plain error", fmt.Errorf("publish %q: broker: %w", "chan", errors.New("boom")), 100, "internal server error", true},
		{"wrapped internal error", fmt.Errorf("publish: %w", fmt.Errorf("broker: boom: %w", gateway.ErrInternal)), 100, "internal server error", true},
		{"gateway error", gateway.ErrUnknownChannel, 102, "unknown channel", false},
		{"wrapped gateway error", fmt.Errorf("history %q: boom: %w", "chan", gateway.ErrUnrecoverablePosition), 112, "unrecoverable position", false},
		{"doubly wrapped gateway error", fmt.Errorf("a: %w", fmt.Errorf("b: %w", gateway.ErrNotAvailable)), 108, "not available", false},
		{"joined with a gateway error", errors.Join(errors.New("boom"), gateway.ErrBadRequest), 107, "bad request", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := New(nil, Config{Key: testKey}, slog.New(slog.NewTextHandler(&logs, nil)))
			e := h.replyErr("publish", c.err)
			if e.Code != c.code || e.Message != c.message {
				t.Errorf("replyErr = %d %q, want %d %q", e.Code, e.Message, c.code, c.message)
			}
			out := logs.String()
			if !c.logged {
				if out != "" {
					t.Errorf("logged a caller's error:\n%s", out)
				}
				return
			}
			if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, "api call failed") {
				t.Fatalf("logged %d lines, want one:\n%s", n, out)
			}
			if !strings.Contains(out, "boom") || !strings.Contains(out, "method=publish") || !strings.Contains(out, "level=ERROR") {
				t.Errorf("log lacks the context:\n%s", out)
			}
			// What the caller sees is the code and message only.
			b, err := json.Marshal(replyError(e))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(`{"error":{"code":%d,"message":%q}}`, c.code, c.message); string(b) != want {
				t.Errorf("reply %s, want %s", b, want)
			}
		})
	}
}

// A batch has a bound on its commands, refused as a whole with a message
// that says which.
func TestBatchLimit(t *testing.T) {
	e := newEnv(t, envOptions{key: testKey})
	e.h.maxBatch = 3
	cmds := strings.Repeat(`{"publish":{"channel":"bl","data":1}},`, 4)
	r := e.call("batch", `{"commands":[`+strings.TrimSuffix(cmds, ",")+`]}`)
	if r.Error == nil || r.Error.Code != 106 || !strings.Contains(r.Error.Message, "at most 3") {
		t.Fatalf("batch over the limit: %+v", r.Error)
	}
	if h := e.everything("bl"); len(h.Publications) != 0 {
		t.Fatalf("a refused batch published %d", len(h.Publications))
	}
	var ok struct {
		Replies []json.RawMessage `json:"replies"`
	}
	e.batch(`{"commands":[`+strings.TrimSuffix(strings.Repeat(`{"publish":{"channel":"bl","data":1}},`, 3), ",")+`]}`, &ok)
	if len(ok.Replies) != 3 {
		t.Fatalf("batch at the limit: %d replies", len(ok.Replies))
	}
}

// Centrifugo's HTTP statuses: a malformed or empty body is 400, an unknown
// method 404; errors of a well-formed call are 200 with the error.
func TestCentrifugoStatuses(t *testing.T) {
	e := newTestEnv(t)
	key := map[string]string{"X-API-Key": testKey}
	for _, c := range []struct {
		path, body string
		status     int
		code       uint32
	}{
		{"/api/publish", `{"channel":`, http.StatusBadRequest, 107},
		{"/api/publish", ``, http.StatusBadRequest, 107},
		{"/api/info", ` `, http.StatusBadRequest, 107},
		{"/api/nope", `{}`, http.StatusNotFound, 104},
		{"/api/publish", `{"channel":"nope:x","data":1}`, http.StatusOK, 102},
		{"/api/publish", `{"data":1}`, http.StatusOK, 107},
	} {
		status, _, b := e.do(http.MethodPost, c.path, c.body, key)
		var r reply
		_ = json.Unmarshal(b, &r)
		if status != c.status || r.Error == nil || r.Error.Code != c.code {
			t.Errorf("%s %q: status %d, body %q; want %d with code %d", c.path, c.body, status, b, c.status, c.code)
		}
	}
}

// publish takes b64data when data is absent.
func TestPublishB64Data(t *testing.T) {
	e := newTestEnv(t)
	e.ok("publish", `{"channel":"b64","b64data":"eyJ4IjoxfQ=="}`, nil) // {"x":1}
	if h := e.everything("b64"); len(h.Publications) != 1 || string(h.Publications[0].Data) != `{"x":1}` {
		t.Fatalf("history %+v", h)
	}
	e.fails("publish", `{"channel":"b64","b64data":"%%%"}`, 107)
}

// refresh is a known method (it answers {}), also for users with no session.
func TestRefresh(t *testing.T) {
	e := newTestEnv(t)
	var r map[string]any
	e.ok("refresh", `{"user":"u","expire_at":2000000000}`, &r)
	e.ok("refresh", `{"user":"u","expired":true}`, &r)
	if len(r) != 0 {
		t.Fatalf("refresh result %v, want {}", r)
	}
}

// info carries the node's metrics.
func TestInfoMetrics(t *testing.T) {
	e := newTestEnv(t)
	e.ok("publish", `{"channel":"m","data":1}`, nil)
	var r struct {
		Nodes []struct {
			Metrics struct {
				Items map[string]float64 `json:"items"`
			} `json:"metrics"`
		} `json:"nodes"`
	}
	e.ok("info", `{}`, &r)
	items := r.Nodes[0].Metrics.Items
	if _, ok := items["spindle_connections"]; !ok || len(items) < 5 {
		t.Fatalf("info metrics %v", items)
	}
}

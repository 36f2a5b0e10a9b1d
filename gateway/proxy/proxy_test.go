package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// result waits for one done call.
type result struct {
	rep *Reply
	err error
}

func collect() (func(*Reply, error), chan result) {
	ch := make(chan result, 16)
	return func(r *Reply, err error) { ch <- result{r, err} }, ch
}

func wait(t *testing.T, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("done was not called")
		return result{}
	}
}

// Only the allowed headers of the client's request reach the backend,
// with every value; the body is the request as JSON.
func TestProxyHeadersAllowList(t *testing.T) {
	var mu sync.Mutex
	var got http.Header
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Unlock()
		_, _ = w.Write([]byte(`{"result":{"user":"1"}}`))
	}))
	defer srv.Close()
	p, err := New(Config{Endpoints: map[Event]Endpoint{Connect: {srv.URL, time.Second}}, Headers: []string{"cookie", "Authorization"}})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Close()
	done, ch := collect()
	h := http.Header{"Cookie": {"a=1", "b=2"}, "Authorization": {"Bearer x"}, "X-Other": {"secret"}}
	if err := p.Submit(Connect, ConnectRequest{Client: Client{Client: "c1", Transport: "websocket"}, Name: "n"}, h, done); err != nil {
		t.Fatal(err)
	}
	r := wait(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	var res ConnectResult
	if err := r.rep.Decode(Connect, &res); err != nil || res.User != "1" {
		t.Fatalf("result %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if v := got.Values("Cookie"); len(v) != 2 || got.Get("Authorization") != "Bearer x" || got.Get("X-Other") != "" {
		t.Errorf("backend got headers %v: want both cookies and Authorization, not X-Other", got)
	}
	if body["client"] != "c1" || body["transport"] != "websocket" || body["name"] != "n" {
		t.Errorf("backend got body %v", body)
	}
}

// With every worker busy and the queue full, Submit refuses at once; a
// call past its timeout ends with an error; after Close, Submit refuses
// with ErrClosed.
func TestProxyQueueFullTimeoutClose(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	p, err := New(Config{Endpoints: map[Event]Endpoint{RPC: {srv.URL, 200 * time.Millisecond}}, Workers: 1, Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	done, ch := collect()
	// Not started: the first call stays queued, the second finds the queue full.
	if err := p.Submit(RPC, RPCRequest{Method: "a"}, nil, done); err != nil {
		t.Fatal(err)
	}
	if err := p.Submit(RPC, RPCRequest{Method: "b"}, nil, done); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("submit to a full queue: %v, want ErrQueueFull", err)
	}
	p.Start()
	start := time.Now()
	r := wait(t, ch)
	if r.err == nil || !strings.Contains(r.err.Error(), "deadline") {
		t.Errorf("call to a backend that never answers: %v, want a deadline error", r.err)
	}
	t.Logf("timeout 200 ms: the call ended after %v", time.Since(start))
	p.Close()
	if err := p.Submit(RPC, RPCRequest{}, nil, done); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after Close: %v, want ErrClosed", err)
	}
}

// A reply must be JSON with exactly one of result, error and disconnect,
// a disconnect code 3000-4999; an HTTP status other than 200 is an error.
func TestProxyDecodeReply(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"result":{}}`, true},
		{`{"error":{"code":403,"message":"no"}}`, true},
		{`{"disconnect":{"code":4000,"reason":"x"}}`, true},
		{`{"disconnect":{"code":1000,"reason":"x"}}`, false},
		{`{"disconnect":{"code":5000,"reason":"x"}}`, false},
		{`{}`, false},
		{`{"result":null}`, false},
		{`{"result":{},"error":{"code":1}}`, false},
		{`[1]`, false},
		{`nope`, false},
	} {
		_, err := decodeReply(RPC, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("decode %s: err %v, want ok %v", tc.body, err, tc.ok)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer srv.Close()
	p, err := New(Config{Endpoints: map[Event]Endpoint{RPC: {srv.URL, time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Close()
	done, ch := collect()
	if err := p.Submit(RPC, RPCRequest{}, nil, done); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, ch); r.err == nil || !strings.Contains(r.err.Error(), "HTTP 500") {
		t.Errorf("backend answering 500: %v, want an error naming HTTP 500", r.err)
	}
}

// b64 fields are decoded and must be JSON for a JSON client.
func TestJSONField(t *testing.T) {
	if v, err := JSONField("data", nil, "eyJhIjoxfQ=="); err != nil || string(v) != `{"a":1}` {
		t.Errorf("b64data {\"a\":1}: %s, %v", v, err)
	}
	if _, err := JSONField("data", nil, "bm90IGpzb24="); err == nil {
		t.Error("b64data of text that is not JSON: no error")
	}
	if _, err := JSONField("data", nil, "%%%"); err == nil {
		t.Error("b64data that is not base64: no error")
	}
	if v, err := JSONField("data", json.RawMessage(`{"b":2}`), ""); err != nil || string(v) != `{"b":2}` {
		t.Errorf("data: %s, %v", v, err)
	}
}

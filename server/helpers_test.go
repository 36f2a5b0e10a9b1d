package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

const secret = "test-secret"

// startServer runs a real gateway on a loopback port with cfg adjusted by mod.
func startServer(t *testing.T, mod func(*config.Config)) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.APIKey = "key"
	cfg.TokenHMACSecret = secret
	cfg.ShutdownGracePeriod = config.Duration(5 * time.Second)
	cfg.ShutdownReconnect = config.Duration(500 * time.Millisecond)
	if mod != nil {
		mod(&cfg)
	}
	lvl := slog.LevelWarn
	if os.Getenv("SPINDLE_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	srv, err := server.Run(cfg, server.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

func token(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: user}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wsc is a wire-level test client: it sends JSON commands and reads raw
// replies, so tests see exactly what the server writes.
type wsc struct {
	t    *testing.T
	c    *websocket.Conn
	id   uint32
	msgs chan []byte
	done chan struct{}
	err  error
}

func dial(t *testing.T, srv *server.Server, header http.Header) *wsc {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(srv.WebSocketURL(), header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	w := &wsc{t: t, c: c, msgs: make(chan []byte, 100000), done: make(chan struct{})}
	go w.readLoop()
	t.Cleanup(func() { _ = c.Close() })
	return w
}

func (w *wsc) readLoop() {
	defer close(w.done)
	for {
		_, data, err := w.c.ReadMessage()
		if err != nil {
			w.err = err
			return
		}
		// One frame may hold several replies separated by newlines.
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(line) > 0 {
				w.msgs <- line
			}
		}
	}
}

func (w *wsc) send(cmds ...string) {
	w.t.Helper()
	if err := w.c.WriteMessage(websocket.TextMessage, []byte(strings.Join(cmds, "\n"))); err != nil {
		w.t.Fatalf("send: %v", err)
	}
}

// cmd sends one command with the next id and returns the reply to it,
// skipping pushes and pings.
func (w *wsc) cmd(method string, params any) map[string]json.RawMessage {
	w.t.Helper()
	w.id++
	p, _ := json.Marshal(params)
	w.send(fmt.Sprintf(`{"id":%d,%q:%s}`, w.id, method, p))
	return w.replyTo(w.id)
}

func (w *wsc) replyTo(id uint32) map[string]json.RawMessage {
	w.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-w.msgs:
			var r map[string]json.RawMessage
			if err := json.Unmarshal(m, &r); err != nil {
				w.t.Fatalf("bad JSON from server %q: %v", m, err)
			}
			if string(r["id"]) == fmt.Sprint(id) {
				return r
			}
		case <-w.done:
			w.t.Fatalf("connection closed waiting for reply %d: %v", id, w.err)
		case <-deadline:
			w.t.Fatalf("no reply to command %d", id)
		}
	}
}

func (w *wsc) connect(tok string) map[string]json.RawMessage {
	w.t.Helper()
	r := w.cmd("connect", map[string]any{"token": tok, "name": "test"})
	if r["error"] != nil {
		w.t.Fatalf("connect failed: %s", r["error"])
	}
	return r
}

type push struct {
	Channel string `json:"channel"`
	Pub     *struct {
		Data   json.RawMessage `json:"data"`
		Offset uint64          `json:"offset"`
	} `json:"pub"`
	Join        json.RawMessage `json:"join"`
	Leave       json.RawMessage `json:"leave"`
	Unsubscribe json.RawMessage `json:"unsubscribe"`
	Subscribe   json.RawMessage `json:"subscribe"`
}

// nextPush returns the next push, skipping pings and replies.
func (w *wsc) nextPush(timeout time.Duration) (*push, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case m := <-w.msgs:
			var r struct {
				Push *push `json:"push"`
			}
			if err := json.Unmarshal(m, &r); err != nil {
				w.t.Fatalf("bad JSON from server %q: %v", m, err)
			}
			if r.Push != nil {
				return r.Push, true
			}
		case <-w.done:
			return nil, false
		case <-deadline:
			return nil, false
		}
	}
}

// closeCode waits for the server to close the connection and returns the code.
func (w *wsc) closeCode(timeout time.Duration) (int, string) {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.t.Fatalf("connection not closed within %v", timeout)
	}
	var ce *websocket.CloseError
	if errors.As(w.err, &ce) {
		return ce.Code, ce.Text
	}
	return -1, fmt.Sprint(w.err)
}

func errorCode(t *testing.T, r map[string]json.RawMessage) int {
	t.Helper()
	if r["error"] == nil {
		return 0
	}
	var e struct{ Code int }
	_ = json.Unmarshal(r["error"], &e)
	return e.Code
}

// api calls the server API and decodes the reply.
func api(t *testing.T, srv *server.Server, key, method string, params any) (int, map[string]json.RawMessage) {
	t.Helper()
	body, _ := json.Marshal(params)
	req, _ := http.NewRequest(http.MethodPost, srv.APIURL()+"/"+method, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("api %s: %v", method, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]json.RawMessage
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("api %s: bad JSON %q", method, data)
		}
	}
	return resp.StatusCode, out
}

// publish publishes through the server API. A 503 (admission control
// shedding on a busy machine: nothing was published) is tried again, as
// an API client would after Retry-After, for up to 10 s.
func publish(t *testing.T, srv *server.Server, ch string, data string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, out := api(t, srv, "key", "publish", map[string]any{"channel": ch, "data": json.RawMessage(data)})
		if code == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond) // retry interval, shorter than Retry-After: the test waits for nothing else
			continue
		}
		if code != 200 || out["error"] != nil {
			t.Fatalf("publish: HTTP %d %s", code, out["error"])
		}
		return
	}
}

func field[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

func websocketDial(srv *server.Server, h http.Header) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial(srv.WebSocketURL(), h)
}

// metricValue reads one unlabelled series from the server's registry.
func metricValue(t *testing.T, srv *server.Server, name string) float64 {
	t.Helper()
	mfs, err := srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
		return sum
	}
	return 0
}

package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/config"
)

// uniClient reads a unidirectional WebSocket session in the test's goroutine.
type uniClient struct {
	t     *testing.T
	ws    *websocket.Conn
	pings int // {} messages read so far
}

func dialUni(t *testing.T, u string) *uniClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &uniClient{t: t, ws: ws}
}

func (c *uniClient) send(msg string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next message that is not a ping, as a JSON object.
func (c *uniClient) next() map[string]json.RawMessage {
	c.t.Helper()
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if mt != websocket.TextMessage {
			c.t.Fatalf("message type %d, want text", mt)
		}
		if m := uniPush(c.t, data); m != nil {
			return m
		}
		c.pings++
	}
}

// uniPush decodes a message of the unidirectional protocol, which must be
// one JSON object: nil for a ping ({}).
func uniPush(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("not one JSON object: %q", data)
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// closeCode reads until the server closes and returns its close code.
func (c *uniClient) closeCode() int {
	c.t.Helper()
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			_ = c.ws.Close() // as the SDKs do: the server's close frame ends the connection
			return ce.Code
		}
		if err != nil {
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
		c.t.Logf("message before close: %s", data)
	}
}

// uniPub is a publication push of the uni protocol: a bare Push.
type uniPub struct {
	Channel string `json:"channel"`
	Pub     *struct {
		Data   json.RawMessage `json:"data"`
		Offset uint64          `json:"offset"`
	} `json:"pub"`
}

func (c *uniClient) pub() uniPub {
	c.t.Helper()
	m := c.next()
	raw, _ := json.Marshal(m)
	var p uniPub
	if err := json.Unmarshal(raw, &p); err != nil || p.Pub == nil {
		c.t.Fatalf("want a publication push, got %s", raw)
	}
	return p
}

// connected checks the first message is a connect push with a server-side
// subscription to ch, and no reply framing.
func (c *uniClient) connected(ch string) {
	c.t.Helper()
	m := c.next()
	if m["id"] != nil || m["push"] != nil || m["connect"] == nil {
		c.t.Fatalf("want a bare connect push, got %v", m)
	}
	var res struct {
		Client string                     `json:"client"`
		Pong   bool                       `json:"pong"`
		Subs   map[string]json.RawMessage `json:"subs"`
	}
	if err := json.Unmarshal(m["connect"], &res); err != nil {
		c.t.Fatal(err)
	}
	if res.Client == "" || res.Pong || res.Subs[ch] == nil {
		c.t.Fatalf("connect push %s: want a client id, no pong, and %s in subs", m["connect"], ch)
	}
}

func uniNode(t *testing.T, mod func(*Config)) *testNode {
	return startTestNode(t, func(c *Config) {
		c.Namespaces = map[string]config.ChannelOptions{"chat": {HistorySize: 10, HistoryTTL: config.Duration(time.Minute), AllowRecovery: true}}
		if mod != nil {
			mod(c)
		}
	})
}

func publishUni(t *testing.T, tn *testNode, ch, data string) {
	t.Helper()
	if _, err := tn.Publish(context.Background(), ch, json.RawMessage(data), PublishOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A unidirectional client connects by its first message, gets publications
// as bare pushes with their offsets, and what it sends afterwards is
// ignored; a bidirectional client on the same channel gets its usual frames.
func TestUniWebSocketFirstMessage(t *testing.T) {
	tn := uniNode(t, nil)
	const ch = "chat:room"
	u := dialUni(t, tn.uniURL)
	u.send(fmt.Sprintf(`{"token":%q,"name":"curl","version":"1"}`, connectToken(t, "u1", ch)))
	u.connected(ch)

	bi := dialClient(t, tn.url)
	bi.connect(connectToken(t, "u2"))
	if r := bi.cmd("subscribe", map[string]any{"channel": ch}); r == nil || r["error"] != nil {
		t.Fatalf("bidirectional subscribe: %v", r)
	}

	publishUni(t, tn, ch, `{"n":1}`)
	if p := u.pub(); p.Channel != ch || string(p.Pub.Data) != `{"n":1}` || p.Pub.Offset != 1 {
		t.Fatalf("first publication: %+v %s", p, p.Pub.Data)
	}
	waitFor(t, "the bidirectional client's publication", func() bool { _, n, _ := bi.state(ch); return n == 1 })

	// Not JSON, a command, a pong: all ignored, nothing else changes.
	u.send("not json")
	u.send(`{"id":1,"subscribe":{"channel":"chat:other"}}`)
	u.send(`{}`)
	publishUni(t, tn, ch, `{"n":2}`)
	if p := u.pub(); p.Pub.Offset != 2 || string(p.Pub.Data) != `{"n":2}` {
		t.Fatalf("second publication: %+v", p)
	}

	bi.sync()
	if _, _, v := bi.state(ch); len(v) > 0 {
		t.Fatalf("bidirectional client saw: %v", v)
	}
}

// The cf_connect query parameter carries the connect request; a client
// message after it is ignored, not taken as a second connect.
func TestUniWebSocketCfConnect(t *testing.T) {
	tn := uniNode(t, nil)
	const ch = "chat:lobby"
	req := fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch))
	u := dialUni(t, tn.uniURL+"?cf_connect="+url.QueryEscape(req))
	u.connected(ch)
	u.send(req)
	publishUni(t, tn, ch, `"hello"`)
	if p := u.pub(); p.Channel != ch || string(p.Pub.Data) != `"hello"` || p.Pub.Offset != 1 {
		t.Fatalf("publication: %+v", p)
	}
}

// A bad first message closes the session with the protocol's code and
// leaves nothing behind.
func TestUniWebSocketBadFirstMessage(t *testing.T) {
	tn := uniNode(t, nil)
	for _, tc := range []struct {
		name, first string
		code        int
	}{
		{"not json", "not json", DisconnectBadRequest.Code},
		{"not an object", `[1,2]`, DisconnectBadRequest.Code},
		{"no token", `{}`, DisconnectBadRequest.Code},
		{"bad token", `{"token":"nope"}`, DisconnectInvalidToken.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := dialUni(t, tn.uniURL)
			u.send(tc.first)
			if got := u.closeCode(); got != tc.code {
				t.Fatalf("close code %d, want %d", got, tc.code)
			}
			waitFor(t, "the session to be gone", func() bool { return tn.NumClients() == 0 })
		})
	}
	t.Run("bad cf_connect", func(t *testing.T) {
		u := dialUni(t, tn.uniURL+"?cf_connect="+url.QueryEscape(`{"token":"nope"}`))
		if got := u.closeCode(); got != DisconnectInvalidToken.Code {
			t.Fatalf("close code %d, want %d", got, DisconnectInvalidToken.Code)
		}
	})
	// The bidirectional endpoint still connects as before.
	bi := dialClient(t, tn.url)
	bi.connect(connectToken(t, "u2"))
	bi.sync()
}

// A unidirectional client has no reply to read a disconnect from: the
// server's disconnect comes as a disconnect push, then the close frame.
func TestUniWebSocketDisconnectPush(t *testing.T) {
	tn := uniNode(t, nil)
	u := dialUni(t, tn.uniURL)
	u.send(`{"token":"` + connectToken(t, "u1") + `"}`)
	u.next() // the connect push
	if n := tn.Disconnect("u1", "", DisconnectForce); n != 1 {
		t.Fatalf("disconnected %d sessions, want 1", n)
	}
	m := u.next()
	var d struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(m["disconnect"], &d); err != nil || d.Code != DisconnectForce.Code || d.Reason != DisconnectForce.Reason {
		t.Fatalf("want a disconnect push with %d %q, got %v", DisconnectForce.Code, DisconnectForce.Reason, m)
	}
	if got := u.closeCode(); got != DisconnectForce.Code {
		t.Fatalf("close code %d, want %d", got, DisconnectForce.Code)
	}
}

// Pings are {} and need no pong: the session outlives several pong
// timeouts and still gets its publications.
func TestUniWebSocketPings(t *testing.T) {
	tn := uniNode(t, func(c *Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 200 * time.Millisecond
	})
	const ch = "chat:room"
	u := dialUni(t, tn.uniURL)
	u.send(fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch)))
	u.connected(ch)
	for pings := 0; pings < 5; pings++ {
		_ = u.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		mt, data, err := u.ws.ReadMessage()
		if err != nil || mt != websocket.TextMessage || string(data) != "{}" {
			t.Fatalf("ping %d: type %d %q, %v; want a text {}", pings+1, mt, data, err)
		}
	}
	publishUni(t, tn, ch, `{"n":1}`)
	if p := u.pub(); p.Pub.Offset != 1 {
		t.Fatalf("publication after the pings: %+v", p)
	}
}

// Without a token the connect proxy authenticates a unidirectional client:
// the backend's channels are its server-side subscriptions and its data is
// in the connect push; the backend's error closes the session instead.
func TestUniWebSocketConnectProxy(t *testing.T) {
	b := newBackend(t)
	refuse := false
	var mu sync.Mutex
	b.setAnswer(func(ev string, _ map[string]json.RawMessage) (time.Duration, string) {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return 0, `{"error":{"code":103,"message":"permission denied"}}`
		}
		return 0, `{"result":{"user":"42","data":{"welcome":true},"channels":["chat:proxy"]}}`
	})
	tn := startProxyNode(t, b.proxyConfig(time.Second), func(c *Config) {
		c.Namespaces = map[string]config.ChannelOptions{"chat": {HistorySize: 10, HistoryTTL: config.Duration(time.Minute), AllowRecovery: true}}
	})
	u := dialUni(t, tn.uniURL)
	u.send(`{"data":{"hello":1}}`)
	m := u.next()
	res := field[struct {
		Data json.RawMessage            `json:"data"`
		Subs map[string]json.RawMessage `json:"subs"`
	}](t, m["connect"])
	if string(res.Data) != `{"welcome":true}` || res.Subs["chat:proxy"] == nil {
		t.Fatalf("connect push %s: want the backend's data and channel", m["connect"])
	}
	if reqs := b.requests("connect"); len(reqs) != 1 || string(reqs[0].body["data"]) != `{"hello":1}` {
		t.Fatalf("backend got %d connect requests, want 1 with the client's data", len(reqs))
	}
	publishUni(t, tn, "chat:proxy", `{"n":1}`)
	if p := u.pub(); p.Channel != "chat:proxy" || p.Pub.Offset != 1 {
		t.Fatalf("publication: %+v", p)
	}

	mu.Lock()
	refuse = true
	mu.Unlock()
	r := dialUni(t, tn.uniURL)
	r.send(`{}`)
	if got := r.closeCode(); got != DisconnectBadRequest.Code {
		t.Fatalf("refused by the backend: close code %d, want %d", got, DisconnectBadRequest.Code)
	}
}

// The connect request's subs ask recovery for the server-side
// subscriptions: the missed publications are in the connect push.
func TestUniWebSocketRecovery(t *testing.T) {
	tn := uniNode(t, nil)
	const ch = "chat:recover"
	var pos []uint64
	var epoch string
	for _, d := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		sp, err := tn.Publish(context.Background(), ch, json.RawMessage(d), PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pos, epoch = append(pos, sp.Offset), sp.Epoch
	}
	u := dialUni(t, tn.uniURL)
	u.send(fmt.Sprintf(`{"token":%q,"subs":{%q:{"recover":true,"offset":%d,"epoch":%q}}}`, connectToken(t, "u1", ch), ch, pos[0], epoch))
	m := u.next()
	res := field[struct {
		Subs map[string]struct {
			Recovered    bool `json:"recovered"`
			Publications []struct {
				Offset uint64 `json:"offset"`
			} `json:"publications"`
		} `json:"subs"`
	}](t, m["connect"])
	sub := res.Subs[ch]
	if !sub.Recovered || len(sub.Publications) != 2 || sub.Publications[0].Offset != pos[1] || sub.Publications[1].Offset != pos[2] {
		t.Fatalf("connect push %s: want offsets %d and %d recovered", m["connect"], pos[1], pos[2])
	}
}

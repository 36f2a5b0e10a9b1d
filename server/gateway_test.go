package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/config"
)

type subResult struct {
	Recoverable   bool              `json:"recoverable"`
	Epoch         string            `json:"epoch"`
	Offset        uint64            `json:"offset"`
	Recovered     bool              `json:"recovered"`
	WasRecovering bool              `json:"was_recovering"`
	Positioned    bool              `json:"positioned"`
	Publications  []json.RawMessage `json:"publications"`
}

func TestConnectSubscribeReceive(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, nil)
	r := c.connect(token(t, "42", time.Hour))
	res := field[struct {
		Client  string
		Ping    int
		Pong    bool
		Expires bool
	}](t, r["connect"])
	if res.Client == "" || res.Ping != 25 || !res.Pong || !res.Expires {
		t.Fatalf("connect result = %+v", res)
	}
	// A plain subscription is neither recoverable nor positioned (as in
	// Centrifugo): SDKs would otherwise recover what the app never asked for.
	sr := field[subResult](t, c.cmd("subscribe", map[string]any{"channel": "other"})["subscribe"])
	if sr.Recoverable || sr.Positioned || sr.Epoch != "" {
		t.Fatalf("plain subscribe result = %+v", sr)
	}
	sr = field[subResult](t, c.cmd("subscribe", map[string]any{"channel": "news", "recoverable": true})["subscribe"])
	if !sr.Recoverable || !sr.Positioned || sr.Epoch == "" || sr.Offset != 0 {
		t.Fatalf("recoverable subscribe result = %+v", sr)
	}
	for i := 1; i <= 3; i++ {
		publish(t, srv, "news", fmt.Sprintf(`{"n":%d}`, i))
	}
	for i := 1; i <= 3; i++ {
		p, ok := c.nextPush(3 * time.Second)
		if !ok || p.Pub == nil {
			t.Fatalf("publication %d not received", i)
		}
		if p.Channel != "news" || p.Pub.Offset != uint64(i) || string(p.Pub.Data) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("publication %d = channel %q offset %d data %s", i, p.Channel, p.Pub.Offset, p.Pub.Data)
		}
	}
}

func TestBatchFrame(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, nil)
	tok := token(t, "7", time.Hour)
	c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok), `{"id":2,"subscribe":{"channel":"a"}}`, `{"id":3,"subscribe":{"channel":"b"}}`)
	for id := uint32(1); id <= 3; id++ {
		if r := c.replyTo(id); r["error"] != nil {
			t.Fatalf("reply %d: %s", id, r["error"])
		}
	}
	code, out := api(t, srv, "key", "channels", map[string]any{})
	if code != 200 {
		t.Fatalf("channels: %d", code)
	}
	chans := field[struct {
		Channels map[string]struct {
			NumClients int `json:"num_clients"`
		}
	}](t, out["result"])
	if chans.Channels["a"].NumClients != 1 || chans.Channels["b"].NumClients != 1 {
		t.Fatalf("channels = %+v", chans)
	}
}

func TestAuthFailures(t *testing.T) {
	srv := startServer(t, nil)
	t.Run("no token", func(t *testing.T) {
		c := dial(t, srv, nil)
		c.send(`{"id":1,"connect":{}}`)
		if code, _ := c.closeCode(3 * time.Second); code != 3501 {
			t.Fatalf("close code %d, want 3501", code)
		}
	})
	t.Run("forged token", func(t *testing.T) {
		c := dial(t, srv, nil)
		tok := token(t, "42", time.Hour)
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok[:len(tok)-4]+"AAAA"))
		if code, _ := c.closeCode(3 * time.Second); code != 3500 {
			t.Fatalf("close code %d, want 3500", code)
		}
	})
	t.Run("expired token", func(t *testing.T) {
		c := dial(t, srv, nil)
		r := c.cmd("connect", map[string]any{"token": token(t, "42", -time.Minute)})
		if errorCode(t, r) != 109 {
			t.Fatalf("reply %s, want error 109", r["error"])
		}
		// Nothing else changed: still unauthenticated, a subscribe is refused.
		c.send(`{"id":2,"subscribe":{"channel":"news"}}`)
		if code, _ := c.closeCode(3 * time.Second); code != 3501 {
			t.Fatalf("close code %d, want 3501", code)
		}
	})
	t.Run("command before connect", func(t *testing.T) {
		c := dial(t, srv, nil)
		c.send(`{"id":1,"subscribe":{"channel":"news"}}`)
		if code, _ := c.closeCode(3 * time.Second); code != 3501 {
			t.Fatalf("close code %d, want 3501", code)
		}
	})
	t.Run("malformed frame", func(t *testing.T) {
		c := dial(t, srv, nil)
		c.connect(token(t, "1", time.Hour))
		c.send(`{"id":2,"subscribe":`)
		if code, _ := c.closeCode(3 * time.Second); code != 3501 {
			t.Fatalf("close code %d, want 3501", code)
		}
	})
	// The server is unaffected: a good client still works.
	c := dial(t, srv, nil)
	c.connect(token(t, "42", time.Hour))
}

func TestChannelRules(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.Namespaces = []config.Namespace{
			{Name: "chat", ChannelOptions: config.ChannelOptions{AllowPublishForSubscriber: true, Presence: true, JoinLeave: true, ForcePushJoinLeave: true}},
			{Name: "private", ChannelOptions: config.ChannelOptions{SubscribeTokenRequired: true}},
		}
	})
	c := dial(t, srv, nil)
	c.connect(token(t, "42", time.Hour))
	if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "nope:x"})); code != 102 {
		t.Fatalf("unknown namespace: error %d, want 102", code)
	}
	if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "private:x"})); code != 103 {
		t.Fatalf("token-protected channel: error %d, want 103", code)
	}
	if code := errorCode(t, c.cmd("publish", map[string]any{"channel": "news", "data": map[string]int{"a": 1}})); code != 103 {
		t.Fatalf("client publish to plain channel: error %d, want 103", code)
	}
	if code := errorCode(t, c.cmd("publish", map[string]any{"channel": "chat:1", "data": map[string]int{"a": 1}})); code != 103 {
		t.Fatalf("publish before subscribing: error %d, want 103", code)
	}
	if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "chat:1"})); code != 0 {
		t.Fatalf("subscribe chat:1: error %d", code)
	}
	if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "chat:1"})); code != 105 {
		t.Fatalf("second subscribe: error %d, want 105", code)
	}
	if code := errorCode(t, c.cmd("history", map[string]any{"channel": "chat:1"})); code != 108 {
		t.Fatalf("history without history: error %d, want 108", code)
	}
	// A second user joins: the first sees the join, then a publication.
	d := dial(t, srv, nil)
	d.connect(token(t, "43", time.Hour))
	d.cmd("subscribe", map[string]any{"channel": "chat:1"})
	p, ok := c.nextPush(3 * time.Second)
	if !ok || p.Join == nil {
		t.Fatalf("no join push, got %+v", p)
	}
	if code := errorCode(t, d.cmd("publish", map[string]any{"channel": "chat:1", "data": map[string]string{"text": "hi"}})); code != 0 {
		t.Fatalf("subscriber publish: error %d", code)
	}
	p, ok = c.nextPush(3 * time.Second)
	if !ok || p.Pub == nil || string(p.Pub.Data) != `{"text":"hi"}` {
		t.Fatalf("publication not received: %+v", p)
	}
	// User-limited channel.
	if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "dialog#42,43"})); code != 0 {
		t.Fatalf("own user-limited channel: error %d", code)
	}
	if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "dialog#1,2"})); code != 103 {
		t.Fatalf("foreign user-limited channel: error %d, want 103", code)
	}
	// The leave push when the second user goes.
	d.cmd("unsubscribe", map[string]any{"channel": "chat:1"})
	p, ok = c.nextPush(3 * time.Second)
	if !ok || p.Leave == nil {
		t.Fatalf("no leave push, got %+v", p)
	}
}

func TestPresenceAndHistory(t *testing.T) {
	srv := startServer(t, nil)
	a := dial(t, srv, nil)
	ra := a.connect(token(t, "1", time.Hour))
	b := dial(t, srv, nil)
	b.connect(token(t, "2", time.Hour))
	c := dial(t, srv, nil)
	c.connect(token(t, "2", time.Hour))
	for _, w := range []*wsc{a, b, c} {
		w.cmd("subscribe", map[string]any{"channel": "room"})
	}
	pres := field[struct {
		Presence map[string]struct{ User, Client string }
	}](t, a.cmd("presence", map[string]any{"channel": "room"})["presence"])
	id := field[struct{ Client string }](t, ra["connect"]).Client
	if len(pres.Presence) != 3 || pres.Presence[id].User != "1" {
		t.Fatalf("presence = %+v", pres)
	}
	st := field[struct {
		NumClients int `json:"num_clients"`
		NumUsers   int `json:"num_users"`
	}](t, a.cmd("presence_stats", map[string]any{"channel": "room"})["presence_stats"])
	if st.NumClients != 3 || st.NumUsers != 2 {
		t.Fatalf("presence stats = %+v", st)
	}
	for i := 1; i <= 5; i++ {
		publish(t, srv, "room", fmt.Sprintf(`{"i":%d}`, i))
	}
	h := field[struct {
		Publications []struct {
			Offset uint64
			Data   json.RawMessage
		}
		Offset uint64
		Epoch  string
	}](t, a.cmd("history", map[string]any{"channel": "room", "limit": 10})["history"])
	if len(h.Publications) != 5 || h.Offset != 5 || h.Publications[4].Offset != 5 || string(h.Publications[0].Data) != `{"i":1}` {
		t.Fatalf("history = %+v", h)
	}
	// Presence is not for outsiders.
	d := dial(t, srv, nil)
	d.connect(token(t, "3", time.Hour))
	if code := errorCode(t, d.cmd("presence", map[string]any{"channel": "room"})); code != 103 {
		t.Fatalf("presence of unsubscribed channel: error %d, want 103", code)
	}
	// Leaving removes presence.
	b.c.Close()
	waitFor(t, func() bool {
		st := field[struct {
			NumClients int `json:"num_clients"`
		}](t, a.cmd("presence_stats", map[string]any{"channel": "room"})["presence_stats"])
		return st.NumClients == 2
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRecovery(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, nil)
	c.connect(token(t, "1", time.Hour))
	c.cmd("subscribe", map[string]any{"channel": "feed"})
	publish(t, srv, "feed", `{"n":1}`)
	p, ok := c.nextPush(3 * time.Second)
	if !ok || p.Pub == nil || p.Pub.Offset != 1 {
		t.Fatalf("first publication: %+v", p)
	}
	sr := field[subResult](t, c.cmd("unsubscribe", map[string]any{"channel": "feed"})["unsubscribe"])
	_ = sr
	hist := field[struct{ Epoch string }](t, c.cmd("history", map[string]any{"channel": "feed"})["error"])
	_ = hist
	// Miss three publications, then recover them.
	for i := 2; i <= 4; i++ {
		publish(t, srv, "feed", fmt.Sprintf(`{"n":%d}`, i))
	}
	_, out := api(t, srv, "key", "history", map[string]any{"channel": "feed", "limit": 0})
	epoch := field[struct{ Epoch string }](t, out["result"]).Epoch
	res := field[subResult](t, c.cmd("subscribe", map[string]any{"channel": "feed", "recover": true, "offset": 1, "epoch": epoch})["subscribe"])
	if !res.WasRecovering || !res.Recovered || len(res.Publications) != 3 || res.Offset != 4 {
		t.Fatalf("recovery = %+v", res)
	}
	// A live publication follows, with no duplicate of the recovered ones.
	publish(t, srv, "feed", `{"n":5}`)
	p, ok = c.nextPush(3 * time.Second)
	if !ok || p.Pub == nil || p.Pub.Offset != 5 {
		t.Fatalf("after recovery: %+v", p)
	}
	// A wrong epoch cannot be recovered, and the reply says so.
	c.cmd("unsubscribe", map[string]any{"channel": "feed"})
	res = field[subResult](t, c.cmd("subscribe", map[string]any{"channel": "feed", "recover": true, "offset": 1, "epoch": "bogus"})["subscribe"])
	if !res.WasRecovering || res.Recovered || res.Offset != 5 {
		t.Fatalf("wrong epoch = %+v", res)
	}
}

func TestPingPong(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.PingInterval = config.Duration(400 * time.Millisecond)
		c.PongTimeout = config.Duration(300 * time.Millisecond)
	})
	// A client that answers pings stays connected.
	good := dial(t, srv, nil)
	good.connect(token(t, "1", time.Hour))
	var pings int
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case m := <-good.msgs:
				if string(m) == "{}" {
					mu.Lock()
					pings++
					mu.Unlock()
					_ = good.c.WriteMessage(1, []byte("{}"))
				}
			case <-stop:
				return
			}
		}
	}()
	// A client that never answers is disconnected with 3012.
	bad := dial(t, srv, nil)
	bad.connect(token(t, "2", time.Hour))
	if code, _ := bad.closeCode(3 * time.Second); code != 3012 {
		t.Fatalf("silent client closed with %d, want 3012", code)
	}
	// Three pings 400 ms apart outlast the 300 ms pong timeout more than once.
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return pings >= 3
	})
	close(stop)
	wg.Wait()
	select {
	case <-good.done:
		t.Fatalf("answering client was disconnected: %v", good.err)
	default:
	}
}

func TestStaleConnection(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.ConnectTimeout = config.Duration(300 * time.Millisecond) })
	c := dial(t, srv, nil)
	if code, _ := c.closeCode(3 * time.Second); code != 3502 {
		t.Fatalf("close code %d, want 3502 stale", code)
	}
}

func TestLimits(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.MaxSubscriptions = 2
		c.MaxMessageSize = 1024
		c.ClientQueueMaxSize = 4096
		c.CommandRate = 5
		c.CommandBurst = 5
		c.MaxConnections = 3
		c.AllowedOrigins = []string{"https://*.example.com"}
	})
	t.Run("subscriptions", func(t *testing.T) {
		c := dial(t, srv, nil)
		c.connect(token(t, "1", time.Hour))
		c.cmd("subscribe", map[string]any{"channel": "a"})
		c.cmd("subscribe", map[string]any{"channel": "b"})
		if code := errorCode(t, c.cmd("subscribe", map[string]any{"channel": "c"})); code != 106 {
			t.Fatalf("third subscription: error %d, want 106", code)
		}
		c.c.Close()
	})
	t.Run("rate", func(t *testing.T) {
		c := dial(t, srv, nil)
		c.connect(token(t, "1", time.Hour))
		limited := 0
		for i := 0; i < 10; i++ {
			if errorCode(t, c.cmd("presence_stats", map[string]any{"channel": "x"})) == 111 {
				limited++
			}
		}
		if limited < 4 {
			t.Fatalf("%d of 10 rapid commands limited, want ≥ 4", limited)
		}
		c.c.Close()
	})
	t.Run("message size", func(t *testing.T) {
		c := dial(t, srv, nil)
		c.connect(token(t, "1", time.Hour))
		c.send(`{"id":2,"publish":{"channel":"a","data":"` + strings.Repeat("x", 2000) + `"}}`)
		if code, _ := c.closeCode(3 * time.Second); code != 1009 {
			t.Fatalf("close code %d, want 1009", code)
		}
	})
	t.Run("origin", func(t *testing.T) {
		h := http.Header{"Origin": {"https://evil.test"}}
		_, resp, err := websocketDial(srv, h)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: err %v resp %v", err, resp)
		}
		c := dial(t, srv, http.Header{"Origin": {"https://app.example.com"}})
		c.connect(token(t, "1", time.Hour))
		c.c.Close()
	})
	t.Run("connections", func(t *testing.T) {
		waitFor(t, func() bool { return srv.Node.NumClients() == 0 })
		for i := 0; i < 3; i++ {
			dial(t, srv, nil)
		}
		_, resp, err := websocketDial(srv, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("connection past the limit: err %v resp %v", err, resp)
		}
	})
}

func TestServerAPI(t *testing.T) {
	srv := startServer(t, nil)
	if code, _ := api(t, srv, "wrong", "publish", map[string]any{"channel": "news", "data": 1}); code != 401 {
		t.Fatalf("wrong key: HTTP %d, want 401", code)
	}
	if code, _ := api(t, srv, "", "publish", map[string]any{"channel": "news", "data": 1}); code != 401 {
		t.Fatalf("no key: HTTP %d, want 401", code)
	}
	// Nothing was published by those.
	_, out := api(t, srv, "key", "history", map[string]any{"channel": "news", "limit": -1})
	if h := field[struct{ Offset int }](t, out["result"]); h.Offset != 0 {
		t.Fatalf("refused publishes changed history: offset %d", h.Offset)
	}
	c := dial(t, srv, nil)
	c.connect(token(t, "u1", time.Hour))
	if _, out := api(t, srv, "key", "subscribe", map[string]any{"user": "u1", "channel": "srv"}); out["error"] != nil {
		t.Fatalf("api subscribe: %s", out["error"])
	}
	p, ok := c.nextPush(3 * time.Second)
	if !ok || p.Subscribe == nil || p.Channel != "srv" {
		t.Fatalf("no subscribe push: %+v", p)
	}
	_, out = api(t, srv, "key", "broadcast", map[string]any{"channels": []string{"srv", "nope:x"}, "data": map[string]int{"b": 1}})
	resps := field[struct {
		Responses []map[string]json.RawMessage
	}](t, out["result"])
	if len(resps.Responses) != 2 || resps.Responses[0]["result"] == nil || errorCode(t, resps.Responses[1]) != 102 {
		t.Fatalf("broadcast = %s", out["result"])
	}
	p, ok = c.nextPush(3 * time.Second)
	if !ok || p.Pub == nil || string(p.Pub.Data) != `{"b":1}` {
		t.Fatalf("broadcast not received: %+v", p)
	}
	api(t, srv, "key", "unsubscribe", map[string]any{"user": "u1", "channel": "srv"})
	p, ok = c.nextPush(3 * time.Second)
	if !ok || p.Unsubscribe == nil {
		t.Fatalf("no unsubscribe push: %+v", p)
	}
	_, out = api(t, srv, "key", "batch", map[string]any{"commands": []any{
		map[string]any{"publish": map[string]any{"channel": "x", "data": 1}},
		map[string]any{"info": map[string]any{}},
	}})
	if out["result"] != nil || !strings.Contains(string(out["replies"]), `"num_clients":1`) { // {"replies":[…]}, as Centrifugo
		t.Fatalf("batch = %v", out)
	}
	_, out = api(t, srv, "key", "history_remove", map[string]any{"channel": "x"})
	if out["error"] != nil {
		t.Fatalf("history_remove: %s", out["error"])
	}
	_, out = api(t, srv, "key", "nosuch", map[string]any{})
	if errorCode(t, out) != 104 {
		t.Fatalf("unknown method: %s", out["error"])
	}
	api(t, srv, "key", "disconnect", map[string]any{"user": "u1", "disconnect": map[string]any{"code": 4000, "reason": "bye"}})
	if code, reason := c.closeCode(3 * time.Second); code != 4000 || reason != "bye" {
		t.Fatalf("disconnect: %d %q", code, reason)
	}
}

// The token's channels claim subscribes the connection on connect: the
// connect reply lists the subscription, publications arrive without a
// subscribe command, and a channel the config does not know is skipped.
func TestServerSideSubscriptions(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, nil)
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: "9", Channels: []string{"alerts", "nope:x"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := c.connect(tok)
	res := field[struct {
		Subs map[string]json.RawMessage `json:"subs"`
	}](t, r["connect"])
	if _, ok := res.Subs["alerts"]; !ok || len(res.Subs) != 1 {
		t.Fatalf("connect subs = %v, want only alerts", res.Subs)
	}
	publish(t, srv, "alerts", `{"level":"high"}`)
	p, ok := c.nextPush(3 * time.Second)
	if !ok || p.Pub == nil || p.Channel != "alerts" || string(p.Pub.Data) != `{"level":"high"}` {
		t.Fatalf("push = %+v", p)
	}
	// An explicit subscribe to the same channel is refused as a duplicate.
	if e := c.cmd("subscribe", map[string]any{"channel": "alerts"})["error"]; !strings.Contains(string(e), "105") {
		t.Fatalf("second subscribe: error %s, want 105 already subscribed", e)
	}
}

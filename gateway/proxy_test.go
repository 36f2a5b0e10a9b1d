package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway/proxy"
)

// backend is a real HTTP application backend on a loopback port: it
// records each proxy request and answers with its answer function.
type backend struct {
	srv *httptest.Server

	mu     sync.Mutex // guards the fields below
	reqs   map[string][]backendReq
	answer func(event string, body map[string]json.RawMessage) (delay time.Duration, reply string)
}

type backendReq struct {
	body   map[string]json.RawMessage
	header http.Header
}

func newBackend(t *testing.T) *backend {
	b := &backend{reqs: map[string][]backendReq{}}
	b.answer = func(string, map[string]json.RawMessage) (time.Duration, string) { return 0, `{"result":{}}` }
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev := strings.TrimPrefix(r.URL.Path, "/")
		var body map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("backend: %s request is not a JSON object: %v", ev, err)
		}
		b.mu.Lock()
		b.reqs[ev] = append(b.reqs[ev], backendReq{body, r.Header.Clone()})
		answer := b.answer
		b.mu.Unlock()
		delay, reply := answer(ev, body)
		select { // a slow backend: it answers late, or not at all once the caller gave up
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte(reply))
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) setAnswer(f func(event string, body map[string]json.RawMessage) (time.Duration, string)) {
	b.mu.Lock()
	b.answer = f
	b.mu.Unlock()
}

func (b *backend) requests(ev string) []backendReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]backendReq(nil), b.reqs[ev]...)
}

// proxyConfig sends every event to b (at /connect, /rpc, …) with timeout.
func (b *backend) proxyConfig(timeout time.Duration) proxy.Config {
	eps := map[proxy.Event]proxy.Endpoint{}
	for _, ev := range []proxy.Event{proxy.Connect, proxy.Refresh, proxy.Subscribe, proxy.SubRefresh, proxy.Publish, proxy.RPC} {
		eps[ev] = proxy.Endpoint{URL: b.srv.URL + "/" + string(ev), Timeout: timeout}
	}
	return proxy.Config{Endpoints: eps, Headers: []string{"Cookie", "X-Request-Id"}, Logger: testLogger()}
}

// proxyNamespace is "room": subscriptions and publications asked of the backend.
func proxyNamespace(c *Config) {
	c.Namespaces = map[string]config.ChannelOptions{"room": {HistorySize: 10, HistoryTTL: config.Duration(time.Minute), ProxySubscribe: true, ProxyPublish: true}}
}

// startProxyNode starts a node with pc as its proxy on a real transport
// that keeps the proxy's headers.
func startProxyNode(t *testing.T, pc proxy.Config, mod func(*Config)) *testNode {
	t.Helper()
	px, err := proxy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	tn := newTestNodeWith(t, mod, px)
	serveTestNode(t, tn, px.Headers())
	return tn
}

// dialHeader is dialClient with request headers on the upgrade.
func dialHeader(t *testing.T, url string, h http.Header) *tclient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &tclient{t: t, ws: ws, waiting: map[uint32]pendingCmd{}, view: map[string]bool{}, pubs: map[string]int{}, done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { c.close() })
	return c
}

func field[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// A client without a token is authenticated by the connect proxy: user,
// info, data, server-side channels and meta from the backend; the allowed
// headers (and only those) reach the backend; subscribe, publish and rpc
// then carry the user and meta, and their results reach the client.
func TestProxyEvents(t *testing.T) {
	b := newBackend(t)
	b.setAnswer(func(ev string, body map[string]json.RawMessage) (time.Duration, string) {
		switch ev {
		case "connect":
			return 0, `{"result":{"user":"42","info":{"name":"ann"},"data":{"welcome":true},"channels":["news"],"meta":{"tenant":"t1"}}}`
		case "subscribe":
			return 0, `{"result":{"info":{"role":"guest"},"b64data":"eyJoaXN0b3J5IjoxfQ=="}}`
		case "publish":
			return 0, `{"result":{"data":{"text":"HI","checked":true}}}`
		case "rpc":
			return 0, fmt.Sprintf(`{"result":{"data":{"echo":%s}}}`, body["data"])
		}
		return 0, `{"result":{}}`
	})
	tn := startProxyNode(t, b.proxyConfig(2*time.Second), proxyNamespace)
	c := dialHeader(t, tn.url, http.Header{"Cookie": {"sid=abc"}, "X-Request-Id": {"r1"}, "X-Secret": {"no"}})

	r := c.cmd("connect", map[string]any{"name": "test-sdk", "version": "1.2", "data": map[string]any{"hello": 1}})
	if r == nil || r["error"] != nil {
		t.Fatalf("connect through the proxy: %v", r)
	}
	res := field[struct {
		Client string                     `json:"client"`
		Data   map[string]bool            `json:"data"`
		Subs   map[string]json.RawMessage `json:"subs"`
	}](t, r["connect"])
	if !res.Data["welcome"] || res.Subs["news"] == nil || res.Client == "" {
		t.Fatalf("connect reply %s: want the backend's data and the server-side channel news", r["connect"])
	}
	reqs := b.requests("connect")
	if len(reqs) != 1 {
		t.Fatalf("backend got %d connect requests, want 1", len(reqs))
	}
	got := reqs[0]
	for k, want := range map[string]string{"client": `"` + res.Client + `"`, "transport": `"websocket"`, "protocol": `"json"`, "encoding": `"json"`, "name": `"test-sdk"`, "version": `"1.2"`, "data": `{"hello":1}`} {
		if string(got.body[k]) != want {
			t.Errorf("connect request %s = %s, want %s", k, got.body[k], want)
		}
	}
	if got.header.Get("Cookie") != "sid=abc" || got.header.Get("X-Request-Id") != "r1" || got.header.Get("X-Secret") != "" {
		t.Errorf("connect request headers %v: want Cookie and X-Request-Id only of the client's", got.header)
	}
	s := tn.sessions.find("42", "")
	if len(s) != 1 {
		t.Fatalf("sessions of user 42: %d, want 1", len(s))
	}

	r = c.cmd("subscribe", map[string]any{"channel": "room:1", "data": map[string]any{"want": "in"}})
	if r == nil || r["error"] != nil {
		t.Fatalf("subscribe room:1: %v", r)
	}
	if d := field[struct{ Data json.RawMessage }](t, r["subscribe"]).Data; string(d) != `{"history":1}` {
		t.Errorf("subscribe reply data %s, want the backend's b64data decoded", d)
	}
	sreq := b.requests("subscribe")
	if len(sreq) != 1 || string(sreq[0].body["user"]) != `"42"` || string(sreq[0].body["channel"]) != `"room:1"` ||
		string(sreq[0].body["meta"]) != `{"tenant":"t1"}` || string(sreq[0].body["data"]) != `{"want":"in"}` {
		t.Fatalf("subscribe requests %v: want one with user 42, channel room:1, the connect meta and the data", sreq)
	}

	r = c.cmd("publish", map[string]any{"channel": "room:1", "data": map[string]any{"text": "hi"}})
	if r == nil || r["error"] != nil {
		t.Fatalf("publish room:1: %v", r)
	}
	h, err := tn.History(context.Background(), "room:1", 10, nil, false)
	if err != nil || len(h.Publications) != 1 {
		t.Fatalf("history of room:1: %v, %v", h, err)
	}
	pub := h.Publications[0]
	if string(pub.Data) != `{"text":"HI","checked":true}` || pub.Info == nil || pub.Info.User != "42" || string(pub.Info.ConnInfo) != `{"name":"ann"}` {
		t.Errorf("publication %s by %+v: want the backend's data, from user 42 with the connect info", pub.Data, pub.Info)
	}

	r = c.cmd("rpc", map[string]any{"method": "sum", "data": map[string]any{"a": 1}})
	if r == nil || r["error"] != nil {
		t.Fatalf("rpc: %v", r)
	}
	if d := field[struct{ Data json.RawMessage }](t, r["rpc"]).Data; string(d) != `{"echo":{"a":1}}` {
		t.Errorf("rpc reply data %s", d)
	}
	if rr := b.requests("rpc"); len(rr) != 1 || string(rr[0].body["method"]) != `"sum"` || string(rr[0].body["user"]) != `"42"` {
		t.Errorf("rpc requests %v", rr)
	}
	_, _, violations := c.state("room:1")
	if len(violations) > 0 {
		t.Errorf("client saw %v", violations)
	}
}

// The backend's error {code, message} is the client's error reply and
// changes nothing; its disconnect {code, reason} closes the connection with
// that code; a connect refused so may be sent again.
func TestProxyAnswerShapes(t *testing.T) {
	b := newBackend(t)
	var connects int
	b.setAnswer(func(ev string, body map[string]json.RawMessage) (time.Duration, string) {
		switch {
		case ev == "connect":
			connects++
			if connects == 1 {
				return 0, `{"error":{"code":4403,"message":"who are you"}}`
			}
			return 0, `{"result":{"user":"7"}}`
		case ev == "subscribe" && string(body["channel"]) == `"room:bye"`:
			return 0, `{"disconnect":{"code":4501,"reason":"banned"}}`
		case ev == "subscribe":
			return 0, `{"error":{"code":403,"message":"not in this room"}}`
		case ev == "publish":
			return 0, `{"error":{"code":1001,"message":"muted","temporary":true}}`
		case ev == "rpc":
			return 0, `{"error":{"code":1404,"message":"no such method"}}`
		}
		return 0, `{"result":{}}`
	})
	tn := startProxyNode(t, b.proxyConfig(2*time.Second), proxyNamespace)
	c := dialClient(t, tn.url)
	r := c.cmd("connect", map[string]any{})
	if errorCode(r) != 4403 || !strings.Contains(string(r["error"]), "who are you") {
		t.Fatalf("connect refused by the backend: %v, want error 4403", r)
	}
	if r := c.cmd("connect", map[string]any{}); r == nil || r["error"] != nil {
		t.Fatalf("second connect on the same socket: %v", r)
	}
	for _, tc := range []struct {
		method string
		params map[string]any
		code   uint32
	}{
		{"subscribe", map[string]any{"channel": "room:1"}, 403},
		{"publish", map[string]any{"channel": "room:1", "data": map[string]any{}}, 1001},
		{"rpc", map[string]any{"method": "x"}, 1404},
	} {
		if r := c.cmd(tc.method, tc.params); errorCode(r) != tc.code {
			t.Errorf("%s refused by the backend: %v, want error %d", tc.method, r, tc.code)
		}
	}
	if sub, _, _ := c.state("room:1"); sub || tn.hub.channels()["room:1"] != 0 {
		t.Errorf("a refused subscription left state: client view %v", sub)
	}
	c.cmd("subscribe", map[string]any{"channel": "room:bye"})
	if code := c.closeCode(); code != 4501 {
		t.Errorf("backend disconnect: close code %d, want 4501", code)
	}
}

// A backend that is down: connect is closed with 3004 (reconnect), and an
// authenticated client's rpc gets 100 (temporary) and stays connected.
func TestProxyBackendDown(t *testing.T) {
	b := newBackend(t)
	pc := b.proxyConfig(time.Second)
	b.srv.Close() // nothing listens there any more
	tn := startProxyNode(t, pc, nil)
	c := dialClient(t, tn.url)
	c.cmd("connect", map[string]any{})
	if code := c.closeCode(); code != DisconnectServerError.Code {
		t.Errorf("connect with the backend down: close code %d, want %d", code, DisconnectServerError.Code)
	}
	c2 := dialClient(t, tn.url)
	c2.connect(connectToken(t, "u1"))
	r := c2.cmd("rpc", map[string]any{"method": "x"})
	if errorCode(r) != ErrInternal.Code || !strings.Contains(string(r["error"]), `"temporary":true`) {
		t.Errorf("rpc with the backend down: %v, want temporary error 100", r)
	}
	c2.sync()
}

// Bad backend JSON gives a clear error (100 to the client, the reason in
// the log) and changes nothing else: the session's subscriptions and the
// channel are as before, the client stays connected.
func TestProxyBadJSON(t *testing.T) {
	b := newBackend(t)
	answers := []string{`not json`, `{"result":{"data":1},"error":{"code":1,"message":"x"}}`, `{}`, `{"result":{"b64data":"bm90IGpzb24="}}`, `{"result":"a string"}`}
	var i int
	b.setAnswer(func(ev string, _ map[string]json.RawMessage) (time.Duration, string) {
		if ev == "connect" {
			return 0, `{"result":{"user":"9"}}`
		}
		a := answers[i%len(answers)]
		i++
		return 0, a
	})
	tn := startProxyNode(t, b.proxyConfig(2*time.Second), proxyNamespace)
	c := dialClient(t, tn.url)
	if r := c.cmd("connect", map[string]any{}); r == nil || r["error"] != nil {
		t.Fatalf("connect: %v", r)
	}
	for range answers {
		if r := c.cmd("subscribe", map[string]any{"channel": "room:1"}); errorCode(r) != ErrInternal.Code {
			t.Errorf("subscribe with a bad backend answer: %v, want 100", r)
		}
	}
	for range answers {
		if r := c.cmd("publish", map[string]any{"channel": "room:1", "data": map[string]any{}}); errorCode(r) != ErrInternal.Code {
			t.Errorf("publish with a bad backend answer: %v, want 100", r)
		}
	}
	c.sync()
	if sub, _, v := c.state("room:1"); sub || len(v) > 0 || tn.hub.channels()["room:1"] != 0 {
		t.Errorf("bad backend answers left state: subscribed %v, violations %v", sub, v)
	}
	if h, err := tn.History(context.Background(), "room:1", 10, nil, false); err != nil || len(h.Publications) != 0 {
		t.Errorf("history after refused publications: %v %v", h, err)
	}
	if got := metricValue(t, tn, "spindle_command_errors_total"); got < float64(2*len(answers)) {
		t.Errorf("command errors %v, want at least %d", got, 2*len(answers))
	}
}

// A backend answering 1 s late, past the 300 ms timeout, holds no worker
// of the event loop: while 20 clients wait for their rpc, other clients'
// pings are answered (round trips logged), and each slow call ends with
// the temporary error 100, not a hang. The pings run until the last slow
// call has its answer.
func TestProxySlowBackendKeepsPingsFlowing(t *testing.T) {
	b := newBackend(t)
	b.setAnswer(func(ev string, _ map[string]json.RawMessage) (time.Duration, string) {
		if ev == "rpc" {
			return time.Second, `{"result":{"data":{}}}`
		}
		return 0, `{"result":{}}`
	})
	tn := startProxyNode(t, b.proxyConfig(300*time.Millisecond), nil)
	slow := make([]*tclient, 20)
	for i := range slow {
		slow[i] = dialClient(t, tn.url)
		slow[i].connect(connectToken(t, fmt.Sprint("slow", i)))
	}
	pingers := make([]*tclient, 5)
	for i := range pingers {
		pingers[i] = dialClient(t, tn.url)
		pingers[i].connect(connectToken(t, fmt.Sprint("ping", i)))
	}
	var wg sync.WaitGroup
	rpcErr := make([]uint32, len(slow))
	rpcTook := make([]time.Duration, len(slow))
	for i, c := range slow {
		wg.Go(func() {
			start := time.Now()
			rpcErr[i] = errorCode(c.cmd("rpc", map[string]any{"method": "slow"}))
			rpcTook[i] = time.Since(start)
		})
	}
	rpcDone := make(chan struct{})
	go func() { wg.Wait(); close(rpcDone) }()
	var rtts []time.Duration
	var mu sync.Mutex
	var pw sync.WaitGroup
	for _, c := range pingers {
		pw.Go(func() {
			for {
				select {
				case <-rpcDone: // ping for as long as the slow calls wait
					return
				default:
				}
				start := time.Now()
				if r := c.cmd("ping", map[string]any{}); r == nil {
					t.Errorf("ping not answered while the backend is slow")
					return
				}
				mu.Lock()
				rtts = append(rtts, time.Since(start))
				mu.Unlock()
				time.Sleep(10 * time.Millisecond) // pacing the pings over the slow calls, not waiting for a state
			}
		})
	}
	pw.Wait()
	for i, code := range rpcErr {
		if code != ErrInternal.Code {
			t.Errorf("slow rpc %d: error %d, want 100 after the timeout", i, code)
		}
	}
	var maxRTT, sum time.Duration
	for _, d := range rtts {
		sum += d
		maxRTT = max(maxRTT, d)
	}
	var maxRPC time.Duration
	for _, d := range rpcTook {
		maxRPC = max(maxRPC, d)
	}
	if len(rtts) > 0 {
		t.Logf("backend 1 s late, timeout 300 ms, 20 rpc calls waiting: %d pings of 5 other clients, mean round trip %v, max %v; slowest rpc error after %v",
			len(rtts), sum/time.Duration(len(rtts)), maxRTT, maxRPC)
	}
}

// The refresh proxy prolongs a proxied session whose expire_at passed,
// and ends it (3005) when the backend says expired.
func TestProxyRefresh(t *testing.T) {
	b := newBackend(t)
	var mu sync.Mutex
	expired := false
	b.setAnswer(func(ev string, body map[string]json.RawMessage) (time.Duration, string) {
		mu.Lock()
		defer mu.Unlock()
		switch ev {
		case "connect":
			return 0, fmt.Sprintf(`{"result":{"user":"5","expire_at":%d,"meta":{"k":1}}}`, time.Now().Unix()+1)
		case "refresh":
			if expired {
				return 0, `{"result":{"expired":true}}`
			}
			return 0, fmt.Sprintf(`{"result":{"expire_at":%d}}`, time.Now().Unix()+1)
		}
		return 0, `{"result":{}}`
	})
	tn := startProxyNode(t, b.proxyConfig(time.Second), func(c *Config) { c.PingInterval = 200 * time.Millisecond })
	c := dialClient(t, tn.url)
	r := c.cmd("connect", map[string]any{})
	if r == nil || r["error"] != nil {
		t.Fatalf("connect: %v", r)
	}
	if strings.Contains(string(r["connect"]), `"expires"`) {
		t.Errorf("connect reply %s tells the client to refresh; the refresh proxy does", r["connect"])
	}
	waitFor(t, "two refresh calls", func() bool { return len(b.requests("refresh")) >= 2 })
	c.sync() // still connected after its first expire_at
	rr := b.requests("refresh")[0].body
	if string(rr["user"]) != `"5"` || string(rr["meta"]) != `{"k":1}` {
		t.Errorf("refresh request %v: want user 5 and the connect meta", rr)
	}
	mu.Lock()
	expired = true
	mu.Unlock()
	if code := c.closeCode(); code != DisconnectExpired.Code {
		t.Errorf("refresh answered expired: close code %d, want %d", code, DisconnectExpired.Code)
	}
}

// A subscription the subscribe proxy gave an expire_at is prolonged by the
// sub_refresh proxy in a proxy_sub_refresh namespace, and ends with the
// unsubscribe push 2501 when the backend says expired; in a namespace
// without proxy_sub_refresh it ends at its expire_at.
func TestProxySubRefresh(t *testing.T) {
	b := newBackend(t)
	var mu sync.Mutex
	expired := false
	b.setAnswer(func(ev string, body map[string]json.RawMessage) (time.Duration, string) {
		mu.Lock()
		defer mu.Unlock()
		switch ev {
		case "connect":
			return 0, `{"result":{"user":"8"}}`
		case "subscribe":
			return 0, fmt.Sprintf(`{"result":{"expire_at":%d}}`, time.Now().Unix()+1)
		case "sub_refresh":
			if expired {
				return 0, `{"result":{"expired":true}}`
			}
			return 0, fmt.Sprintf(`{"result":{"expire_at":%d}}`, time.Now().Unix()+1)
		}
		return 0, `{"result":{}}`
	})
	tn := startProxyNode(t, b.proxyConfig(time.Second), func(c *Config) {
		c.Namespaces = map[string]config.ChannelOptions{
			"room":  {ProxySubscribe: true, ProxySubRefresh: true},
			"brief": {ProxySubscribe: true},
		}
	})
	ws, _, err := websocket.DefaultDialer.Dial(tn.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	send := func(cmd string) {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
	}
	// One frame, as SDKs send it: the subscribes wait for the proxied connect.
	send(`{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"room:1"}}` + "\n" + `{"id":3,"subscribe":{"channel":"brief:1"}}`)
	// unsubscribed reads until the server's unsubscribe push for ch and returns its code.
	unsubscribed := map[string]uint32{}
	readUntil := func(ch string) uint32 {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if code, ok := unsubscribed[ch]; ok {
				return code
			}
			_, data, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for the unsubscribe push of %s: %v", ch, err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				var m struct {
					Push struct {
						Channel     string `json:"channel"`
						Unsubscribe *struct {
							Code uint32 `json:"code"`
						} `json:"unsubscribe"`
					} `json:"push"`
				}
				if json.Unmarshal([]byte(line), &m) == nil && m.Push.Unsubscribe != nil {
					unsubscribed[m.Push.Channel] = m.Push.Unsubscribe.Code
				}
			}
		}
	}
	if code := readUntil("brief:1"); code != unsubscribeExpired {
		t.Errorf("brief:1 past its expire_at: unsubscribe code %d, want %d", code, unsubscribeExpired)
	}
	if _, gone := unsubscribed["room:1"]; gone {
		t.Error("room:1, which the sub_refresh proxy prolongs, ended when brief:1 expired")
	}
	waitFor(t, "two sub_refresh calls", func() bool { return len(b.requests("sub_refresh")) >= 2 })
	if r := b.requests("sub_refresh")[0].body; string(r["channel"]) != `"room:1"` || string(r["user"]) != `"8"` {
		t.Errorf("sub_refresh request %v: want channel room:1 of user 8", r)
	}
	mu.Lock()
	expired = true
	mu.Unlock()
	if code := readUntil("room:1"); code != unsubscribeExpired {
		t.Errorf("sub_refresh answered expired: unsubscribe code %d, want %d", code, unsubscribeExpired)
	}
	waitFor(t, "both channels left", func() bool { ch := tn.hub.channels(); return ch["room:1"] == 0 && ch["brief:1"] == 0 })
}

// Commands in the frame of a connect the backend decides (SDKs send their
// subscribes so) wait for it, then run in order; a connect refused so
// leaves them to meet an unauthenticated session, which is closed (3501).
func TestProxyCommandsWaitForConnect(t *testing.T) {
	b := newBackend(t)
	b.setAnswer(func(ev string, body map[string]json.RawMessage) (time.Duration, string) {
		switch {
		case ev == "connect" && string(body["name"]) == `"refused"`:
			return 100 * time.Millisecond, `{"error":{"code":4401,"message":"no"}}`
		case ev == "connect":
			return 200 * time.Millisecond, `{"result":{"user":"3"}}`
		case ev == "rpc":
			return 0, `{"result":{"data":{"ok":true}}}`
		}
		return 0, `{"result":{}}`
	})
	tn := startProxyNode(t, b.proxyConfig(2*time.Second), proxyNamespace)
	ws, _, err := websocket.DefaultDialer.Dial(tn.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	frame := strings.Join([]string{`{"id":1,"connect":{}}`, `{"id":2,"subscribe":{"channel":"room:a"}}`, `{"id":3,"subscribe":{"channel":"news"}}`, `{"id":4,"ping":{}}`}, "\n")
	if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	// A second frame while the backend still decides.
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":5,"rpc":{"method":"m"}}`)); err != nil {
		t.Fatal(err)
	}
	var order []uint32
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(order) < 5 {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after replies %v: %v", order, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			var m struct {
				ID    uint32          `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal([]byte(line), &m) != nil || m.ID == 0 {
				continue
			}
			if m.Error != nil {
				t.Errorf("reply %d: error %s", m.ID, m.Error)
			}
			order = append(order, m.ID)
		}
	}
	// room:a and the rpc go to the backend in turn and may answer later;
	// news and ping are answered in the order sent, after connect.
	if order[0] != 1 || slices.Index(order, 3) > slices.Index(order, 4) {
		t.Errorf("reply order %v: want connect first, then news before ping", order)
	}

	c := dialClient(t, tn.url)
	body, _ := json.Marshal(map[string]any{"name": "refused"})
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":`+string(body)+`}`+"\n"+`{"id":2,"subscribe":{"channel":"news"}}`)); err != nil {
		t.Fatal(err)
	}
	if code := c.closeCode(); code != DisconnectBadRequest.Code {
		t.Errorf("subscribe after a refused connect: close code %d, want %d", code, DisconnectBadRequest.Code)
	}
	if tn.hub.channels()["news"] != 1 {
		t.Errorf("news subscribers %d, want only the first client's", tn.hub.channels()["news"])
	}
}

// With the proxy's one worker busy and its queue of one taken, the next
// rpc is refused at once with the temporary 100, not queued behind them.
func TestProxyQueueFull(t *testing.T) {
	b := newBackend(t)
	release := make(chan struct{})
	b.setAnswer(func(ev string, _ map[string]json.RawMessage) (time.Duration, string) {
		if ev == "rpc" {
			<-release
		}
		return 0, `{"result":{}}`
	})
	pc := b.proxyConfig(5 * time.Second)
	pc.Workers, pc.Queue = 1, 1
	tn := startProxyNode(t, pc, nil)
	defer close(release) // before the backend's cleanup: its handlers end
	clients := make([]*tclient, 3)
	for i := range clients {
		clients[i] = dialClient(t, tn.url)
		clients[i].connect(connectToken(t, fmt.Sprint("q", i)))
	}
	var wg sync.WaitGroup
	for _, c := range clients[:2] { // one in the worker, one in the queue
		wg.Go(func() { c.cmd("rpc", map[string]any{"method": "hold"}) })
	}
	waitFor(t, "the first rpc at the backend", func() bool { return len(b.requests("rpc")) == 1 })
	waitFor(t, "the second rpc queued", func() bool { return tn.proxy.Queued() == 1 })
	start := time.Now()
	r := clients[2].cmd("rpc", map[string]any{"method": "third"})
	if errorCode(r) != ErrInternal.Code {
		t.Errorf("rpc with the proxy queue full: %v, want 100", r)
	}
	t.Logf("refused after %v", time.Since(start))
	release <- struct{}{}
	release <- struct{}{}
	wg.Wait()
}

// A connect the backend answers past proxy_connect_timeout is closed with
// 3004, which SDKs answer by reconnecting.
func TestProxyConnectTimeout(t *testing.T) {
	b := newBackend(t)
	b.setAnswer(func(string, map[string]json.RawMessage) (time.Duration, string) {
		return time.Second, `{"result":{"user":"late"}}`
	})
	tn := startProxyNode(t, b.proxyConfig(200*time.Millisecond), nil)
	c := dialClient(t, tn.url)
	start := time.Now()
	c.cmd("connect", map[string]any{})
	if code := c.closeCode(); code != DisconnectServerError.Code {
		t.Errorf("connect past the timeout: close code %d, want %d", code, DisconnectServerError.Code)
	}
	t.Logf("timeout 200 ms, backend 1 s late: closed after %v", time.Since(start))
	if n := len(tn.sessions.find("late", "")); n != 0 {
		t.Errorf("the late answer authenticated %d sessions", n)
	}
}

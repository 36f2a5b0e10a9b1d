package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker/memory"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway/proxy"
	"github.com/spindlehq/spindle/internal/leakcheck"
	"github.com/spindlehq/spindle/transport"
)

// Every test of the package ends with no goroutine of its own left;
// nbio starts a process-wide task pool in its package init.
func TestMain(m *testing.M) {
	leakcheck.Main(m)
}

const testSecret = "gateway-test-secret"

// testNode is a real node on a real event-loop transport on a loopback
// port, with the in-memory broker.
type testNode struct {
	*Node
	mem *memory.Broker
	tr  *transport.Server
	url string
	reg *prometheus.Registry

	uniURL string // the unidirectional WebSocket endpoint
	base   string // http:// and the listener's address, for the streams and the emulation endpoint
}

func testConfig() Config {
	c := config.Default()
	c.MaxConnections = 1000
	return FromConfig(c)
}

// testLogger writes warnings and errors to stderr, which go test shows
// only for a package that failed; SPINDLE_TEST_LOG=1 adds the debug lines.
func testLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("SPINDLE_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// newTestNode builds a node (not started) with cfg adjusted by mod.
func newTestNode(t *testing.T, mod func(*Config)) *testNode {
	t.Helper()
	return newTestNodeWith(t, mod, nil)
}

// newTestNodeWith is newTestNode with px as the node's backend proxy.
func newTestNodeWith(t *testing.T, mod func(*Config), px *proxy.Proxy) *testNode {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{mem: memory.New(), reg: prometheus.NewRegistry()}
	tn.Node, err = New(cfg, Options{Broker: tn.mem, Presence: tn.mem, Verifier: v, Logger: testLogger(), Registry: tn.reg, Version: "test", Proxy: px})
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// startTestNode starts a node and its transport; the test's cleanup stops both.
func startTestNode(t *testing.T, mod func(*Config)) *testNode {
	t.Helper()
	tn := newTestNode(t, mod)
	serveTestNode(t, tn, nil)
	return tn
}

// serveTestNode starts tn and its transport, which keeps the upgrade
// headers keep; the test's cleanup stops both.
func serveTestNode(t *testing.T, tn *testNode, keep []string) {
	t.Helper()
	if err := tn.Start(); err != nil {
		t.Fatal(err)
	}
	tr, err := transport.New(transport.Config{
		Addr: "127.0.0.1:0", Path: "/connection/websocket", MaxMessageSize: 64 << 10,
		CheckOrigin: tn.CheckOrigin, Admit: tn.Admit, MaxConns: tn.MaxConnections(), Logger: testLogger(),
		KeepHeaders: keep, Subprotocols: Subprotocols, Binary: Binary, UniPath: UniPath,
		UniSSEPath: UniSSEPath, UniHTTPStreamPath: UniHTTPStreamPath,
		SSEPath: SSEPath, HTTPStreamPath: HTTPStreamPath, HTTP: tn.EmulationHandler(),
	}, tn.Node)
	if err == nil {
		err = tr.Start()
	}
	if err != nil {
		_ = tn.Close()
		t.Fatal(err)
	}
	tn.tr = tr
	tn.url = "ws://" + tr.Addr().String() + "/connection/websocket"
	tn.uniURL = "ws://" + tr.Addr().String() + UniPath
	tn.base = "http://" + tr.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			t.Errorf("transport shutdown: %v", err)
		}
		if err := tn.Close(); err != nil {
			t.Errorf("node close: %v", err)
		}
	})
}

func connectToken(t *testing.T, user string, channels ...string) string {
	t.Helper()
	tok, err := auth.MintConnect(testSecret, auth.ConnectClaims{UserID: user, Channels: channels}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tclient is a wire-level client. Its reader follows, message by message,
// which channels the server has told it it is subscribed to (replies and
// subscribe/unsubscribe pushes, in the order written), and notes every
// message that contradicts that view.
type tclient struct {
	t  *testing.T
	ws *websocket.Conn
	id string // the client id the server gave

	wmu sync.Mutex // serializes writes: commands may be sent from several goroutines

	mu         sync.Mutex // guards the fields below
	next       uint32
	waiting    map[uint32]pendingCmd
	view       map[string]bool // channel → subscribed, as the client was told
	pubs       map[string]int  // publications received per channel
	joins      map[string]int  // join pushes received per channel
	leaves     map[string]int  // leave pushes received per channel
	violations []string
	err        error

	done chan struct{}
}

type pendingCmd struct {
	method, channel string
	reply           chan map[string]json.RawMessage
}

func dialClient(t *testing.T, url string) *tclient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &tclient{t: t, ws: ws, waiting: map[uint32]pendingCmd{}, view: map[string]bool{}, pubs: map[string]int{}, joins: map[string]int{}, leaves: map[string]int{}, done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { c.close() })
	return c
}

// close closes the socket and waits for the reader to end.
func (c *tclient) close() {
	_ = c.ws.Close()
	<-c.done
}

func (c *tclient) read() {
	defer close(c.done)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			_ = c.ws.Close() // as the SDKs do: the server's close frame ends the connection
			c.mu.Lock()
			c.err = err
			for id, p := range c.waiting {
				close(p.reply)
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			return
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(line) > 0 {
				c.handle(line)
			}
		}
	}
}

func (c *tclient) handle(line []byte) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		c.mu.Lock()
		c.violations = append(c.violations, fmt.Sprintf("bad JSON %q", line))
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if raw, ok := m["push"]; ok {
		var p struct {
			Channel     string          `json:"channel"`
			Pub         json.RawMessage `json:"pub"`
			Subscribe   json.RawMessage `json:"subscribe"`
			Unsubscribe json.RawMessage `json:"unsubscribe"`
			Join        json.RawMessage `json:"join"`
			Leave       json.RawMessage `json:"leave"`
		}
		_ = json.Unmarshal(raw, &p)
		switch {
		case p.Subscribe != nil:
			c.subscribed(p.Channel, "subscribe push")
		case p.Unsubscribe != nil:
			c.view[p.Channel] = false
		case p.Pub != nil:
			if !c.view[p.Channel] {
				c.violations = append(c.violations, "publication in "+p.Channel+" while not subscribed")
			}
			c.pubs[p.Channel]++
		case p.Join != nil:
			c.joins[p.Channel]++
		case p.Leave != nil:
			c.leaves[p.Channel]++
		}
		return
	}
	var id uint32
	if raw, ok := m["id"]; ok {
		_ = json.Unmarshal(raw, &id)
	}
	p, ok := c.waiting[id]
	if !ok {
		return // a ping
	}
	delete(c.waiting, id)
	if m["error"] == nil {
		switch p.method {
		case "subscribe":
			c.subscribed(p.channel, "subscribe reply")
		case "unsubscribe":
			c.view[p.channel] = false
		}
	}
	p.reply <- m
}

// subscribed records a subscription; being told twice is a double subscription.
func (c *tclient) subscribed(ch, how string) {
	if c.view[ch] {
		c.violations = append(c.violations, how+" for "+ch+" while already subscribed")
	}
	c.view[ch] = true
}

// cmd sends one command and waits for its reply; nil when the connection closed.
func (c *tclient) cmd(method string, params map[string]any) map[string]json.RawMessage {
	c.t.Helper()
	c.mu.Lock()
	c.next++
	id := c.next
	ch, _ := params["channel"].(string)
	p := pendingCmd{method: method, channel: ch, reply: make(chan map[string]json.RawMessage, 1)}
	c.waiting[id] = p
	c.mu.Unlock()
	body, _ := json.Marshal(params)
	c.wmu.Lock()
	err := c.ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,%q:%s}`, id, method, body))
	c.wmu.Unlock()
	if err != nil {
		return nil
	}
	select {
	case r := <-p.reply:
		return r
	case <-time.After(10 * time.Second):
		c.t.Errorf("no reply to %s %d", method, id)
		return nil
	}
}

// connect authenticates and remembers the client id.
func (c *tclient) connect(tok string) map[string]json.RawMessage {
	c.t.Helper()
	r := c.cmd("connect", map[string]any{"token": tok})
	if r == nil || r["error"] != nil {
		c.t.Fatalf("connect: %s", r["error"])
	}
	var res struct {
		Client string `json:"client"`
	}
	_ = json.Unmarshal(r["connect"], &res)
	c.id = res.Client
	return r
}

// sync returns once the client has read everything the server queued for
// it before this call: a ping's reply comes after it.
func (c *tclient) sync() {
	c.t.Helper()
	if r := c.cmd("ping", map[string]any{}); r == nil {
		c.t.Fatalf("client %s: connection closed during sync: %v", c.id, c.err)
	}
}

func (c *tclient) state(ch string) (subscribed bool, pubs int, violations []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view[ch], c.pubs[ch], append([]string(nil), c.violations...)
}

func errorCode(r map[string]json.RawMessage) uint32 {
	var e struct{ Code uint32 }
	if r["error"] != nil {
		_ = json.Unmarshal(r["error"], &e)
	}
	return e.Code
}

// metricValue sums one series of the node's registry.
func metricValue(t *testing.T, tn *testNode, name string) float64 {
	t.Helper()
	mfs, err := tn.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// closeCode waits for the connection to end and returns the server's close
// code, or -1 when it ended without a close frame.
func (c *tclient) closeCode() int {
	<-c.done
	var ce *websocket.CloseError
	if errors.As(c.err, &ce) {
		return ce.Code
	}
	return -1
}

// presenceEvents is how many join and leave pushes of ch the client has read.
func (c *tclient) presenceEvents(ch string) (joins, leaves int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joins[ch], c.leaves[ch]
}

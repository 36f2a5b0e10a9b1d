package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/broker/memory"
	"github.com/spindlehq/spindle/config"
)

// A node starts once; Close stops its goroutines and its broker, may come
// before Start, and may be repeated.
func TestNodeLifecycle(t *testing.T) {
	t.Run("start twice", func(t *testing.T) {
		tn := newTestNode(t, nil)
		if err := tn.Start(); err != nil {
			t.Fatal(err)
		}
		if err := tn.Start(); err == nil {
			t.Fatal("second Start succeeded")
		}
		if err := tn.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tn.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := tn.Start(); err == nil {
			t.Fatal("Start after Close succeeded")
		}
		goleak.VerifyNone(t, goleak.IgnoreCurrent())
	})
	t.Run("close before start", func(t *testing.T) {
		tn := newTestNode(t, nil)
		if err := tn.Close(); err != nil {
			t.Fatal(err)
		}
		// The broker was never started by the node, so it is not the
		// node's to close: it can still be started by whoever owns it.
		if err := tn.mem.Start(tn.Node); err != nil {
			t.Fatalf("broker after a node closed before Start: %v", err)
		}
		_ = tn.mem.Close()
	})
	t.Run("close stops the broker", func(t *testing.T) {
		tn := newTestNode(t, nil)
		if err := tn.Start(); err != nil {
			t.Fatal(err)
		}
		if err := tn.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tn.mem.Start(tn.Node); err == nil {
			t.Fatal("the broker still starts after the node closed it")
		}
	})
	t.Run("bad config", func(t *testing.T) {
		cfg := testConfig()
		cfg.PingInterval = 0
		cfg.MaxSubscriptions = 0
		mem := memory.New()
		_, err := New(cfg, Options{Broker: mem, Presence: mem})
		if err == nil || !strings.Contains(err.Error(), "ping interval") || !strings.Contains(err.Error(), "max subscriptions") {
			t.Fatalf("New with a bad config: %v", err)
		}
		if _, err := New(testConfig(), Options{}); err == nil {
			t.Fatal("New without a broker succeeded")
		}
	})
}

// Shutdown tells every client to reconnect elsewhere (3001), refuses new
// upgrades meanwhile, and returns once they are gone; with a deadline too
// short it says how many were left and still closes the node.
func TestShutdownDrains(t *testing.T) {
	tn := startTestNode(t, func(c *Config) { c.DrainWindow = 200 * time.Millisecond })
	var cs []*tclient
	for range 5 {
		c := dialClient(t, tn.url)
		c.connect(connectToken(t, "d"))
		cs = append(cs, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tn.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, c := range cs {
		if code := c.closeCode(); code != DisconnectShutdown.Code {
			t.Errorf("client closed with %d (%v), want 3001", code, c.err)
		}
	}
	if tn.NumClients() != 0 || !tn.Info().Draining {
		t.Fatalf("after Shutdown: %d clients, draining=%v", tn.NumClients(), tn.Info().Draining)
	}
	if err := tn.Shutdown(ctx); err == nil {
		t.Fatal("second Shutdown succeeded")
	}
}

// When Shutdown's deadline comes before the end of the drain window, the
// clients not yet told are told at once, and the node closes anyway.
func TestShutdownDeadline(t *testing.T) {
	tn := startTestNode(t, func(c *Config) { c.DrainWindow = time.Hour })
	var cs []*tclient
	for range 3 {
		c := dialClient(t, tn.url)
		c.connect(connectToken(t, "d"))
		cs = append(cs, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := tn.Shutdown(ctx)
	// All gone by the deadline gives nil; someone still there, the deadline.
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Shutdown took %v with a 50 ms deadline", took)
	}
	for _, c := range cs {
		if code := c.closeCode(); code != DisconnectShutdown.Code {
			t.Errorf("client closed with %d, want 3001", code)
		}
	}
	if err := tn.mem.Start(tn.Node); err == nil {
		t.Fatal("the node did not close its broker after a cut-short drain")
	}
}

// The connection limit holds for upgrades arriving together (a place is
// reserved before the upgrade), failed upgrades give their place back, and
// closed sessions free theirs.
func TestAdmit(t *testing.T) {
	const limit = 4
	tn := startTestNode(t, func(c *Config) { c.MaxConnections = limit })
	httpURL := "http" + strings.TrimPrefix(tn.url, "ws")
	for range 6 { // not upgrades: each is admitted, fails, and must release
		resp, err := http.Get(httpURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var mu sync.Mutex
	var conns []*websocket.Conn
	refused := 0
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			ws, resp, err := websocket.DefaultDialer.Dial(tn.url, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				conns = append(conns, ws)
			case resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
				refused++
			default:
				t.Errorf("dial: %v", err)
			}
		})
	}
	wg.Wait()
	if len(conns) != limit || refused != 30-limit {
		t.Fatalf("%d upgrades admitted and %d refused with a limit of %d", len(conns), refused, limit)
	}
	for _, ws := range conns {
		ws.Close()
	}
	waitFor(t, "closed sessions to free their places", func() bool { return tn.NumClients() == 0 })
	for range limit {
		dialClient(t, tn.url)
	}
	if v := metricValue(t, tn, "spindle_connections_refused_total"); v != 30-limit {
		t.Fatalf("refusals counted %v, want %d", v, 30-limit)
	}
}

// One error type: codes survive wrapping, messages do not stutter, and
// anything that is not an *Error is internal.
func TestErrorVocabulary(t *testing.T) {
	err := errorf(ErrBadRequest, "publish %q: data is not JSON", "x")
	if got := err.Error(); got != `publish "x": data is not JSON: bad request` {
		t.Fatalf("message %q", got)
	}
	wrapped := errors.Join(errors.New("other"), err)
	var ge *Error
	if !errors.As(wrapped, &ge) || ge.Code != 107 || !errors.Is(wrapped, ErrBadRequest) || errors.Is(wrapped, ErrUnknownChannel) {
		t.Fatalf("matching through wrapping: %v", ge)
	}
	if e := AsError(errors.New("disk on fire")); e != ErrInternal || !e.Temporary {
		t.Fatalf("plain error maps to %+v", e)
	}
	if e := AsError(errStillLeaving); e.Code != 100 || !e.Temporary || !errors.Is(errStillLeaving, ErrInternal) {
		t.Fatalf("errStillLeaving = %+v", e)
	}
	if p := protoError(err); p.Code != 107 || p.Message != "bad request" {
		t.Fatalf("protocol error %+v", p)
	}
}

func TestRulesResolve(t *testing.T) {
	cfg := testConfig()
	cfg.MaxChannelLength = 16
	cfg.Namespaces = map[string]config.ChannelOptions{"chat": {HistorySize: 7}}
	r := newRules(&cfg)
	for _, tc := range []struct {
		ch      string
		history int
		err     *Error
	}{
		{"news", cfg.Channel.HistorySize, nil},
		{"news#42", cfg.Channel.HistorySize, nil},
		{"chat:room", 7, nil},
		{"chat:", 7, nil},
		{"nope:room", 0, ErrUnknownChannel},
		{"", 0, ErrBadRequest},
		{strings.Repeat("x", 17), 0, ErrBadRequest},
		{"bad\xff", 0, ErrBadRequest},
	} {
		o, err := r.resolve(tc.ch)
		switch {
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: error %v, want %v", tc.ch, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.ch, err)
		case o.HistorySize != tc.history:
			t.Errorf("%q: history size %d, want %d", tc.ch, o.HistorySize, tc.history)
		}
	}
	// Options are resolved once: two channels of a namespace share them.
	a, _ := r.resolve("chat:a")
	b, _ := r.resolve("chat:b")
	if a != b {
		t.Error("options of one namespace copied per channel")
	}
}

// Commands before connect, without an id, or of an unknown method get
// what Centrifugo gives them.
func TestDispatch(t *testing.T) {
	tn := startTestNode(t, nil)
	t.Run("before connect", func(t *testing.T) {
		c := dialClient(t, tn.url)
		c.cmd("subscribe", map[string]any{"channel": "x"})
		if code := c.closeCode(); code != DisconnectBadRequest.Code {
			t.Fatalf("closed with %d (%v), want 3501", code, c.err)
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		c := dialClient(t, tn.url)
		c.connect(connectToken(t, "1"))
		if r := c.cmd("rpc", map[string]any{"method": "m"}); errorCode(r) != ErrMethodNotFound.Code {
			t.Fatalf("rpc: %s", r["error"])
		}
	})
	t.Run("malformed frame", func(t *testing.T) {
		c := dialClient(t, tn.url)
		c.wmu.Lock()
		_ = c.ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":`))
		c.wmu.Unlock()
		if code := c.closeCode(); code != DisconnectBadRequest.Code {
			t.Fatalf("closed with %d (%v), want 3501", code, c.err)
		}
	})
	t.Run("publish permission", func(t *testing.T) {
		c := dialClient(t, tn.url)
		c.connect(connectToken(t, "1"))
		if r := c.cmd("publish", map[string]any{"channel": "x", "data": json.RawMessage(`{}`)}); errorCode(r) != ErrPermissionDenied.Code {
			t.Fatalf("publish without permission: %s", r["error"])
		}
	})
}

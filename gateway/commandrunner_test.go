package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/memory"
)

// gatedBroker is the real memory broker whose Publish waits until the
// gate opens: a broker that answers late, under the test's control.
type gatedBroker struct {
	*memory.Broker
	gate    chan struct{}
	mu      sync.Mutex
	waiting int
}

func (g *gatedBroker) Publish(ctx context.Context, ch string, data json.RawMessage, o broker.PublishOptions) (broker.StreamPosition, error) {
	g.mu.Lock()
	g.waiting++
	g.mu.Unlock()
	select {
	case <-g.gate:
	case <-ctx.Done():
		return broker.StreamPosition{}, ctx.Err()
	}
	return g.Broker.Publish(ctx, ch, data, o)
}

func (g *gatedBroker) numWaiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

// While more client publishes wait on a slow broker than the event loop
// has workers, a connected client's ping is still answered, and every
// publish completes once the broker answers.
func TestCommandsWaitingOnTheBrokerDoNotHoldTheEventLoop(t *testing.T) {
	mem := memory.New()
	gb := &gatedBroker{Broker: mem, gate: make(chan struct{})}
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.MaxConnections = 5000
	cfg.Channel.AllowPublishForClient = true
	tn := &testNode{mem: mem, reg: prometheus.NewRegistry()}
	tn.Node, err = New(cfg, Options{Broker: gb, Presence: mem, Verifier: v, Logger: testLogger(), Registry: tn.reg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	serveTestNode(t, tn, nil)
	opened := false
	defer func() {
		if !opened {
			close(gb.gate)
		}
	}()

	other := dialClient(t, tn.url)
	other.connect(connectToken(t, "other"))

	publishers := runtime.GOMAXPROCS(0)*256 + 16 // more than the event loop's message workers
	type pub struct {
		ws   *websocket.Conn
		done chan error
	}
	var pubs []pub
	for i := range publishers {
		ws, _, err := websocket.DefaultDialer.Dial(tn.url, nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer ws.Close()
		tok, err := auth.MintConnect(testSecret, auth.ConnectClaims{UserID: fmt.Sprint(i)}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":1,"connect":{"token":%q}}`, tok)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		p := pub{ws: ws, done: make(chan error, 1)}
		pubs = append(pubs, p)
	}
	for i, p := range pubs {
		if err := p.ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":2,"publish":{"channel":"c%d","data":{"n":%d}}}`, i, i)); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = p.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, data, err := p.ws.ReadMessage()
			if err == nil && string(data) != `{"id":2,"publish":{}}` {
				err = fmt.Errorf("publish reply %s", data)
			}
			p.done <- err
		}()
	}
	// As many wait on the broker as the command runner has goroutines; the
	// rest wait for one of those (on the event loop, they would all wait there).
	waitFor(t, "the publishes to wait on the broker", func() bool { return gb.numWaiting() >= min(publishers, commandWorkers) })

	other.sync() // a ping, answered while every publish still waits

	close(gb.gate)
	opened = true
	for i, p := range pubs {
		if err := <-p.done; err != nil {
			t.Fatalf("publisher %d: %v", i, err)
		}
	}
}

package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/spindlehq/spindle/server"
)

// Two gateways on one broker are one cluster: a client on either node gets
// what the server API of node A publishes, in order and exactly once, with
// the offsets A's API returned; presence and history are the same from
// both; readiness and spindle_broker_up follow the broker.
func TestTwoNodes(t *testing.T) {
	onEachBroker(t, func(t *testing.T, br sharedBroker) {
		a, b := startServer(t, br.configure), startServer(t, br.configure)
		for _, node := range []*server.Server{a, b} {
			waitFor(t, func() bool { return adminStatus(t, node, "/readyz") == 200 })
		}
		ca := dial(t, a, nil)
		ca.connect(token(t, "1", time.Hour))
		cb := dial(t, b, nil)
		cb.connect(token(t, "2", time.Hour))
		for _, w := range []*wsc{ca, cb} {
			sr := field[subResult](t, w.cmd("subscribe", map[string]any{"channel": "room", "recoverable": true})["subscribe"])
			if !sr.Recoverable || sr.Epoch == "" {
				t.Fatalf("subscribe result = %+v", sr)
			}
		}
		const n = 30
		for i := 1; i <= n+1; i++ { // the last one is a marker: nothing arrives twice before it
			code, out := api(t, a, "key", "publish", map[string]any{"channel": "room", "data": map[string]int{"n": i}})
			if code != 200 || out["error"] != nil {
				t.Fatalf("publish on A: HTTP %d %s", code, out["error"])
			}
			if res := field[struct{ Offset uint64 }](t, out["result"]); res.Offset != uint64(i) {
				t.Fatalf("publish %d on A: offset %d (%s)", i, res.Offset, out["result"])
			}
		}
		for name, w := range map[string]*wsc{"A": ca, "B": cb} {
			for i := 1; i <= n+1; i++ {
				p, ok := w.nextPush(5 * time.Second)
				if !ok || p.Pub == nil {
					t.Fatalf("client on %s: publication %d not received", name, i)
				}
				if p.Channel != "room" || p.Pub.Offset != uint64(i) || string(p.Pub.Data) != fmt.Sprintf(`{"n":%d}`, i) {
					t.Fatalf("client on %s: push %d = %q offset %d %s, want publication %d once, in order", name, i, p.Channel, p.Pub.Offset, p.Pub.Data, i)
				}
			}
		}
		for name, w := range map[string]*wsc{"A": ca, "B": cb} {
			st := field[struct {
				NumClients int `json:"num_clients"`
				NumUsers   int `json:"num_users"`
			}](t, w.cmd("presence_stats", map[string]any{"channel": "room"})["presence_stats"])
			if st.NumClients != 2 || st.NumUsers != 2 {
				t.Fatalf("presence stats from %s = %+v", name, st)
			}
		}
		h := field[struct {
			Publications []struct{ Offset uint64 }
			Offset       uint64
		}](t, cb.cmd("history", map[string]any{"channel": "room", "limit": 100})["history"])
		if len(h.Publications) != n+1 || h.Offset != n+1 || h.Publications[0].Offset != 1 {
			t.Fatalf("history from B = %+v", h)
		}
		// The broker gone: not ready, and spindle_broker_up says why; back: ready.
		if up := metricValue(t, a, "spindle_broker_up"); up != 1 {
			t.Fatalf("spindle_broker_up = %v with the broker up", up)
		}
		br.stop()
		waitFor(t, func() bool { return adminStatus(t, a, "/readyz") == 503 })
		if up := metricValue(t, a, "spindle_broker_up"); up != 0 {
			t.Fatalf("spindle_broker_up = %v with the broker stopped", up)
		}
		br.restart()
		waitFor(t, func() bool { return adminStatus(t, a, "/readyz") == 200 })
		waitFor(t, func() bool { return metricValue(t, a, "spindle_broker_up") == 1 })
	})
}

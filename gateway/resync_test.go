package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/broker"
)

// wireReader reads a raw connection's replies and pushes line by line.
type wireReader struct {
	t       *testing.T
	ws      *websocket.Conn
	pending [][]byte
}

func (r *wireReader) send(t *testing.T, line string) {
	t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(line)); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message that is not a ping.
func (r *wireReader) next() map[string]json.RawMessage {
	r.t.Helper()
	for {
		for len(r.pending) == 0 {
			_ = r.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err := r.ws.ReadMessage()
			if err != nil {
				r.t.Fatalf("read: %v", err)
			}
			r.pending = bytes.Split(bytes.TrimSpace(data), []byte("\n"))
		}
		line := r.pending[0]
		r.pending = r.pending[1:]
		if string(line) == "{}" {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			r.t.Fatalf("bad JSON %q", line)
		}
		return m
	}
}

type wirePush struct {
	Channel string `json:"channel"`
	Pub     *struct {
		Offset uint64          `json:"offset"`
		Data   json.RawMessage `json:"data"`
	} `json:"pub"`
	Unsubscribe *struct {
		Code   uint32 `json:"code"`
		Reason string `json:"reason"`
	} `json:"unsubscribe"`
}

func (r *wireReader) push() wirePush {
	r.t.Helper()
	m := r.next()
	var p wirePush
	if m["push"] == nil || json.Unmarshal(m["push"], &p) != nil {
		r.t.Fatalf("want a push, got %v", m)
	}
	return p
}

// A publication whose offset does not follow the last one the node
// delivered (publications it never got from the broker) is not delivered:
// the subscribers get unsubscribe 2500 and resubscribe with recovery; the
// channel then goes on from a fresh position.
func TestMissedPublicationsTellSubscribersToRecover(t *testing.T) {
	tn := startTestNode(t, nil)
	ws, _, err := websocket.DefaultDialer.Dial(tn.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	r := &wireReader{t: t, ws: ws}
	r.send(t, fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, connectToken(t, "42")))
	r.next()
	r.send(t, `{"id":2,"subscribe":{"channel":"room","recover":false,"recoverable":true}}`)
	var sub struct {
		Subscribe struct {
			Epoch string `json:"epoch"`
		} `json:"subscribe"`
	}
	m := r.next()
	if err := json.Unmarshal(mustJSON(t, m), &sub); err != nil || sub.Subscribe.Epoch == "" {
		t.Fatalf("subscribe reply %s", mustJSON(t, m))
	}
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		if _, err := tn.Publish(ctx, "room", json.RawMessage(fmt.Sprint(i)), PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		if p := r.push(); p.Pub == nil || p.Pub.Offset != uint64(i) {
			t.Fatalf("publication %d: %+v", i, p)
		}
	}
	// The broker hands over offset 5: 3 and 4 never reached this node.
	tn.HandlePublication("room", &broker.Publication{Offset: 5, Data: json.RawMessage(`5`)}, broker.StreamPosition{Offset: 5, Epoch: sub.Subscribe.Epoch})
	p := r.push()
	if p.Unsubscribe == nil || p.Unsubscribe.Code != 2500 || p.Channel != "room" {
		t.Fatalf("after a gap: %+v, want unsubscribe 2500", p)
	}
	if v := metricValue(t, tn, "spindle_resyncs_total"); v != 1 {
		t.Fatalf("spindle_resyncs_total = %v", v)
	}
	// The SDK resubscribes with recovery from where it was (offset 2).
	waitFor(t, "the old subscription to end", func() bool { return tn.hub.numSubs() == 0 })
	r.send(t, fmt.Sprintf(`{"id":3,"subscribe":{"channel":"room","recover":true,"recoverable":true,"offset":2,"epoch":%q}}`, sub.Subscribe.Epoch))
	var rec struct {
		Subscribe struct {
			Recovered bool `json:"recovered"`
		} `json:"subscribe"`
	}
	if m := r.next(); json.Unmarshal(mustJSON(t, m), &rec) != nil || !rec.Subscribe.Recovered {
		t.Fatalf("resubscribe: %s", mustJSON(t, m))
	}
	if _, err := tn.Publish(ctx, "room", json.RawMessage(`3`), PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := r.push(); p.Pub == nil || p.Pub.Offset != 3 {
		t.Fatalf("after resubscribing: %+v, want offset 3 (the injected 5 was never delivered)", p)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

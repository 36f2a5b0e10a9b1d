package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A publication larger than the client queue bound is delivered, live and
// again by recovery after a reconnect, and small ones queued behind it
// still arrive; it once disconnected its subscriber as slow, on every
// reconnect, forever.
func TestFrameLargerThanQueueBound(t *testing.T) {
	const bound = 64 << 10
	tn := startTestNode(t, func(c *Config) { c.ClientQueueMaxSize = bound })
	ctx := context.Background()
	c := dialClient(t, tn.url)
	c.connect(connectToken(t, "big"))
	r := c.cmd("subscribe", map[string]any{"channel": "news", "recoverable": true})
	var res struct {
		Epoch string `json:"epoch"`
	}
	_ = json.Unmarshal(r["subscribe"], &res)
	big := json.RawMessage(`"` + strings.Repeat("x", 3*bound) + `"`)
	if _, err := tn.Publish(ctx, "news", big, PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := tn.Publish(ctx, "news", json.RawMessage(`{"small":true}`), PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the large publication and those behind it", func() bool {
		_, pubs, _ := c.state("news")
		return pubs == 21 || c.err != nil
	})
	if c.err != nil {
		t.Fatalf("subscriber dropped: %v", c.err)
	}
	c.close()

	// Recovery from offset 0 carries the large publication in the reply.
	again := dialClient(t, tn.url)
	again.connect(connectToken(t, "big"))
	r = again.cmd("subscribe", map[string]any{"channel": "news", "recover": true, "offset": 0, "epoch": res.Epoch})
	var rec struct {
		Recovered    bool              `json:"recovered"`
		Publications []json.RawMessage `json:"publications"`
	}
	if r == nil {
		t.Fatalf("no subscribe reply: %v", again.err)
	}
	_ = json.Unmarshal(r["subscribe"], &rec)
	if !rec.Recovered || len(rec.Publications) != 21 {
		t.Fatalf("recovered=%v with %d publications, want 21", rec.Recovered, len(rec.Publications))
	}
	again.sync()
}

// A publication over max_publication_size is refused at publish, by the API
// and from a client alike, with "limit exceeded", and nothing is stored.
func TestPublicationSizeLimit(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.MaxPublicationSize = 1000
		c.Channel.AllowPublishForClient = true
	})
	ctx := context.Background()
	data := json.RawMessage(`"` + strings.Repeat("y", 1000) + `"`)
	_, err := tn.Publish(ctx, "news", data, PublishOptions{})
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "max_publication_size") {
		t.Fatalf("publish over the limit: %v", err)
	}
	c := dialClient(t, tn.url)
	c.connect(connectToken(t, "p"))
	if r := c.cmd("publish", map[string]any{"channel": "news", "data": data}); errorCode(r) != ErrLimitExceeded.Code {
		t.Fatalf("client publish over the limit: %s", r["error"])
	}
	h, err := tn.History(ctx, "news", -1, nil, false)
	if err != nil || len(h.Publications) != 0 {
		t.Fatalf("history after refused publishes: %v %v", h, err)
	}
	if _, err := tn.Publish(ctx, "news", json.RawMessage(`"ok"`), PublishOptions{}); err != nil {
		t.Fatalf("small publish: %v", err)
	}
}

// A client that does not read is still disconnected as slow: the bound
// holds for frames within it.
func TestSlowConsumerStillDropped(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.ClientQueueMaxSize = 64 << 10
		c.ClientStallTimeout = time.Hour // the queue bound, not the stall timer, must act
	})
	ws, _, err := websocket.DefaultDialer.Dial(tn.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.UnderlyingConn().(*net.TCPConn).SetReadBuffer(4096)
	for i, cmd := range []string{
		fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, connectToken(t, "slow")),
		`{"id":2,"subscribe":{"channel":"firehose"}}`,
	} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("reply %d: %v", i+1, err)
		}
	}
	// From here on the client reads nothing.
	payload := json.RawMessage(`"` + strings.Repeat("z", 4000) + `"`)
	waitFor(t, "the slow subscriber to be dropped", func() bool {
		_, _ = tn.Publish(context.Background(), "firehose", payload, PublishOptions{})
		return metricValue(t, tn, "spindle_slow_consumer_disconnects_total") >= 1
	})
}

// slowSubscriber connects a raw client to channel ch and then reads
// nothing: what the server sends piles up in the kernel, then the queue.
func slowSubscriber(t *testing.T, tn *testNode, ch string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(tn.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	for i, cmd := range []string{
		fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, connectToken(t, "slow")),
		fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch),
	} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("reply %d: %v", i+1, err)
		}
	}
	return ws
}

// floodUntilSlow publishes to ch until the node drops a slow consumer.
func floodUntilSlow(t *testing.T, tn *testNode, ch string) {
	t.Helper()
	payload := json.RawMessage(`"` + strings.Repeat("z", 16000) + `"`)
	waitFor(t, "the slow subscriber to be dropped", func() bool {
		for range 50 {
			_, _ = tn.Publish(context.Background(), ch, payload, PublishOptions{})
		}
		return metricValue(t, tn, "spindle_slow_consumer_disconnects_total") >= 1
	})
}

// A slow consumer that reads again after it was dropped finds its close
// code behind the data it had not read: the close frame is written after
// what was queued, never thrown away with it.
func TestSlowConsumerGetsItsCloseFrame(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.ClientQueueMaxSize = 64 << 10
		c.ClientStallTimeout = time.Hour
	})
	ws := slowSubscriber(t, tn, "firehose")
	floodUntilSlow(t, tn, "firehose")
	// Read again: the publications already handed to the socket, then 3008.
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != DisconnectSlow.Code {
			t.Fatalf("the connection ended with %v, want close code 3008", err)
		}
		return
	}
}

// A dropped consumer that never reads again is reset after the close
// grace: the session and what was queued for it are freed in bounded time.
func TestStuckConsumerIsReset(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.ClientQueueMaxSize = 64 << 10
		c.ClientStallTimeout = time.Hour
	})
	ws := slowSubscriber(t, tn, "firehose")
	floodUntilSlow(t, tn, "firehose")
	start := time.Now()
	waitFor(t, "the dropped session to be freed", func() bool { return tn.NumClients() == 0 })
	if took := time.Since(start); took > 6*time.Second {
		t.Fatalf("freed after %v; the close grace is 3 s", took)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the stuck client's socket was never closed")
			}
			return
		}
	}
}

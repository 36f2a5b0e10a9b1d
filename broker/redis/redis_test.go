package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/brokertest"
	"github.com/spindlehq/spindle/broker/redis/redistest"
)

// TestMain fails the package if a test leaves a goroutine behind, such as
// a reader whose broker was never closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// The Redis broker implements both interfaces.
var (
	_ broker.Broker          = (*Broker)(nil)
	_ broker.PresenceManager = (*Broker)(nil)
)

// TestConformance runs the broker suite against the Redis broker: every
// test gets its own redis-server, and a cluster's nodes share it and the
// key prefix.
func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Backend{
		NewCluster: func(t *testing.T) func() brokertest.Node {
			srv := redistest.Start(t)
			return func() brokertest.Node { return newBroker(t, srv, "t") }
		},
		Shared: true,
		Collect: func(t *testing.T, n brokertest.Node, ch string) {
			b := n.(*Broker)
			if err := b.client.Del(ctx, b.metaKey(ch), b.streamKey(ch)).Err(); err != nil { // what their expiry does
				t.Fatal(err)
			}
		},
	})
}

// newBroker returns a broker on srv with the given key prefix, not started.
func newBroker(t *testing.T, srv *redistest.Server, prefix string) *Broker {
	t.Helper()
	b := New(Options{Address: srv.Addr(), Prefix: prefix, Timeout: 2 * time.Second})
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// start returns a started broker on its own Redis, delivering to a recorder.
func start(t *testing.T) (*Broker, *brokertest.Recorder, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	b := newBroker(t, srv, "t")
	r := brokertest.NewRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	return b, r, srv
}

// A stream and its meta key expire max(history TTL, minStreamTTL) after
// the last publication; a History of a new channel gives the meta key
// minStreamTTL.
func TestStreamKeyTTLs(t *testing.T) {
	b, _, _ := start(t)
	if _, err := b.Publish(ctx, "u", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{b.metaKey("u"), b.streamKey("u")} {
		if ttl := b.client.PTTL(ctx, k).Val(); ttl <= minStreamTTL-time.Minute || ttl > minStreamTTL {
			t.Errorf("%s expires in %v, want about %v", k, ttl, minStreamTTL)
		}
	}
	_, _ = b.Publish(ctx, "v", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1, HistoryTTL: 2 * minStreamTTL})
	if ttl := b.client.PTTL(ctx, b.metaKey("v")).Val(); ttl <= 2*minStreamTTL-time.Minute {
		t.Errorf("meta of a 2h history expires in %v", ttl)
	}
	_, _, _ = b.History(ctx, "g", broker.HistoryFilter{})
	if ttl := b.client.PTTL(ctx, b.metaKey("g")).Val(); ttl <= 0 || ttl > minStreamTTL {
		t.Fatalf("meta key created by History expires in %v", ttl)
	}
}

// An idempotency key lives idemTTL (5 minutes; shortened here); after it,
// the same key publishes again.
func TestIdempotencyKeyTTL(t *testing.T) {
	if defaultIdempotencyTTL != 5*time.Minute {
		t.Fatalf("idempotency keys live %v, want 5m like broker/memory", defaultIdempotencyTTL)
	}
	b, _, _ := start(t)
	b.idemTTL = 500 * time.Millisecond
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "k"}
	a, err := b.Publish(ctx, "i", json.RawMessage(`1`), o)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := b.client.PTTL(ctx, b.idemKey("i", "k")).Val(); ttl <= 0 || ttl > b.idemTTL {
		t.Fatalf("key expires in %v, want within %v", ttl, b.idemTTL)
	}
	brokertest.Eventually(t, 5*time.Second, "key expired", func() bool { return b.client.Exists(ctx, b.idemKey("i", "k")).Val() == 0 })
	d, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o)
	if d.Offset != 2 || d.Epoch != a.Epoch {
		t.Fatalf("after key TTL: %v, want offset 2", d)
	}
	if again, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o); again != d {
		t.Fatalf("renewed key: %v, want %v", again, d)
	}
}

// Expired presence entries leave the expiry zset, and the keys of a
// channel whose entries all expired go away by themselves.
func TestPresenceKeys(t *testing.T) {
	b, _, _ := start(t)
	_ = b.AddPresence(ctx, "p", "c1", &broker.ClientInfo{ClientID: "c1"}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c2", &broker.ClientInfo{ClientID: "c2"}, 300*time.Millisecond)
	brokertest.Eventually(t, 5*time.Second, "c2 expired", func() bool { m, _ := b.Presence(ctx, "p"); return len(m) == 1 })
	if n := b.client.ZCard(ctx, b.presExpKey("p")).Val(); n != 1 {
		t.Fatalf("expiry zset holds %d entries after c2 expired", n)
	}
	_ = b.AddPresence(ctx, "q", "a", &broker.ClientInfo{ClientID: "a"}, 300*time.Millisecond)
	brokertest.Eventually(t, 5*time.Second, "presence keys of q expired", func() bool {
		return b.client.Exists(ctx, b.presKey("q"), b.presExpKey("q")).Val() == 0
	})
}

// Another prefix on the same Redis is another cluster.
func TestPrefixIsolation(t *testing.T) {
	srv := redistest.Start(t)
	x, y := newBroker(t, srv, "x"), newBroker(t, srv, "y")
	if _, err := x.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_ = x.AddPresence(ctx, "c", "a", &broker.ClientInfo{ClientID: "a"}, time.Minute)
	if _, sp, _ := y.History(ctx, "c", broker.HistoryFilter{}); sp.Offset != 0 {
		t.Fatalf("prefix y sees prefix x's stream: %v", sp)
	}
	if m, _ := y.Presence(ctx, "c"); len(m) != 0 {
		t.Fatalf("prefix y sees prefix x's presence: %v", m)
	}
}

// Redis stops and starts again: Publish fails while it is gone, Healthy
// says so, and delivery resumes by itself afterwards.
func TestRedisRestart(t *testing.T) {
	b, r, srv := start(t)
	if err := b.Healthy(); err != nil {
		t.Fatalf("healthy at start: %v", err)
	}
	_ = b.Subscribe(ctx, "c")
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	if _, err := b.Publish(ctx, "c", json.RawMessage(`1`), o); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 5*time.Second, "first delivery", func() bool { return len(r.Delivered("c")) == 1 })

	srv.Stop()
	if _, err := b.Publish(ctx, "c", json.RawMessage(`2`), o); err == nil {
		t.Fatal("publish with Redis down succeeded")
	}
	brokertest.Eventually(t, 5*time.Second, "Healthy reports Redis down", func() bool { return b.Healthy() != nil })
	if _, _, err := b.History(ctx, "c", broker.HistoryFilter{}); err == nil {
		t.Fatal("history with Redis down succeeded")
	}

	srv.Restart()
	brokertest.Eventually(t, 10*time.Second, "Healthy after restart", func() bool { return b.Healthy() == nil })
	// The data went with the old Redis (no persistence): offsets start over.
	sp, err := b.Publish(ctx, "c", json.RawMessage(`3`), o)
	if err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	brokertest.Eventually(t, 10*time.Second, "delivery after restart", func() bool { return len(r.Delivered("c")) == 2 })
	if got := r.Delivered("c"); got[1] != sp.Offset {
		t.Fatalf("deliveries %v, last publish at %v", got, sp)
	}
	// New subscriptions work too.
	if err := b.Subscribe(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Publish(ctx, "d", json.RawMessage(`1`), o)
	brokertest.Eventually(t, 5*time.Second, "delivery on a new channel", func() bool { return len(r.Delivered("d")) == 1 })
}

func BenchmarkPublishHistory(b *testing.B) {
	srv := redistest.Start(b)
	br := New(Options{Address: srv.Addr()})
	_ = br.Start(brokertest.NewRecorder())
	defer br.Close()
	data := json.RawMessage(`{"text":"hello"}`)
	o := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := br.Publish(ctx, fmt.Sprint("c", i%64), data, o); err != nil {
			b.Fatal(err)
		}
	}
}

package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/brokertest"
	"github.com/spindlehq/spindle/broker/nats/natstest"
)

// TestMain fails the package if a test leaves a goroutine behind, such as
// a connection whose broker was never closed or a server never shut down.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// The NATS broker implements both interfaces.
var (
	_ broker.Broker          = (*Broker)(nil)
	_ broker.PresenceManager = (*Broker)(nil)
)

var prefixes atomic.Int64

// newBroker returns a broker on srv with the given prefix, not started.
func newBroker(t *testing.T, srv *natstest.Server, prefix string) *Broker {
	t.Helper()
	b := New(Options{URL: srv.URL(), Prefix: prefix, Timeout: 2 * time.Second})
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestConformance runs the broker suite against the NATS broker: every
// test gets its own in-process nats-server with JetStream, and a
// cluster's nodes share it and the prefix.
func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Backend{
		NewCluster: func(t *testing.T) func() brokertest.Node {
			srv := natstest.Start(t)
			prefix := fmt.Sprintf("t%d.spindle", prefixes.Add(1))
			if err := newBroker(t, srv, prefix).Healthy(); err != nil { // creates the stream
				t.Fatal(err)
			}
			return func() brokertest.Node { return newBroker(t, srv, prefix) }
		},
		Shared: true,
		Collect: func(t *testing.T, n brokertest.Node, ch string) {
			b := n.(*Broker)
			st, err := b.jstream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// What the expiry of the channel's last message does.
			if err := st.Purge(ctx, jetstream.WithPurgeSubject(b.history(ch))); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// Channel names that are not plain subject tokens still get their own
// subjects, and their events reach them.
func TestChannelNames(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv, "spindle")
	r := brokertest.NewRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	names := []string{"a.b", "a", "*", ">", "x y", "~YQ", "news:1", "ü", ""}
	seen := map[string]string{}
	for _, ch := range names {
		tok := token(ch)
		if other, ok := seen[tok]; ok {
			t.Fatalf("%q and %q share the subject token %q", ch, other, tok)
		}
		seen[tok] = ch
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range names {
		for range i + 1 {
			if _, err := b.Publish(ctx, ch, json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}); err != nil {
				t.Fatalf("publish to %q: %v", ch, err)
			}
		}
	}
	for i, ch := range names {
		brokertest.Eventually(t, 5*time.Second, fmt.Sprintf("%d deliveries on %q", i+1, ch), func() bool { return len(r.Delivered(ch)) >= i+1 })
		if got := r.Delivered(ch); len(got) != i+1 || got[i] != uint64(i+1) {
			t.Fatalf("channel %q got %v", ch, got)
		}
		if _, sp, err := b.History(ctx, ch, broker.HistoryFilter{}); err != nil || sp.Offset != uint64(i+1) {
			t.Fatalf("channel %q at %v, %v", ch, sp, err)
		}
	}
}

// A prefix is one cluster: another prefix on the same server shares
// nothing.
func TestPrefixIsolation(t *testing.T) {
	srv := natstest.Start(t)
	x, y := newBroker(t, srv, "x"), newBroker(t, srv, "y.z")
	if _, err := x.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := x.AddPresence(ctx, "c", "a", &broker.ClientInfo{ClientID: "a"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, sp, err := y.History(ctx, "c", broker.HistoryFilter{}); err != nil || sp.Offset != 0 {
		t.Fatalf("prefix y.z sees prefix x's stream: %v, %v", sp, err)
	}
	if m, err := y.Presence(ctx, "c"); err != nil || len(m) != 0 {
		t.Fatalf("prefix y.z sees prefix x's presence: %v, %v", m, err)
	}
	if err := New(Options{URL: srv.URL(), Prefix: "a.*"}).Healthy(); err == nil {
		t.Fatal("a wildcard prefix accepted")
	}
}

// Without JetStream, fan-out works and what needs a stream fails saying
// so; Healthy reports it.
func TestWithoutJetStream(t *testing.T) {
	srv := natstest.StartCore(t)
	b := newBroker(t, srv, "spindle")
	r := brokertest.NewRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{}); err != nil {
		t.Fatalf("fan-out publish without JetStream: %v", err)
	}
	brokertest.Eventually(t, 5*time.Second, "delivery without JetStream", func() bool { return len(r.Delivered("c")) == 1 })
	for what, err := range map[string]error{
		"publish with history": func() error {
			_, err := b.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1})
			return err
		}(),
		"history":  func() error { _, _, err := b.History(ctx, "c", broker.HistoryFilter{}); return err }(),
		"presence": func() error { _, err := b.Presence(ctx, "c"); return err }(),
		"healthy":  b.Healthy(),
	} {
		if !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			t.Errorf("%s without JetStream: %v, want an error saying JetStream is not enabled", what, err)
		}
	}
}

// NATS stops and starts again: Publish fails while it is gone, Healthy
// says so, and delivery and history resume by themselves afterwards; the
// stream survived in the server's store.
func TestNATSRestart(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv, "spindle")
	r := brokertest.NewRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(); err != nil {
		t.Fatalf("healthy at start: %v", err)
	}
	_ = b.Subscribe(ctx, "c")
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	sp1, err := b.Publish(ctx, "c", json.RawMessage(`1`), o)
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 5*time.Second, "first delivery", func() bool { return len(r.Delivered("c")) == 1 })

	srv.Stop()
	brokertest.Eventually(t, 5*time.Second, "Healthy reports NATS down", func() bool { return b.Healthy() != nil })
	for _, o := range []broker.PublishOptions{o, {}} {
		if _, err := b.Publish(ctx, "c", json.RawMessage(`2`), o); err == nil {
			t.Fatalf("publish (history %d) with NATS down succeeded", o.HistorySize)
		}
	}
	if err := b.Subscribe(ctx, "d"); err == nil {
		t.Fatal("subscribe with NATS down succeeded")
	}
	if chs := b.Channels(); !slices.Equal(chs, []string{"c"}) {
		t.Fatalf("channels after a failed subscribe: %v", chs)
	}

	srv.Restart()
	brokertest.Eventually(t, 15*time.Second, "Healthy after restart", func() bool { return b.Healthy() == nil })
	sp2, err := b.Publish(ctx, "c", json.RawMessage(`3`), o)
	if err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	if sp2.Offset != 2 || sp2.Epoch != sp1.Epoch {
		t.Fatalf("publish after restart at %v, want offset 2 in the epoch of %v", sp2, sp1)
	}
	brokertest.Eventually(t, 10*time.Second, "delivery after restart", func() bool { return len(r.Delivered("c")) == 2 })
	if got := r.Delivered("c"); got[1] != 2 {
		t.Fatalf("deliveries %v", got)
	}
}

// Expiry of history and presence is this broker's check of the server's
// store time plus the TTL, finer than JetStream's whole-second message
// TTLs: with the clock moved past a TTL, the entry is gone while JetStream
// still holds its message, and the channel keeps its position.
func TestExpiryChecksStoreTime(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv, "spindle")
	var shift atomic.Int64
	b.now = func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }
	sp, err := b.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddPresence(ctx, "c", "a", &broker.ClientInfo{ClientID: "a"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	check := func(when string, pubs int, present bool) {
		t.Helper()
		got, cur, err := b.History(ctx, "c", broker.HistoryFilter{Limit: -1})
		if err != nil || len(got) != pubs || cur != sp {
			t.Fatalf("%s: %d publications at %v (%v), want %d at %v", when, len(got), cur, err, pubs, sp)
		}
		m, err := b.Presence(ctx, "c")
		if err != nil || (m["a"] != nil) != present {
			t.Fatalf("%s: presence %v (%v), want a present: %v", when, m, err, present)
		}
	}
	shift.Store(int64(time.Minute - time.Second))
	check("a second before the TTLs", 1, true)
	shift.Store(int64(time.Minute + time.Second))
	check("a second after the TTLs", 0, false)
	st, err := b.jstream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want the publication and the presence entry still stored", info.State.Msgs)
	}
}

func BenchmarkPublishHistory(b *testing.B) {
	srv := natstest.Start(b)
	br := New(Options{URL: srv.URL()})
	defer br.Close()
	_ = br.Start(brokertest.NewRecorder())
	data := json.RawMessage(`{"text":"hello"}`)
	o := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := br.Publish(ctx, fmt.Sprint("c", i%64), data, o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHistory(b *testing.B) {
	srv := natstest.Start(b)
	br := New(Options{URL: srv.URL()})
	defer br.Close()
	_ = br.Start(brokertest.NewRecorder())
	o := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	for range 100 {
		if _, err := br.Publish(ctx, "c", json.RawMessage(`{"text":"hello"}`), o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if pubs, _, err := br.History(ctx, "c", broker.HistoryFilter{Limit: -1}); err != nil || len(pubs) != 100 {
			b.Fatal(len(pubs), err)
		}
	}
}

// A repeated idempotency key whose first publication has left the stream
// (evicted by the history size) still publishes nothing: it returns the
// channel's current position.
func TestIdempotencyAfterEviction(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv, "spindle")
	o := broker.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute, IdempotencyKey: "k"}
	first, err := b.Publish(ctx, "c", json.RawMessage(`1`), o)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := b.Publish(ctx, "c", json.RawMessage(`2`), broker.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	again, err := b.Publish(ctx, "c", json.RawMessage(`1`), o)
	if err != nil || again != (broker.StreamPosition{Offset: 3, Epoch: first.Epoch}) {
		t.Fatalf("repeated key after eviction: %v, %v; want offset 3 in %s", again, err, first.Epoch)
	}
	if pubs, _, _ := b.History(ctx, "c", broker.HistoryFilter{Limit: -1}); len(pubs) != 1 || string(pubs[0].Data) != "2" {
		t.Fatalf("history after the repeat: %v", pubs)
	}
}

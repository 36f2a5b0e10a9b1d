package memory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/brokertest"
)

// TestMain fails the package if any test leaves a goroutine behind, such as
// a janitor whose broker was never closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance runs the broker suite against the memory broker: one
// node, so the cross-node cases skip. Its clock is real time, moved
// forward when the suite wants an idle stream collected.
func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Backend{
		NewCluster: func(t *testing.T) func() brokertest.Node {
			return func() brokertest.Node {
				c := &fakeClock{real: true}
				b := New()
				b.now = c.Now
				t.Cleanup(func() { _ = b.Close() })
				return clocked{b, c}
			}
		},
		Collect: func(t *testing.T, n brokertest.Node, ch string) {
			b := n.(clocked)
			b.clock.Advance(minStreamTTL + time.Minute) // past the lifetime of the suite's streams
			b.expire()
			if _, ok := storedPubs(b.Broker, ch); ok {
				t.Fatalf("expire kept the stream of %q past its lifetime", ch)
			}
		},
	})
}

// clocked is a memory broker with the clock it reads.
type clocked struct {
	*Broker
	clock *fakeClock
}

// fakeClock is the broker's time in tests: it stands still until Advance,
// or, when real, is real time plus what Advance added.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	real  bool
	added time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real {
		return time.Now().Add(c.added)
	}
	return c.t.Add(c.added)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.added += d
	c.mu.Unlock()
}

// newBroker returns a broker on a fake clock, not started: no janitor runs,
// so expiry happens only on the read paths or when the test calls expire.
func newBroker(t *testing.T) (*Broker, *fakeClock) {
	t.Helper()
	b := New()
	c := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	b.now = c.Now
	t.Cleanup(func() { _ = b.Close() })
	return b, c
}

// start returns a started broker on a fake clock, delivering to a recorder.
// Its janitor runs on a real 1 s ticker but reads the fake clock, so a tick
// does what expire at the current fake time does; tests inspect stored state
// only right after calling expire themselves.
func start(t *testing.T) (*Broker, *brokertest.Recorder, *fakeClock) {
	t.Helper()
	b, c := newBroker(t)
	r := brokertest.NewRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	return b, r, c
}

// storedPubs reports whether ch has a stream and how many publications it
// holds, without the expiry History does on read.
func storedPubs(b *Broker, ch string) (n int, ok bool) {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[ch]
	if !ok {
		return 0, false
	}
	return len(st.pubs), true
}

func storedIdem(b *Broker, ch, key string) bool {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.idem[ch+"\x00"+key]
	return ok
}

// storedPresence lists the client ids kept for ch, expired or not; ok says
// whether ch has a presence map at all.
func storedPresence(b *Broker, ch string) (ids []string, ok bool) {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.presence[ch]
	return slices.Sorted(maps.Keys(m)), ok
}

func presentIDs(t *testing.T, b *Broker, ch string) []string {
	t.Helper()
	m, err := b.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

var ctx = context.Background()

func TestHistoryTTL(t *testing.T) {
	const ttl = time.Minute
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: ttl}

	// History drops expired publications itself; no janitor runs here.
	t.Run("read", func(t *testing.T) {
		b, c := newBroker(t)
		sp1, _ := b.Publish(ctx, "t", json.RawMessage(`1`), o)
		c.Advance(ttl / 2)
		sp2, _ := b.Publish(ctx, "t", json.RawMessage(`2`), o)
		c.Advance(ttl/2 - time.Nanosecond) // 1 ns before the first expires
		if pubs, sp, _ := b.History(ctx, "t", broker.HistoryFilter{Limit: -1}); !slices.Equal(brokertest.Offsets(pubs), []uint64{1, 2}) || sp != sp2 {
			t.Fatalf("just before TTL: offsets %v at %v, want [1 2] at %v", brokertest.Offsets(pubs), sp, sp2)
		}
		c.Advance(time.Nanosecond) // the first is exactly ttl old: gone
		if pubs, sp, _ := b.History(ctx, "t", broker.HistoryFilter{Limit: -1}); !slices.Equal(brokertest.Offsets(pubs), []uint64{2}) || sp != sp2 {
			t.Fatalf("at the first TTL: offsets %v at %v, want [2] at %v", brokertest.Offsets(pubs), sp, sp2)
		}
		if _, _, err := b.History(ctx, "t", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 0, Epoch: sp1.Epoch}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
			t.Fatalf("since 0 after offset 1 expired: err %v, want ErrUnrecoverablePosition", err)
		}
		c.Advance(ttl / 2)
		pubs, sp, _ := b.History(ctx, "t", broker.HistoryFilter{Limit: -1})
		if len(pubs) != 0 || sp != sp2 {
			t.Fatalf("after both TTLs: %d pubs at %v, want 0 at %v", len(pubs), sp, sp2)
		}
		// The stream keeps its offset and epoch; the next publication continues it.
		if sp3, _ := b.Publish(ctx, "t", json.RawMessage(`3`), o); sp3.Offset != 3 || sp3.Epoch != sp1.Epoch {
			t.Fatalf("publish after expiry: %v, want offset 3 epoch %s", sp3, sp1.Epoch)
		}
	})

	t.Run("expire", func(t *testing.T) {
		b, _, c := start(t)
		sp, _ := b.Publish(ctx, "t", json.RawMessage(`1`), o)
		c.Advance(ttl - time.Nanosecond)
		b.expire()
		if n, ok := storedPubs(b, "t"); n != 1 || !ok {
			t.Fatalf("just before TTL: %d pubs stored (stream %v), want 1", n, ok)
		}
		c.Advance(time.Nanosecond)
		b.expire()
		if n, ok := storedPubs(b, "t"); n != 0 || !ok {
			t.Fatalf("at TTL: %d pubs stored (stream %v), want 0 in a kept stream", n, ok)
		}
		if _, cur, _ := b.History(ctx, "t", broker.HistoryFilter{}); cur != sp {
			t.Fatalf("position after expiry %v, want %v", cur, sp)
		}
	})
}

func TestIdempotency(t *testing.T) {
	for _, janitor := range []bool{false, true} {
		t.Run(fmt.Sprintf("janitor=%v", janitor), func(t *testing.T) {
			b, r, c := start(t)
			expire := func() {
				if janitor {
					b.expire()
				}
			}
			_ = b.Subscribe(ctx, "i")
			_ = b.Subscribe(ctx, "j")
			o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "k"}
			a, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o)
			if again, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o); again != a || len(r.Delivered("i")) != 1 {
				t.Fatalf("repeat key published again: %v then %v, %d deliveries", a, again, len(r.Delivered("i")))
			}
			// The key belongs to the channel.
			if other, _ := b.Publish(ctx, "j", json.RawMessage(`1`), o); other.Offset != 1 || len(r.Delivered("j")) != 1 {
				t.Fatalf("same key on another channel: %v, %d deliveries", other, len(r.Delivered("j")))
			}

			c.Advance(idempotencyTTL - time.Nanosecond)
			expire()
			if janitor && !storedIdem(b, "i", "k") {
				t.Fatal("key dropped by expire 1 ns before its TTL")
			}
			if again, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o); again != a || len(r.Delivered("i")) != 1 {
				t.Fatalf("1 ns before key TTL: %v (first %v), %d deliveries, want the first result and 1", again, a, len(r.Delivered("i")))
			}

			c.Advance(time.Nanosecond) // exactly idempotencyTTL after the first publication
			expire()
			if janitor && storedIdem(b, "i", "k") {
				t.Fatal("key kept by expire at its TTL")
			}
			d, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o)
			if d.Offset != 2 || d.Epoch != a.Epoch || !slices.Equal(r.Delivered("i"), []uint64{1, 2}) {
				t.Fatalf("at key TTL: %v, deliveries %v, want offset 2 delivered", d, r.Delivered("i"))
			}
			// Publishing again registered the key anew, for another idempotencyTTL.
			c.Advance(idempotencyTTL - time.Nanosecond)
			expire()
			if again, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o); again != d {
				t.Fatalf("renewed key: %v, want %v", again, d)
			}
			c.Advance(time.Nanosecond)
			b.expire()
			if storedIdem(b, "i", "k") || storedIdem(b, "j", "k") {
				t.Fatal("keys kept after expire at their TTL")
			}
		})
	}
}

func TestPresence(t *testing.T) {
	b, _, c := start(t)
	_ = b.AddPresence(ctx, "p", "c1", &broker.ClientInfo{ClientID: "c1", UserID: "u1"}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c2", &broker.ClientInfo{ClientID: "c2", UserID: "u1"}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c3", &broker.ClientInfo{ClientID: "c3", UserID: "u2"}, 30*time.Second)
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{NumClients: 3, NumUsers: 2}) {
		t.Fatalf("stats = %+v", st)
	}
	if err := b.AddPresence(ctx, "p", "", &broker.ClientInfo{}, time.Minute); err == nil {
		t.Fatal("empty client id accepted")
	}

	c.Advance(30*time.Second - time.Nanosecond)
	if ids := presentIDs(t, b, "p"); !slices.Equal(ids, []string{"c1", "c2", "c3"}) {
		t.Fatalf("1 ns before c3's TTL: presence %v", ids)
	}
	b.expire()
	if ids, _ := storedPresence(b, "p"); len(ids) != 3 {
		t.Fatalf("1 ns before c3's TTL expire kept %v", ids)
	}

	c.Advance(time.Nanosecond) // c3 is exactly 30 s old: gone
	if ids := presentIDs(t, b, "p"); !slices.Equal(ids, []string{"c1", "c2"}) {
		t.Fatalf("at c3's TTL: presence %v", ids)
	}
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{NumClients: 2, NumUsers: 1}) {
		t.Fatalf("at c3's TTL: stats = %+v", st)
	}
	b.expire()
	if ids, _ := storedPresence(b, "p"); !slices.Equal(ids, []string{"c1", "c2"}) {
		t.Fatalf("at c3's TTL expire kept %v", ids)
	}

	// AddPresence refreshes c1 to a minute from now; RemovePresence drops c2.
	_ = b.AddPresence(ctx, "p", "c1", &broker.ClientInfo{ClientID: "c1", UserID: "u1"}, time.Minute)
	_ = b.RemovePresence(ctx, "p", "c2", "u1")
	if ids := presentIDs(t, b, "p"); !slices.Equal(ids, []string{"c1"}) {
		t.Fatalf("after refresh and removal: presence %v", ids)
	}
	c.Advance(time.Minute - time.Nanosecond) // c1's first TTL has passed, its refreshed one not
	b.expire()
	if ids := presentIDs(t, b, "p"); !slices.Equal(ids, []string{"c1"}) {
		t.Fatalf("1 ns before c1's refreshed TTL: presence %v", ids)
	}
	c.Advance(time.Nanosecond)
	if ids := presentIDs(t, b, "p"); len(ids) != 0 {
		t.Fatalf("at c1's refreshed TTL: presence %v", ids)
	}
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{}) {
		t.Fatalf("at c1's refreshed TTL: stats = %+v", st)
	}
	b.expire()
	if ids, ok := storedPresence(b, "p"); ok {
		t.Fatalf("channel's presence kept after every entry expired: %v", ids)
	}
}

// TestStreamGC: expire drops a stream untouched for max(minStreamTTL, its
// history TTL) once its publications are gone; the next stream of that
// channel has a new epoch.
func TestStreamGC(t *testing.T) {
	// gc runs expire just before and just after the stream's lifetime ends,
	// keep after the last touch.
	gc := func(t *testing.T, b *Broker, c *fakeClock, ch string, keep time.Duration) {
		t.Helper()
		c.Advance(keep)
		b.expire()
		if n, ok := storedPubs(b, ch); !ok || n != 0 {
			t.Fatalf("%v after the last touch: stream %v with %d pubs, want kept and empty", keep, ok, n)
		}
		c.Advance(time.Nanosecond)
		b.expire()
		if _, ok := storedPubs(b, ch); ok {
			t.Fatalf("%v after the last touch: stream kept", keep+time.Nanosecond)
		}
	}

	t.Run("short history TTL", func(t *testing.T) {
		b, _, c := start(t)
		sp, _ := b.Publish(ctx, "g", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute})
		gc(t, b, c, "g", minStreamTTL)
		pubs, cur, err := b.History(ctx, "g", broker.HistoryFilter{Since: &sp, Limit: -1})
		if !errors.Is(err, broker.ErrUnrecoverablePosition) || cur.Offset != 0 || cur.Epoch == sp.Epoch || len(pubs) != 0 {
			t.Fatalf("since %v after GC: %d pubs at %v, err %v; want a new empty stream and ErrUnrecoverablePosition", sp, len(pubs), cur, err)
		}
	})

	t.Run("long history TTL", func(t *testing.T) {
		b, _, c := start(t)
		_, _ = b.Publish(ctx, "g", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: 2 * minStreamTTL})
		c.Advance(2*minStreamTTL - time.Nanosecond)
		b.expire()
		if n, ok := storedPubs(b, "g"); !ok || n != 1 {
			t.Fatalf("1 ns before the history TTL: stream %v with %d pubs", ok, n)
		}
		c.Advance(time.Nanosecond)
		// The publication is gone now, the stream lives until after 2h.
		b.expire()
		gc(t, b, c, "g", 0)
	})

	t.Run("publish touches", func(t *testing.T) {
		b, _, c := start(t)
		o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
		sp1, _ := b.Publish(ctx, "g", json.RawMessage(`1`), o)
		c.Advance(minStreamTTL / 2)
		sp2, _ := b.Publish(ctx, "g", json.RawMessage(`2`), o)
		c.Advance(minStreamTTL/2 + time.Nanosecond) // past the lifetime counted from the first publication
		b.expire()
		if _, ok := storedPubs(b, "g"); !ok {
			t.Fatal("stream dropped a lifetime after its first publication, though published to since")
		}
		if sp2.Epoch != sp1.Epoch || sp2.Offset != 2 {
			t.Fatalf("second publication %v after %v", sp2, sp1)
		}
		gc(t, b, c, "g", minStreamTTL/2-time.Nanosecond)
	})

	t.Run("created by History", func(t *testing.T) {
		b, _, c := start(t)
		_, sp, _ := b.History(ctx, "g", broker.HistoryFilter{})
		if sp.Offset != 0 || sp.Epoch == "" {
			t.Fatalf("history of a new channel at %v", sp)
		}
		gc(t, b, c, "g", minStreamTTL)
	})
}

func BenchmarkPublishHistory(b *testing.B) {
	br := New()
	_ = br.Start(brokertest.NewRecorder())
	defer br.Close()
	data := json.RawMessage(`{"text":"hello"}`)
	o := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, _ = br.Publish(ctx, fmt.Sprint("c", i%64), data, o)
	}
}

func BenchmarkPublishNoHistory(b *testing.B) {
	br := New()
	_ = br.Start(brokertest.NewRecorder())
	defer br.Close()
	data := json.RawMessage(`{"text":"hello"}`)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = br.Publish(ctx, "c", data, broker.PublishOptions{})
	}
}

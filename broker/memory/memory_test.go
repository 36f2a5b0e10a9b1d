package memory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spindlehq/spindle/broker"
)

type recorder struct {
	mu      sync.Mutex
	offsets map[string][]uint64
	joins   int
}

func (r *recorder) HandlePublication(ch string, p *broker.Publication, _ broker.StreamPosition) {
	r.mu.Lock()
	r.offsets[ch] = append(r.offsets[ch], p.Offset)
	r.mu.Unlock()
}
func (r *recorder) HandleJoin(string, *broker.ClientInfo)  { r.mu.Lock(); r.joins++; r.mu.Unlock() }
func (r *recorder) HandleLeave(string, *broker.ClientInfo) {}

func start(t *testing.T) (*Broker, *recorder) {
	t.Helper()
	b := New()
	r := &recorder{offsets: map[string][]uint64{}}
	if err := b.Start(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, r
}

var ctx = context.Background()

func TestOrderUnderConcurrentPublishers(t *testing.T) {
	b, r := start(t)
	_ = b.Subscribe(ctx, "c")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if _, err := b.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got := r.offsets["c"]
	if len(got) != 4000 {
		t.Fatalf("%d deliveries, want 4000", len(got))
	}
	for i, o := range got {
		if o != uint64(i+1) {
			t.Fatalf("delivery %d has offset %d: not strictly increasing without gaps", i, o)
		}
	}
}

func TestHistoryAndRecovery(t *testing.T) {
	b, _ := start(t)
	opts := broker.PublishOptions{HistorySize: 3, HistoryTTL: time.Minute}
	var sp broker.StreamPosition
	for i := 1; i <= 5; i++ {
		sp, _ = b.Publish(ctx, "h", json.RawMessage(fmt.Sprint(i)), opts)
	}
	pubs, top, err := b.History(ctx, "h", broker.HistoryFilter{Limit: -1})
	if err != nil || len(pubs) != 3 || pubs[0].Offset != 3 || top != sp {
		t.Fatalf("history = %d pubs from %v, top %v (publish said %v), err %v", len(pubs), pubs[0].Offset, top, sp, err)
	}
	pubs, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 3, Epoch: sp.Epoch}, Limit: -1})
	if err != nil || len(pubs) != 2 || pubs[0].Offset != 4 {
		t.Fatalf("since 3: %d pubs, err %v", len(pubs), err)
	}
	if _, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 1, Epoch: sp.Epoch}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
		t.Fatalf("evicted position: err %v", err)
	}
	if _, cur, err := b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 4, Epoch: "x"}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) || cur != sp {
		t.Fatalf("wrong epoch: err %v, position %v", err, cur)
	}
	rev, _, _ := b.History(ctx, "h", broker.HistoryFilter{Limit: 2, Reverse: true})
	if len(rev) != 2 || rev[0].Offset != 5 {
		t.Fatalf("reverse = %v", rev)
	}
	_ = b.RemoveHistory(ctx, "h")
	_, after, _ := b.History(ctx, "h", broker.HistoryFilter{})
	if after.Epoch == sp.Epoch || after.Offset != 0 {
		t.Fatalf("after remove: %v (before %v)", after, sp)
	}
}

func TestHistoryTTL(t *testing.T) {
	b, _ := start(t)
	_, _ = b.Publish(ctx, "t", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: 50 * time.Millisecond})
	time.Sleep(80 * time.Millisecond)
	pubs, sp, _ := b.History(ctx, "t", broker.HistoryFilter{Limit: -1})
	if len(pubs) != 0 || sp.Offset != 1 {
		t.Fatalf("after TTL: %d pubs at %v", len(pubs), sp)
	}
}

func TestIdempotency(t *testing.T) {
	b, r := start(t)
	_ = b.Subscribe(ctx, "i")
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute, IdempotencyKey: "k"}
	a, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o)
	c, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o)
	if a != c || len(r.offsets["i"]) != 1 {
		t.Fatalf("repeat key published again: %v %v, %d deliveries", a, c, len(r.offsets["i"]))
	}
}

func TestNoDeliveryWithoutSubscribe(t *testing.T) {
	b, r := start(t)
	_, _ = b.Publish(ctx, "n", json.RawMessage(`1`), broker.PublishOptions{})
	_ = b.Subscribe(ctx, "n")
	_ = b.PublishJoin(ctx, "n", &broker.ClientInfo{ClientID: "c"})
	_ = b.Unsubscribe(ctx, "n")
	_, _ = b.Publish(ctx, "n", json.RawMessage(`1`), broker.PublishOptions{})
	if len(r.offsets["n"]) != 0 || r.joins != 1 || len(b.Channels()) != 0 {
		t.Fatalf("deliveries %d joins %d channels %v", len(r.offsets["n"]), r.joins, b.Channels())
	}
}

func TestPresence(t *testing.T) {
	b, _ := start(t)
	_ = b.AddPresence(ctx, "p", "c1", &broker.ClientInfo{ClientID: "c1", UserID: "u1"}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c2", &broker.ClientInfo{ClientID: "c2", UserID: "u1"}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c3", &broker.ClientInfo{ClientID: "c3", UserID: "u2"}, 30*time.Millisecond)
	st, _ := b.PresenceStats(ctx, "p")
	if st.NumClients != 3 || st.NumUsers != 2 {
		t.Fatalf("stats = %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	_ = b.RemovePresence(ctx, "p", "c2", "u1")
	m, _ := b.Presence(ctx, "p")
	if len(m) != 1 || m["c1"] == nil {
		t.Fatalf("presence after expiry and removal = %v", m)
	}
}

func TestCloseStopsJanitor(t *testing.T) {
	before := runtime.NumGoroutine()
	b := New()
	_ = b.Start(ctx, &recorder{offsets: map[string][]uint64{}})
	_ = b.Close()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %d after Close, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkPublishHistory(b *testing.B) {
	br := New()
	_ = br.Start(ctx, &recorder{offsets: map[string][]uint64{}})
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
	_ = br.Start(ctx, &recorder{offsets: map[string][]uint64{}})
	defer br.Close()
	data := json.RawMessage(`{"text":"hello"}`)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = br.Publish(ctx, "c", data, broker.PublishOptions{})
	}
}

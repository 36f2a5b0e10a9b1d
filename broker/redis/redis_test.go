package redis

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

type recorder struct {
	mu      sync.Mutex
	offsets map[string][]uint64
	epochs  map[string][]string
	joins   int
	leaves  int
}

func newRecorder() *recorder {
	return &recorder{offsets: map[string][]uint64{}, epochs: map[string][]string{}}
}

func (r *recorder) HandlePublication(ch string, p *broker.Publication, sp broker.StreamPosition) {
	r.mu.Lock()
	r.offsets[ch] = append(r.offsets[ch], p.Offset)
	r.epochs[ch] = append(r.epochs[ch], sp.Epoch)
	r.mu.Unlock()
}
func (r *recorder) HandleJoin(string, *broker.ClientInfo)  { r.mu.Lock(); r.joins++; r.mu.Unlock() }
func (r *recorder) HandleLeave(string, *broker.ClientInfo) { r.mu.Lock(); r.leaves++; r.mu.Unlock() }

func (r *recorder) delivered(ch string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.offsets[ch])
}

func (r *recorder) counts() (joins, leaves int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.joins, r.leaves
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// newBroker returns a broker on srv with the given key prefix, not started.
func newBroker(t *testing.T, srv *redistest.Server, prefix string) *Broker {
	t.Helper()
	b := New(Options{Address: srv.Addr(), Prefix: prefix, Timeout: 2 * time.Second})
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// start returns a started broker on its own Redis, delivering to a recorder.
func start(t *testing.T) (*Broker, *recorder, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	b := newBroker(t, srv, "t")
	r := newRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	return b, r, srv
}

func offsets(pubs []*broker.Publication) []uint64 {
	out := []uint64{}
	for _, p := range pubs {
		out = append(out, p.Offset)
	}
	return out
}

func seq(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

func presentIDs(t *testing.T, b *Broker, ch string) []string {
	t.Helper()
	m, err := b.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

func TestOrderUnderConcurrentPublishers(t *testing.T) {
	b, r, _ := start(t)
	if err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := b.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 10*time.Second, "1600 deliveries", func() bool { return len(r.delivered("c")) >= 1600 })
	if got := r.delivered("c"); !slices.Equal(got, seq(1600)) {
		t.Fatalf("deliveries not 1..1600 in order: %v", got)
	}
}

// The publication a handler gets is the one published, data bytes as given.
func TestPublicationRoundTrip(t *testing.T) {
	b, _, srv := start(t)
	var got *broker.Publication
	var mu sync.Mutex
	h := handlerFunc(func(ch string, p *broker.Publication, sp broker.StreamPosition) {
		mu.Lock()
		got = p
		mu.Unlock()
	})
	b2 := newBroker(t, srv, "t")
	if err := b2.Start(h); err != nil {
		t.Fatal(err)
	}
	_ = b2.Subscribe(ctx, "rt")
	info := &broker.ClientInfo{ClientID: "c1", UserID: "u1", ConnInfo: json.RawMessage(`{"a":1}`)}
	data := json.RawMessage("{ \"x\" :\n 1 }")
	sp, err := b.Publish(ctx, "rt", data, broker.PublishOptions{HistorySize: 5, HistoryTTL: time.Minute, Info: info, Tags: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "delivery", func() bool { mu.Lock(); defer mu.Unlock(); return got != nil })
	mu.Lock()
	p := got
	mu.Unlock()
	if string(p.Data) != string(data) || p.Offset != sp.Offset || p.Info == nil || p.Info.UserID != "u1" || string(p.Info.ConnInfo) != `{"a":1}` || p.Info.ChanInfo != nil || p.Tags["k"] != "v" || p.Time == 0 {
		t.Fatalf("delivered %+v (info %+v)", p, p.Info)
	}
	pubs, _, err := b.History(ctx, "rt", broker.HistoryFilter{Limit: -1})
	if err != nil || len(pubs) != 1 || string(pubs[0].Data) != string(data) || pubs[0].Info.ClientID != "c1" || pubs[0].Time != p.Time {
		t.Fatalf("history %v, %v", pubs, err)
	}
	// No publisher: Info stays nil.
	_, _ = b.Publish(ctx, "rt", json.RawMessage(`2`), broker.PublishOptions{HistorySize: 5, HistoryTTL: time.Minute})
	pubs, _, _ = b.History(ctx, "rt", broker.HistoryFilter{Limit: 1, Reverse: true})
	if len(pubs) != 1 || pubs[0].Info != nil || pubs[0].Tags != nil {
		t.Fatalf("server publication read back as %+v", pubs[0])
	}
}

type handlerFunc func(string, *broker.Publication, broker.StreamPosition)

func (f handlerFunc) HandlePublication(ch string, p *broker.Publication, sp broker.StreamPosition) {
	f(ch, p, sp)
}
func (handlerFunc) HandleJoin(string, *broker.ClientInfo)  {}
func (handlerFunc) HandleLeave(string, *broker.ClientInfo) {}

func TestHistoryAndRecovery(t *testing.T) {
	b, _, _ := start(t)
	opts := broker.PublishOptions{HistorySize: 3, HistoryTTL: time.Minute}
	var sp broker.StreamPosition
	for i := 1; i <= 5; i++ {
		var err error
		if sp, err = b.Publish(ctx, "h", json.RawMessage(fmt.Sprint(i)), opts); err != nil {
			t.Fatal(err)
		}
	}
	if sp.Offset != 5 || sp.Epoch == "" {
		t.Fatalf("fifth publication at %v", sp)
	}
	pubs, top, err := b.History(ctx, "h", broker.HistoryFilter{Limit: -1})
	if err != nil || !slices.Equal(offsets(pubs), []uint64{3, 4, 5}) || top != sp {
		t.Fatalf("history = %v, top %v (publish said %v), err %v", offsets(pubs), top, sp, err)
	}
	if string(pubs[0].Data) != "3" {
		t.Fatalf("offset 3 holds %s", pubs[0].Data)
	}
	pubs, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 3, Epoch: sp.Epoch}, Limit: -1})
	if err != nil || !slices.Equal(offsets(pubs), []uint64{4, 5}) {
		t.Fatalf("since 3: %v, err %v", offsets(pubs), err)
	}
	pubs, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 2, Epoch: sp.Epoch}, Limit: 1})
	if err != nil || !slices.Equal(offsets(pubs), []uint64{3}) {
		t.Fatalf("since 2 limit 1: %v, err %v", offsets(pubs), err)
	}
	if _, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 1, Epoch: sp.Epoch}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
		t.Fatalf("evicted position: err %v", err)
	}
	if _, cur, err := b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 4, Epoch: "x"}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) || cur != sp {
		t.Fatalf("wrong epoch: err %v, position %v", err, cur)
	}
	if _, _, err := b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 6, Epoch: sp.Epoch}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
		t.Fatalf("position past the top: err %v", err)
	}
	rev, _, _ := b.History(ctx, "h", broker.HistoryFilter{Limit: 2, Reverse: true})
	if !slices.Equal(offsets(rev), []uint64{5, 4}) {
		t.Fatalf("reverse = %v", offsets(rev))
	}
	rev, _, _ = b.History(ctx, "h", broker.HistoryFilter{Since: &sp, Limit: -1, Reverse: true})
	if !slices.Equal(offsets(rev), []uint64{4, 3}) {
		t.Fatalf("reverse since 5 = %v", offsets(rev))
	}
	rev, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 2, Epoch: sp.Epoch}, Limit: -1, Reverse: true})
	if err != nil || len(rev) != 0 {
		t.Fatalf("reverse since an evicted offset = %v, %v", offsets(rev), err)
	}
	if pubs, cur, err := b.History(ctx, "h", broker.HistoryFilter{}); err != nil || pubs != nil || cur != sp {
		t.Fatalf("limit 0: %v at %v, %v", pubs, cur, err)
	}
	// Removing history keeps the stream's epoch and offset.
	if err := b.RemoveHistory(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	pubs, after, _ := b.History(ctx, "h", broker.HistoryFilter{Limit: -1})
	if len(pubs) != 0 || after != sp {
		t.Fatalf("after remove: %d publications at %v (before %v)", len(pubs), after, sp)
	}
	if _, _, err := b.History(ctx, "h", broker.HistoryFilter{Since: &sp, Limit: -1}); err != nil {
		t.Fatalf("continuing from the top after remove: %v", err)
	}
	behind := broker.StreamPosition{Offset: sp.Offset - 1, Epoch: sp.Epoch}
	if _, _, err := b.History(ctx, "h", broker.HistoryFilter{Since: &behind, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
		t.Fatalf("recovering removed publications: %v", err)
	}
	next, _ := b.Publish(ctx, "h", json.RawMessage(`6`), broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute})
	if next.Epoch != sp.Epoch || next.Offset != sp.Offset+1 {
		t.Fatalf("publish after remove: %v, want offset %d in epoch %s", next, sp.Offset+1, sp.Epoch)
	}
}

func TestNoDeliveryWithoutSubscribe(t *testing.T) {
	b, r, _ := start(t)
	_, _ = b.Publish(ctx, "n", json.RawMessage(`1`), broker.PublishOptions{})
	if err := b.Subscribe(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	_ = b.PublishJoin(ctx, "n", &broker.ClientInfo{ClientID: "c"})
	_ = b.PublishLeave(ctx, "n", &broker.ClientInfo{ClientID: "c"})
	eventually(t, 5*time.Second, "join and leave delivered", func() bool { j, l := r.counts(); return j == 1 && l == 1 })
	_ = b.Unsubscribe(ctx, "n")
	_, _ = b.Publish(ctx, "n", json.RawMessage(`1`), broker.PublishOptions{})
	// A marker on another channel, published last, arrives after anything
	// of "n" would have.
	_ = b.Subscribe(ctx, "marker")
	_, _ = b.Publish(ctx, "marker", json.RawMessage(`1`), broker.PublishOptions{})
	eventually(t, 5*time.Second, "marker delivered", func() bool { return len(r.delivered("marker")) == 1 })
	if len(r.delivered("n")) != 0 || !slices.Equal(b.Channels(), []string{"marker"}) {
		t.Fatalf("deliveries %v channels %v", r.delivered("n"), b.Channels())
	}
}

// TestHistoryTTL waits for real, short TTLs by polling.
func TestHistoryTTL(t *testing.T) {
	b, _, _ := start(t)
	short := broker.PublishOptions{HistorySize: 10, HistoryTTL: 300 * time.Millisecond}
	long := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	sp1, err := b.Publish(ctx, "t", json.RawMessage(`1`), short)
	if err != nil {
		t.Fatal(err)
	}
	sp2, _ := b.Publish(ctx, "t", json.RawMessage(`2`), long)
	eventually(t, 5*time.Second, "offset 1 expired", func() bool {
		pubs, sp, _ := b.History(ctx, "t", broker.HistoryFilter{Limit: -1})
		return slices.Equal(offsets(pubs), []uint64{2}) && sp == sp2
	})
	if _, _, err := b.History(ctx, "t", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 0, Epoch: sp1.Epoch}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
		t.Fatalf("since 0 after offset 1 expired: err %v, want ErrUnrecoverablePosition", err)
	}
	if pubs, _, err := b.History(ctx, "t", broker.HistoryFilter{Since: &sp1, Limit: -1}); err != nil || !slices.Equal(offsets(pubs), []uint64{2}) {
		t.Fatalf("since 1 after offset 1 expired: %v, %v", offsets(pubs), err)
	}
	// All expired: the stream keeps its offset and epoch.
	sp3, _ := b.Publish(ctx, "u", json.RawMessage(`1`), short)
	eventually(t, 5*time.Second, "every publication of u expired", func() bool {
		pubs, sp, _ := b.History(ctx, "u", broker.HistoryFilter{Limit: -1})
		return len(pubs) == 0 && sp == sp3
	})
	if sp4, _ := b.Publish(ctx, "u", json.RawMessage(`2`), short); sp4.Offset != 2 || sp4.Epoch != sp3.Epoch {
		t.Fatalf("publish after expiry: %v, want offset 2 epoch %s", sp4, sp3.Epoch)
	}
	// The stream and its meta key expire after max(history TTL, minStreamTTL).
	for _, k := range []string{b.metaKey("u"), b.streamKey("u")} {
		if ttl := b.client.PTTL(ctx, k).Val(); ttl <= minStreamTTL-time.Minute || ttl > minStreamTTL {
			t.Errorf("%s expires in %v, want about %v", k, ttl, minStreamTTL)
		}
	}
	_, _ = b.Publish(ctx, "v", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1, HistoryTTL: 2 * minStreamTTL})
	if ttl := b.client.PTTL(ctx, b.metaKey("v")).Val(); ttl <= 2*minStreamTTL-time.Minute {
		t.Errorf("meta of a 2h history expires in %v", ttl)
	}
}

// Once its meta key is gone (expired after minStreamTTL), a channel starts
// a new stream with a new epoch; a History of a new channel creates it.
func TestStreamGC(t *testing.T) {
	b, _, _ := start(t)
	_, sp0, _ := b.History(ctx, "g", broker.HistoryFilter{})
	if sp0.Offset != 0 || sp0.Epoch == "" {
		t.Fatalf("history of a new channel at %v", sp0)
	}
	if ttl := b.client.PTTL(ctx, b.metaKey("g")).Val(); ttl <= 0 || ttl > minStreamTTL {
		t.Fatalf("meta key created by History expires in %v", ttl)
	}
	sp, _ := b.Publish(ctx, "g", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute})
	if sp.Epoch != sp0.Epoch || sp.Offset != 1 {
		t.Fatalf("first publication %v in the stream History created at %v", sp, sp0)
	}
	b.client.Del(ctx, b.metaKey("g"), b.streamKey("g")) // what their expiry does
	pubs, cur, err := b.History(ctx, "g", broker.HistoryFilter{Since: &sp, Limit: -1})
	if !errors.Is(err, broker.ErrUnrecoverablePosition) || cur.Offset != 0 || cur.Epoch == sp.Epoch || len(pubs) != 0 {
		t.Fatalf("since %v after GC: %d pubs at %v, err %v", sp, len(pubs), cur, err)
	}
}

func TestIdempotency(t *testing.T) {
	b, r, _ := start(t)
	b.idemTTL = 500 * time.Millisecond
	_ = b.Subscribe(ctx, "i")
	_ = b.Subscribe(ctx, "j")
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "k"}
	a, err := b.Publish(ctx, "i", json.RawMessage(`1`), o)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o); again != a {
		t.Fatalf("repeat key published again: %v then %v", a, again)
	}
	// The key belongs to the channel.
	if other, _ := b.Publish(ctx, "j", json.RawMessage(`1`), o); other.Offset != 1 {
		t.Fatalf("same key on another channel: %v", other)
	}
	if ttl := b.client.PTTL(ctx, b.idemKey("i", "k")).Val(); ttl <= 0 || ttl > b.idemTTL {
		t.Fatalf("key expires in %v, want within %v", ttl, b.idemTTL)
	}
	// A publication without key shows what was delivered before it.
	m, _ := b.Publish(ctx, "i", json.RawMessage(`2`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour})
	eventually(t, 5*time.Second, "marker delivered", func() bool { return len(r.delivered("i")) >= 2 })
	if got := r.delivered("i"); !slices.Equal(got, []uint64{1, m.Offset}) || m.Offset != 2 {
		t.Fatalf("deliveries %v, want [1 2]: the repeat was delivered", got)
	}
	eventually(t, 5*time.Second, "key expired", func() bool { return b.client.Exists(ctx, b.idemKey("i", "k")).Val() == 0 })
	d, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o)
	if d.Offset != 3 || d.Epoch != a.Epoch {
		t.Fatalf("after key TTL: %v, want offset 3", d)
	}
	if again, _ := b.Publish(ctx, "i", json.RawMessage(`1`), o); again != d {
		t.Fatalf("renewed key: %v, want %v", again, d)
	}
	if b.idemTTL = defaultIdempotencyTTL; defaultIdempotencyTTL != 5*time.Minute {
		t.Fatalf("idempotency keys live %v, want 5m like broker/memory", defaultIdempotencyTTL)
	}
}

func TestIdempotencyWithoutHistory(t *testing.T) {
	b, r, _ := start(t)
	_ = b.Subscribe(ctx, "n")
	o := broker.PublishOptions{IdempotencyKey: "k"}
	for range 2 {
		if sp, err := b.Publish(ctx, "n", json.RawMessage(`1`), o); err != nil || sp != (broker.StreamPosition{}) {
			t.Fatalf("publish without history: %v, %v", sp, err)
		}
	}
	_, _ = b.Publish(ctx, "n", json.RawMessage(`2`), broker.PublishOptions{})
	eventually(t, 5*time.Second, "2 deliveries", func() bool { return len(r.delivered("n")) >= 2 })
	if n := len(r.delivered("n")); n != 2 {
		t.Fatalf("%d deliveries for a repeated key and a marker, want 2", n)
	}
}

func TestPresence(t *testing.T) {
	b, _, _ := start(t)
	_ = b.AddPresence(ctx, "p", "c1", &broker.ClientInfo{ClientID: "c1", UserID: "u1", ConnInfo: json.RawMessage(`{"n":1}`)}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c2", &broker.ClientInfo{ClientID: "c2", UserID: "u1"}, time.Minute)
	_ = b.AddPresence(ctx, "p", "c3", &broker.ClientInfo{ClientID: "c3", UserID: "u2"}, 300*time.Millisecond)
	if st, err := b.PresenceStats(ctx, "p"); err != nil || st != (broker.PresenceStats{NumClients: 3, NumUsers: 2}) {
		t.Fatalf("stats = %+v, %v", st, err)
	}
	if m, _ := b.Presence(ctx, "p"); m["c1"] == nil || m["c1"].UserID != "u1" || string(m["c1"].ConnInfo) != `{"n":1}` {
		t.Fatalf("presence c1 = %+v", m["c1"])
	}
	if err := b.AddPresence(ctx, "p", "", &broker.ClientInfo{}, time.Minute); err == nil {
		t.Fatal("empty client id accepted")
	}
	eventually(t, 5*time.Second, "c3 expired", func() bool { return slices.Equal(presentIDs(t, b, "p"), []string{"c1", "c2"}) })
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{NumClients: 2, NumUsers: 1}) {
		t.Fatalf("after c3's TTL: stats = %+v", st)
	}
	if n := b.client.ZCard(ctx, b.presExpKey("p")).Val(); n != 2 {
		t.Fatalf("expiry zset holds %d entries after c3 expired", n)
	}
	// AddPresence refreshes c1 (to a short TTL here); RemovePresence drops c2.
	_ = b.AddPresence(ctx, "p", "c1", &broker.ClientInfo{ClientID: "c1", UserID: "u1"}, 300*time.Millisecond)
	_ = b.RemovePresence(ctx, "p", "c2", "u1")
	if ids := presentIDs(t, b, "p"); !slices.Equal(ids, []string{"c1"}) {
		t.Fatalf("after refresh and removal: presence %v", ids)
	}
	eventually(t, 5*time.Second, "c1 expired", func() bool { return len(presentIDs(t, b, "p")) == 0 })
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{}) {
		t.Fatalf("at c1's refreshed TTL: stats = %+v", st)
	}

	// A refresh keeps an entry past its first TTL; the keys of a channel
	// whose entries all expired go away by themselves.
	_ = b.AddPresence(ctx, "q", "a", &broker.ClientInfo{ClientID: "a"}, 300*time.Millisecond)
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		_ = b.AddPresence(ctx, "q", "a", &broker.ClientInfo{ClientID: "a"}, 300*time.Millisecond)
		if ids := presentIDs(t, b, "q"); !slices.Equal(ids, []string{"a"}) {
			t.Fatalf("refreshed entry gone: %v", ids)
		}
		time.Sleep(50 * time.Millisecond) // refresh period
	}
	eventually(t, 5*time.Second, "presence keys of q expired", func() bool {
		return b.client.Exists(ctx, b.presKey("q"), b.presExpKey("q")).Val() == 0
	})
}

// Two brokers (two nodes) on one Redis see each other's publications, in
// one offset sequence.
func TestTwoNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newBroker(t, srv, "x"), newBroker(t, srv, "x")
	ra, rb := newRecorder(), newRecorder()
	if err := a.Start(ra); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	_ = a.Subscribe(ctx, "c")
	_ = b.Subscribe(ctx, "c")
	var wg sync.WaitGroup
	for _, p := range []*Broker{a, b, a, b} {
		wg.Go(func() {
			for range 100 {
				if _, err := p.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1000, HistoryTTL: time.Minute}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for name, r := range map[string]*recorder{"a": ra, "b": rb} {
		eventually(t, 10*time.Second, name+" got 400", func() bool { return len(r.delivered("c")) >= 400 })
		if got := r.delivered("c"); !slices.Equal(got, seq(400)) {
			t.Fatalf("node %s got %v, want 1..400 in order", name, got)
		}
	}
	pa, spa, _ := a.History(ctx, "c", broker.HistoryFilter{Limit: -1})
	pb, spb, _ := b.History(ctx, "c", broker.HistoryFilter{Limit: -1})
	if spa != spb || spa.Offset != 400 || !slices.Equal(offsets(pa), offsets(pb)) || ra.epochs["c"][0] != spa.Epoch || rb.epochs["c"][399] != spa.Epoch {
		t.Fatalf("nodes disagree: %v vs %v", spa, spb)
	}
	_ = a.AddPresence(ctx, "c", "ca", &broker.ClientInfo{ClientID: "ca", UserID: "ua"}, time.Minute)
	_ = b.AddPresence(ctx, "c", "cb", &broker.ClientInfo{ClientID: "cb", UserID: "ub"}, time.Minute)
	if ids := presentIDs(t, a, "c"); !slices.Equal(ids, []string{"ca", "cb"}) {
		t.Fatalf("presence seen from a: %v", ids)
	}
	// Another prefix is another cluster.
	c := newBroker(t, srv, "y")
	if _, sp, _ := c.History(ctx, "c", broker.HistoryFilter{}); sp.Offset != 0 {
		t.Fatalf("prefix y sees prefix x's stream: %v", sp)
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
	eventually(t, 5*time.Second, "first delivery", func() bool { return len(r.delivered("c")) == 1 })

	srv.Stop()
	if _, err := b.Publish(ctx, "c", json.RawMessage(`2`), o); err == nil {
		t.Fatal("publish with Redis down succeeded")
	}
	eventually(t, 5*time.Second, "Healthy reports Redis down", func() bool { return b.Healthy() != nil })
	if _, _, err := b.History(ctx, "c", broker.HistoryFilter{}); err == nil {
		t.Fatal("history with Redis down succeeded")
	}

	srv.Restart()
	eventually(t, 10*time.Second, "Healthy after restart", func() bool { return b.Healthy() == nil })
	// The data went with the old Redis (no persistence): offsets start over.
	sp, err := b.Publish(ctx, "c", json.RawMessage(`3`), o)
	if err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	eventually(t, 10*time.Second, "delivery after restart", func() bool { return len(r.delivered("c")) == 2 })
	if got := r.delivered("c"); got[1] != sp.Offset {
		t.Fatalf("deliveries %v, last publish at %v", got, sp)
	}
	// New subscriptions work too.
	if err := b.Subscribe(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Publish(ctx, "d", json.RawMessage(`1`), o)
	eventually(t, 5*time.Second, "delivery on a new channel", func() bool { return len(r.delivered("d")) == 1 })
}

func TestStartTwice(t *testing.T) {
	b, r, _ := start(t)
	if err := b.Start(newRecorder()); err == nil {
		t.Fatal("second Start succeeded")
	}
	_ = b.Subscribe(ctx, "s")
	_, _ = b.Publish(ctx, "s", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1})
	eventually(t, 5*time.Second, "first handler gets the event", func() bool { return slices.Equal(r.delivered("s"), []uint64{1}) })
}

func TestCloseBeforeStart(t *testing.T) {
	b := New(Options{Address: "127.0.0.1:1"})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Start(newRecorder()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	goleak.VerifyNone(t)
}

func TestCloseStopsReader(t *testing.T) {
	srv := redistest.Start(t)
	redisProc := goleak.IgnoreCurrent() // the goroutines waiting on redis-server
	b := New(Options{Address: srv.Addr()})
	if err := b.Start(newRecorder()); err != nil {
		t.Fatal(err)
	}
	_ = b.Subscribe(ctx, "c")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
			select {
			case <-b.done:
			default:
				t.Error("Close returned before the reader exited")
			}
		})
	}
	wg.Wait()
	goleak.VerifyNone(t, redisProc)
}

func BenchmarkPublishHistory(b *testing.B) {
	srv := redistest.Start(b)
	br := New(Options{Address: srv.Addr()})
	_ = br.Start(newRecorder())
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

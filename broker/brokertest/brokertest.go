// Package brokertest is the conformance suite every broker passes: Run
// checks, against real brokers, what the gateway relies on from
// broker.Broker and broker.PresenceManager.
package brokertest

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
)

// Node is one gateway node's broker: a Broker that is also its
// PresenceManager, as every broker of this project is.
type Node interface {
	broker.Broker
	broker.PresenceManager
}

// Backend describes the brokers under test.
type Backend struct {
	// NewCluster makes an empty backend for one test (a fresh Redis, a
	// fresh key prefix, ...) and returns a function that makes a new,
	// unstarted node on it. The backend and its nodes are cleaned up by t.
	// Goroutines the backend starts after NewCluster returned count as the
	// nodes' in the goroutine checks, so it sets up its server-side state
	// (such as a JetStream stream) first.
	NewCluster func(t *testing.T) func() Node
	// Shared says nodes of one cluster share channels; without it (the
	// single-node memory broker) the cross-node cases skip.
	Shared bool
	// Collect makes the backend drop the stream of ch the way its expiry
	// does once the channel has been idle long enough.
	Collect func(t *testing.T, n Node, ch string)
}

// Run runs every case of the suite as a subtest of t.
func Run(t *testing.T, be Backend) {
	cases := []struct {
		name string
		run  func(*testing.T, Backend)
	}{
		{"OrderUnderConcurrentPublishers", testOrder},
		{"PublicationRoundTrip", testRoundTrip},
		{"HistoryAndRecovery", testHistory},
		{"NoDeliveryWithoutSubscribe", testNoDelivery},
		{"HistoryTTL", testHistoryTTL},
		{"StreamGC", testStreamGC},
		{"Idempotency", testIdempotency},
		{"IdempotencyWithoutHistory", testIdempotencyWithoutHistory},
		{"Presence", testPresence},
		{"StartTwice", testStartTwice},
		{"CloseBeforeStart", testCloseBeforeStart},
		{"CloseStopsGoroutines", testCloseStops},
		{"TwoNodes", testTwoNodes},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, be) })
	}
}

var ctx = context.Background()

// Recorder is an EventHandler that keeps what it was given.
type Recorder struct {
	mu      sync.Mutex
	pubs    map[string][]*broker.Publication
	epochs  map[string][]string
	joins   []*broker.ClientInfo
	leaves  []*broker.ClientInfo
	onEvent func()
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{pubs: map[string][]*broker.Publication{}, epochs: map[string][]string{}}
}

// HandlePublication implements broker.EventHandler.
func (r *Recorder) HandlePublication(ch string, p *broker.Publication, sp broker.StreamPosition) {
	r.mu.Lock()
	r.pubs[ch] = append(r.pubs[ch], p)
	r.epochs[ch] = append(r.epochs[ch], sp.Epoch)
	r.mu.Unlock()
}

// HandleJoin implements broker.EventHandler.
func (r *Recorder) HandleJoin(_ string, i *broker.ClientInfo) {
	r.mu.Lock()
	r.joins = append(r.joins, i)
	r.mu.Unlock()
}

// HandleLeave implements broker.EventHandler.
func (r *Recorder) HandleLeave(_ string, i *broker.ClientInfo) {
	r.mu.Lock()
	r.leaves = append(r.leaves, i)
	r.mu.Unlock()
}

// Delivered lists the offsets of the publications delivered for ch.
func (r *Recorder) Delivered(ch string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Offsets(r.pubs[ch])
}

func (r *Recorder) publications(ch string) []*broker.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pubs[ch])
}

func (r *Recorder) epochsOf(ch string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.epochs[ch])
}

func (r *Recorder) counts() (joins, leaves int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.joins), len(r.leaves)
}

// Eventually polls cond until it holds, failing t when d passes first.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// Offsets lists the offsets of pubs, never nil.
func Offsets(pubs []*broker.Publication) []uint64 {
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

// start makes and starts a node of newNode delivering to a new Recorder.
func start(t *testing.T, newNode func() Node) (Node, *Recorder) {
	t.Helper()
	n := newNode()
	r := NewRecorder()
	if err := n.Start(r); err != nil {
		t.Fatal(err)
	}
	return n, r
}

// startOne starts a node on a new cluster.
func startOne(t *testing.T, be Backend) (Node, *Recorder) {
	t.Helper()
	return start(t, be.NewCluster(t))
}

func subscribe(t *testing.T, n Node, channels ...string) {
	t.Helper()
	for _, ch := range channels {
		if err := n.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
}

func publish(t *testing.T, n Node, ch, data string, o broker.PublishOptions) broker.StreamPosition {
	t.Helper()
	sp, err := n.Publish(ctx, ch, json.RawMessage(data), o)
	if err != nil {
		t.Fatalf("publish %s to %q: %v", data, ch, err)
	}
	return sp
}

func presentIDs(t *testing.T, n Node, ch string) []string {
	t.Helper()
	m, err := n.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

var minute = broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}

// Publications of one channel from concurrent publishers get offsets
// 1..n without gaps and are delivered in that order.
func testOrder(t *testing.T, be Backend) {
	n, r := startOne(t, be)
	subscribe(t, n, "c")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := n.Publish(ctx, "c", json.RawMessage(`1`), minute); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	Eventually(t, 10*time.Second, "1600 deliveries", func() bool { return len(r.Delivered("c")) >= 1600 })
	if got := r.Delivered("c"); !slices.Equal(got, seq(1600)) {
		t.Fatalf("deliveries not 1..1600 in order: %v", got)
	}
}

// The publication a handler gets, and history returns, is the one
// published: data bytes as given, publisher, tags, time. On a shared
// backend another node delivers it.
func testRoundTrip(t *testing.T, be Backend) {
	newNode := be.NewCluster(t)
	pub, r := start(t, newNode)
	if be.Shared {
		var sub Node
		sub, r = start(t, newNode)
		subscribe(t, sub, "rt")
	} else {
		subscribe(t, pub, "rt")
	}
	info := &broker.ClientInfo{ClientID: "c1", UserID: "u1", ConnInfo: `{"a":1}`}
	data := "{ \"x\" :\n 1 }"
	sp := publish(t, pub, "rt", data, broker.PublishOptions{HistorySize: 5, HistoryTTL: time.Minute, Info: info, Tags: map[string]string{"k": "v"}})
	Eventually(t, 5*time.Second, "delivery", func() bool { return len(r.publications("rt")) == 1 })
	p := r.publications("rt")[0]
	if string(p.Data) != data || p.Offset != sp.Offset || sp.Offset != 1 || p.Info == nil || p.Info.ClientID != "c1" || p.Info.UserID != "u1" ||
		string(p.Info.ConnInfo) != `{"a":1}` || p.Info.ChanInfo != "" || !maps.Equal(p.Tags, map[string]string{"k": "v"}) || p.Time == 0 {
		t.Fatalf("delivered %+v (info %+v) at %v", p, p.Info, sp)
	}
	if d := time.Since(time.UnixMilli(p.Time)); d < -time.Minute || d > time.Minute {
		t.Fatalf("publication time %d is %v away from now", p.Time, d)
	}
	if e := r.epochsOf("rt"); e[0] != sp.Epoch {
		t.Fatalf("delivered in epoch %q, publish said %q", e[0], sp.Epoch)
	}
	pubs, _, err := pub.History(ctx, "rt", broker.HistoryFilter{Limit: -1})
	if err != nil || len(pubs) != 1 || string(pubs[0].Data) != data || pubs[0].Info == nil || pubs[0].Info.ClientID != "c1" ||
		string(pubs[0].Info.ConnInfo) != `{"a":1}` || pubs[0].Tags["k"] != "v" || pubs[0].Time != p.Time || pubs[0].Offset != 1 {
		t.Fatalf("history %v, %v", pubs, err)
	}
	// No publisher: Info stays nil, and so do Tags.
	publish(t, pub, "rt", `2`, broker.PublishOptions{HistorySize: 5, HistoryTTL: time.Minute})
	pubs, _, _ = pub.History(ctx, "rt", broker.HistoryFilter{Limit: 1, Reverse: true})
	if len(pubs) != 1 || pubs[0].Info != nil || pubs[0].Tags != nil || string(pubs[0].Data) != "2" {
		t.Fatalf("server publication read back as %+v", pubs)
	}
	Eventually(t, 5*time.Second, "second delivery", func() bool { return len(r.publications("rt")) == 2 })
	if p := r.publications("rt")[1]; p.Info != nil || p.Tags != nil || p.Offset != 2 {
		t.Fatalf("server publication delivered as %+v", p)
	}
}

// History keeps the last HistorySize publications; a position continues
// only in its epoch and while nothing after it was evicted.
func testHistory(t *testing.T, be Backend) {
	b, _ := startOne(t, be)
	opts := broker.PublishOptions{HistorySize: 3, HistoryTTL: time.Minute}
	var sp broker.StreamPosition
	for i := 1; i <= 5; i++ {
		sp = publish(t, b, "h", fmt.Sprint(i), opts)
		want := seq(i)[max(i-3, 0):]
		if pubs, _, err := b.History(ctx, "h", broker.HistoryFilter{Limit: -1}); err != nil || !slices.Equal(Offsets(pubs), want) {
			t.Fatalf("history after %d publications of 3 kept: %v, %v; want %v", i, Offsets(pubs), err, want)
		}
	}
	if sp.Offset != 5 || sp.Epoch == "" {
		t.Fatalf("fifth publication at %v", sp)
	}
	pubs, top, err := b.History(ctx, "h", broker.HistoryFilter{Limit: -1})
	if err != nil || !slices.Equal(Offsets(pubs), []uint64{3, 4, 5}) || top != sp {
		t.Fatalf("history = %v, top %v (publish said %v), err %v", Offsets(pubs), top, sp, err)
	}
	if string(pubs[0].Data) != "3" {
		t.Fatalf("offset 3 holds %s", pubs[0].Data)
	}
	pubs, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 3, Epoch: sp.Epoch}, Limit: -1})
	if err != nil || !slices.Equal(Offsets(pubs), []uint64{4, 5}) {
		t.Fatalf("since 3: %v, err %v", Offsets(pubs), err)
	}
	pubs, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 2, Epoch: sp.Epoch}, Limit: 1})
	if err != nil || !slices.Equal(Offsets(pubs), []uint64{3}) {
		t.Fatalf("since 2 limit 1: %v, err %v", Offsets(pubs), err)
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
	if !slices.Equal(Offsets(rev), []uint64{5, 4}) {
		t.Fatalf("reverse = %v", Offsets(rev))
	}
	rev, _, _ = b.History(ctx, "h", broker.HistoryFilter{Since: &sp, Limit: -1, Reverse: true})
	if !slices.Equal(Offsets(rev), []uint64{4, 3}) {
		t.Fatalf("reverse since 5 = %v", Offsets(rev))
	}
	rev, _, err = b.History(ctx, "h", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 2, Epoch: sp.Epoch}, Limit: -1, Reverse: true})
	if err != nil || len(rev) != 0 {
		t.Fatalf("reverse since an evicted offset = %v, %v", Offsets(rev), err)
	}
	if pubs, cur, err := b.History(ctx, "h", broker.HistoryFilter{}); err != nil || pubs != nil || cur != sp {
		t.Fatalf("limit 0: %v at %v, %v", pubs, cur, err)
	}
	// Removing history keeps the stream's epoch and offset (as Centrifugo
	// does): a subscriber at the top continues, one behind cannot recover.
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
	next := publish(t, b, "h", `6`, minute)
	if next.Epoch != sp.Epoch || next.Offset != sp.Offset+1 {
		t.Fatalf("publish after remove: %v, want offset %d in epoch %s", next, sp.Offset+1, sp.Epoch)
	}
	if pubs, _, _ := b.History(ctx, "h", broker.HistoryFilter{Limit: -1}); !slices.Equal(Offsets(pubs), []uint64{6}) {
		t.Fatalf("history after remove and publish: %v", Offsets(pubs))
	}
}

// Events reach a node only while it is subscribed to their channel.
func testNoDelivery(t *testing.T, be Backend) {
	b, r := startOne(t, be)
	publish(t, b, "n", `1`, broker.PublishOptions{})
	subscribe(t, b, "n")
	_ = b.PublishJoin(ctx, "n", &broker.ClientInfo{ClientID: "c"})
	_ = b.PublishLeave(ctx, "n", &broker.ClientInfo{ClientID: "c"})
	Eventually(t, 5*time.Second, "join and leave delivered", func() bool { j, l := r.counts(); return j == 1 && l == 1 })
	if err := b.Unsubscribe(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	publish(t, b, "n", `1`, minute)
	_ = b.PublishJoin(ctx, "n", &broker.ClientInfo{ClientID: "c"})
	// A marker on another channel, published last, arrives after anything
	// of "n" would have.
	subscribe(t, b, "marker")
	publish(t, b, "marker", `1`, broker.PublishOptions{})
	Eventually(t, 5*time.Second, "marker delivered", func() bool { return len(r.Delivered("marker")) == 1 })
	if j, _ := r.counts(); len(r.Delivered("n")) != 0 || j != 1 || !slices.Equal(b.Channels(), []string{"marker"}) {
		t.Fatalf("deliveries %v, %d joins, channels %v", r.Delivered("n"), j, b.Channels())
	}
}

// Publications leave history after their TTL; the stream keeps its offset
// and epoch. The TTLs are real and short; the test polls.
func testHistoryTTL(t *testing.T, be Backend) {
	b, _ := startOne(t, be)
	short := broker.PublishOptions{HistorySize: 10, HistoryTTL: 300 * time.Millisecond}
	sp1 := publish(t, b, "t", `1`, short)
	sp2 := publish(t, b, "t", `2`, minute)
	Eventually(t, 5*time.Second, "offset 1 expired", func() bool {
		pubs, sp, _ := b.History(ctx, "t", broker.HistoryFilter{Limit: -1})
		return slices.Equal(Offsets(pubs), []uint64{2}) && sp == sp2
	})
	if _, _, err := b.History(ctx, "t", broker.HistoryFilter{Since: &broker.StreamPosition{Offset: 0, Epoch: sp1.Epoch}, Limit: -1}); !errors.Is(err, broker.ErrUnrecoverablePosition) {
		t.Fatalf("since 0 after offset 1 expired: err %v, want ErrUnrecoverablePosition", err)
	}
	if pubs, _, err := b.History(ctx, "t", broker.HistoryFilter{Since: &sp1, Limit: -1}); err != nil || !slices.Equal(Offsets(pubs), []uint64{2}) {
		t.Fatalf("since 1 after offset 1 expired: %v, %v", Offsets(pubs), err)
	}
	// All expired: the stream keeps its offset and epoch.
	sp3 := publish(t, b, "u", `1`, short)
	Eventually(t, 5*time.Second, "every publication of u expired", func() bool {
		pubs, sp, _ := b.History(ctx, "u", broker.HistoryFilter{Limit: -1})
		return len(pubs) == 0 && sp == sp3
	})
	if sp4 := publish(t, b, "u", `2`, short); sp4.Offset != 2 || sp4.Epoch != sp3.Epoch {
		t.Fatalf("publish after expiry: %v, want offset 2 epoch %s", sp4, sp3.Epoch)
	}
}

// A History of a new channel creates its stream; once the backend
// collected an idle stream, the channel starts over in a new epoch.
func testStreamGC(t *testing.T, be Backend) {
	b, _ := startOne(t, be)
	_, sp0, err := b.History(ctx, "g", broker.HistoryFilter{})
	if err != nil || sp0.Offset != 0 || sp0.Epoch == "" {
		t.Fatalf("history of a new channel at %v, %v", sp0, err)
	}
	if _, again, _ := b.History(ctx, "g", broker.HistoryFilter{}); again != sp0 {
		t.Fatalf("second history of a new channel at %v, first at %v", again, sp0)
	}
	sp := publish(t, b, "g", `1`, broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute})
	if sp.Epoch != sp0.Epoch || sp.Offset != 1 {
		t.Fatalf("first publication %v in the stream History created at %v", sp, sp0)
	}
	be.Collect(t, b, "g")
	pubs, cur, err := b.History(ctx, "g", broker.HistoryFilter{Since: &sp, Limit: -1})
	if !errors.Is(err, broker.ErrUnrecoverablePosition) || cur.Offset != 0 || cur.Epoch == sp.Epoch || cur.Epoch == "" || len(pubs) != 0 {
		t.Fatalf("since %v after GC: %d pubs at %v, err %v; want a new empty stream and ErrUnrecoverablePosition", sp, len(pubs), cur, err)
	}
	if next := publish(t, b, "g", `2`, minute); next != (broker.StreamPosition{Offset: 1, Epoch: cur.Epoch}) {
		t.Fatalf("publish after GC at %v, want offset 1 in %s", next, cur.Epoch)
	}
}

// A repeated idempotency key returns the first result and publishes
// nothing; keys belong to their channel.
func testIdempotency(t *testing.T, be Backend) {
	b, r := startOne(t, be)
	subscribe(t, b, "i", "j")
	o := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "k"}
	a := publish(t, b, "i", `1`, o)
	if again := publish(t, b, "i", `1`, o); again != a {
		t.Fatalf("repeat key published again: %v then %v", a, again)
	}
	if other := publish(t, b, "j", `1`, o); other.Offset != 1 {
		t.Fatalf("same key on another channel: %v", other)
	}
	if o2 := publish(t, b, "i", `1`, broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "k2"}); o2.Offset != 2 {
		t.Fatalf("another key: %v, want offset 2", o2)
	}
	// A publication without key shows what was delivered before it.
	m := publish(t, b, "i", `2`, broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Hour})
	Eventually(t, 5*time.Second, "marker delivered", func() bool { return len(r.Delivered("i")) >= 3 })
	if got := r.Delivered("i"); !slices.Equal(got, []uint64{1, 2, 3}) || m.Offset != 3 {
		t.Fatalf("deliveries %v, marker at %v; want [1 2 3]: the repeat was delivered", got, m)
	}
	if pubs, _, _ := b.History(ctx, "i", broker.HistoryFilter{Limit: -1}); !slices.Equal(Offsets(pubs), []uint64{1, 2, 3}) {
		t.Fatalf("history %v, want [1 2 3]", Offsets(pubs))
	}
	if got := r.Delivered("j"); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("deliveries on j: %v", got)
	}
}

func testIdempotencyWithoutHistory(t *testing.T, be Backend) {
	b, r := startOne(t, be)
	subscribe(t, b, "n")
	o := broker.PublishOptions{IdempotencyKey: "k"}
	for range 2 {
		if sp := publish(t, b, "n", `1`, o); sp != (broker.StreamPosition{}) {
			t.Fatalf("publish without history: %v", sp)
		}
	}
	publish(t, b, "n", `2`, broker.PublishOptions{})
	Eventually(t, 5*time.Second, "2 deliveries", func() bool { return len(r.Delivered("n")) >= 2 })
	if got := r.publications("n"); len(got) != 2 || string(got[0].Data) != "1" || string(got[1].Data) != "2" {
		t.Fatalf("%d deliveries for a repeated key and a marker, want 2", len(got))
	}
}

// Presence lists entries until their TTL; AddPresence refreshes one,
// RemovePresence drops it.
func testPresence(t *testing.T, be Backend) {
	b, _ := startOne(t, be)
	add := func(ch, id, user string, ttl time.Duration) {
		t.Helper()
		if err := b.AddPresence(ctx, ch, id, &broker.ClientInfo{ClientID: id, UserID: user, ConnInfo: `{"n":1}`}, ttl); err != nil {
			t.Fatal(err)
		}
	}
	add("p", "c1", "u1", time.Minute)
	add("p", "c2", "u1", time.Minute)
	add("p", "c3", "u2", 300*time.Millisecond)
	if st, err := b.PresenceStats(ctx, "p"); err != nil || st != (broker.PresenceStats{NumClients: 3, NumUsers: 2}) {
		t.Fatalf("stats = %+v, %v", st, err)
	}
	if m, _ := b.Presence(ctx, "p"); m["c1"] == nil || m["c1"].ClientID != "c1" || m["c1"].UserID != "u1" || string(m["c1"].ConnInfo) != `{"n":1}` {
		t.Fatalf("presence c1 = %+v", m["c1"])
	}
	if ids := presentIDs(t, b, "other"); len(ids) != 0 {
		t.Fatalf("presence of another channel: %v", ids)
	}
	if err := b.AddPresence(ctx, "p", "", &broker.ClientInfo{}, time.Minute); err == nil {
		t.Fatal("empty client id accepted")
	}
	Eventually(t, 5*time.Second, "c3 expired", func() bool { return slices.Equal(presentIDs(t, b, "p"), []string{"c1", "c2"}) })
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{NumClients: 2, NumUsers: 1}) {
		t.Fatalf("after c3's TTL: stats = %+v", st)
	}
	// AddPresence refreshes c1 (to a short TTL here); RemovePresence drops c2.
	add("p", "c1", "u1", 300*time.Millisecond)
	if err := b.RemovePresence(ctx, "p", "c2", "u1"); err != nil {
		t.Fatal(err)
	}
	if ids := presentIDs(t, b, "p"); !slices.Equal(ids, []string{"c1"}) {
		t.Fatalf("after refresh and removal: presence %v", ids)
	}
	Eventually(t, 5*time.Second, "c1 expired", func() bool { return len(presentIDs(t, b, "p")) == 0 })
	if st, _ := b.PresenceStats(ctx, "p"); st != (broker.PresenceStats{}) {
		t.Fatalf("at c1's refreshed TTL: stats = %+v", st)
	}
	// A refresh keeps an entry past its first TTL.
	add("q", "a", "", 300*time.Millisecond)
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		add("q", "a", "", 300*time.Millisecond)
		if ids := presentIDs(t, b, "q"); !slices.Equal(ids, []string{"a"}) {
			t.Fatalf("refreshed entry gone: %v", ids)
		}
		time.Sleep(50 * time.Millisecond) // refresh period
	}
}

func testStartTwice(t *testing.T, be Backend) {
	b, r := startOne(t, be)
	if err := b.Start(NewRecorder()); err == nil {
		t.Fatal("second Start succeeded")
	}
	// The first handler still gets the events.
	subscribe(t, b, "s")
	publish(t, b, "s", `1`, broker.PublishOptions{HistorySize: 1})
	Eventually(t, 5*time.Second, "first handler gets the event", func() bool { return slices.Equal(r.Delivered("s"), []uint64{1}) })
}

func testCloseBeforeStart(t *testing.T, be Backend) {
	newNode := be.NewCluster(t)
	backend := goleak.IgnoreCurrent() // the backend's own goroutines
	b := newNode()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Start(NewRecorder()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	goleak.VerifyNone(t, backend)
}

// Close, called concurrently and again, returns once the node's goroutines
// have exited.
func testCloseStops(t *testing.T, be Backend) {
	newNode := be.NewCluster(t)
	backend := goleak.IgnoreCurrent()
	b, _ := start(t, newNode)
	subscribe(t, b, "c")
	publish(t, b, "c", `1`, minute)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatalf("Close after Close: %v", err)
	}
	goleak.VerifyNone(t, backend)
}

// Two nodes on one backend see each other's publications in one offset
// sequence, each other's joins and leaves, and the same history and
// presence.
func testTwoNodes(t *testing.T, be Backend) {
	if !be.Shared {
		t.Skip("single-node broker: nodes share nothing")
	}
	newNode := be.NewCluster(t)
	a, ra := start(t, newNode)
	b, rb := start(t, newNode)
	subscribe(t, a, "c")
	subscribe(t, b, "c")
	var wg sync.WaitGroup
	for _, p := range []Node{a, b, a, b} {
		wg.Go(func() {
			for range 100 {
				if _, err := p.Publish(ctx, "c", json.RawMessage(`1`), broker.PublishOptions{HistorySize: 1000, HistoryTTL: time.Minute}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		Eventually(t, 10*time.Second, name+" got 400", func() bool { return len(r.Delivered("c")) >= 400 })
		if got := r.Delivered("c"); !slices.Equal(got, seq(400)) {
			t.Fatalf("node %s got %v, want 1..400 in order", name, got)
		}
	}
	pa, spa, _ := a.History(ctx, "c", broker.HistoryFilter{Limit: -1})
	pb, spb, _ := b.History(ctx, "c", broker.HistoryFilter{Limit: -1})
	if spa != spb || spa.Offset != 400 || !slices.Equal(Offsets(pa), seq(400)) || !slices.Equal(Offsets(pa), Offsets(pb)) ||
		ra.epochsOf("c")[0] != spa.Epoch || rb.epochsOf("c")[399] != spa.Epoch {
		t.Fatalf("nodes disagree: %v vs %v", spa, spb)
	}
	_ = a.PublishJoin(ctx, "c", &broker.ClientInfo{ClientID: "ca", UserID: "ua"})
	_ = a.PublishLeave(ctx, "c", &broker.ClientInfo{ClientID: "ca", UserID: "ua"})
	Eventually(t, 5*time.Second, "b got a's join and leave", func() bool { j, l := rb.counts(); return j == 1 && l == 1 })
	rb.mu.Lock()
	join := rb.joins[0]
	rb.mu.Unlock()
	if join.ClientID != "ca" || join.UserID != "ua" {
		t.Fatalf("join delivered as %+v", join)
	}
	_ = a.AddPresence(ctx, "c", "ca", &broker.ClientInfo{ClientID: "ca", UserID: "ua"}, time.Minute)
	_ = b.AddPresence(ctx, "c", "cb", &broker.ClientInfo{ClientID: "cb", UserID: "ub"}, time.Minute)
	for name, n := range map[string]Node{"a": a, "b": b} {
		if ids := presentIDs(t, n, "c"); !slices.Equal(ids, []string{"ca", "cb"}) {
			t.Fatalf("presence seen from %s: %v", name, ids)
		}
	}
	_ = b.RemovePresence(ctx, "c", "ca", "ua")
	if ids := presentIDs(t, a, "c"); !slices.Equal(ids, []string{"cb"}) {
		t.Fatalf("presence seen from a after b removed ca: %v", ids)
	}
}

package gateway

import (
	"fmt"
	"testing"

	"github.com/centrifugal/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker/memory"
	"github.com/spindlehq/spindle/transport"
)

// BenchmarkBroadcastEnqueue is the fan-out's per-delivery work on a node
// whose writers do not run: one publication handed by the hub to 1,000 live
// subscriptions of plain (not conflated) channels, each enqueued on its
// session and its session scheduled. Every 32 publications the queues are
// emptied the way a flush would, without the socket write.
func BenchmarkBroadcastEnqueue(b *testing.B) { benchBroadcast(b, false) }

// BenchmarkBroadcastEnqueueConflated is the same on a conflated channel:
// each publication replaces the one before it in every queue.
func BenchmarkBroadcastEnqueueConflated(b *testing.B) { benchBroadcast(b, true) }

func benchBroadcast(b *testing.B, conflate bool) {
	const subscribers = 1000
	n, sessions := benchNode(b, "bench", subscribers, conflate)
	p := newSharedPush(&protocol.Push{Channel: "bench", Pub: &protocol.Publication{Data: protocol.Raw(`{"price":101.25}`)}})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		n.hub.broadcast("bench", p, 0, false)
		if i%32 == 31 {
			b.StopTimer()
			emptyQueues(n, sessions)
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
	emptyQueues(n, sessions)
}

// emptyQueues takes every session's queue as a flush would and clears the
// writers' ready lists; the writers of the benchmark's node never run.
func emptyQueues(n *Node, sessions []*session) {
	for _, s := range sessions {
		s.qmu.Lock()
		n.writers.of(s).queued.Add(-int64(s.qbytes))
		clear(s.q)
		s.q, s.qbytes, s.scheduled = s.q[:0], 0, false
		if s.cq != nil {
			s.cq.taken()
		}
		s.qmu.Unlock()
	}
	for _, sh := range n.writers.shards {
		sh.mu.Lock()
		clear(sh.ready)
		sh.ready = sh.ready[:0]
		sh.mu.Unlock()
	}
}

// benchNode is a node on the memory broker whose writers never run, with
// subscribers live subscriptions of ch (conflated or not) in its hub.
func benchNode(b *testing.B, ch string, subscribers int, conflate bool) (*Node, []*session) {
	b.Helper()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	mem := memory.New()
	n, err := New(testConfig(), Options{Broker: mem, Presence: mem, Verifier: v, Logger: testLogger(), Registry: prometheus.NewRegistry(), Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Close() })
	sessions := make([]*session, subscribers)
	for i := range sessions {
		s := &session{node: n, conn: &transport.Conn{}, id: fmt.Sprint("bench-", i), shard: uint32(i)}
		sub := &subscription{channel: ch, conflate: conflate}
		sub.state = subLive
		sub.live.Store(true)
		if _, err := n.hub.add(s, sub); err != nil {
			b.Fatal(err)
		}
		sessions[i] = s
	}
	return n, sessions
}

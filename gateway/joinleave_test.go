package gateway

import (
	"testing"

	"github.com/spindlehq/spindle/broker"
)

// Join and leave pushes reach the subscriptions that asked for them and no
// other, also after the one that asked has gone.
func TestJoinLeaveOnlyToThoseWhoAsked(t *testing.T) {
	tn := startTestNode(t, nil)
	asks := dialClient(t, tn.url)
	asks.connect(connectToken(t, "1"))
	if r := asks.cmd("subscribe", map[string]any{"channel": "room", "join_leave": true}); r == nil || r["error"] != nil {
		t.Fatalf("subscribe asking for join/leave: %v", r)
	}
	quiet := dialClient(t, tn.url)
	quiet.connect(connectToken(t, "2"))
	if r := quiet.cmd("subscribe", map[string]any{"channel": "room"}); r == nil || r["error"] != nil {
		t.Fatalf("subscribe: %v", r)
	}
	waitFor(t, "the join of the second subscriber", func() bool { j, _ := asks.presenceEvents("room"); return j >= 1 })

	third := dialClient(t, tn.url)
	third.connect(connectToken(t, "3"))
	if r := third.cmd("subscribe", map[string]any{"channel": "room"}); r == nil || r["error"] != nil {
		t.Fatalf("subscribe: %v", r)
	}
	waitFor(t, "the join of the third subscriber", func() bool { j, _ := asks.presenceEvents("room"); return j >= 2 })
	third.close()
	waitFor(t, "the leave of the third subscriber", func() bool { _, l := asks.presenceEvents("room"); return l >= 1 })
	quiet.sync()
	if j, l := quiet.presenceEvents("room"); j != 0 || l != 0 {
		t.Fatalf("a subscription that did not ask got %d joins and %d leaves", j, l)
	}

	// Once the one that asked has unsubscribed, a join goes to nobody; the
	// channel's publications still reach the rest.
	asks.sync()
	before, _ := asks.presenceEvents("room")
	if r := asks.cmd("unsubscribe", map[string]any{"channel": "room"}); r == nil || r["error"] != nil {
		t.Fatalf("unsubscribe: %v", r)
	}
	// The reply is queued once the subscription is no longer live; the hub
	// forgets it a moment later, in the same command.
	waitFor(t, "the hub to forget the join/leave subscription of room", func() bool { return !tn.hub.wantsJoinLeave("room") })
	fourth := dialClient(t, tn.url)
	fourth.connect(connectToken(t, "4"))
	if r := fourth.cmd("subscribe", map[string]any{"channel": "room"}); r == nil || r["error"] != nil {
		t.Fatalf("subscribe: %v", r)
	}
	publishJSON(t, tn, "room", `"after"`)
	waitFor(t, "the publication", func() bool { _, pubs, _ := quiet.state("room"); return pubs == 1 })
	asks.sync()
	quiet.sync()
	if j, _ := asks.presenceEvents("room"); j != before {
		t.Errorf("unsubscribed client has %d joins, want the %d from before", j, before)
	}
	if j, l := quiet.presenceEvents("room"); j != 0 || l != 0 {
		t.Errorf("a subscription that did not ask got %d joins and %d leaves", j, l)
	}
}

// BenchmarkJoinNobodyAsked is one join in a channel of 10,000 subscribers
// of which none asked for join/leave pushes: what every subscribe costs
// the others while such a channel fills.
func BenchmarkJoinNobodyAsked(b *testing.B) {
	n, _ := benchNode(b, "big", 10000, false)
	info := &broker.ClientInfo{ClientID: "joiner", UserID: "u"}
	b.ReportAllocs()
	for b.Loop() {
		n.HandleJoin("big", info)
	}
}

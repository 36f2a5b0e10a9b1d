package gateway

import (
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/broker"
)

// What the broker delivers to a node (broker.EventHandler): each event is
// framed once per encoding its subscribers use (sharedPush) and handed to
// the hub, which only enqueues.

// HandlePublication implements broker.EventHandler.
func (n *Node) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	p := newSharedPush(&protocol.Push{Channel: ch, Pub: toProtoPub(pub)})
	n.metrics.published.Inc()
	var prev broker.StreamPosition
	gap := false
	if pub.Offset > 0 { // only a publication kept in history has a position to follow
		prev, gap = n.hub.advance(ch, sp)
	}
	if gap {
		n.resync(ch, p, prev, sp)
	} else {
		start := time.Now()
		d := n.hub.broadcast(ch, p, pub.Offset, false)
		n.metrics.fanout.Observe(time.Since(start).Seconds())
		n.fanouts.Add(1)
		n.metrics.delivered.Add(float64(d))
		n.delivered.Add(uint64(d))
	}
	if err := p.failed(); err != nil {
		n.log.Error("encode publication: not delivered to some subscribers", "channel", ch, "err", err)
	}
}

// HandleJoin implements broker.EventHandler. A join nobody here asked to
// hear costs a look at the hub, no push.
func (n *Node) HandleJoin(ch string, info *broker.ClientInfo) {
	if n.hub.wantsJoinLeave(ch) {
		n.broadcastPresence(ch, &protocol.Push{Channel: ch, Join: &protocol.Join{Info: toProtoInfo(info)}})
	}
}

// HandleLeave implements broker.EventHandler, as HandleJoin does.
func (n *Node) HandleLeave(ch string, info *broker.ClientInfo) {
	if n.hub.wantsJoinLeave(ch) {
		n.broadcastPresence(ch, &protocol.Push{Channel: ch, Leave: &protocol.Leave{Info: toProtoInfo(info)}})
	}
}

// broadcastPresence sends a join or leave push to the subscriptions that asked for them.
func (n *Node) broadcastPresence(ch string, p *protocol.Push) {
	sp := newSharedPush(p)
	n.hub.broadcast(ch, sp, 0, true)
	if err := sp.failed(); err != nil {
		n.log.Error("encode join/leave", "channel", ch, "err", err)
	}
}

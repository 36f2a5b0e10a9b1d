package gateway

import (
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/broker"
)

// What the broker delivers to a node (broker.EventHandler): each event is
// framed once and handed to the hub, which only enqueues.

// HandlePublication implements broker.EventHandler.
func (n *Node) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	frame, err := encodePush(&protocol.Push{Channel: ch, Pub: toProtoPub(pub)})
	if err != nil {
		n.log.Error("encode publication", "channel", ch, "err", err)
		return
	}
	n.metrics.published.Inc()
	if pub.Offset > 0 && n.hub.advance(ch, sp) {
		n.resync(ch, frame, pub.Offset)
		return
	}
	start := time.Now()
	d := n.hub.broadcast(ch, frame, pub.Offset, false)
	n.metrics.fanout.Observe(time.Since(start).Seconds())
	n.metrics.delivered.Add(float64(d))
}

// HandleJoin implements broker.EventHandler.
func (n *Node) HandleJoin(ch string, info *broker.ClientInfo) {
	n.broadcastPresence(ch, &protocol.Push{Channel: ch, Join: &protocol.Join{Info: toProtoInfo(info)}})
}

// HandleLeave implements broker.EventHandler.
func (n *Node) HandleLeave(ch string, info *broker.ClientInfo) {
	n.broadcastPresence(ch, &protocol.Push{Channel: ch, Leave: &protocol.Leave{Info: toProtoInfo(info)}})
}

// broadcastPresence sends a join or leave push to the subscriptions that asked for them.
func (n *Node) broadcastPresence(ch string, p *protocol.Push) {
	frame, err := encodePush(p)
	if err != nil {
		n.log.Error("encode join/leave", "channel", ch, "err", err)
		return
	}
	n.hub.broadcast(ch, frame, 0, true)
}

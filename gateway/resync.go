package gateway

import (
	"context"

	"github.com/spindlehq/spindle/broker"
)

// A node that missed publications of a channel (its broker connection
// dropped and came back, or the stream started a new epoch) must not let its
// subscribers carry on as if nothing was lost: clients track the stream's
// offset and recover only when asked to. When a publication's stream
// position does not follow the last one the node delivered for the channel
// (hub.advance), every live subscription of the channel ends at once with
// unsubscribe code 2500 "insufficient state", on which the SDKs resubscribe
// and recover from the position they hold, and the publication is not
// delivered to them: it would move that position past the gap. A
// subscription still pending holds it like any other (its position comes
// from the broker's history, not from what this node delivered).

// resync ends the channel's live subscriptions with 2500 and hands the
// publication (p at sp) to the pending ones; prev is the position the node
// delivered last. The hub calls it on a gap, on the broker's delivery
// path: the state changes are made here, so that no later publication
// reaches a subscription it ended; what waits on the broker or presence
// runs in a task.
func (n *Node) resync(ch string, p *sharedPush, prev, sp broker.StreamPosition) {
	offset := sp.Offset
	notice := newSharedPush(unsubscribeNotice(ch, unsubscribeInsufficientState, "insufficient state"))
	type ended struct {
		s   *session
		sub *subscription
	}
	var cut []ended
	sh := n.hub.shard(ch)
	sh.mu.RLock()
	for s, sub := range sh.channels[ch] {
		enc := s.enc()
		if s.cut(sub, notice.frame(enc)) {
			cut = append(cut, ended{s, sub})
		} else if frame := p.frame(enc); frame != nil {
			sub.deliver(s, frame, offset)
		}
	}
	sh.mu.RUnlock()
	n.metrics.resyncs.Inc()
	n.log.Warn("missed publications: subscribers told to recover", "channel", ch, "offset", offset, "epoch", sp.Epoch,
		"last_offset", prev.Offset, "last_epoch", prev.Epoch, "subscriptions", len(cut))
	if len(cut) == 0 {
		return
	}
	n.tasks.Go("gateway.resync", func(ctx context.Context) {
		for _, e := range cut {
			e.s.end(ctx, e.sub)
		}
	})
}

// cut ends a live subscription now with notice queued to its client; the
// caller then finishes it with end. It reports false for a subscription
// that is not live (pending, or already ending). The hub shard's lock is
// held: s.mu nests inside it.
func (s *session) cut(sub *subscription, notice []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub.state != subLive {
		return false
	}
	s.enqueue(notice)
	sub.state = subLeaving
	sub.live.Store(false)
	return true
}

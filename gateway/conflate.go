package gateway

import "github.com/spindlehq/spindle/transport"

// Conflation (the namespace option conflate): a subscriber of a conflated
// channel is owed the channel's latest publication, not every one. When a
// publication of such a subscription is queued for its session and an
// older one of the same subscription is still in the queue, the older one
// is taken out, so the client reads a subsequence of what it would have
// read otherwise: offsets still only grow, and every publication it skips
// is in the channel's history for a later recovery. Join and leave pushes,
// replies and other channels' publications are never replaced.
//
// A queue only holds what the socket has not taken, so a session that
// conflates keeps its frames in its queue while the connection has bytes
// the kernel has not accepted (Conn.Pending > 0): flush parks it instead of
// writing, and the transport's drained call (OnDrained) schedules it again.
// A slow reader's backlog is then the kernel's buffers plus one publication
// per conflated subscription and whatever else is queued, within the
// queue bound as before. Sessions that never had a conflated delivery keep
// the plain path: a nil cq, nothing held back.

// conflation is the queue state of a session that conflates; s.qmu guards it.
type conflation struct {
	latest   []queuedLatest // the conflated publication in s.q of each subscription that has one
	replaced int            // frames of s.q taken out (nil) since the queue was last taken
	parked   bool           // flush left the queue for the drained call; s.scheduled stays set meanwhile
}

// queuedLatest is a subscription's latest publication in s.q: its frame,
// found by identity, at or after index at (frames queued by others between
// its record and its enqueue move it back).
type queuedLatest struct {
	sub   *subscription
	frame []byte
	at    int
}

// taken forgets what refers to the queue as it is taken or dropped, and
// returns how many of its frames were taken out.
func (c *conflation) taken() int {
	n := c.replaced
	clear(c.latest)
	c.latest, c.replaced = c.latest[:0], 0
	return n
}

// deliverLatest is deliver for a publication of a conflated subscription.
func (sub *subscription) deliverLatest(s *session, frame []byte, offset uint64) {
	if !sub.live.Load() {
		sub.deliver(s, frame, offset) // held back, or not delivered: as any other
		return
	}
	s.enqueueLatest(sub, frame)
}

// enqueueLatest is enqueue for a publication of sub, which conflates: it
// takes sub's publication still in the queue, if any, out first and
// records the new one, then queues it with enqueue at the end of the queue,
// within the bound. The plain enqueue stays as it is: the record is made
// before it, in a lock section of its own. Deliveries of one channel come in
// order (the broker delivers them one by one), so no two run at once for sub.
func (s *session) enqueueLatest(sub *subscription, frame []byte) bool {
	s.qmu.Lock()
	if s.closing != nil {
		s.qmu.Unlock()
		return false
	}
	if s.cq == nil {
		s.cq = &conflation{}
	}
	s.replaceLatest(sub)
	s.cq.latest = append(s.cq.latest, queuedLatest{sub: sub, frame: frame, at: len(s.q)})
	s.qmu.Unlock()
	return s.enqueue(frame)
}

// replaceLatest takes sub's publication still queued, if any, out of the
// queue (its place holds nil until the queue is taken) and forgets its
// record. One that was larger than the bound leaves the bound grown
// (s.big) until the bytes written pass where it would have ended: never
// less room than before. s.qmu is held.
func (s *session) replaceLatest(sub *subscription) {
	c := s.cq
	for i, l := range c.latest {
		if l.sub != sub {
			continue
		}
		if at := s.queuedAt(l); at >= 0 {
			old := s.q[at]
			s.q[at] = nil
			s.qbytes -= len(old)
			s.node.writers.of(s).queued.Add(-int64(len(old)))
			c.replaced++
			s.node.metrics.conflated.Inc()
		}
		last := len(c.latest) - 1
		c.latest[i], c.latest[last] = c.latest[last], queuedLatest{}
		c.latest = c.latest[:last]
		return
	}
}

// queuedAt is the index of l's frame in s.q, or -1 when it is not there
// (its enqueue failed, or was refused). s.qmu is held.
func (s *session) queuedAt(l queuedLatest) int {
	for i := l.at; i < len(s.q); i++ {
		if f := s.q[i]; len(f) > 0 && &f[0] == &l.frame[0] {
			return i
		}
	}
	return -1
}

// park keeps a conflating session's queue while its socket is backed up:
// it reports true when the queue is to stay, the drained call asked for.
// s.qmu is held.
func (s *session) park() bool {
	if len(s.q) == 0 || s.conn.Pending() == 0 {
		return false
	}
	s.cq.parked = true
	s.conn.AwaitDrain()
	if s.conn.Pending() == 0 { // drained meanwhile: the call may have come and gone
		s.cq.parked = false
		return false
	}
	return true
}

// unpark reports whether the session was parked, and is no more. s.qmu is held.
func (s *session) unpark() bool {
	if s.cq == nil || !s.cq.parked {
		return false
	}
	s.cq.parked = false
	return true
}

// OnDrained implements transport.DrainHandler: the socket of a parked
// session took its last pending bytes, so its queue is written now.
func (n *Node) OnDrained(c *transport.Conn) {
	s, ok := c.Session.(*session)
	if !ok {
		return
	}
	s.qmu.Lock()
	resume := s.unpark()
	s.qmu.Unlock()
	if resume {
		n.writers.schedule(s)
	}
}

package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// hub maps channels to the local sessions subscribed to them. Fan-out holds
// a shard's read lock and only enqueues, so it never waits on a client.
type hub struct {
	shards [64]hubShard
	seed   maphash.Seed
	subs   atomic.Int64 // subscriptions on this node
}

type hubShard struct {
	mu       sync.RWMutex
	channels map[string]map[*session]*subscription
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].channels = make(map[string]map[*session]*subscription)
	}
	return h
}

func (h *hub) shard(ch string) *hubShard {
	return &h.shards[maphash.String(h.seed, ch)%uint64(len(h.shards))]
}

// add registers sub; first reports whether it is the channel's first local subscriber.
func (h *hub) add(s *session, sub *subscription) (first bool) {
	sh := h.shard(sub.channel)
	sh.mu.Lock()
	m, ok := sh.channels[sub.channel]
	if !ok {
		m = make(map[*session]*subscription)
		sh.channels[sub.channel] = m
	}
	m[s] = sub
	sh.mu.Unlock()
	h.subs.Add(1)
	return !ok
}

// remove unregisters s from ch; last reports whether no local subscriber is left.
func (h *hub) remove(s *session, ch string) (last bool) {
	sh := h.shard(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m, ok := sh.channels[ch]
	if !ok {
		return false
	}
	if _, ok := m[s]; !ok {
		return false
	}
	delete(m, s)
	h.subs.Add(-1)
	if len(m) == 0 {
		delete(sh.channels, ch)
		return true
	}
	return false
}

// broadcast hands one framed message to every local subscriber of ch.
// offset orders it against the stream position a new subscriber was given.
// joinLeave limits delivery to subscriptions that asked for join/leave.
func (h *hub) broadcast(ch string, frame []byte, offset uint64, joinLeave bool) int {
	sh := h.shard(ch)
	sh.mu.RLock()
	n := 0
	for s, sub := range sh.channels[ch] {
		if joinLeave && !sub.joinLeave {
			continue
		}
		sub.deliver(s, frame, offset)
		n++
	}
	sh.mu.RUnlock()
	return n
}

// channels lists channels with local subscribers and their counts.
func (h *hub) channels() map[string]int {
	out := make(map[string]int)
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for ch, m := range sh.channels {
			out[ch] = len(m)
		}
		sh.mu.RUnlock()
	}
	return out
}

// count returns the number of local subscribers of ch.
func (h *hub) count(ch string) int {
	sh := h.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return len(sh.channels[ch])
}

// subscription is one session's membership in one channel. Until it goes
// live, deliveries are held back so the subscribe reply (and recovered
// publications) reach the client first.
type subscription struct {
	channel   string
	joinLeave bool
	presence  bool
	chanInfo  []byte
	live      atomic.Bool
	held      []heldFrame // guarded by session.mu while !live
}

type heldFrame struct {
	frame  []byte
	offset uint64
}

func (sub *subscription) deliver(s *session, frame []byte, offset uint64) {
	if !sub.live.Load() {
		s.mu.Lock()
		if !sub.live.Load() {
			sub.held = append(sub.held, heldFrame{frame, offset})
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
	s.enqueue(frame)
}

// goLive enqueues first (the subscribe reply or push), then what was held
// back with an offset past top, and from then on delivers directly. The
// caller holds s.mu.
func (sub *subscription) goLive(s *session, first []byte, top uint64) {
	if first != nil {
		s.enqueue(first)
	}
	for _, hf := range sub.held {
		if hf.offset == 0 || hf.offset > top {
			s.enqueue(hf.frame)
		}
	}
	sub.held = nil
	sub.live.Store(true)
}

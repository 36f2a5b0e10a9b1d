package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/spindlehq/spindle/broker"
)

// hub maps channels to the local sessions subscribed to them. Each shard's
// lock guards its channels; fan-out holds a shard's read lock and only
// enqueues, so it never waits on a client.
type hub struct {
	shards [64]hubShard
	seed   maphash.Seed
	subs   atomic.Int64 // entries in all shards: the node's subscriptions
}

type hubShard struct {
	mu       sync.RWMutex
	channels map[string]map[*session]*subscription
	// joinLeave holds, of each channel's subscriptions, those that asked
	// for join/leave pushes, so that a join walks only them: most ask for
	// none, and a walk of the whole channel per join made filling a
	// channel of N subscribers cost N² steps.
	joinLeave map[string]map[*session]*subscription
	// last is the stream position of the latest publication delivered
	// for a channel, kept while the channel has local subscribers.
	last map[string]broker.StreamPosition
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].channels = make(map[string]map[*session]*subscription)
		h.shards[i].joinLeave = make(map[string]map[*session]*subscription)
		h.shards[i].last = make(map[string]broker.StreamPosition)
	}
	return h
}

func (h *hub) shard(ch string) *hubShard {
	return &h.shards[maphash.String(h.seed, ch)%uint64(len(h.shards))]
}

// add registers sub of s. It refuses a second subscription of the same
// session to the same channel; first reports whether sub is the channel's
// first local subscriber.
func (h *hub) add(s *session, sub *subscription) (first bool, err error) {
	sh := h.shard(sub.channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m, ok := sh.channels[sub.channel]
	if !ok {
		m = make(map[*session]*subscription)
		sh.channels[sub.channel] = m
	}
	if _, dup := m[s]; dup {
		return false, errorf(ErrAlreadySubscribed, "hub: client %s already in %q", s.id, sub.channel)
	}
	m[s] = sub
	h.subs.Add(1)
	if sub.joinLeave {
		jl := sh.joinLeave[sub.channel]
		if jl == nil {
			jl = make(map[*session]*subscription)
			sh.joinLeave[sub.channel] = jl
		}
		jl[s] = sub
	}
	return !ok, nil
}

// remove unregisters sub of s; last reports whether the channel has no
// local subscriber left.
func (h *hub) remove(s *session, sub *subscription) (last bool) {
	sh := h.shard(sub.channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.channels[sub.channel]
	if m[s] != sub {
		return false
	}
	delete(m, s)
	h.subs.Add(-1)
	if jl := sh.joinLeave[sub.channel]; jl[s] == sub {
		delete(jl, s)
		if len(jl) == 0 {
			delete(sh.joinLeave, sub.channel)
		}
	}
	if len(m) == 0 {
		delete(sh.channels, sub.channel)
		delete(sh.last, sub.channel)
		return true
	}
	return false
}

// advance records sp as ch's latest stream position and reports whether it
// does not follow prev, the one before (a gap: publications this node
// never got, or a new epoch). A channel without local subscribers keeps
// no position.
func (h *hub) advance(ch string, sp broker.StreamPosition) (prev broker.StreamPosition, gap bool) {
	sh := h.shard(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.channels[ch]; !ok {
		return prev, false
	}
	prev, ok := sh.last[ch]
	sh.last[ch] = sp
	return prev, ok && (prev.Epoch != sp.Epoch || sp.Offset != prev.Offset+1)
}

// broadcast hands one push to every local subscriber of ch, each in the
// frame of its session's encoding (framed on first use, then shared).
// offset orders it against the stream position a new subscriber was given.
// joinLeave limits delivery to subscriptions that asked for join/leave;
// publications, not those pushes, of a conflated subscription may replace
// its one still queued (conflate.go).
func (h *hub) broadcast(ch string, p *sharedPush, offset uint64, joinLeave bool) int {
	sh := h.shard(ch)
	sh.mu.RLock()
	n := 0
	subs := sh.channels[ch]
	if joinLeave {
		subs = sh.joinLeave[ch]
	}
	for s, sub := range subs {
		frame := p.frame(s.enc())
		if frame == nil {
			continue
		}
		if sub.conflate && !joinLeave {
			sub.deliverLatest(s, frame, offset)
		} else {
			sub.deliver(s, frame, offset)
		}
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

func (h *hub) numChannels() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		n += len(sh.channels)
		sh.mu.RUnlock()
	}
	return n
}

func (h *hub) numSubs() int { return int(h.subs.Load()) }

// wantsJoinLeave reports whether a local subscription of ch asked for
// join/leave pushes.
func (h *hub) wantsJoinLeave(ch string) bool {
	sh := h.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return len(sh.joinLeave[ch]) > 0
}

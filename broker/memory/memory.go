// Package memory is the single-node broker: channel streams, history and
// presence kept in this process, events delivered synchronously to the
// local node.
package memory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/guard/task"
)

const (
	shardCount     = 64
	idempotencyTTL = 5 * time.Minute
	minStreamTTL   = time.Hour // a stream with no publication for this long (or its history TTL, if longer) is dropped
)

// Broker implements broker.Broker and broker.PresenceManager in memory.
//
// Ownership of the mutable state: the channel data lives in shards, each
// guarded by its own mutex; life guards itself; the rest is written once
// before other goroutines use it. Start must return before Publish,
// PublishJoin or PublishLeave are called from other goroutines: h is
// written by Start but read under the shard locks.
type Broker struct {
	seed   maphash.Seed        // set by New, read-only after
	shards [shardCount]shard   // the array is fixed; each shard's maps are guarded by that shard's mu
	now    func() time.Time    // set by New (tests replace it right after New), read-only after; called under shard locks and by the janitor
	h      broker.EventHandler // written by Start before the janitor starts, read-only after (read under shard locks)
	tasks  *task.Group         // made by New; owns the janitor; Close stops it
	life   broker.Lifecycle
}

// shard holds the channels that hash to it. mu guards streams, subs,
// presence and idem, and everything reachable from them (stream,
// presenceEntry and idemEntry values); handlers are called with mu held.
type shard struct {
	mu       sync.Mutex
	streams  map[string]*stream
	subs     map[string]struct{}
	presence map[string]map[string]presenceEntry
	idem     map[string]idemEntry
}

// stream is one channel's history; all fields are guarded by its shard's mu.
type stream struct {
	epoch   string
	top     uint64
	pubs    []*broker.Publication // oldest first, at most the history size
	expires []time.Time           // per publication
	touched time.Time
	ttl     time.Duration
}

// presenceEntry is one client in a channel's presence; one per subscriber,
// so it is kept small: expires is in unix nanoseconds.
type presenceEntry struct {
	info    *broker.ClientInfo
	expires int64
}

func (e presenceEntry) live(now time.Time) bool { return now.UnixNano() < e.expires }

type idemEntry struct {
	sp      broker.StreamPosition
	expires time.Time
}

// New returns an empty broker; Start attaches the node's handler.
func New() *Broker {
	b := &Broker{seed: maphash.MakeSeed(), now: time.Now, tasks: task.NewGroup(context.Background())}
	for i := range b.shards {
		s := &b.shards[i]
		s.streams = map[string]*stream{}
		s.subs = map[string]struct{}{}
		s.presence = map[string]map[string]presenceEntry{}
		s.idem = map[string]idemEntry{}
	}
	return b
}

func (b *Broker) shard(ch string) *shard {
	return &b.shards[maphash.String(b.seed, ch)%shardCount]
}

// Start implements broker.Broker: it attaches h and starts the janitor
// that expires history, idle streams, presence and idempotency keys. It
// fails if the broker was already started or closed.
func (b *Broker) Start(h broker.EventHandler) error {
	return b.life.Start("memory", func() {
		b.h = h
		b.tasks.Every("broker.memory.janitor", time.Second, func(context.Context, time.Time) { b.expire() })
	})
}

// Close implements broker.Broker: it stops the janitor and waits for it to
// exit. It may be called before Start, more than once, and concurrently.
// Delivery itself is synchronous in Publish, PublishJoin and PublishLeave,
// so the node stops calling those before it closes the broker.
func (b *Broker) Close() error {
	b.life.Close()
	b.tasks.Stop()
	return nil
}

// Publish implements broker.Broker. Offset assignment and delivery happen
// under the channel's shard lock, so handlers see publications in order.
func (b *Broker) Publish(_ context.Context, ch string, data json.RawMessage, o broker.PublishOptions) (broker.StreamPosition, error) {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := b.now()
	if o.IdempotencyKey != "" {
		if e, ok := s.idem[ch+"\x00"+o.IdempotencyKey]; ok && now.Before(e.expires) {
			return e.sp, nil
		}
	}
	pub := &broker.Publication{Data: data, Info: o.Info, Tags: o.Tags, Time: now.UnixMilli()}
	var sp broker.StreamPosition
	if o.HistorySize > 0 {
		st := s.stream(ch, now)
		st.top++
		pub.Offset = st.top
		st.pubs = append(st.pubs, pub)
		st.expires = append(st.expires, now.Add(o.HistoryTTL))
		if over := len(st.pubs) - o.HistorySize; over > 0 {
			clear(st.pubs[:over])
			st.pubs = append(st.pubs[:0], st.pubs[over:]...)
			st.expires = append(st.expires[:0], st.expires[over:]...)
		}
		st.touched = now
		st.ttl = max(o.HistoryTTL, minStreamTTL)
		sp = broker.StreamPosition{Offset: st.top, Epoch: st.epoch}
	}
	if o.IdempotencyKey != "" {
		s.idem[ch+"\x00"+o.IdempotencyKey] = idemEntry{sp: sp, expires: now.Add(idempotencyTTL)}
	}
	if _, ok := s.subs[ch]; ok && b.h != nil {
		b.h.HandlePublication(ch, pub, sp)
	}
	return sp, nil
}

// stream returns the channel's stream, creating it with a new epoch. The
// caller holds s.mu.
func (s *shard) stream(ch string, now time.Time) *stream {
	st, ok := s.streams[ch]
	if !ok {
		st = &stream{epoch: broker.NewEpoch(), touched: now, ttl: minStreamTTL}
		s.streams[ch] = st
	}
	return st
}

// PublishJoin implements broker.Broker.
func (b *Broker) PublishJoin(_ context.Context, ch string, info *broker.ClientInfo) error {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[ch]; ok && b.h != nil {
		b.h.HandleJoin(ch, info)
	}
	return nil
}

// PublishLeave implements broker.Broker.
func (b *Broker) PublishLeave(_ context.Context, ch string, info *broker.ClientInfo) error {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[ch]; ok && b.h != nil {
		b.h.HandleLeave(ch, info)
	}
	return nil
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(_ context.Context, ch string) error {
	s := b.shard(ch)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return nil
}

// Unsubscribe implements broker.Broker.
func (b *Broker) Unsubscribe(_ context.Context, ch string) error {
	s := b.shard(ch)
	s.mu.Lock()
	delete(s.subs, ch)
	s.mu.Unlock()
	return nil
}

// Channels implements broker.Broker.
func (b *Broker) Channels() []string {
	var out []string
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for ch := range s.subs {
			out = append(out, ch)
		}
		s.mu.Unlock()
	}
	return out
}

// History implements broker.Broker.
func (b *Broker) History(_ context.Context, ch string, f broker.HistoryFilter) ([]*broker.Publication, broker.StreamPosition, error) {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := b.now()
	st := s.stream(ch, now)
	st.dropExpired(now)
	sp := broker.StreamPosition{Offset: st.top, Epoch: st.epoch}
	pubs := st.pubs
	if f.Since != nil {
		if f.Since.Epoch != st.epoch || f.Since.Offset > st.top {
			return nil, sp, fmt.Errorf("history %q: %w", ch, broker.ErrUnrecoverablePosition)
		}
		oldest := st.top - uint64(len(pubs)) + 1 // offset of pubs[0]
		if !f.Reverse {
			if f.Since.Offset+1 < oldest {
				return nil, sp, fmt.Errorf("history %q: %w", ch, broker.ErrUnrecoverablePosition)
			}
			pubs = pubs[f.Since.Offset+1-oldest:]
		} else {
			if f.Since.Offset < oldest {
				pubs = nil
			} else {
				pubs = pubs[:f.Since.Offset-oldest]
			}
		}
	}
	if f.Limit == 0 {
		return nil, sp, nil
	}
	out := make([]*broker.Publication, 0, len(pubs))
	if f.Reverse {
		for i := len(pubs) - 1; i >= 0 && (f.Limit < 0 || len(out) < f.Limit); i-- {
			out = append(out, pubs[i])
		}
	} else {
		for i := 0; i < len(pubs) && (f.Limit < 0 || len(out) < f.Limit); i++ {
			out = append(out, pubs[i])
		}
	}
	return out, sp, nil
}

func (st *stream) dropExpired(now time.Time) {
	n := 0
	for n < len(st.expires) && !now.Before(st.expires[n]) {
		n++
	}
	if n > 0 {
		clear(st.pubs[:n])
		st.pubs = append(st.pubs[:0], st.pubs[n:]...)
		st.expires = append(st.expires[:0], st.expires[n:]...)
	}
}

// RemoveHistory implements broker.Broker.
func (b *Broker) RemoveHistory(_ context.Context, ch string) error {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.streams[ch]; ok {
		clear(st.pubs)
		st.pubs, st.expires = st.pubs[:0], st.expires[:0]
	}
	return nil
}

// expire drops expired publications, idle streams, presence and idempotency keys.
func (b *Broker) expire() {
	now := b.now()
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for ch, st := range s.streams {
			st.dropExpired(now)
			if len(st.pubs) == 0 && now.Sub(st.touched) > st.ttl {
				delete(s.streams, ch)
			}
		}
		for ch, m := range s.presence {
			for id, e := range m {
				if !e.live(now) {
					delete(m, id)
				}
			}
			if len(m) == 0 {
				delete(s.presence, ch)
			}
		}
		for k, e := range s.idem {
			if !now.Before(e.expires) {
				delete(s.idem, k)
			}
		}
		s.mu.Unlock()
	}
}

// AddPresence implements broker.PresenceManager.
func (b *Broker) AddPresence(_ context.Context, ch, clientID string, info *broker.ClientInfo, ttl time.Duration) error {
	if clientID == "" {
		return errors.New("add presence: empty client id")
	}
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.presence[ch]
	if !ok {
		m = map[string]presenceEntry{}
		s.presence[ch] = m
	}
	m[clientID] = presenceEntry{info: info, expires: b.now().Add(ttl).UnixNano()}
	return nil
}

// RemovePresence implements broker.PresenceManager.
func (b *Broker) RemovePresence(_ context.Context, ch, clientID, _ string) error {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.presence[ch]; ok {
		delete(m, clientID)
		if len(m) == 0 {
			delete(s.presence, ch)
		}
	}
	return nil
}

// Presence implements broker.PresenceManager.
func (b *Broker) Presence(_ context.Context, ch string) (map[string]*broker.ClientInfo, error) {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := b.now()
	out := map[string]*broker.ClientInfo{}
	for id, e := range s.presence[ch] {
		if e.live(now) {
			out[id] = e.info
		}
	}
	return out, nil
}

// PresenceStats implements broker.PresenceManager.
func (b *Broker) PresenceStats(_ context.Context, ch string) (broker.PresenceStats, error) {
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := b.now()
	users := map[string]struct{}{}
	st := broker.PresenceStats{}
	for _, e := range s.presence[ch] {
		if e.live(now) {
			st.NumClients++
			users[e.info.UserID] = struct{}{}
		}
	}
	st.NumUsers = len(users)
	return st, nil
}

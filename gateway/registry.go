package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// registry knows every open session of a node, by client id and by user.
// Each shard's lock guards its map; n counts the sessions. The maps are
// keyed by the 64-bit hash of the id or user rather than the string: a
// slot is 16 bytes instead of 24, for every idle connection twice.
type registry struct {
	seed  maphash.Seed
	byID  [32]idShard
	users [32]userShard
	n     atomic.Int64
}

// batches holds each's scratch slices: the heartbeat loop walks every
// session several times a second, and an idle node's heap should not grow by it.
var batches = sync.Pool{New: func() any { return new([]*session) }}

// idShard files sessions by the hash of their client id; add makes the
// hashes unique, so a hash names one session.
type idShard struct {
	mu sync.RWMutex
	m  map[uint64]*session
}

// userShard files sessions by the hash of their user: m holds the latest
// session of the users with that hash, and the others follow through
// session.userNext (a user rarely has more than a few, and a map of
// pointers costs half a map of slices). Two users whose hashes collide
// share a chain, so a walk compares the user.
type userShard struct {
	mu sync.RWMutex
	m  map[uint64]*session
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.byID {
		r.byID[i].m = make(map[uint64]*session)
		r.users[i].m = make(map[uint64]*session)
	}
	return r
}

func (r *registry) hash(s string) uint64 { return maphash.String(r.seed, s) }

func (r *registry) idShard(h uint64) *idShard { return &r.byID[h%uint64(len(r.byID))] }

func (r *registry) userShard(h uint64) *userShard { return &r.users[h%uint64(len(r.users))] }

func (r *registry) count() int { return int(r.n.Load()) }

// add registers a new session by its id and sets its shard. The session
// is not yet shared: should its id hash like another session's (one chance
// in 2^64 a pair), it takes a new id.
func (r *registry) add(s *session) {
	for {
		h := r.hash(s.id)
		sh := r.idShard(h)
		sh.mu.Lock()
		if sh.m[h] == nil {
			s.shard = uint32(h)
			sh.m[h] = s
			sh.mu.Unlock()
			r.n.Add(1)
			return
		}
		sh.mu.Unlock()
		s.id = newClientID()
	}
}

// addUser files an authenticated session under its user. The caller holds
// s.mu and has checked that s is not gone, so remove cannot miss it.
func (r *registry) addUser(s *session) {
	h := r.hash(s.ci.UserID)
	ush := r.userShard(h)
	ush.mu.Lock()
	s.userNext = ush.m[h]
	ush.m[h] = s
	ush.mu.Unlock()
}

// remove forgets s; it reports whether s was registered, and how many
// sessions are left.
func (r *registry) remove(s *session) (removed bool, left int) {
	h := r.hash(s.id)
	sh := r.idShard(h)
	sh.mu.Lock()
	if removed = sh.m[h] == s; removed {
		delete(sh.m, h)
	}
	sh.mu.Unlock()
	if !removed {
		return false, r.count()
	}
	if s.authed() {
		uh := r.hash(s.ci.UserID)
		ush := r.userShard(uh)
		ush.mu.Lock()
		if head := ush.m[uh]; head == s {
			if s.userNext == nil {
				delete(ush.m, uh)
			} else {
				ush.m[uh] = s.userNext
			}
		} else {
			for x := head; x != nil; x = x.userNext {
				if x.userNext == s {
					x.userNext = s.userNext
					break
				}
			}
		}
		s.userNext = nil
		ush.mu.Unlock()
	}
	return true, int(r.n.Add(-1))
}

// find returns the sessions of user, narrowed to one client id when given;
// with no user, the session with that client id.
func (r *registry) find(user, client string) []*session {
	if user == "" && client != "" {
		h := r.hash(client)
		sh := r.idShard(h)
		sh.mu.RLock()
		s := sh.m[h]
		sh.mu.RUnlock()
		if s == nil || s.id != client {
			return nil
		}
		return []*session{s}
	}
	var list []*session
	h := r.hash(user)
	ush := r.userShard(h)
	ush.mu.RLock()
	for s := ush.m[h]; s != nil; s = s.userNext {
		if s.ci.UserID == user && (client == "" || s.id == client) {
			list = append(list, s)
		}
	}
	ush.mu.RUnlock()
	return list
}

// numUsers counts distinct authenticated users (users whose hashes
// collide count once).
func (r *registry) numUsers() int {
	users := 0
	for i := range r.users {
		r.users[i].mu.RLock()
		users += len(r.users[i].m)
		r.users[i].mu.RUnlock()
	}
	return users
}

// each calls f for every session, holding no lock while f runs.
func (r *registry) each(f func(*session)) {
	bp := batches.Get().(*[]*session)
	batch := *bp
	defer func() {
		clear(batch[:cap(batch)]) // no session is kept alive by the pool
		*bp = batch[:0]
		batches.Put(bp)
	}()
	for i := range r.byID {
		sh := &r.byID[i]
		sh.mu.RLock()
		batch = batch[:0]
		for _, s := range sh.m {
			batch = append(batch, s)
		}
		sh.mu.RUnlock()
		for _, s := range batch {
			f(s)
		}
	}
}

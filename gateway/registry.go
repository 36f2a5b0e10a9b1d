package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// registry knows every open session of a node, by client id and by user.
// Each shard's lock guards its map; n counts the sessions.
type registry struct {
	seed  maphash.Seed
	byID  [32]idShard
	users [32]userShard
	n     atomic.Int64
}

// batches holds each's scratch slices: the heartbeat loop walks every
// session several times a second, and an idle node's heap should not grow by it.
var batches = sync.Pool{New: func() any { return new([]*session) }}

type idShard struct {
	mu sync.RWMutex
	m  map[string]*session
}

// userShard files sessions by user: m holds each user's latest session,
// and the others follow through session.userNext (a user rarely has more
// than a few, and a map of pointers costs half a map of slices).
type userShard struct {
	mu sync.RWMutex
	m  map[string]*session
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.byID {
		r.byID[i].m = make(map[string]*session)
		r.users[i].m = make(map[string]*session)
	}
	return r
}

func (r *registry) idShard(id string) *idShard {
	return &r.byID[maphash.String(r.seed, id)%uint64(len(r.byID))]
}

func (r *registry) userShard(user string) *userShard {
	return &r.users[maphash.String(r.seed, user)%uint64(len(r.users))]
}

func (r *registry) count() int { return int(r.n.Load()) }

// add registers a new session by its id.
func (r *registry) add(s *session) {
	sh := r.idShard(s.id)
	sh.mu.Lock()
	sh.m[s.id] = s
	sh.mu.Unlock()
	r.n.Add(1)
}

// addUser files an authenticated session under its user. The caller holds
// s.mu and has checked that s is not gone, so remove cannot miss it.
func (r *registry) addUser(s *session) {
	ush := r.userShard(s.ci.UserID)
	ush.mu.Lock()
	s.userNext = ush.m[s.ci.UserID]
	ush.m[s.ci.UserID] = s
	ush.mu.Unlock()
}

// remove forgets s; it reports whether s was registered, and how many
// sessions are left.
func (r *registry) remove(s *session) (removed bool, left int) {
	sh := r.idShard(s.id)
	sh.mu.Lock()
	_, removed = sh.m[s.id]
	delete(sh.m, s.id)
	sh.mu.Unlock()
	if !removed {
		return false, r.count()
	}
	if s.authed() {
		ush := r.userShard(s.ci.UserID)
		ush.mu.Lock()
		if head := ush.m[s.ci.UserID]; head == s {
			if s.userNext == nil {
				delete(ush.m, s.ci.UserID)
			} else {
				ush.m[s.ci.UserID] = s.userNext
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
		sh := r.idShard(client)
		sh.mu.RLock()
		s := sh.m[client]
		sh.mu.RUnlock()
		if s == nil {
			return nil
		}
		return []*session{s}
	}
	var list []*session
	ush := r.userShard(user)
	ush.mu.RLock()
	for s := ush.m[user]; s != nil; s = s.userNext {
		if client == "" || s.id == client {
			list = append(list, s)
		}
	}
	ush.mu.RUnlock()
	return list
}

// numUsers counts distinct authenticated users.
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

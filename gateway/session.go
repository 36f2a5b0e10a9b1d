package gateway

import (
	crand "crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/transport"
)

// session is one client connection speaking the client protocol.
//
// Who owns what:
//   - node, conn, id, shard: set by OnOpen, never written again.
//   - ci: written once by the connect command, under mu and before
//     flagAuthed is set; read by anyone after authed() is true. The user id
//     is ci.UserID.
//   - be: set once, by the first connect the backend is asked about
//     (backend.go); a session connected by its token never has one.
//   - mu guards subs, gone, and each subscription's state and held frames.
//   - qmu guards the outbound queue: q, qbytes, scheduled, closing, big, cq.
//   - rmu guards the command queue (rq, rrun): see commandrunner.go.
//   - tokens, tokensAt: whoever runs the session's commands — the message
//     handler (the transport runs one OnMessage at a time per connection),
//     the command runner while rrun is set (the handler then queues instead
//     of running), or the proxy worker while it runs the deferred commands
//     (the handler runs none meanwhile).
//   - since: set by OnOpen, then the heartbeat loop's.
//   - uniAsked: the message handler's (OnOpen, then OnMessage): a
//     unidirectional session has had its connect request (uni.go).
//   - flags, hb and expireAt are atomics: the handler writes, the heartbeat
//     loop reads.
//
// Locks are taken in this order: a hub shard, then mu, then qmu; the
// registry's shard locks nest inside mu and take none of the others.
//
// An idle node holds one session per client, so the fields are ordered to
// leave no padding: the small ones of different owners share words (each
// is its own memory location), and the struct stays in the 240-byte size
// class (TestSessionSize).
type session struct {
	node  *Node
	conn  *transport.Conn
	id    string
	shard uint32
	flags atomic.Uint32 // flagAuthed, flagSubExpiry: set once each, never cleared
	// One word: the bools of three owners (see above) and the command bucket.
	rrun      bool    // rmu: the runner has the session, scheduled or running its commands
	gone      bool    // mu: the connection closed; nothing new may be joined
	uniAsked  bool    // the message handler's
	scheduled bool    // qmu: the session waits in its writer shard
	tokens    float32 // the command bucket's tokens
	// since is when the connection opened until the session is
	// authenticated (the connect timeout counts from it), then when its
	// presence was last refreshed; transport.Mono nanoseconds.
	since    int64
	userNext *session           // the user's next session in the registry; guarded by the registry's shard lock of user
	ci       *broker.ClientInfo // the client's info (id, user, conn_info), shared by its presence entries and publications: never written after flagAuthed
	expireAt atomic.Int64       // unix seconds; 0: never
	be       atomic.Pointer[backendSession]

	rmu sync.Mutex
	rq  *[]*protocol.Command // commands waiting for the command runner, in order; nil: none (an idle session keeps no slice header)

	mu   sync.Mutex
	subs []*subscription // every channel joined or being joined, at most one per channel

	qmu     sync.Mutex
	q       [][]byte
	qbytes  int
	closing *Disconnect
	big     *bigFrame   // the frame larger than the bound being written; nil: none
	cq      *conflation // set at the session's first conflated delivery (conflate.go); nil: the plain queue

	hb heartbeat

	tokensAt int64
	emu      *emulation // set by OnOpen for an emulated session (emulation.go), never written again; nil for the others
}

// The session's flags.
const (
	flagAuthed    = 1 << iota // the connect command succeeded
	flagSubExpiry             // some subscription has an expire_at: the heartbeat loop checks them
)

// authed reports whether the connect command succeeded; ci is set when it has.
func (s *session) authed() bool { return s.flags.Load()&flagAuthed != 0 }

// bigFrame is a frame larger than the queue's bound, taken while the
// backlog was within it: until the bytes written reach end, the bound grows
// by size (queue.go).
type bigFrame struct {
	end, size int64
}

// identity is the user id, or "" before the session is authenticated.
func (s *session) identity() string {
	if !s.authed() {
		return ""
	}
	return s.ci.UserID
}

func (s *session) info() *broker.ClientInfo {
	if !s.authed() {
		return &broker.ClientInfo{ClientID: s.id}
	}
	return s.ci
}

func (s *session) subInfo(sub *subscription) *broker.ClientInfo {
	i := s.info()
	if sub.chanInfo == "" {
		return i
	}
	c := *i
	c.ChanInfo = sub.chanInfo
	return &c
}

// findSub returns the subscription to ch; the caller holds s.mu.
func (s *session) findSub(ch string) *subscription {
	for _, sub := range s.subs {
		if sub.channel == ch {
			return sub
		}
	}
	return nil
}

// subscribed reports whether the session has a live subscription to ch.
func (s *session) subscribed(ch string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.findSub(ch)
	return sub != nil && sub.state == subLive
}

func newClientID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func toProtoInfo(i *broker.ClientInfo) *protocol.ClientInfo {
	if i == nil {
		return nil
	}
	return &protocol.ClientInfo{Client: i.ClientID, User: i.UserID, ConnInfo: rawOf(i.ConnInfo), ChanInfo: rawOf(i.ChanInfo)}
}

// rawOf is the JSON string s as protocol.Raw; "" is none.
func rawOf(s string) protocol.Raw {
	if s == "" {
		return nil
	}
	return protocol.Raw(s)
}

func toProtoPub(p *broker.Publication) *protocol.Publication {
	return &protocol.Publication{Data: protocol.Raw(p.Data), Info: toProtoInfo(p.Info), Offset: p.Offset, Tags: p.Tags}
}

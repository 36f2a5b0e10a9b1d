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
//   - node, conn, id, shard, openedAt: set by OnOpen, never written again.
//   - user, ci: written once by the connect command, under mu and before
//     authed is set; read by anyone after authed.Load() is true.
//   - be: set once, by the first connect the backend is asked about
//     (backend.go); a session connected by its token never has one.
//   - mu guards subs, gone, and each subscription's state and held frames.
//   - qmu guards the outbound queue: q, qbytes, scheduled, closing, bigEnd, bigLen, cq.
//   - rmu guards the command queue (rq, rrun): see commandrunner.go.
//   - tokens, tokensAt: whoever runs the session's commands — the message
//     handler (the transport runs one OnMessage at a time per connection),
//     the command runner while rrun is set (the handler then queues instead
//     of running), or the proxy worker while it runs the deferred commands
//     (the handler runs none meanwhile).
//   - lastPresence: the heartbeat loop's.
//   - uniAsked: the message handler's (OnOpen, then OnMessage): a
//     unidirectional session has had its connect request (uni.go).
//   - hb and expireAt are atomics: the handler writes, the heartbeat loop reads.
//
// Locks are taken in this order: a hub shard, then mu, then qmu; the
// registry's shard locks nest inside mu and take none of the others.
type session struct {
	node     *Node
	conn     *transport.Conn
	id       string
	shard    uint32
	authed   atomic.Bool // beside shard, in one word
	openedAt int64

	user     string
	userNext *session           // the user's next session in the registry; guarded by the registry's shard lock of user
	ci       *broker.ClientInfo // the client's info (id, user, conn_info), shared by its presence entries and publications: never written
	expireAt atomic.Int64       // unix seconds; 0: never
	be       atomic.Pointer[backendSession]
	// subExpiry: some subscription has an expire_at, the heartbeat loop checks them.
	subExpiry atomic.Bool

	rmu  sync.Mutex          // guards rq and rrun
	rq   []*protocol.Command // commands waiting for the command runner, in order
	rrun bool                // the runner has the session: scheduled or running its commands

	mu       sync.Mutex
	subs     []*subscription // every channel joined or being joined, at most one per channel
	gone     bool            // the connection closed; nothing new may be joined
	uniAsked bool            // beside gone, in its word; see the owners above

	qmu       sync.Mutex
	q         [][]byte
	qbytes    int
	scheduled bool
	closing   *Disconnect
	bigEnd    int64       // a frame larger than the bound is written until Conn.Written reaches this; 0: none
	bigLen    int64       // its size, added to the bound until then
	cq        *conflation // set at the session's first conflated delivery (conflate.go); nil: the plain queue

	hb heartbeat

	tokens       float64
	tokensAt     int64
	lastPresence int64
	emu          *emulation // set by OnOpen for an emulated session (emulation.go), never written again; nil for the others
}

// identity is the user id, or "" before the session is authenticated.
func (s *session) identity() string {
	if !s.authed.Load() {
		return ""
	}
	return s.user
}

func (s *session) info() *broker.ClientInfo {
	if !s.authed.Load() {
		return &broker.ClientInfo{ClientID: s.id}
	}
	return s.ci
}

func (s *session) subInfo(sub *subscription) *broker.ClientInfo {
	i := s.info()
	if sub.chanInfo == nil {
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
	return &protocol.ClientInfo{Client: i.ClientID, User: i.UserID, ConnInfo: protocol.Raw(i.ConnInfo), ChanInfo: protocol.Raw(i.ChanInfo)}
}

func toProtoPub(p *broker.Publication) *protocol.Publication {
	return &protocol.Publication{Data: protocol.Raw(p.Data), Info: toProtoInfo(p.Info), Offset: p.Offset, Tags: p.Tags}
}

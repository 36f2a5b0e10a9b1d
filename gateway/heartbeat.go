package gateway

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/spindlehq/spindle/transport"
)

// heartbeat tracks pings and liveness of one session, in monotonic nanoseconds.
type heartbeat struct {
	lastRecv atomic.Int64
	pingSent atomic.Int64 // when the unanswered ping went out; 0 when none
	nextPing atomic.Int64 // 0 until the session is authenticated
}

func (h *heartbeat) touch() { h.lastRecv.Store(transport.Mono()) }
func (h *heartbeat) pong()  { h.pingSent.Store(0) }

// start schedules the first ping at a random point between half and one
// interval, so a reconnect storm does not ping in lockstep.
func (h *heartbeat) start(interval time.Duration) {
	half := int64(interval / 2)
	h.nextPing.Store(transport.Mono() + half + rand.Int64N(half+1))
}

// heartbeatTick is how often the heartbeat task scans: the one goroutine
// that pings every client, enforces pong, connect and expiry deadlines,
// detects stalled sockets and refreshes presence. A scan costs a few
// nanoseconds per connection.
func (n *Node) heartbeatTick() time.Duration {
	tick := n.cfg.PingInterval / 5
	if p := n.cfg.PongTimeout / 4; p < tick {
		tick = p
	}
	return min(max(tick, 20*time.Millisecond), time.Second)
}

func (n *Node) scan(ctx context.Context) {
	now := transport.Mono()
	wall := time.Now().Unix()
	interval := int64(n.cfg.PingInterval)
	pongTimeout := int64(n.cfg.PongTimeout)
	connectTimeout := int64(n.cfg.ConnectTimeout)
	stall := int64(n.cfg.ClientStallTimeout)
	presenceEvery := int64(n.cfg.PresenceTTL / 3)
	n.sessions.each(func(s *session) {
		next := s.hb.nextPing.Load()
		switch {
		case next == 0:
			if now-s.since > connectTimeout {
				n.log.Info("no connect command in time", "client", s.id, "remote", s.conn.RemoteAddr())
				s.close(DisconnectStale, false)
			}
			return
		case s.conn.Pending() > 0 && now-s.conn.LastProgress() > stall:
			n.log.Warn("slow consumer: its socket took no bytes while data waited", "client", s.id, "user", s.identity(),
				"remote", s.conn.RemoteAddr(), "pending_bytes", s.conn.Pending(), "for", time.Duration(now-s.conn.LastProgress()))
			s.close(DisconnectSlow, true)
			return
		}
		if sent := s.hb.pingSent.Load(); sent != 0 && now-sent > pongTimeout {
			n.log.Info("no pong in time", "client", s.id)
			s.close(DisconnectNoPong, false)
			return
		}
		if now >= next {
			if s.hb.pingSent.Load() == 0 && !s.enc().uni() { // a unidirectional client can not answer
				s.hb.pingSent.Store(now)
			}
			s.hb.nextPing.Store(now + interval)
			s.enqueue(pingFrames[s.enc()])
		}
		if exp := s.expireAt.Load(); exp > 0 && wall > exp && s.serverRefresh() {
			s.refreshProxy(wall)
		} else if exp > 0 && wall > exp {
			n.log.Info("connection expired", "client", s.id)
			s.close(DisconnectExpired, false)
			return
		}
		if s.flags.Load()&flagSubExpiry != 0 {
			s.expireSubs(ctx, wall)
		}
		if presenceEvery > 0 && now-s.since > presenceEvery {
			s.since = now
			n.refreshPresence(ctx, s)
		}
	})
}

func (n *Node) refreshPresence(ctx context.Context, s *session) {
	s.mu.Lock()
	var chans []*subscription
	for _, sub := range s.subs {
		if sub.state == subLive && sub.rules.Presence {
			chans = append(chans, sub)
		}
	}
	s.mu.Unlock()
	for _, sub := range chans {
		if err := n.presence.AddPresence(ctx, sub.channel, s.id, s.subInfo(sub), n.cfg.PresenceTTL); err != nil {
			n.log.Warn("refresh presence", "channel", sub.channel, "err", err)
		}
	}
}

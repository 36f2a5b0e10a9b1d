package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/gateway/proxy"
)

// handleConnect authenticates the session by its token, or without one by
// asking the backend (connectProxy), then establishes it.
func (s *session) handleConnect(ctx context.Context, id uint32, req *protocol.ConnectRequest) outcome {
	if s.authed() {
		return disconnect(DisconnectBadRequest)
	}
	n := s.node
	var claims auth.ConnectClaims
	switch {
	case req.Token != "" && n.verifier != nil && n.verifier.Enabled():
		c, err := n.verifier.VerifyConnect(req.Token)
		if errors.Is(err, auth.ErrTokenExpired) {
			n.metrics.authFailures.WithLabelValues("expired").Inc()
			return failed(ErrTokenExpired)
		}
		if err != nil {
			n.metrics.authFailures.WithLabelValues("invalid").Inc()
			n.log.Info("invalid connection token", "client", s.id, "remote", s.conn.RemoteAddr(), "err", err)
			return disconnect(DisconnectInvalidToken)
		}
		claims = c
	case req.Token != "":
		n.log.Info("connection token given but no key configured", "client", s.id)
		return disconnect(DisconnectInvalidToken)
	case n.proxy.Enabled(proxy.Connect):
		return s.connectProxy(id, req)
	case n.cfg.AllowAnonymousConnect:
	default:
		n.metrics.authFailures.WithLabelValues("missing").Inc()
		n.log.Info("connect without token", "client", s.id, "remote", s.conn.RemoteAddr())
		return disconnect(DisconnectBadRequest)
	}
	return s.establish(ctx, id, req, claims, establishExtras{})
}

// establishExtras are what the connect proxy adds to the claims.
type establishExtras struct {
	data          []byte // the connect reply's data
	meta          []byte
	serverRefresh bool
}

// establish authenticates the session as claims say, then joins the
// channels of the channels claim; the connect reply carries their results
// and is queued before any of their publications.
func (s *session) establish(ctx context.Context, id uint32, req *protocol.ConnectRequest, claims auth.ConnectClaims, x establishExtras) outcome {
	n := s.node
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return disconnect(DisconnectConnectionClosed)
	}
	s.ci = &broker.ClientInfo{ClientID: s.id, UserID: claims.UserID}
	if len(claims.Info) > 0 {
		s.ci.ConnInfo = string(claims.Info)
	}
	if x.meta != nil || x.serverRefresh {
		be := s.backend()
		be.meta, be.serverRefresh = x.meta, x.serverRefresh
	}
	s.expireAt.Store(claims.ExpireAt)
	s.flags.Or(flagAuthed)
	n.sessions.addUser(s)
	s.mu.Unlock()
	s.hb.start(n.cfg.PingInterval)

	res := &protocol.ConnectResult{
		Client:  s.id,
		Version: n.version,
		Ping:    uint32(max(n.cfg.PingInterval/time.Second, 1)),
		Pong:    true,
		Data:    x.data,
	}
	if claims.ExpireAt > 0 && !x.serverRefresh {
		res.Expires = true
		res.Ttl = ttlSeconds(claims.ExpireAt)
	}
	var joined []*subscription
	for _, ch := range claims.Channels {
		sr := req.Subs[ch]
		if sr == nil {
			sr = &protocol.SubscribeRequest{Channel: ch}
		}
		sub, result, err := s.prepareSubscribe(ctx, ch, sr, "")
		if err != nil {
			n.log.Warn("server-side subscribe from the token failed", "client", s.id, "channel", ch, "err", err)
			continue
		}
		if res.Subs == nil {
			res.Subs = make(map[string]*protocol.SubscribeResult)
		}
		res.Subs[ch] = result
		joined = append(joined, sub)
	}
	rep := &protocol.Reply{Id: id, Connect: res}
	if len(joined) == 0 {
		return replied(rep)
	}
	frame, err := encodeReply(s.enc(), rep)
	if err != nil {
		n.log.Error("encode connect reply", "client", s.id, "err", err)
		for _, sub := range joined {
			s.drop(ctx, sub)
		}
		return disconnect(DisconnectServerError)
	}
	s.activate(ctx, frame, joined...)
	return outcome{}
}

func (s *session) handleRefresh(req *protocol.RefreshRequest) outcome {
	n := s.node
	if n.verifier == nil || !n.verifier.Enabled() || req.Token == "" {
		return failed(ErrBadRequest)
	}
	c, err := n.verifier.VerifyConnect(req.Token)
	if errors.Is(err, auth.ErrTokenExpired) {
		return failed(ErrTokenExpired)
	}
	if err != nil || c.UserID != s.identity() {
		n.log.Info("refresh token refused", "client", s.id, "user", s.identity(), "err", err)
		return disconnect(DisconnectInvalidToken)
	}
	s.expireAt.Store(c.ExpireAt)
	res := &protocol.RefreshResult{}
	if c.ExpireAt > 0 {
		res.Expires, res.Ttl = true, ttlSeconds(c.ExpireAt)
	}
	return replied(&protocol.Reply{Refresh: res})
}

func ttlSeconds(expireAt int64) uint32 {
	return uint32(max(expireAt-time.Now().Unix(), 1))
}

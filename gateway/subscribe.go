package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway/proxy"
)

// One path joins a session to a channel, whoever asks: the client's
// subscribe command (allowed by its token, the namespace's rules or the
// backend's subscribe proxy), the channels claim of the token or of the
// connect proxy's answer, and the server API. It has two steps:
//
//  1. prepareSubscribe reserves the channel in s.subs (checking "already
//     subscribed" and the limit in the same lock section), registers the
//     subscription in the hub where its deliveries are held back, reads the
//     stream position and recovered publications, and records presence and
//     the join.
//  2. activate queues the first frame (the reply, or a subscribe push),
//     then what was held back, and marks the subscription live.
//
// A subscription is removed by unsubscribe or by the connection closing.
// What the client is told of it (a reply or a push) is queued under s.mu
// in the same step that changes its state, so the client reads the changes
// in the order they happened. Exactly one party ends it (end: hub, broker,
// presence, leave): the remover when it was live, activate when it was
// still pending, because the remover only marks it cancelled. It stays in
// s.subs until ended, so a new subscription to the channel cannot overlap
// the old one's presence and leave.

// subState is where a subscription is in its life; guarded by session.mu.
type subState uint8

const (
	subPending   subState = iota // reserved and in the hub, deliveries held back
	subLive                      // deliveries go straight to the queue
	subCancelled                 // removed while pending: activate ends it
	subLeaving                   // removed while live: its remover is ending it
)

// subscription is one session's membership in one channel.
//
// The small fields share one word (a subscription is held per client
// and channel): joinLeave, conflate and chanInfo are set before the
// subscription is shared, read-only after; live is atomic; state and
// pushUnsub are guarded by session.mu, as held and top are.
type subscription struct {
	channel   string
	rules     *config.ChannelOptions
	joinLeave bool        // the client gets join/leave pushes
	conflate  bool        // rules.Conflate: a queued publication is replaced by the next (conflate.go)
	state     subState    // guarded by session.mu
	pushUnsub bool        // guarded by session.mu: when cancelled, tell the client with an unsubscribe push
	live      atomic.Bool // mirrors state == subLive, read on the delivery path without s.mu
	chanInfo  string      // JSON from the subscription token; "": none

	// expiry is set by join when the subscription has an expire_at (from
	// its token or the subscribe proxy's answer) and never replaced; nil:
	// the subscription does not expire.
	expiry atomic.Pointer[subExpiry]

	// Guarded by session.mu.
	held *[]heldFrame // deliveries while pending; nil when none came
	top  uint64       // stream offset the client was given; held frames up to it are dropped
}

// subExpiry is when a subscription ends unless the backend prolongs it.
type subExpiry struct {
	at          atomic.Int64 // unix seconds, 0: never; moved by the sub_refresh proxy's answer
	refreshNext atomic.Int64 // the heartbeat loop's: no sub_refresh call before it
}

// expired reports whether the subscription's time is past at wall (unix seconds).
func (x *subExpiry) expired(wall int64) bool {
	at := x.at.Load()
	return at > 0 && wall > at
}

type heldFrame struct {
	frame  []byte
	offset uint64
}

// deliver queues a publication or join/leave push for the session, or
// holds it back while the subscription is pending. The hub calls it.
func (sub *subscription) deliver(s *session, frame []byte, offset uint64) {
	if !sub.live.Load() {
		s.mu.Lock()
		if sub.state == subPending {
			if sub.held == nil {
				sub.held = new([]heldFrame)
			}
			*sub.held = append(*sub.held, heldFrame{frame, offset})
			s.mu.Unlock()
			return
		}
		live := sub.state == subLive
		s.mu.Unlock()
		if !live {
			return
		}
	}
	s.enqueue(frame)
}

// errSessionGone refuses to join channels for a closed connection.
var errSessionGone = errors.New("connection closed")

// errStillLeaving refuses to join a channel whose previous subscription is
// still being ended; it is temporary: retrying a moment later succeeds.
var errStillLeaving = fmt.Errorf("previous subscription still ending: %w", ErrInternal)

// prepareSubscribe is step 1 of joining ch; see the comment at the top of
// this file. On error nothing of the subscription is left.
func (s *session) prepareSubscribe(ctx context.Context, ch string, req *protocol.SubscribeRequest, chanInfo string) (*subscription, *protocol.SubscribeResult, error) {
	n := s.node
	rules, err := n.rules.resolve(ch)
	if err != nil {
		return nil, nil, err
	}
	sub := &subscription{
		channel:   ch,
		rules:     rules,
		joinLeave: rules.JoinLeave && (req.JoinLeave || rules.ForcePushJoinLeave),
		conflate:  rules.Conflate,
		chanInfo:  chanInfo,
	}
	s.mu.Lock()
	old := s.findSub(ch)
	switch {
	case s.gone:
		s.mu.Unlock()
		return nil, nil, errSessionGone
	case old != nil && (old.state == subCancelled || old.state == subLeaving):
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("subscribe %q: %w", ch, errStillLeaving)
	case old != nil:
		s.mu.Unlock()
		return nil, nil, errorf(ErrAlreadySubscribed, "subscribe %q", ch)
	case len(s.subs) >= n.cfg.MaxSubscriptions:
		s.mu.Unlock()
		return nil, nil, errorf(ErrLimitExceeded, "subscribe %q: %d channels", ch, n.cfg.MaxSubscriptions)
	}
	s.subs = append(s.subs, sub)
	s.mu.Unlock()

	first, err := n.hub.add(s, sub)
	if err != nil {
		s.release(sub)
		return nil, nil, err
	}
	if first {
		if err := n.broker.Subscribe(ctx, ch); err != nil {
			s.abandon(ctx, sub)
			return nil, nil, errorf(ErrInternal, "subscribe %q: broker: %v", ch, err)
		}
	}
	res, err := s.position(ctx, sub, req)
	if err != nil {
		s.abandon(ctx, sub)
		return nil, nil, err
	}
	if rules.Presence {
		if err := n.presence.AddPresence(ctx, ch, s.id, s.subInfo(sub), n.cfg.PresenceTTL); err != nil {
			n.log.Warn("add presence", "channel", ch, "err", err)
		}
	}
	if rules.JoinLeave {
		if err := n.broker.PublishJoin(ctx, ch, s.subInfo(sub)); err != nil {
			n.log.Warn("publish join", "channel", ch, "err", err)
		}
	}
	return sub, res, nil
}

// position fills the subscribe result from the channel's stream: its
// position when asked for, and the publications missed when recovering.
func (s *session) position(ctx context.Context, sub *subscription, req *protocol.SubscribeRequest) (*protocol.SubscribeResult, error) {
	n, rules := s.node, sub.rules
	res := &protocol.SubscribeResult{}
	if rules.HistorySize <= 0 {
		return res, nil
	}
	// As in Centrifugo, a subscription is recoverable or positioned only
	// when the client asks (or the namespace forces it); otherwise an SDK
	// would recover on reconnect what the app never asked for. The stream
	// top is read either way: it dedupes the held live stream.
	recoverable := rules.AllowRecovery && (req.Recoverable || req.Recover || rules.ForceRecovery)
	if recoverable || req.Positioned || rules.ForcePositioning {
		res.Positioned = true
		res.Recoverable = recoverable
	}
	filter := broker.HistoryFilter{Limit: 0}
	recovering := req.Recover && rules.AllowRecovery
	if recovering {
		filter = broker.HistoryFilter{Since: &broker.StreamPosition{Offset: req.Offset, Epoch: req.Epoch}, Limit: -1}
		res.WasRecovering = true
	}
	pubs, sp, err := n.broker.History(ctx, sub.channel, filter)
	switch {
	case recovering && errors.Is(err, broker.ErrUnrecoverablePosition):
		n.metrics.recoveries.WithLabelValues("failed").Inc()
	case err != nil:
		return nil, errorf(ErrInternal, "subscribe %q: history: %v", sub.channel, err)
	case recovering:
		res.Recovered = true
		n.metrics.recoveries.WithLabelValues("ok").Inc()
		res.Publications = make([]*protocol.Publication, 0, len(pubs))
		for _, pub := range pubs {
			res.Publications = append(res.Publications, toProtoPub(pub))
		}
	}
	if res.Positioned {
		res.Epoch, res.Offset = sp.Epoch, sp.Offset
	}
	s.mu.Lock()
	sub.top = sp.Offset
	s.mu.Unlock()
	return res, nil
}

// activate is step 2: it queues first (when not nil), then for each
// subscription what was held back past its stream top, and makes it live.
// Subscriptions cancelled meanwhile are ended here, after first, so the
// client sees them begin and end in order.
func (s *session) activate(ctx context.Context, first []byte, subs ...*subscription) {
	var cancelled []*subscription
	s.mu.Lock()
	if first != nil {
		s.enqueue(first)
	}
	for _, sub := range subs {
		if sub.state == subCancelled {
			if sub.pushUnsub {
				s.enqueue(unsubscribePush(s.enc(), sub.channel))
			}
			cancelled = append(cancelled, sub)
			continue
		}
		if sub.held != nil {
			for _, hf := range *sub.held {
				if hf.offset == 0 || hf.offset > sub.top {
					s.enqueue(hf.frame)
				}
			}
			sub.held = nil
		}
		sub.state = subLive
		sub.live.Store(true)
	}
	s.mu.Unlock()
	for _, sub := range cancelled {
		s.end(ctx, sub)
	}
}

// unsubscribe removes the session from ch and reports whether it was
// subscribed. notice (the client's reply, or the server's unsubscribe
// push) is queued in the same step, whether or not it was.
func (s *session) unsubscribe(ctx context.Context, ch string, notice []byte) bool {
	return s.remove(ctx, ch, nil, notice)
}

// remove is unsubscribe; when only is set, it removes only that
// subscription, and queues notice only when only is still ch's.
func (s *session) remove(ctx context.Context, ch string, only *subscription, notice []byte) bool {
	s.mu.Lock()
	sub := s.findSub(ch)
	if only != nil && sub != only {
		s.mu.Unlock()
		return false
	}
	switch {
	case sub == nil || sub.state == subCancelled || sub.state == subLeaving:
		s.enqueueNotice(notice)
		s.mu.Unlock()
		return false
	case sub.state == subPending:
		// Its subscribe reply or push is still to come, so an unsubscribe
		// push must follow it, whoever asked.
		sub.state, sub.pushUnsub = subCancelled, true
		s.enqueueNotice(notice)
		s.mu.Unlock()
		return true
	}
	// Not live before the notice is queued: the writer may send the notice
	// at once, and a publication the client makes after reading it must not
	// reach this subscription (deliver reads live without s.mu).
	sub.state = subLeaving
	sub.live.Store(false)
	s.enqueueNotice(notice)
	s.mu.Unlock()
	s.end(ctx, sub)
	return true
}

// enqueueNotice queues notice, if any.
func (s *session) enqueueNotice(notice []byte) {
	if notice != nil {
		s.enqueue(notice)
	}
}

// unsubscribePush is the frame telling a client the server ended its subscription to ch.
func unsubscribePush(enc encoding, ch string) []byte {
	return unsubscribeFrame(enc, ch, unsubscribeServer, "server unsubscribe")
}

// unsubscribeNotice is an unsubscribe push for ch with code and reason.
func unsubscribeNotice(ch string, code uint32, reason string) *protocol.Push {
	return &protocol.Push{Channel: ch, Unsubscribe: &protocol.Unsubscribe{Code: code, Reason: reason}}
}

// unsubscribeFrame is unsubscribeNotice framed in enc.
func unsubscribeFrame(enc encoding, ch string, code uint32, reason string) []byte {
	frame, err := encodePush(enc, unsubscribeNotice(ch, code, reason))
	if err != nil {
		panic("gateway: encode unsubscribe push: " + err.Error()) // a fixed struct always encodes
	}
	return frame
}

// end finishes a subscription that was removed (cancelled or leaving) and
// had been fully prepared: hub and broker, presence, the leave; then it
// leaves s.subs and the channel may be joined again.
func (s *session) end(ctx context.Context, sub *subscription) {
	n := s.node
	n.hubRemove(ctx, s, sub)
	if sub.rules.Presence {
		if err := n.presence.RemovePresence(ctx, sub.channel, s.id, s.identity()); err != nil {
			n.log.Warn("remove presence", "channel", sub.channel, "err", err)
		}
	}
	if sub.rules.JoinLeave {
		if err := n.broker.PublishLeave(ctx, sub.channel, s.subInfo(sub)); err != nil {
			n.log.Warn("publish leave", "channel", sub.channel, "err", err)
		}
	}
	s.release(sub)
}

// drop ends a prepared subscription that will not be activated.
func (s *session) drop(ctx context.Context, sub *subscription) {
	s.mu.Lock()
	sub.state = subCancelled
	s.mu.Unlock()
	s.end(ctx, sub)
}

// abandon undoes a subscription whose preparation failed before presence
// and the join: the hub, then s.subs.
func (s *session) abandon(ctx context.Context, sub *subscription) {
	s.node.hubRemove(ctx, s, sub)
	s.release(sub)
}

// release takes sub out of s.subs.
func (s *session) release(sub *subscription) {
	s.mu.Lock()
	s.subs = slices.DeleteFunc(s.subs, func(x *subscription) bool { return x == sub })
	if sub.state != subLeaving {
		sub.state = subCancelled
	}
	sub.held = nil
	s.mu.Unlock()
}

// hubRemove takes sub out of the hub and, when it was the channel's last
// local subscriber, tells the broker this node no longer wants the channel.
func (n *Node) hubRemove(ctx context.Context, s *session, sub *subscription) {
	if n.hub.remove(s, sub) {
		if err := n.broker.Unsubscribe(ctx, sub.channel); err != nil {
			n.log.Warn("broker unsubscribe", "channel", sub.channel, "err", err)
		}
	}
}

// leaveAll marks the session gone and ends every subscription: live ones
// here, pending ones in their activate.
func (s *session) leaveAll(ctx context.Context) {
	s.mu.Lock()
	s.gone = true
	var live []*subscription
	for _, sub := range s.subs {
		switch sub.state {
		case subLive:
			sub.state = subLeaving
			sub.live.Store(false)
			live = append(live, sub)
		case subPending:
			sub.state = subCancelled
		}
	}
	s.mu.Unlock()
	for _, sub := range live {
		s.end(ctx, sub)
	}
}

// handleSubscribe checks the client's right to ch, then joins it; the
// reply is queued by activate, in order with the channel's publications.
func (s *session) handleSubscribe(ctx context.Context, id uint32, req *protocol.SubscribeRequest) outcome {
	n := s.node
	ch := req.Channel
	rules, err := n.rules.resolve(ch)
	if err != nil {
		return failed(err)
	}
	user := s.identity()
	var chanInfo string
	switch {
	case req.Token != "":
		if n.verifier == nil || !n.verifier.Enabled() {
			return failed(ErrPermissionDenied)
		}
		c, err := n.verifier.VerifySubscribe(req.Token)
		if errors.Is(err, auth.ErrTokenExpired) {
			return failed(ErrTokenExpired)
		}
		switch {
		case err != nil:
			n.log.Info("subscription token refused", "client", s.id, "channel", ch, "err", err)
			return failed(ErrPermissionDenied)
		case c.Channel != ch || c.UserID != user:
			n.log.Info("subscription token refused: it is for another channel or user", "client", s.id,
				"channel", ch, "token_channel", c.Channel, "user", user, "token_user", c.UserID)
			return failed(ErrPermissionDenied)
		}
		chanInfo = string(c.Info)
	case rules.ProxySubscribe && n.proxy.Enabled(proxy.Subscribe):
		if !userAllowed(ch, user) {
			return failed(ErrPermissionDenied)
		}
		return s.subscribeProxy(id, req)
	case rules.SubscribeTokenRequired,
		user == "" && !rules.AllowSubscribeForAnonymous,
		!userAllowed(ch, user):
		return failed(ErrPermissionDenied)
	}
	return s.join(ctx, id, req, chanInfo, nil, 0)
}

// join is what handleSubscribe does once the subscription is allowed:
// prepare, then activate with the reply (carrying data, when the backend
// gave some) as the first frame. A subscription with expireAt ends then
// unless the sub_refresh proxy prolongs it (see expireSubs).
func (s *session) join(ctx context.Context, id uint32, req *protocol.SubscribeRequest, chanInfo string, data []byte, expireAt int64) outcome {
	n, ch, user := s.node, req.Channel, s.identity()
	sub, res, err := s.prepareSubscribe(ctx, ch, req, chanInfo)
	if err != nil {
		if errors.Is(err, ErrLimitExceeded) {
			n.log.Info("subscription limit", "client", s.id, "user", user, "limit", n.cfg.MaxSubscriptions)
		} else if AsError(err) == ErrInternal {
			n.log.Error("subscribe", "client", s.id, "channel", ch, "err", err)
		}
		return failed(err)
	}
	res.Data = data
	if expireAt > 0 {
		x := &subExpiry{}
		x.at.Store(expireAt)
		sub.expiry.Store(x)
		s.flags.Or(flagSubExpiry)
	}
	frame, err := encodeReply(s.enc(), &protocol.Reply{Id: id, Subscribe: res})
	if err != nil {
		n.log.Error("encode subscribe reply", "client", s.id, "channel", ch, "err", err)
		s.drop(ctx, sub)
		return failed(ErrInternal)
	}
	s.activate(ctx, frame, sub)
	return outcome{}
}

// handleUnsubscribe queues its reply itself, in the same step as the removal.
func (s *session) handleUnsubscribe(ctx context.Context, id uint32, req *protocol.UnsubscribeRequest) outcome {
	frame, err := encodeReply(s.enc(), &protocol.Reply{Id: id, Unsubscribe: &protocol.UnsubscribeResult{}})
	if err != nil {
		s.node.log.Error("encode unsubscribe reply", "client", s.id, "err", err)
		return disconnect(DisconnectServerError)
	}
	s.unsubscribe(ctx, req.Channel, frame)
	return outcome{}
}

func (s *session) handleSubRefresh(req *protocol.SubRefreshRequest) outcome {
	n := s.node
	if n.verifier == nil || !n.verifier.Enabled() {
		return failed(ErrBadRequest)
	}
	c, err := n.verifier.VerifySubscribe(req.Token)
	if errors.Is(err, auth.ErrTokenExpired) {
		return failed(ErrTokenExpired)
	}
	if err != nil || c.Channel != req.Channel || c.UserID != s.identity() || !s.subscribed(req.Channel) {
		return failed(ErrPermissionDenied)
	}
	res := &protocol.SubRefreshResult{}
	if c.ExpireAt > 0 {
		res.Expires, res.Ttl = true, ttlSeconds(c.ExpireAt)
	}
	return replied(&protocol.Reply{SubRefresh: res})
}

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/transport"
)

// session is one client connection speaking the client protocol.
type session struct {
	node  *Node
	conn  *transport.Conn
	id    string
	shard uint32

	// mu guards the fields below and the held frames of pending subscriptions.
	mu            sync.Mutex
	authenticated bool
	user          string
	connInfo      []byte
	expireAt      int64 // unix seconds; 0 never
	subs          []*subscription
	gone          bool // cleaned up after the connection closed

	// Outbound queue, see queue.go.
	qmu       sync.Mutex
	q         [][]byte
	qbytes    int
	scheduled bool
	closing   *Disconnect

	// Heartbeat and limits; touched by the message handler (serialized per
	// connection) and the heartbeat loop, hence atomics in hb.
	hb heartbeat

	tokens       float64 // command rate bucket; only the message handler uses it
	tokensAt     int64
	openedAt     int64
	lastPresence int64
}

func (s *session) info() *broker.ClientInfo {
	return &broker.ClientInfo{ClientID: s.id, UserID: s.user, ConnInfo: s.connInfo}
}

func (s *session) protoInfo(chanInfo []byte) *protocol.ClientInfo {
	return &protocol.ClientInfo{Client: s.id, User: s.user, ConnInfo: s.connInfo, ChanInfo: chanInfo}
}

func (s *session) findSub(ch string) *subscription {
	for _, sub := range s.subs {
		if sub.channel == ch {
			return sub
		}
	}
	return nil
}

// handleFrame decodes and runs every command of one client frame.
func (s *session) handleFrame(data []byte) {
	s.hb.touch()
	s.node.metrics.bytesIn.Add(float64(len(data)))
	if len(bytes.TrimSpace(data)) == 0 {
		return
	}
	cmds, err := decodeFrame(data)
	if err != nil {
		s.node.log.Info("malformed client frame", "client", s.id, "remote", s.conn.RemoteAddr(), "err", err)
		s.node.metrics.commandErrors.WithLabelValues("decode").Inc()
		s.close(DisconnectBadRequest, false)
		return
	}
	for _, cmd := range cmds {
		if !s.handleCommand(cmd) {
			return
		}
	}
}

// maxFrameCommands bounds the commands one frame may carry.
const maxFrameCommands = 100

// decodeFrame splits a client frame into its newline-delimited commands.
// The frame is copied first: the decoder does not copy strings, the
// transport reuses data after the handler returns, and channel names live on.
func decodeFrame(data []byte) ([]*protocol.Command, error) {
	data = bytes.Clone(data)
	dec := protocol.NewJSONCommandDecoder(data)
	var cmds []*protocol.Command
	for {
		cmd, err := dec.Decode()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("command %d: %w", len(cmds)+1, err)
		}
		if cmd != nil {
			cmds = append(cmds, cmd)
			if len(cmds) > maxFrameCommands {
				return nil, fmt.Errorf("more than %d commands in one frame", maxFrameCommands)
			}
		}
		if err != nil { // io.EOF: that was the last command
			return cmds, nil
		}
	}
}

// handleCommand runs one command and queues its reply. It returns false when
// the connection is being closed.
func (s *session) handleCommand(cmd *protocol.Command) bool {
	method := commandMethod(cmd)
	if method == "pong" {
		s.hb.pong()
		return true
	}
	s.node.metrics.commandsIn.WithLabelValues(method).Inc()
	start := time.Now()
	defer func() { s.node.metrics.commandDuration.WithLabelValues(method).Observe(time.Since(start).Seconds()) }()

	s.mu.Lock()
	authed := s.authenticated
	s.mu.Unlock()
	if method != "connect" && !authed {
		s.node.log.Info("command before connect", "client", s.id, "method", method)
		s.close(DisconnectBadRequest, false)
		return false
	}
	if method != "connect" && !s.allowCommand() {
		s.node.metrics.commandErrors.WithLabelValues("rate").Inc()
		return s.reply(cmd.Id, &protocol.Reply{Error: errTooManyRequests})
	}
	if cmd.Id == 0 && method != "send" {
		s.node.log.Info("command without id", "client", s.id, "method", method)
		s.close(DisconnectBadRequest, false)
		return false
	}

	var rep *protocol.Reply
	var d *Disconnect
	ctx, cancel := context.WithTimeout(s.node.ctx, 10*time.Second)
	defer cancel()
	switch method {
	case "connect":
		rep, d = s.handleConnect(ctx, cmd.Id, cmd.Connect)
	case "subscribe":
		// The subscribe reply is queued by doSubscribe itself, in order
		// with the channel's publications.
		rep, d = s.handleSubscribe(ctx, cmd.Id, cmd.Subscribe)
	case "unsubscribe":
		rep = s.handleUnsubscribe(ctx, cmd.Unsubscribe)
	case "publish":
		rep = s.handlePublish(ctx, cmd.Publish)
	case "presence":
		rep = s.handlePresence(ctx, cmd.Presence)
	case "presence_stats":
		rep = s.handlePresenceStats(ctx, cmd.PresenceStats)
	case "history":
		rep = s.handleHistory(ctx, cmd.History)
	case "refresh":
		rep, d = s.handleRefresh(cmd.Refresh)
	case "sub_refresh":
		rep = s.handleSubRefresh(cmd.SubRefresh)
	case "ping":
		rep = &protocol.Reply{Ping: &protocol.PingResult{}}
	case "send":
		return true // asynchronous messages have no handler here
	default:
		rep = &protocol.Reply{Error: errMethodNotFound}
	}
	if d != nil {
		s.node.log.Info("disconnecting client", "client", s.id, "user", s.user, "method", method, "code", d.Code, "reason", d.Reason)
		s.close(*d, false)
		return false
	}
	if rep == nil {
		return true
	}
	if rep.Error != nil {
		s.node.metrics.commandErrors.WithLabelValues(method).Inc()
	}
	return s.reply(cmd.Id, rep)
}

func (s *session) reply(id uint32, rep *protocol.Reply) bool {
	rep.Id = id
	frame, err := encodeReply(rep)
	if err != nil {
		s.node.log.Error("encode reply", "client", s.id, "err", err)
		s.close(DisconnectServerError, false)
		return false
	}
	return s.enqueue(frame)
}

func commandMethod(c *protocol.Command) string {
	switch {
	case c.Connect != nil:
		return "connect"
	case c.Subscribe != nil:
		return "subscribe"
	case c.Unsubscribe != nil:
		return "unsubscribe"
	case c.Publish != nil:
		return "publish"
	case c.Presence != nil:
		return "presence"
	case c.PresenceStats != nil:
		return "presence_stats"
	case c.History != nil:
		return "history"
	case c.Ping != nil:
		return "ping"
	case c.Send != nil:
		return "send"
	case c.Rpc != nil:
		return "rpc"
	case c.Refresh != nil:
		return "refresh"
	case c.SubRefresh != nil:
		return "sub_refresh"
	case c.Id == 0:
		return "pong"
	}
	return "unknown"
}

// allowCommand takes one token from the connection's command bucket.
func (s *session) allowCommand() bool {
	rate := s.node.cfg.CommandRate
	if rate <= 0 {
		return true
	}
	now := transport.Mono()
	burst := float64(s.node.cfg.CommandBurst)
	if s.tokensAt == 0 {
		s.tokens = burst
	} else {
		s.tokens += float64(now-s.tokensAt) / float64(time.Second) * rate
		if s.tokens > burst {
			s.tokens = burst
		}
	}
	s.tokensAt = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

func (s *session) handleConnect(ctx context.Context, id uint32, req *protocol.ConnectRequest) (*protocol.Reply, *Disconnect) {
	s.mu.Lock()
	already := s.authenticated
	s.mu.Unlock()
	if already {
		return nil, &DisconnectBadRequest
	}
	n := s.node
	var claims auth.ConnectClaims
	switch {
	case req.Token != "" && n.verifier != nil && n.verifier.Enabled():
		c, err := n.verifier.VerifyConnect(req.Token)
		if errors.Is(err, auth.ErrTokenExpired) {
			n.metrics.authFailures.WithLabelValues("expired").Inc()
			return &protocol.Reply{Error: errTokenExpired}, nil
		}
		if err != nil {
			n.metrics.authFailures.WithLabelValues("invalid").Inc()
			n.log.Info("invalid connection token", "client", s.id, "remote", s.conn.RemoteAddr(), "err", err)
			return nil, &DisconnectInvalidToken
		}
		claims = c
	case req.Token != "":
		n.log.Info("connection token given but no key configured", "client", s.id)
		return nil, &DisconnectInvalidToken
	case n.cfg.AllowAnonymousConnect:
	default:
		n.metrics.authFailures.WithLabelValues("missing").Inc()
		n.log.Info("connect without token", "client", s.id, "remote", s.conn.RemoteAddr())
		return nil, &DisconnectBadRequest
	}

	s.mu.Lock()
	s.authenticated = true
	s.user = claims.UserID
	if len(claims.Info) > 0 {
		s.connInfo = bytes.Clone(claims.Info)
	}
	s.expireAt = claims.ExpireAt
	s.mu.Unlock()
	n.registerUser(s)
	s.hb.start(n.cfg.PingInterval.D())

	res := &protocol.ConnectResult{
		Client:  s.id,
		Version: n.version,
		Ping:    uint32(n.cfg.PingInterval.D() / time.Second),
		Pong:    true,
	}
	if res.Ping == 0 {
		res.Ping = 1
	}
	if claims.ExpireAt > 0 {
		res.Expires = true
		res.Ttl = ttlSeconds(claims.ExpireAt)
	}
	// Server-side subscriptions from the token's channels claim; the
	// connect reply carries them, so they go live after it is queued.
	var pending []*pendingSub
	for _, ch := range claims.Channels {
		rules, ok := n.cfg.ChannelRules(ch)
		if !ok || s.findSub(ch) != nil {
			continue
		}
		var sr *protocol.SubscribeRequest
		if req.Subs != nil {
			sr = req.Subs[ch]
		}
		if sr == nil {
			sr = &protocol.SubscribeRequest{Channel: ch}
		}
		p, perr := s.prepareSubscribe(ctx, ch, rules, sr, nil)
		if perr != nil {
			n.log.Warn("server-side subscribe failed", "client", s.id, "channel", ch, "err", perr.Message)
			continue
		}
		if res.Subs == nil {
			res.Subs = make(map[string]*protocol.SubscribeResult)
		}
		res.Subs[ch] = p.result
		pending = append(pending, p)
	}
	rep := &protocol.Reply{Connect: res}
	if len(pending) == 0 {
		return rep, nil
	}
	// Queue the reply now, then release each subscription's held frames.
	rep.Id = id
	frame, err := encodeReply(rep)
	if err != nil {
		return nil, &DisconnectServerError
	}
	s.mu.Lock()
	s.enqueue(frame)
	for _, p := range pending {
		p.sub.goLive(s, nil, p.top)
	}
	s.mu.Unlock()
	for _, p := range pending {
		s.afterSubscribe(ctx, p)
	}
	return nil, nil
}

func ttlSeconds(expireAt int64) uint32 {
	ttl := expireAt - time.Now().Unix()
	if ttl < 1 {
		ttl = 1
	}
	return uint32(ttl)
}

// pendingSub is a subscription registered in the hub but not yet live.
type pendingSub struct {
	sub    *subscription
	rules  config.ChannelOptions
	result *protocol.SubscribeResult
	top    uint64
}

func (s *session) handleSubscribe(ctx context.Context, id uint32, req *protocol.SubscribeRequest) (*protocol.Reply, *Disconnect) {
	n := s.node
	ch := req.Channel
	if perr := n.checkChannelName(ch); perr != nil {
		return &protocol.Reply{Error: perr}, nil
	}
	rules, ok := n.cfg.ChannelRules(ch)
	if !ok {
		return &protocol.Reply{Error: errUnknownChannel}, nil
	}
	s.mu.Lock()
	already := s.findSub(ch) != nil
	count := len(s.subs)
	user := s.user
	s.mu.Unlock()
	if already {
		return &protocol.Reply{Error: errAlreadySubscribed}, nil
	}
	if count >= n.cfg.MaxSubscriptions {
		n.log.Info("subscription limit", "client", s.id, "user", user, "limit", n.cfg.MaxSubscriptions)
		return &protocol.Reply{Error: errLimitExceeded}, nil
	}
	var chanInfo []byte
	switch {
	case req.Token != "":
		if n.verifier == nil || !n.verifier.Enabled() {
			return &protocol.Reply{Error: errPermissionDenied}, nil
		}
		c, err := n.verifier.VerifySubscribe(req.Token)
		if errors.Is(err, auth.ErrTokenExpired) {
			return &protocol.Reply{Error: errTokenExpired}, nil
		}
		if err != nil || c.Channel != ch || c.UserID != user {
			n.log.Info("subscription token refused", "client", s.id, "channel", ch, "err", err)
			return &protocol.Reply{Error: errPermissionDenied}, nil
		}
		chanInfo = bytes.Clone(c.Info)
	case rules.SubscribeTokenRequired:
		return &protocol.Reply{Error: errPermissionDenied}, nil
	case user == "" && !rules.AllowSubscribeForAnonymous:
		return &protocol.Reply{Error: errPermissionDenied}, nil
	case !userAllowed(ch, user):
		return &protocol.Reply{Error: errPermissionDenied}, nil
	}

	p, perr := s.prepareSubscribe(ctx, ch, rules, req, chanInfo)
	if perr != nil {
		return &protocol.Reply{Error: perr}, nil
	}
	frame, err := encodeReply(&protocol.Reply{Id: id, Subscribe: p.result})
	if err != nil {
		s.rollback(ctx, p)
		return &protocol.Reply{Error: errInternal}, nil
	}
	s.mu.Lock()
	p.sub.goLive(s, frame, p.top)
	s.mu.Unlock()
	s.afterSubscribe(ctx, p)
	return nil, nil
}

// userAllowed applies user-limited channels: "dialog#42,43" admits users 42 and 43 only.
func userAllowed(ch, user string) bool {
	_, users, ok := strings.Cut(ch, "#")
	if !ok {
		return true
	}
	return user != "" && slices.Contains(strings.Split(users, ","), user)
}

// prepareSubscribe registers a held subscription and computes its reply,
// including recovered publications.
func (s *session) prepareSubscribe(ctx context.Context, ch string, rules config.ChannelOptions, req *protocol.SubscribeRequest, chanInfo []byte) (*pendingSub, *protocol.Error) {
	n := s.node
	sub := &subscription{
		channel:   ch,
		joinLeave: rules.JoinLeave && (req.JoinLeave || rules.ForcePushJoinLeave),
		presence:  rules.Presence,
		chanInfo:  chanInfo,
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	p := &pendingSub{sub: sub, rules: rules, result: &protocol.SubscribeResult{}}
	if n.hub.add(s, sub) {
		if err := n.broker.Subscribe(ctx, ch); err != nil {
			n.log.Error("broker subscribe", "channel", ch, "err", err)
			s.rollback(ctx, p)
			return nil, errInternal
		}
	}
	if rules.HistorySize > 0 {
		res := p.result
		// As in Centrifugo, a subscription is recoverable or positioned only
		// when the client asks (or the namespace forces it); otherwise an SDK
		// would recover on reconnect what the app never asked for. The
		// stream top is read either way: it dedupes the held live stream.
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
		pubs, sp, err := n.broker.History(ctx, ch, filter)
		switch {
		case recovering && errors.Is(err, broker.ErrUnrecoverablePosition):
			n.metrics.recoveries.WithLabelValues("failed").Inc()
		case err != nil:
			n.log.Error("history for subscribe", "channel", ch, "err", err)
			s.rollback(ctx, p)
			return nil, errInternal
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
		p.top = sp.Offset
	}
	return p, nil
}

// afterSubscribe records presence and announces the join.
func (s *session) afterSubscribe(ctx context.Context, p *pendingSub) {
	n := s.node
	n.metrics.subscriptions.Inc()
	if p.rules.Presence {
		if err := n.presence.AddPresence(ctx, p.sub.channel, s.id, s.subInfo(p.sub), n.cfg.PresenceTTL.D()); err != nil {
			n.log.Warn("add presence", "channel", p.sub.channel, "err", err)
		}
	}
	if p.rules.JoinLeave {
		if err := n.broker.PublishJoin(ctx, p.sub.channel, s.subInfo(p.sub)); err != nil {
			n.log.Warn("publish join", "channel", p.sub.channel, "err", err)
		}
	}
}

func (s *session) subInfo(sub *subscription) *broker.ClientInfo {
	i := s.info()
	i.ChanInfo = sub.chanInfo
	return i
}

// rollback undoes prepareSubscribe.
func (s *session) rollback(ctx context.Context, p *pendingSub) {
	s.mu.Lock()
	s.subs = slices.DeleteFunc(s.subs, func(x *subscription) bool { return x == p.sub })
	s.mu.Unlock()
	if s.node.hub.remove(s, p.sub.channel) {
		_ = s.node.broker.Unsubscribe(ctx, p.sub.channel)
	}
}

// unsubscribe removes the session from ch, with an unsubscribe push when
// the server decided it.
func (s *session) unsubscribe(ctx context.Context, ch string, push bool) bool {
	n := s.node
	s.mu.Lock()
	sub := s.findSub(ch)
	if sub != nil {
		s.subs = slices.DeleteFunc(s.subs, func(x *subscription) bool { return x == sub })
	}
	s.mu.Unlock()
	if sub == nil {
		return false
	}
	if n.hub.remove(s, ch) {
		if err := n.broker.Unsubscribe(ctx, ch); err != nil {
			n.log.Warn("broker unsubscribe", "channel", ch, "err", err)
		}
	}
	n.metrics.subscriptions.Dec()
	rules, _ := n.cfg.ChannelRules(ch)
	if sub.presence {
		if err := n.presence.RemovePresence(ctx, ch, s.id, s.user); err != nil {
			n.log.Warn("remove presence", "channel", ch, "err", err)
		}
	}
	if rules.JoinLeave {
		if err := n.broker.PublishLeave(ctx, ch, s.subInfo(sub)); err != nil {
			n.log.Warn("publish leave", "channel", ch, "err", err)
		}
	}
	if push {
		frame, err := encodePush(&protocol.Push{Channel: ch, Unsubscribe: &protocol.Unsubscribe{Code: unsubscribeServer, Reason: "server unsubscribe"}})
		if err == nil {
			s.enqueue(frame)
		}
	}
	return true
}

func (s *session) handleUnsubscribe(ctx context.Context, req *protocol.UnsubscribeRequest) *protocol.Reply {
	s.unsubscribe(ctx, req.Channel, false)
	return &protocol.Reply{Unsubscribe: &protocol.UnsubscribeResult{}}
}

func (s *session) handlePublish(ctx context.Context, req *protocol.PublishRequest) *protocol.Reply {
	n := s.node
	if perr := n.checkChannelName(req.Channel); perr != nil {
		return &protocol.Reply{Error: perr}
	}
	rules, ok := n.cfg.ChannelRules(req.Channel)
	if !ok {
		return &protocol.Reply{Error: errUnknownChannel}
	}
	s.mu.Lock()
	subscribed := s.findSub(req.Channel) != nil
	s.mu.Unlock()
	if !rules.AllowPublishForClient && !(rules.AllowPublishForSubscriber && subscribed) {
		return &protocol.Reply{Error: errPermissionDenied}
	}
	if !json.Valid(req.Data) {
		return &protocol.Reply{Error: errBadRequest}
	}
	if _, err := n.publish(ctx, req.Channel, req.Data, rules, s.info(), nil, ""); err != nil {
		n.log.Error("client publish", "channel", req.Channel, "err", err)
		return &protocol.Reply{Error: errInternal}
	}
	return &protocol.Reply{Publish: &protocol.PublishResult{}}
}

// readAllowed checks a client's presence or history request.
func (s *session) readAllowed(ch string, enabled func(config.ChannelOptions) bool, allowed func(config.ChannelOptions) bool) *protocol.Error {
	if perr := s.node.checkChannelName(ch); perr != nil {
		return perr
	}
	rules, ok := s.node.cfg.ChannelRules(ch)
	if !ok {
		return errUnknownChannel
	}
	if !enabled(rules) {
		return errNotAvailable
	}
	s.mu.Lock()
	subscribed := s.findSub(ch) != nil
	s.mu.Unlock()
	if !subscribed || !allowed(rules) {
		return errPermissionDenied
	}
	return nil
}

func presenceOn(o config.ChannelOptions) bool      { return o.Presence }
func presenceAllowed(o config.ChannelOptions) bool { return o.AllowPresenceForSubscriber }
func historyOn(o config.ChannelOptions) bool       { return o.HistorySize > 0 }
func historyAllowed(o config.ChannelOptions) bool  { return o.AllowHistoryForSubscriber }

func (s *session) handlePresence(ctx context.Context, req *protocol.PresenceRequest) *protocol.Reply {
	if perr := s.readAllowed(req.Channel, presenceOn, presenceAllowed); perr != nil {
		return &protocol.Reply{Error: perr}
	}
	res, err := s.node.Presence(ctx, req.Channel)
	if err != nil {
		return &protocol.Reply{Error: errInternal}
	}
	return &protocol.Reply{Presence: res}
}

func (s *session) handlePresenceStats(ctx context.Context, req *protocol.PresenceStatsRequest) *protocol.Reply {
	if perr := s.readAllowed(req.Channel, presenceOn, presenceAllowed); perr != nil {
		return &protocol.Reply{Error: perr}
	}
	res, err := s.node.PresenceStats(ctx, req.Channel)
	if err != nil {
		return &protocol.Reply{Error: errInternal}
	}
	return &protocol.Reply{PresenceStats: res}
}

func (s *session) handleHistory(ctx context.Context, req *protocol.HistoryRequest) *protocol.Reply {
	if perr := s.readAllowed(req.Channel, historyOn, historyAllowed); perr != nil {
		return &protocol.Reply{Error: perr}
	}
	res, err := s.node.History(ctx, req.Channel, int(req.Limit), req.Since, req.Reverse)
	if errors.Is(err, broker.ErrUnrecoverablePosition) {
		return &protocol.Reply{Error: errUnrecoverablePosition}
	}
	if errors.Is(err, errBadHistoryRequest) {
		return &protocol.Reply{Error: errBadRequest}
	}
	if err != nil {
		s.node.log.Error("history", "channel", req.Channel, "err", err)
		return &protocol.Reply{Error: errInternal}
	}
	return &protocol.Reply{History: res}
}

func (s *session) handleRefresh(req *protocol.RefreshRequest) (*protocol.Reply, *Disconnect) {
	n := s.node
	if n.verifier == nil || !n.verifier.Enabled() || req.Token == "" {
		return &protocol.Reply{Error: errBadRequest}, nil
	}
	c, err := n.verifier.VerifyConnect(req.Token)
	if errors.Is(err, auth.ErrTokenExpired) {
		return &protocol.Reply{Error: errTokenExpired}, nil
	}
	s.mu.Lock()
	user := s.user
	s.mu.Unlock()
	if err != nil || c.UserID != user {
		n.log.Info("refresh token refused", "client", s.id, "user", user, "err", err)
		return nil, &DisconnectInvalidToken
	}
	s.mu.Lock()
	s.expireAt = c.ExpireAt
	s.mu.Unlock()
	res := &protocol.RefreshResult{}
	if c.ExpireAt > 0 {
		res.Expires, res.Ttl = true, ttlSeconds(c.ExpireAt)
	}
	return &protocol.Reply{Refresh: res}, nil
}

func (s *session) handleSubRefresh(req *protocol.SubRefreshRequest) *protocol.Reply {
	n := s.node
	if n.verifier == nil || !n.verifier.Enabled() {
		return &protocol.Reply{Error: errBadRequest}
	}
	c, err := n.verifier.VerifySubscribe(req.Token)
	if errors.Is(err, auth.ErrTokenExpired) {
		return &protocol.Reply{Error: errTokenExpired}
	}
	s.mu.Lock()
	ok := s.findSub(req.Channel) != nil && err == nil && c.Channel == req.Channel && c.UserID == s.user
	s.mu.Unlock()
	if !ok {
		return &protocol.Reply{Error: errPermissionDenied}
	}
	res := &protocol.SubRefreshResult{}
	if c.ExpireAt > 0 {
		res.Expires, res.Ttl = true, ttlSeconds(c.ExpireAt)
	}
	return &protocol.Reply{SubRefresh: res}
}

// finish closes the socket; cleanup happens in the transport's OnClose.
func (s *session) finish(d Disconnect) {
	s.node.metrics.disconnects.WithLabelValues(fmt.Sprint(d.Code)).Inc()
	if d == DisconnectSlow {
		s.node.metrics.slowDisconnects.Inc()
		s.node.log.Warn("slow consumer disconnected", "client", s.id, "user", s.user, "remote", s.conn.RemoteAddr(), "pending_bytes", s.conn.Pending())
	}
	s.conn.Close(d.Code, d.Reason)
}

// cleanup forgets the session after its connection closed: subscriptions,
// presence, leave pushes.
func (s *session) cleanup() {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return
	}
	s.gone = true
	chans := make([]string, len(s.subs))
	for i, sub := range s.subs {
		chans[i] = sub.channel
	}
	s.mu.Unlock()
	s.qmu.Lock()
	if s.closing == nil {
		s.closing = &Disconnect{Code: 3000, Reason: "connection closed"}
	}
	clear(s.q)
	s.q, s.qbytes = nil, 0
	s.qmu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ch := range chans {
		s.unsubscribe(ctx, ch, false)
	}
	s.node.unregister(s)
	s.node.log.Debug("client gone", slog.String("client", s.id), slog.String("user", s.user))
}

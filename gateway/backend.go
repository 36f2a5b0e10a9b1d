package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway/proxy"
)

// The decisions the application backend makes (package proxy): each
// handler here submits the event and returns at once, so that no worker of
// the event loop waits for the backend; the proxy worker then finishes the
// command through the same path a token-based decision takes (establish,
// join, publishAllowed) and session.conclude. The backend's error {code,
// message} is the client's error reply, its disconnect {code, reason}
// closes the connection; a backend that is down, slow, or answers what is
// not the protocol gives 100 "internal server error" (temporary), and for
// connect a disconnect with 3004 (the client reconnects).

// proxyClient is the part of every proxy request that names the connection.
func (s *session) proxyClient() proxy.Client {
	return proxy.Client{Client: s.id, Transport: "websocket", Protocol: "json", Encoding: "json"}
}

// backendOutcome maps the backend's error or disconnect onto the protocol;
// ok is false when the reply carries neither (it has a result).
func backendOutcome(rep *proxy.Reply) (out outcome, ok bool) {
	switch {
	case rep.Disconnect != nil:
		return disconnect(Disconnect{Code: int(rep.Disconnect.Code), Reason: rep.Disconnect.Reason}), true
	case rep.Error != nil:
		return failed(&Error{Code: rep.Error.Code, Message: rep.Error.Message, Temporary: rep.Error.Temporary}), true
	}
	return outcome{}, false
}

// submit sends ev to the backend; then runs on the proxy worker with the
// backend's result, and its outcome finishes the command. Errors without
// an answer are logged and give the client failure.
func (s *session) submit(ev proxy.Event, method string, id uint32, req any, failure outcome, then func(ctx context.Context, rep *proxy.Reply) (outcome, error)) outcome {
	n := s.node
	err := n.proxy.Submit(ev, req, s.conn.Header(), func(rep *proxy.Reply, err error) {
		var out outcome
		if err == nil {
			if o, ok := backendOutcome(rep); ok {
				out = o
			} else {
				// What the worker does after the backend answered is bounded as a command is.
				out, err = then(n.deadlines.context(), rep)
			}
		}
		if err != nil {
			n.metrics.commandErrors.WithLabelValues("proxy_" + string(ev)).Inc()
			n.log.Warn("backend proxy", "event", ev, "client", s.id, "user", s.identity(), "err", err)
			out = failure
		}
		if ev == proxy.Connect {
			be := s.backend()
			be.cmu.Lock()
			be.inflight = false
			be.cmu.Unlock()
		}
		if s.conclude(method, id, out) && ev == proxy.Connect {
			s.runDeferred()
		}
	})
	if err != nil {
		n.metrics.commandErrors.WithLabelValues("proxy_" + string(ev)).Inc()
		n.log.Warn("backend proxy", "event", ev, "client", s.id, "err", err)
		return failure
	}
	return outcome{}
}

// backendSession is what only a session whose connect the backend decides
// needs; the session gets it at its first connect proxy call.
type backendSession struct {
	// cmu guards connecting, inflight and deferred: while the backend is
	// asked about the connect command, the handler defers the client's next
	// commands, and the proxy worker runs them once connect is decided.
	cmu        sync.Mutex
	connecting bool                // commands are deferred: a connect waits for the backend, or its deferred commands run
	inflight   bool                // the connect is with the backend
	deferred   []*protocol.Command // commands that came meanwhile, in order

	// meta and serverRefresh are written once by establish, before
	// expireAt and authed, and read after them. With serverRefresh the
	// backend's refresh proxy, not the client, prolongs the session when
	// expireAt passes.
	meta          []byte // from the connect proxy, sent back to the backend with each later event
	serverRefresh bool
	refreshNext   atomic.Int64 // the unix second before which refresh is not asked again (0: not asked yet); the heartbeat loop's and the proxy worker's
}

// backend returns the session's backend state, making it at the first call.
func (s *session) backend() *backendSession {
	if be := s.be.Load(); be != nil {
		return be
	}
	s.be.CompareAndSwap(nil, &backendSession{})
	return s.be.Load()
}

// meta is what the connect proxy gave the session to send back with each
// later event; nil for a session connected by its token.
func (s *session) meta() []byte {
	if be := s.be.Load(); be != nil {
		return be.meta
	}
	return nil
}

// serverRefresh reports whether the backend's refresh proxy prolongs the session.
func (s *session) serverRefresh() bool {
	be := s.be.Load()
	return be != nil && be.serverRefresh
}

// connectProxy asks the backend who connects without a token.
func (s *session) connectProxy(id uint32, req *protocol.ConnectRequest) outcome {
	n := s.node
	be := s.backend()
	be.cmu.Lock()
	be.connecting, be.inflight = true, true
	be.cmu.Unlock()
	body := proxy.ConnectRequest{Client: s.proxyClient(), Name: req.Name, Version: req.Version, Data: json.RawMessage(req.Data)}
	// Refused at once (queue full), it disconnects: nothing is deferred any more.
	return s.submit(proxy.Connect, "connect", id, body, disconnect(DisconnectServerError), func(ctx context.Context, rep *proxy.Reply) (outcome, error) {
		var res proxy.ConnectResult
		if err := rep.Decode(proxy.Connect, &res); err != nil {
			return outcome{}, err
		}
		info, data, err := res.JSON()
		if err != nil {
			return outcome{}, fmt.Errorf("proxy connect: %w", err)
		}
		if len(res.Meta) > 0 && !json.Valid(res.Meta) {
			return outcome{}, errors.New("proxy connect: meta is not JSON")
		}
		claims := auth.ConnectClaims{UserID: res.User, ExpireAt: res.ExpireAt, Info: info, Channels: res.Channels}
		x := establishExtras{data: data, meta: res.Meta, serverRefresh: n.proxy.Enabled(proxy.Refresh)}
		return s.establish(ctx, id, req, claims, x), nil
	})
}

// deferWhileConnecting keeps cmds, in order, while the backend decides
// the connect command: SDKs send their subscribe commands in the frame of
// connect. It reports whether it kept them. More than maxFrameCommands
// waiting close the connection.
func (s *session) deferWhileConnecting(cmds []*protocol.Command) bool {
	be := s.be.Load()
	if be == nil {
		return false
	}
	be.cmu.Lock()
	if !be.connecting {
		be.cmu.Unlock()
		return false
	}
	be.deferred = append(be.deferred, cmds...)
	over := len(be.deferred) > maxFrameCommands
	be.cmu.Unlock()
	if over {
		s.node.log.Info("too many commands while connect waits for the backend", "client", s.id)
		s.close(DisconnectBadRequest, false)
	}
	return true
}

// runDeferred runs, on the proxy worker, the commands that came while
// connect was decided, until none is left; then the handler runs them
// again. They meet the session as established or refused.
func (s *session) runDeferred() {
	be := s.backend()
	for {
		be.cmu.Lock()
		cmds := be.deferred
		be.deferred = nil
		if len(cmds) == 0 {
			be.connecting = false
			be.cmu.Unlock()
			return
		}
		be.cmu.Unlock()
		for i, cmd := range cmds {
			if !s.handleCommand(cmd) {
				return
			}
			be.cmu.Lock()
			if be.inflight { // a deferred connect went to the backend: the rest waits for it
				be.deferred = append(cmds[i+1:len(cmds):len(cmds)], be.deferred...)
				be.cmu.Unlock()
				return
			}
			be.cmu.Unlock()
		}
	}
}

// subscribeProxy asks the backend whether the client may subscribe.
func (s *session) subscribeProxy(id uint32, req *protocol.SubscribeRequest) outcome {
	body := proxy.SubscribeRequest{Client: s.proxyClient(), User: s.identity(), Channel: req.Channel, Data: json.RawMessage(req.Data), Meta: s.meta()}
	return s.submit(proxy.Subscribe, "subscribe", id, body, failed(ErrInternal), func(ctx context.Context, rep *proxy.Reply) (outcome, error) {
		var res proxy.SubscribeResult
		if err := rep.Decode(proxy.Subscribe, &res); err != nil {
			return outcome{}, err
		}
		info, data, err := res.JSON()
		if err != nil {
			return outcome{}, fmt.Errorf("proxy subscribe: %w", err)
		}
		return s.join(ctx, id, req, string(info), data, res.ExpireAt), nil
	})
}

// publishProxy asks the backend whether the client may publish, and what.
func (s *session) publishProxy(id uint32, req *protocol.PublishRequest, rules *config.ChannelOptions) outcome {
	body := proxy.PublishRequest{Client: s.proxyClient(), User: s.identity(), Channel: req.Channel, Data: json.RawMessage(req.Data), Meta: s.meta()}
	return s.submit(proxy.Publish, "publish", id, body, failed(ErrInternal), func(ctx context.Context, rep *proxy.Reply) (outcome, error) {
		var res proxy.PublishResult
		if err := rep.Decode(proxy.Publish, &res); err != nil {
			return outcome{}, err
		}
		data, err := proxy.JSONField("data", res.Data, res.B64Data)
		if err != nil {
			return outcome{}, fmt.Errorf("proxy publish: %w", err)
		}
		if data == nil {
			data = json.RawMessage(req.Data)
		}
		history := rules.HistorySize
		if res.SkipHistory {
			history = 0
		}
		return s.publishAllowed(ctx, req.Channel, data, history, rules), nil
	})
}

// handleRPC answers the client's rpc command through the backend; without
// an rpc proxy there is no method to call.
func (s *session) handleRPC(id uint32, req *protocol.RPCRequest) outcome {
	if !s.node.proxy.Enabled(proxy.RPC) {
		return failed(ErrMethodNotFound)
	}
	body := proxy.RPCRequest{Client: s.proxyClient(), User: s.identity(), Method: req.Method, Data: json.RawMessage(req.Data), Meta: s.meta()}
	return s.submit(proxy.RPC, "rpc", id, body, failed(ErrInternal), func(_ context.Context, rep *proxy.Reply) (outcome, error) {
		var res proxy.RPCResult
		if err := rep.Decode(proxy.RPC, &res); err != nil {
			return outcome{}, err
		}
		data, err := proxy.JSONField("data", res.Data, res.B64Data)
		if err != nil {
			return outcome{}, fmt.Errorf("proxy rpc: %w", err)
		}
		return replied(&protocol.Reply{Rpc: &protocol.RPCResult{Data: protocol.Raw(data)}}), nil
	})
}

// refreshRetry is how long after a refresh call without an answer the
// backend is asked again; the session lives on meanwhile.
const refreshRetry = 5 * time.Second

// refreshProxy asks the backend to prolong a session whose expire_at has
// passed; the heartbeat loop calls it on every scan until answered.
func (s *session) refreshProxy(wall int64) {
	body := proxy.RefreshRequest{Client: s.proxyClient(), User: s.identity(), Meta: s.meta()}
	be := s.backend()
	s.askRefresh(proxy.Refresh, &be.refreshNext, wall, body, func(res proxy.RefreshResult) {
		if res.Expired {
			s.close(DisconnectExpired, false)
			return
		}
		s.expireAt.Store(res.ExpireAt)
		be.refreshNext.Store(0)
	})
}

// askRefresh submits a refresh or sub_refresh at most once per
// refreshRetry (next, in unix seconds, says when again); apply takes the
// backend's result. A disconnect answer closes the session; an error
// answer, or none, is logged and asked again later.
func (s *session) askRefresh(ev proxy.Event, next *atomic.Int64, wall int64, body any, apply func(proxy.RefreshResult)) {
	n := s.node
	if at := next.Load(); at != 0 && wall < at {
		return
	}
	next.Store(wall + int64(refreshRetry/time.Second))
	err := n.proxy.Submit(ev, body, s.conn.Header(), func(rep *proxy.Reply, err error) {
		if err == nil {
			err = s.refreshAnswer(ev, rep, apply)
		}
		if err != nil {
			n.log.Warn("backend proxy", "event", ev, "client", s.id, "user", s.identity(), "err", err)
		}
	})
	if err != nil {
		n.log.Warn("backend proxy", "event", ev, "client", s.id, "err", err)
	}
}

func (s *session) refreshAnswer(ev proxy.Event, rep *proxy.Reply, apply func(proxy.RefreshResult)) error {
	if out, ok := backendOutcome(rep); ok {
		if out.disconnect != nil {
			s.close(*out.disconnect, false)
			return nil
		}
		return fmt.Errorf("proxy %s: the backend answered error %s; asking again later", ev, rep.Error.Message)
	}
	var res proxy.RefreshResult
	if err := rep.Decode(ev, &res); err != nil {
		return err
	}
	apply(res)
	return nil
}

// expireSubs handles the session's subscriptions whose expire_at passed:
// the sub_refresh proxy is asked to prolong them (in namespaces with
// proxy_sub_refresh), or they end with an unsubscribe push 2501
// "subscription expired", after which an SDK subscribes again.
func (s *session) expireSubs(ctx context.Context, wall int64) {
	var due []*subscription
	s.mu.Lock()
	for _, sub := range s.subs {
		if x := sub.expiry.Load(); x != nil && x.expired(wall) && sub.state == subLive {
			due = append(due, sub)
		}
	}
	s.mu.Unlock()
	for _, sub := range due {
		if sub.rules.ProxySubRefresh && s.node.proxy.Enabled(proxy.SubRefresh) {
			s.subRefreshProxy(sub, wall)
		} else {
			s.expireSub(ctx, sub)
		}
	}
}

// expireSub ends sub, if it is still the session's subscription to its channel.
func (s *session) expireSub(ctx context.Context, sub *subscription) {
	if s.remove(ctx, sub.channel, sub, unsubscribeFrame(s.enc(), sub.channel, unsubscribeExpired, "subscription expired")) {
		s.node.log.Info("subscription expired", "client", s.id, "channel", sub.channel)
	}
}

// subRefreshProxy asks the backend to prolong sub.
func (s *session) subRefreshProxy(sub *subscription, wall int64) {
	body := proxy.SubRefreshRequest{Client: s.proxyClient(), User: s.identity(), Channel: sub.channel, Meta: s.meta()}
	x := sub.expiry.Load()
	s.askRefresh(proxy.SubRefresh, &x.refreshNext, wall, body, func(res proxy.RefreshResult) {
		if res.Expired {
			s.expireSub(s.node.deadlines.context(), sub)
			return
		}
		x.at.Store(res.ExpireAt)
		x.refreshNext.Store(0)
	})
}

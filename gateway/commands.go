package gateway

import (
	"context"
	"encoding/json"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway/proxy"
)

// The client's publish, presence and history commands.

func (s *session) handlePublish(ctx context.Context, id uint32, req *protocol.PublishRequest) outcome {
	n := s.node
	rules, err := n.rules.resolve(req.Channel)
	if err != nil {
		return failed(err)
	}
	proxied := rules.ProxyPublish && n.proxy.Enabled(proxy.Publish) // the backend decides instead of the allow rules
	if !proxied && !rules.AllowPublishForClient && !(rules.AllowPublishForSubscriber && s.subscribed(req.Channel)) {
		return failed(ErrPermissionDenied)
	}
	if !json.Valid(req.Data) {
		return failed(ErrBadRequest)
	}
	if proxied {
		return s.publishProxy(id, req, rules)
	}
	return s.publishAllowed(ctx, req.Channel, req.Data, rules.HistorySize, rules)
}

// publishAllowed publishes data once the client's right to is settled,
// keeping historySize publications (0 when the backend skips history).
func (s *session) publishAllowed(ctx context.Context, ch string, data []byte, historySize int, rules *config.ChannelOptions) outcome {
	n := s.node
	if _, err := n.publish(ctx, ch, data, historySize, rules, publishExtras{info: s.info()}); err != nil {
		n.log.Error("client publish", "client", s.id, "channel", ch, "err", err)
		return failed(err)
	}
	return replied(&protocol.Reply{Publish: &protocol.PublishResult{}})
}

// readAllowed checks a client's presence or history request: the feature is
// on for the channel, the client is subscribed and subscribers may read it.
func (s *session) readAllowed(ch string, enabled, allowed func(*config.ChannelOptions) bool) error {
	rules, err := s.node.rules.resolve(ch)
	if err != nil {
		return err
	}
	if !enabled(rules) {
		return ErrNotAvailable
	}
	if !s.subscribed(ch) || !allowed(rules) {
		return ErrPermissionDenied
	}
	return nil
}

func presenceOn(o *config.ChannelOptions) bool      { return o.Presence }
func presenceAllowed(o *config.ChannelOptions) bool { return o.AllowPresenceForSubscriber }
func historyOn(o *config.ChannelOptions) bool       { return o.HistorySize > 0 }
func historyAllowed(o *config.ChannelOptions) bool  { return o.AllowHistoryForSubscriber }

func (s *session) handlePresence(ctx context.Context, req *protocol.PresenceRequest) outcome {
	if err := s.readAllowed(req.Channel, presenceOn, presenceAllowed); err != nil {
		return failed(err)
	}
	res, err := s.node.Presence(ctx, req.Channel)
	if err != nil {
		s.node.log.Error("presence", "client", s.id, "err", err)
		return failed(err)
	}
	return replied(&protocol.Reply{Presence: res})
}

func (s *session) handlePresenceStats(ctx context.Context, req *protocol.PresenceStatsRequest) outcome {
	if err := s.readAllowed(req.Channel, presenceOn, presenceAllowed); err != nil {
		return failed(err)
	}
	res, err := s.node.PresenceStats(ctx, req.Channel)
	if err != nil {
		s.node.log.Error("presence stats", "client", s.id, "err", err)
		return failed(err)
	}
	return replied(&protocol.Reply{PresenceStats: res})
}

func (s *session) handleHistory(ctx context.Context, req *protocol.HistoryRequest) outcome {
	if err := s.readAllowed(req.Channel, historyOn, historyAllowed); err != nil {
		return failed(err)
	}
	res, err := s.node.History(ctx, req.Channel, int(req.Limit), req.Since, req.Reverse)
	if err != nil {
		if AsError(err) == ErrInternal {
			s.node.log.Error("history", "client", s.id, "channel", req.Channel, "err", err)
		}
		return failed(err)
	}
	return replied(&protocol.Reply{History: res})
}

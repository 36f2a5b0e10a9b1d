package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"runtime"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/config"
)

// What the server API asks of a node. Errors wrap an *Error (see errors.go)
// with context; anything else went wrong inside and is internal.

// PublishOptions are the server API's extras for a publication.
type PublishOptions struct {
	Tags           map[string]string
	IdempotencyKey string
	SkipHistory    bool
}

// publishExtras are what a publication carries beyond its data.
type publishExtras struct {
	info *broker.ClientInfo // the publishing client; nil from the server API
	tags map[string]string
	key  string // idempotency key
}

// Publish sends data to every subscriber of channel, on every node, and
// keeps it in history when the channel's namespace has history.
func (n *Node) Publish(ctx context.Context, ch string, data json.RawMessage, o PublishOptions) (broker.StreamPosition, error) {
	rules, err := n.rules.resolve(ch)
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("publish: %w", err)
	}
	if !json.Valid(data) {
		return broker.StreamPosition{}, errorf(ErrBadRequest, "publish %q: data is not JSON", ch)
	}
	size := rules.HistorySize
	if o.SkipHistory {
		size = 0
	}
	return n.publish(ctx, ch, data, size, rules, publishExtras{tags: o.Tags, key: o.IdempotencyKey})
}

func (n *Node) publish(ctx context.Context, ch string, data []byte, historySize int, rules *config.ChannelOptions, x publishExtras) (broker.StreamPosition, error) {
	if max := n.cfg.MaxPublicationSize; max > 0 && len(data) > max {
		return broker.StreamPosition{}, errorf(ErrLimitExceeded, "publish %q: %d bytes of data, over max_publication_size %d", ch, len(data), max)
	}
	sp, err := n.broker.Publish(ctx, ch, data, broker.PublishOptions{
		HistorySize:    historySize,
		HistoryTTL:     rules.HistoryTTL.D(),
		Info:           x.info,
		Tags:           x.tags,
		IdempotencyKey: x.key,
	})
	if err != nil {
		return sp, errorf(ErrInternal, "publish %q: broker: %v", ch, err)
	}
	return sp, nil
}

// Subscribe joins the sessions of user (or one client) to ch from the
// server side; each gets a subscribe push. Sessions already subscribed are
// left as they are. It returns how many sessions joined.
func (n *Node) Subscribe(ctx context.Context, user, client, ch string) (int, error) {
	if _, err := n.rules.resolve(ch); err != nil {
		return 0, fmt.Errorf("subscribe: %w", err)
	}
	count := 0
	for _, s := range n.sessions.find(user, client) {
		if !s.authed() {
			continue
		}
		sub, res, err := s.prepareSubscribe(ctx, ch, &protocol.SubscribeRequest{Channel: ch}, "")
		switch {
		case errors.Is(err, ErrAlreadySubscribed), errors.Is(err, errSessionGone), errors.Is(err, errStillLeaving):
			continue
		case err != nil:
			return count, fmt.Errorf("subscribe client %s: %w", s.id, err)
		}
		push, err := encodePush(s.enc(), &protocol.Push{Channel: ch, Subscribe: &protocol.Subscribe{
			Recoverable: res.Recoverable, Epoch: res.Epoch, Offset: res.Offset, Positioned: res.Positioned,
		}})
		if err != nil {
			s.drop(ctx, sub)
			return count, errorf(ErrInternal, "subscribe %q: encode push: %v", ch, err)
		}
		s.activate(ctx, push, sub)
		count++
	}
	return count, nil
}

// Unsubscribe removes user's sessions (or one client) from ch with an
// unsubscribe push. It returns how many sessions left the channel.
func (n *Node) Unsubscribe(ctx context.Context, user, client, ch string) int {
	count := 0
	for _, s := range n.sessions.find(user, client) {
		if s.unsubscribe(ctx, ch, unsubscribePush(s.enc(), ch)) {
			count++
		}
	}
	return count
}

// Disconnect closes the sessions of user (or one client) with d and
// returns how many there were.
func (n *Node) Disconnect(user, client string, d Disconnect) int {
	list := n.sessions.find(user, client)
	for _, s := range list {
		s.close(d, false)
	}
	return len(list)
}

// Refresh sets when the sessions of user (or one client) expire (unix
// seconds; 0: never), or with expired ends them now with 3005. It returns
// how many sessions there were.
func (n *Node) Refresh(user, client string, expired bool, expireAt int64) int {
	list := n.sessions.find(user, client)
	for _, s := range list {
		if expired {
			s.close(DisconnectExpired, false)
			continue
		}
		s.expireAt.Store(expireAt)
	}
	return len(list)
}

// Presence lists the clients in ch.
func (n *Node) Presence(ctx context.Context, ch string) (*protocol.PresenceResult, error) {
	if err := n.presenceEnabled(ch); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	m, err := n.presence.Presence(ctx, ch)
	if err != nil {
		return nil, errorf(ErrInternal, "presence %q: %v", ch, err)
	}
	res := &protocol.PresenceResult{Presence: make(map[string]*protocol.ClientInfo, len(m))}
	for id, info := range m {
		res.Presence[id] = toProtoInfo(info)
	}
	return res, nil
}

// PresenceStats counts clients and unique users in ch.
func (n *Node) PresenceStats(ctx context.Context, ch string) (*protocol.PresenceStatsResult, error) {
	if err := n.presenceEnabled(ch); err != nil {
		return nil, fmt.Errorf("presence stats: %w", err)
	}
	st, err := n.presence.PresenceStats(ctx, ch)
	if err != nil {
		return nil, errorf(ErrInternal, "presence stats %q: %v", ch, err)
	}
	return &protocol.PresenceStatsResult{NumClients: uint32(st.NumClients), NumUsers: uint32(st.NumUsers)}, nil
}

func (n *Node) presenceEnabled(ch string) error {
	rules, err := n.rules.resolve(ch)
	if err != nil {
		return err
	}
	if !rules.Presence {
		return errorf(ErrNotAvailable, "channel %q has no presence", ch)
	}
	return nil
}

// History returns up to limit publications of ch after since (newest first
// with reverse); limit 0 returns only the position, -1 everything kept.
func (n *Node) History(ctx context.Context, ch string, limit int, since *protocol.StreamPosition, reverse bool) (*protocol.HistoryResult, error) {
	rules, err := n.rules.resolve(ch)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if rules.HistorySize <= 0 {
		return nil, errorf(ErrNotAvailable, "history %q: the channel keeps none", ch)
	}
	f := broker.HistoryFilter{Limit: limit, Reverse: reverse}
	if since != nil {
		if reverse && since.Offset == 0 {
			return nil, errorf(ErrBadRequest, "history %q: reverse history needs an offset", ch)
		}
		f.Since = &broker.StreamPosition{Offset: since.Offset, Epoch: since.Epoch}
	}
	pubs, sp, err := n.broker.History(ctx, ch, f)
	if errors.Is(err, broker.ErrUnrecoverablePosition) {
		return nil, errorf(ErrUnrecoverablePosition, "history %q", ch)
	}
	if err != nil {
		return nil, errorf(ErrInternal, "history %q: %v", ch, err)
	}
	res := &protocol.HistoryResult{Publications: make([]*protocol.Publication, 0, len(pubs)), Epoch: sp.Epoch, Offset: sp.Offset}
	for _, p := range pubs {
		res.Publications = append(res.Publications, toProtoPub(p))
	}
	return res, nil
}

// RemoveHistory drops the stored publications of ch.
func (n *Node) RemoveHistory(ctx context.Context, ch string) error {
	if _, err := n.rules.resolve(ch); err != nil {
		return fmt.Errorf("history remove: %w", err)
	}
	if err := n.broker.RemoveHistory(ctx, ch); err != nil {
		return errorf(ErrInternal, "history remove %q: %v", ch, err)
	}
	return nil
}

// Channels returns channels with subscribers on this node and their counts,
// filtered by a path.Match pattern when one is given.
func (n *Node) Channels(pattern string) map[string]int {
	all := n.hub.channels()
	if pattern == "" {
		return all
	}
	for ch := range all {
		if ok, _ := path.Match(pattern, ch); !ok {
			delete(all, ch)
		}
	}
	return all
}

// Info describes the node for the info API and the admin page.
type Info struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	NumClients  int    `json:"num_clients"`
	NumUsers    int    `json:"num_users"`
	NumChannels int    `json:"num_channels"`
	NumSubs     int    `json:"num_subs"`
	Uptime      int64  `json:"uptime"`
	MaxClients  int    `json:"max_clients"`
	Goroutines  int    `json:"goroutines"`
	Draining    bool   `json:"draining"`
}

// Info returns the node's counters.
func (n *Node) Info() Info {
	return Info{
		Name:        "spindle",
		Version:     n.version,
		NumClients:  n.sessions.count(),
		NumUsers:    n.sessions.numUsers(),
		NumChannels: n.hub.numChannels(),
		NumSubs:     n.hub.numSubs(),
		Uptime:      int64(time.Since(n.started).Seconds()),
		MaxClients:  n.cfg.MaxConnections,
		Goroutines:  runtime.NumGoroutine(),
		Draining:    n.draining.Load(),
	}
}

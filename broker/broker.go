// Package broker defines how a gateway node stores channel streams and
// presence and how publications reach every node: the Broker and
// PresenceManager interfaces. memory/ implements them for a single node,
// redis/ and nats/ for nodes sharing a Redis or a NATS; brokertest/ is the
// suite they all pass.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ClientInfo describes a connection in publications, join/leave and presence.
// ConnInfo and ChanInfo hold JSON (or "" for none) as strings: every idle
// connection keeps one ClientInfo, and strings keep it in the 64-byte size class.
type ClientInfo struct {
	ClientID string
	UserID   string
	ConnInfo string
	ChanInfo string
}

// Publication is one message in a channel stream.
type Publication struct {
	Offset uint64 // position in the channel stream, 1-based; 0 when the channel keeps no history
	Data   json.RawMessage
	Info   *ClientInfo // publisher, nil for server API publications
	Tags   map[string]string
	Time   int64 // unix milliseconds when published
}

// StreamPosition is a place in a channel stream: the offset of the last
// publication and the stream's epoch.
type StreamPosition struct {
	Offset uint64
	Epoch  string
}

// PublishOptions say whether and how long a publication is kept for history.
type PublishOptions struct {
	HistorySize    int           // publications kept; 0: not kept, no offset
	HistoryTTL     time.Duration // how long they are kept
	Info           *ClientInfo
	Tags           map[string]string
	IdempotencyKey string // a repeated key within 5 minutes returns the first result
}

// HistoryFilter selects publications: Since nil means from the start (from
// the end with Reverse); Limit 0 returns only the position, -1 everything.
type HistoryFilter struct {
	Since   *StreamPosition
	Limit   int
	Reverse bool
}

// EventHandler receives what the broker delivers for channels this node
// subscribed to. For one channel, HandlePublication calls come in offset
// order and never concurrently; handlers must only enqueue, never block.
type EventHandler interface {
	HandlePublication(channel string, pub *Publication, sp StreamPosition)
	HandleJoin(channel string, info *ClientInfo)
	HandleLeave(channel string, info *ClientInfo)
}

// Broker stores channel streams and delivers events to every node.
type Broker interface {
	// Start begins delivering events to h; Close stops it. A broker is
	// started at most once: Start fails if called again or after Close.
	Start(h EventHandler) error
	// Publish appends to the channel stream when HistorySize > 0 and delivers
	// to every subscribed node.
	Publish(ctx context.Context, channel string, data json.RawMessage, opts PublishOptions) (StreamPosition, error)
	PublishJoin(ctx context.Context, channel string, info *ClientInfo) error
	PublishLeave(ctx context.Context, channel string, info *ClientInfo) error
	// Subscribe and Unsubscribe say whether this node wants events of channel.
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	// History returns publications after f.Since. A position that can no
	// longer be continued (other epoch, publications evicted) gives
	// ErrUnrecoverablePosition together with the current position.
	History(ctx context.Context, channel string, f HistoryFilter) ([]*Publication, StreamPosition, error)
	// RemoveHistory drops the stored publications; the stream keeps its
	// epoch and offset, so subscribers at the top can still continue.
	RemoveHistory(ctx context.Context, channel string) error
	// Channels lists channels this node subscribed to.
	Channels() []string
	// Close stops the broker and waits for its goroutines to exit; it is
	// the only way to stop one. It may be called before Start and more
	// than once.
	Close() error
}

// PresenceStats counts the clients and unique users in a channel.
type PresenceStats struct {
	NumClients int
	NumUsers   int
}

// StatsOf counts the clients and unique users of a presence map.
func StatsOf(m map[string]*ClientInfo) PresenceStats {
	users := map[string]struct{}{}
	for _, i := range m {
		users[i.UserID] = struct{}{}
	}
	return PresenceStats{NumClients: len(m), NumUsers: len(users)}
}

// PresenceManager tracks who is in a channel. Entries expire after ttl
// unless AddPresence refreshes them.
type PresenceManager interface {
	AddPresence(ctx context.Context, channel, clientID string, info *ClientInfo, ttl time.Duration) error
	RemovePresence(ctx context.Context, channel, clientID, userID string) error
	Presence(ctx context.Context, channel string) (map[string]*ClientInfo, error)
	PresenceStats(ctx context.Context, channel string) (PresenceStats, error)
}

// ErrUnrecoverablePosition says a stream position can no longer be
// continued: the epoch changed or publications after it were evicted.
var ErrUnrecoverablePosition = errors.New("unrecoverable position")

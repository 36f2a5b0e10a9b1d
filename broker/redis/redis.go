// Package redis is the broker for several nodes: channel streams, history,
// idempotency keys and presence live in one Redis, and publications reach
// every node through Redis pub/sub.
//
// # Fan-out scheme
//
// Each node SUBSCRIBEs to one Redis pub/sub channel per gateway channel it
// has subscribers for (Subscribe/Unsubscribe map 1:1 to SUBSCRIBE and
// UNSUBSCRIBE on the node's single pub/sub connection). The alternative,
// sharding every gateway channel over a fixed number of Redis channels,
// saves subscriptions on nodes with very many channels, but every node then
// receives (and discards) the traffic of every channel that shares a shard
// with one of its channels; with per-channel subscriptions Redis sends a
// node only what it has subscribers for, and Subscribe can wait for Redis's
// confirmation, so a publication made after Subscribe returned is either
// delivered or already in the history read that follows (no gap in
// recovery). The cost is one Redis subscription per channel per node.
//
// # Keys
//
// With prefix P and channel c (the {c} hash tag keeps one channel's keys in
// one cluster slot):
//
//	P.meta.{c}        hash: o = top offset, e = epoch
//	P.stream.{c}      stream of publications; entry id <offset>-0, fields e (expiry, unix ms) and d (body)
//	P.idem.{c}.<key>  "<offset> <epoch>" of a publication with an idempotency key (SET NX PX, 5 min)
//	P.presence.{c}    hash: client id → ClientInfo JSON
//	P.presence_exp.{c} zset: client id → expiry (unix ms)
//	P.ch.c            the pub/sub channel
//
// One Lua script per publish checks the idempotency key, increments the
// offset, appends to the stream (XADD MAXLEN = size), refreshes the TTLs of
// the stream and its meta key, PUBLISHes and stores the idempotency key:
// Redis runs it atomically, so every node sees one offset sequence per
// channel, and pub/sub delivers in that order. Times used for expiry are
// Redis's (TIME), so nodes with skewed clocks agree.
//
// # Delivery
//
// One goroutine owned by the broker reads the pub/sub connection and calls
// the EventHandler, so for one channel calls come in offset order and never
// concurrently. When Redis goes away, Publish fails (a publication is never
// accepted and lost), Healthy reports it, and the reader keeps trying to
// reconnect; go-redis resubscribes every channel on the new connection.
// Publications made while a node was disconnected are not delivered to it;
// its clients find the gap through recovery (offsets and epochs).
package redis

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/wire"
	"github.com/spindlehq/spindle/guard/task"
)

const (
	defaultIdempotencyTTL = 5 * time.Minute
	minStreamTTL          = time.Hour // a stream with no publication for this long (or its history TTL, if longer) is dropped
	pingEvery             = 5 * time.Second
)

// Options configure a Broker.
type Options struct {
	Address  string // host:port
	Username string
	Password string
	DB       int
	Prefix   string        // of keys and pub/sub channels; "" means "spindle"
	Timeout  time.Duration // dial, read and write timeout; 0 means 5s
	TLS      *tls.Config   // nil: plain TCP
}

// Broker implements broker.Broker and broker.PresenceManager on Redis.
//
// Ownership: client and ps are safe for concurrent use (go-redis); h is
// written by Start before the reader starts and read only by it; tasks owns
// the reader; subs and waiters are guarded by mu; healthErr by hmu.
type Broker struct {
	client  *goredis.Client
	ps      *goredis.PubSub
	prefix  string
	timeout time.Duration
	idemTTL time.Duration // tests shorten it

	h     broker.EventHandler
	tasks *task.Group // owns the reader; its context is the pub/sub connection's; Close stops it

	mu      sync.Mutex
	subs    map[string]struct{}        // channels this node subscribed to
	waiters map[string][]chan struct{} // Subscribe calls waiting for Redis's confirmation, oldest first
	reading bool                       // the reader runs: Subscribe can wait for confirmations

	hmu       sync.Mutex
	healthErr error // the pub/sub connection's last error, nil once it works again

	life broker.Lifecycle
}

// New returns a broker on the Redis at o.Address. It does not connect yet:
// the first command does, and Healthy says whether Redis answers.
func New(o Options) *Broker {
	if o.Prefix == "" {
		o.Prefix = "spindle"
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	c := goredis.NewClient(&goredis.Options{
		Addr: o.Address, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		MaxRetries: -1, // a failed publish is reported, not retried: a retry after a lost reply could publish twice
		Protocol:   2,
		TLSConfig:  o.TLS,
	})
	tasks := task.NewGroup(context.Background())
	return &Broker{
		client: c, ps: c.Subscribe(tasks.Context()), prefix: o.Prefix, timeout: o.Timeout, idemTTL: defaultIdempotencyTTL,
		tasks: tasks,
		subs:  map[string]struct{}{}, waiters: map[string][]chan struct{}{},
	}
}

func (b *Broker) metaKey(ch string) string       { return b.prefix + ".meta.{" + ch + "}" }
func (b *Broker) streamKey(ch string) string     { return b.prefix + ".stream.{" + ch + "}" }
func (b *Broker) idemKey(ch, k string) string    { return b.prefix + ".idem.{" + ch + "}." + k }
func (b *Broker) presKey(ch string) string       { return b.prefix + ".presence.{" + ch + "}" }
func (b *Broker) presExpKey(ch string) string    { return b.prefix + ".presence_exp.{" + ch + "}" }
func (b *Broker) pubsubChannel(ch string) string { return b.prefix + ".ch." + ch }

// Start implements broker.Broker: it starts the goroutine that reads the
// pub/sub connection and delivers to h.
func (b *Broker) Start(h broker.EventHandler) error {
	return b.life.Start("redis", func() {
		b.h = h
		b.mu.Lock()
		b.reading = true
		b.mu.Unlock()
		b.tasks.Go("broker.redis.reader", b.read)
	})
}

// Close implements broker.Broker: it stops the reader, waits for it and
// closes the connections. It may be called before Start and more than once.
func (b *Broker) Close() error {
	first, _ := b.life.Close()
	if first {
		_ = b.ps.Close() // unblocks the reader's receive
	}
	b.tasks.Stop()
	if first {
		return b.client.Close()
	}
	return nil
}

// Healthy reports whether Redis answers a PING and the pub/sub connection
// works; /readyz uses it.
func (b *Broker) Healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	if b.healthErr != nil {
		return fmt.Errorf("redis pub/sub: %w", b.healthErr)
	}
	return nil
}

func (b *Broker) setHealth(err error) {
	b.hmu.Lock()
	b.healthErr = err
	b.hmu.Unlock()
}

// read is the delivery goroutine.
func (b *Broker) read(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		msg, err := b.ps.ReceiveTimeout(ctx, pingEvery)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet connection: ping it, so a dead one is noticed.
				_ = b.ps.Ping(ctx)
				continue
			}
			b.setHealth(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			// Reconnects (go-redis resubscribes the channels) and makes
			// the pub/sub answer, which clears the health error.
			_ = b.ps.Ping(ctx)
			continue
		}
		backoff = 50 * time.Millisecond
		b.setHealth(nil)
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				b.confirm(strings.TrimPrefix(m.Channel, b.prefix+".ch."))
			}
		case *goredis.Message:
			b.deliver(strings.TrimPrefix(m.Channel, b.prefix+".ch."), m.Payload)
		}
	}
}

// confirm wakes the oldest Subscribe waiting for ch.
func (b *Broker) confirm(ch string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.waiters[ch]; len(w) > 0 {
		close(w[0])
		if len(w) == 1 {
			delete(b.waiters, ch)
		} else {
			b.waiters[ch] = w[1:]
		}
	}
}

// deliver decodes a pub/sub payload and hands it to the handler when this
// node is still subscribed. Payloads: "p<offset> <epoch> <body>",
// "j<info>", "l<info>".
func (b *Broker) deliver(ch, payload string) {
	b.mu.Lock()
	_, ok := b.subs[ch]
	b.mu.Unlock()
	if !ok || payload == "" {
		return
	}
	switch payload[0] {
	case 'p':
		off, rest, ok1 := strings.Cut(payload[1:], " ")
		epoch, body, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 {
			return
		}
		offset, err := strconv.ParseUint(off, 10, 64)
		if err != nil {
			return
		}
		pub, err := wire.DecodeBody(body, offset)
		if err != nil {
			return
		}
		b.h.HandlePublication(ch, pub, broker.StreamPosition{Offset: offset, Epoch: epoch})
	case 'j', 'l':
		info, err := wire.DecodeInfo(payload[1:])
		if err != nil {
			return
		}
		if payload[0] == 'j' {
			b.h.HandleJoin(ch, info)
		} else {
			b.h.HandleLeave(ch, info)
		}
	}
}

// nowMS in Lua: Redis's clock in unix milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// publishScript: KEYS meta, stream, idem; ARGV pubsub channel, body,
// history size, history TTL ms, stream TTL ms, new epoch, idempotency TTL
// ms (0: no key). Returns {offset, epoch}.
var publishScript = goredis.NewScript(luaNow + `
local idttl = tonumber(ARGV[7])
if idttl > 0 then
  local v = redis.call('GET', KEYS[3])
  if v then
    local sp = string.find(v, ' ', 1, true)
    return {tonumber(string.sub(v, 1, sp - 1)), string.sub(v, sp + 1)}
  end
end
local size = tonumber(ARGV[3])
local top, epoch = 0, ''
if size > 0 then
  redis.call('HSETNX', KEYS[1], 'e', ARGV[6])
  top = redis.call('HINCRBY', KEYS[1], 'o', 1)
  epoch = redis.call('HGET', KEYS[1], 'e')
  redis.call('XADD', KEYS[2], 'MAXLEN', '=', size, string.format('%d-0', top), 'e', string.format('%d', now + tonumber(ARGV[4])), 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], 'p' .. string.format('%d', top) .. ' ' .. epoch .. ' ' .. ARGV[2])
if idttl > 0 then
  redis.call('SET', KEYS[3], string.format('%d', top) .. ' ' .. epoch, 'PX', idttl)
end
return {top, epoch}
`)

// historyScript: KEYS meta, stream; ARGV new epoch, stream TTL ms, since
// offset ("" for none), since epoch, limit, reverse ("1"). Returns {top,
// epoch, status, entries}; status "u" means unrecoverable.
var historyScript = goredis.NewScript(luaNow + `
if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local m = redis.call('HMGET', KEYS[1], 'o', 'e')
local top, epoch = tonumber(m[1]) or 0, m[2]
local oldest = top + 1
while true do
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #first == 0 then break end
  if tonumber(first[1][2][2]) <= now then
    redis.call('XDEL', KEYS[2], first[1][1])
  else
    oldest = tonumber(string.match(first[1][1], '^(%d+)'))
    break
  end
end
local lo, hi = oldest, top
local reverse = ARGV[6] == '1'
if ARGV[3] ~= '' then
  local since = tonumber(ARGV[3])
  if ARGV[4] ~= epoch or since > top then return {top, epoch, 'u', {}} end
  if not reverse then
    if since + 1 < oldest then return {top, epoch, 'u', {}} end
    lo = since + 1
  else
    hi = since - 1
  end
end
local limit = tonumber(ARGV[5])
if limit == 0 or lo > hi then return {top, epoch, 'ok', {}} end
local a, z = string.format('%d-0', lo), string.format('%d-0', hi)
local entries
if reverse then
  if limit > 0 then entries = redis.call('XREVRANGE', KEYS[2], z, a, 'COUNT', limit)
  else entries = redis.call('XREVRANGE', KEYS[2], z, a) end
else
  if limit > 0 then entries = redis.call('XRANGE', KEYS[2], a, z, 'COUNT', limit)
  else entries = redis.call('XRANGE', KEYS[2], a, z) end
end
return {top, epoch, 'ok', entries}
`)

// addPresenceScript: KEYS presence, presence_exp; ARGV client id, info, TTL ms.
var addPresenceScript = goredis.NewScript(luaNow + `
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
`)

// presenceScript: KEYS presence, presence_exp. Drops expired entries and
// returns the rest as a flat id, info list.
var presenceScript = goredis.NewScript(luaNow + `
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
return redis.call('HGETALL', KEYS[1])
`)

func ms(d time.Duration) int64 { return d.Milliseconds() }

// Publish implements broker.Broker. An error means the publication may
// not have been made; it is never reported as made when it was not.
func (b *Broker) Publish(ctx context.Context, ch string, data json.RawMessage, o broker.PublishOptions) (broker.StreamPosition, error) {
	body, err := wire.EncodeBody(data, o, time.Now().UnixMilli())
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("redis publish %q: %w", ch, err)
	}
	idem, idemTTL := b.idemKey(ch, o.IdempotencyKey), int64(0)
	if o.IdempotencyKey != "" {
		idemTTL = ms(b.idemTTL)
	}
	size := max(o.HistorySize, 0)
	res, err := publishScript.Run(ctx, b.client,
		[]string{b.metaKey(ch), b.streamKey(ch), idem},
		b.pubsubChannel(ch), body, size, ms(o.HistoryTTL), ms(max(o.HistoryTTL, minStreamTTL)), broker.NewEpoch(), idemTTL,
	).Slice()
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("redis publish %q: %w", ch, err)
	}
	return position(res)
}

func position(res []any) (broker.StreamPosition, error) {
	if len(res) < 2 {
		return broker.StreamPosition{}, errors.New("redis broker: short script reply")
	}
	top, _ := res[0].(int64)
	epoch, _ := res[1].(string)
	return broker.StreamPosition{Offset: uint64(max(top, 0)), Epoch: epoch}, nil
}

func (b *Broker) publishInfo(ctx context.Context, ch string, kind byte, info *broker.ClientInfo) error {
	s, err := wire.EncodeInfo(info)
	if err != nil {
		return err
	}
	return b.client.Publish(ctx, b.pubsubChannel(ch), string(kind)+s).Err()
}

// PublishJoin implements broker.Broker.
func (b *Broker) PublishJoin(ctx context.Context, ch string, info *broker.ClientInfo) error {
	if err := b.publishInfo(ctx, ch, 'j', info); err != nil {
		return fmt.Errorf("redis publish join %q: %w", ch, err)
	}
	return nil
}

// PublishLeave implements broker.Broker.
func (b *Broker) PublishLeave(ctx context.Context, ch string, info *broker.ClientInfo) error {
	if err := b.publishInfo(ctx, ch, 'l', info); err != nil {
		return fmt.Errorf("redis publish leave %q: %w", ch, err)
	}
	return nil
}

// Subscribe implements broker.Broker. Once the broker is started, it
// returns after Redis confirmed the subscription, so every publication
// made after it returns reaches this node.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	var w chan struct{}
	if b.reading {
		w = make(chan struct{})
		b.waiters[ch] = append(b.waiters[ch], w)
	}
	b.mu.Unlock()
	if err := b.ps.Subscribe(ctx, b.pubsubChannel(ch)); err != nil {
		b.dropWaiter(ch, w)
		return fmt.Errorf("redis subscribe %q: %w", ch, err)
	}
	if w == nil {
		return nil
	}
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		b.dropWaiter(ch, w)
		return fmt.Errorf("redis subscribe %q: %w", ch, ctx.Err())
	case <-t.C:
		b.dropWaiter(ch, w)
		return fmt.Errorf("redis subscribe %q: no confirmation within %v", ch, b.timeout)
	}
}

func (b *Broker) dropWaiter(ch string, w chan struct{}) {
	if w == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ws := b.waiters[ch]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(b.waiters, ch)
	} else {
		b.waiters[ch] = ws
	}
}

// Unsubscribe implements broker.Broker. Events of ch stop being delivered
// at once, even if Redis cannot be told.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	b.mu.Lock()
	delete(b.subs, ch)
	b.mu.Unlock()
	if err := b.ps.Unsubscribe(ctx, b.pubsubChannel(ch)); err != nil {
		return fmt.Errorf("redis unsubscribe %q: %w", ch, err)
	}
	return nil
}

// Channels implements broker.Broker.
func (b *Broker) Channels() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.subs))
	for ch := range b.subs {
		out = append(out, ch)
	}
	return out
}

// History implements broker.Broker, with the semantics of broker/memory.
func (b *Broker) History(ctx context.Context, ch string, f broker.HistoryFilter) ([]*broker.Publication, broker.StreamPosition, error) {
	since, sinceEpoch := "", ""
	if f.Since != nil {
		since, sinceEpoch = strconv.FormatUint(f.Since.Offset, 10), f.Since.Epoch
	}
	reverse := "0"
	if f.Reverse {
		reverse = "1"
	}
	res, err := historyScript.Run(ctx, b.client, []string{b.metaKey(ch), b.streamKey(ch)},
		broker.NewEpoch(), ms(minStreamTTL), since, sinceEpoch, f.Limit, reverse).Slice()
	if err != nil {
		return nil, broker.StreamPosition{}, fmt.Errorf("redis history %q: %w", ch, err)
	}
	sp, err := position(res)
	if err != nil || len(res) < 4 {
		return nil, sp, fmt.Errorf("redis history %q: short reply", ch)
	}
	if res[2] == "u" {
		return nil, sp, fmt.Errorf("history %q: %w", ch, broker.ErrUnrecoverablePosition)
	}
	if f.Limit == 0 {
		return nil, sp, nil
	}
	entries, _ := res[3].([]any)
	out := make([]*broker.Publication, 0, len(entries))
	for _, e := range entries {
		pub, err := decodeEntry(e)
		if err != nil {
			return nil, sp, fmt.Errorf("redis history %q: %w", ch, err)
		}
		out = append(out, pub)
	}
	return out, sp, nil
}

// decodeEntry reads one XRANGE entry: {id, {field, value, ...}}.
func decodeEntry(e any) (*broker.Publication, error) {
	pair, _ := e.([]any)
	if len(pair) != 2 {
		return nil, errors.New("malformed stream entry")
	}
	id, _ := pair[0].(string)
	fields, _ := pair[1].([]any)
	off, _, _ := strings.Cut(id, "-")
	offset, err := strconv.ParseUint(off, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("stream entry id %q: %w", id, err)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "d" {
			body, _ := fields[i+1].(string)
			return wire.DecodeBody(body, offset)
		}
	}
	return nil, fmt.Errorf("stream entry %q has no body", id)
}

// RemoveHistory implements broker.Broker: the stream goes, its meta key
// (epoch and offset) stays.
func (b *Broker) RemoveHistory(ctx context.Context, ch string) error {
	if err := b.client.Del(ctx, b.streamKey(ch)).Err(); err != nil {
		return fmt.Errorf("redis remove history %q: %w", ch, err)
	}
	return nil
}

// AddPresence implements broker.PresenceManager.
func (b *Broker) AddPresence(ctx context.Context, ch, clientID string, info *broker.ClientInfo, ttl time.Duration) error {
	if clientID == "" {
		return errors.New("add presence: empty client id")
	}
	s, err := wire.EncodeInfo(info)
	if err != nil {
		return err
	}
	if err := addPresenceScript.Run(ctx, b.client, []string{b.presKey(ch), b.presExpKey(ch)}, clientID, s, max(ms(ttl), 1)).Err(); err != nil {
		return fmt.Errorf("redis add presence %q: %w", ch, err)
	}
	return nil
}

// RemovePresence implements broker.PresenceManager.
func (b *Broker) RemovePresence(ctx context.Context, ch, clientID, _ string) error {
	_, err := b.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HDel(ctx, b.presKey(ch), clientID)
		p.ZRem(ctx, b.presExpKey(ch), clientID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis remove presence %q: %w", ch, err)
	}
	return nil
}

// Presence implements broker.PresenceManager.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string]*broker.ClientInfo, error) {
	res, err := presenceScript.Run(ctx, b.client, []string{b.presKey(ch), b.presExpKey(ch)}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis presence %q: %w", ch, err)
	}
	out := make(map[string]*broker.ClientInfo, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		info, err := wire.DecodeInfo(res[i+1])
		if err != nil {
			return nil, fmt.Errorf("redis presence %q: %w", ch, err)
		}
		out[res[i]] = info
	}
	return out, nil
}

// PresenceStats implements broker.PresenceManager.
func (b *Broker) PresenceStats(ctx context.Context, ch string) (broker.PresenceStats, error) {
	m, err := b.Presence(ctx, ch)
	if err != nil {
		return broker.PresenceStats{}, err
	}
	return broker.StatsOf(m), nil
}

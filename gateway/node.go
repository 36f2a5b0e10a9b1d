// Package gateway is the heart of spindle serve: client sessions speaking
// the Centrifugo client protocol, the hub that fans publications out to
// them, heartbeats, limits and graceful drain. I/O comes from package
// transport, storage and cross-node delivery from package broker.
package gateway

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/centrifugal/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/transport"
)

// Options assemble a Node.
type Options struct {
	Config   config.Config
	Broker   broker.Broker
	Presence broker.PresenceManager
	Verifier *auth.Verifier        // nil: only anonymous connections (when allowed)
	Logger   *slog.Logger          // nil: slog.Default()
	Registry prometheus.Registerer // nil: metrics are kept but not exported
	Version  string
}

// Node is one gateway node: it owns every client session it serves.
type Node struct {
	cfg      config.Config
	log      *slog.Logger
	broker   broker.Broker
	presence broker.PresenceManager
	verifier *auth.Verifier
	version  string
	maxConns int

	hub     *hub
	writers *writers
	metrics *metrics

	seed       maphash.Seed
	sessions   [32]sessionShard
	users      [32]userShard
	numClients atomic.Int64
	started    time.Time

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	draining atomic.Bool
	closed   chan struct{} // closed when the last session is gone during drain
	allGone  sync.Once
}

type sessionShard struct {
	mu sync.RWMutex
	m  map[string]*session
}

type userShard struct {
	mu sync.RWMutex
	m  map[string][]*session
}

// New builds a node; Start runs it.
func New(o Options) (*Node, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if o.Broker == nil || o.Presence == nil {
		return nil, errors.New("gateway: a broker and a presence manager are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	n := &Node{
		cfg:      o.Config,
		log:      o.Logger,
		broker:   o.Broker,
		presence: o.Presence,
		verifier: o.Verifier,
		version:  o.Version,
		maxConns: o.Config.EffectiveMaxConnections(),
		hub:      newHub(),
		writers:  newWriters(runtime.GOMAXPROCS(0)),
		seed:     maphash.MakeSeed(),
		started:  time.Now(),
		closed:   make(chan struct{}),
	}
	for i := range n.sessions {
		n.sessions[i].m = make(map[string]*session)
		n.users[i].m = make(map[string][]*session)
	}
	n.metrics = newMetrics(o.Registry, n)
	return n, nil
}

// Start runs the writers, the heartbeat loop and the broker's delivery
// until ctx ends or Close is called.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(ctx)
	if err := n.broker.Start(n.ctx, n); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	for _, sh := range n.writers.shards {
		n.goNamed(sh.run)
	}
	n.goNamed(n.heartbeatLoop)
	return nil
}

func (n *Node) goNamed(f func(context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

// Close stops the node's goroutines. Connections are the transport's to close.
func (n *Node) Close() {
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
}

// MaxConnections is the limit in force (from config or the file limit).
func (n *Node) MaxConnections() int { return n.maxConns }

// NumClients is the number of open client sessions.
func (n *Node) NumClients() int { return int(n.numClients.Load()) }

// Admit decides whether a new WebSocket upgrade may proceed.
func (n *Node) Admit(r *http.Request) error {
	if n.draining.Load() {
		n.metrics.refused.WithLabelValues("draining").Inc()
		return errors.New("node is shutting down")
	}
	if int(n.numClients.Load()) >= n.maxConns {
		n.metrics.refused.WithLabelValues("max_connections").Inc()
		n.log.Warn("connection limit reached", "limit", n.maxConns, "remote", r.RemoteAddr)
		return fmt.Errorf("connection limit %d reached", n.maxConns)
	}
	return nil
}

// CheckOrigin applies allowed_origins. With none configured, requests
// without an Origin header and same-origin requests pass.
func (n *Node) CheckOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(n.cfg.AllowedOrigins) == 0 {
		o := strings.TrimPrefix(strings.TrimPrefix(origin, "https://"), "http://")
		if strings.EqualFold(o, r.Host) {
			return true
		}
		n.log.Info("origin refused", "origin", origin, "host", r.Host)
		return false
	}
	for _, pat := range n.cfg.AllowedOrigins {
		if pat == "*" || strings.EqualFold(pat, origin) {
			return true
		}
		if ok, _ := path.Match(strings.ToLower(pat), strings.ToLower(origin)); ok {
			return true
		}
	}
	n.log.Info("origin refused", "origin", origin)
	return false
}

// OnOpen implements transport.Handler.
func (n *Node) OnOpen(c *transport.Conn) {
	s := &session{node: n, conn: c, id: newClientID()}
	s.shard = uint32(maphash.String(n.seed, s.id))
	s.openedAt = transport.Mono()
	s.lastPresence = s.openedAt
	c.Session = s
	sh := &n.sessions[s.shard%uint32(len(n.sessions))]
	sh.mu.Lock()
	sh.m[s.id] = s
	sh.mu.Unlock()
	n.numClients.Add(1)
	n.metrics.connectsTotal.Inc()
}

// OnMessage implements transport.Handler.
func (n *Node) OnMessage(c *transport.Conn, data []byte) {
	if s, ok := c.Session.(*session); ok {
		s.handleFrame(data)
	}
}

// OnClose implements transport.Handler.
func (n *Node) OnClose(c *transport.Conn, _ error) {
	if s, ok := c.Session.(*session); ok {
		s.cleanup()
	}
}

func (n *Node) unregister(s *session) {
	sh := &n.sessions[s.shard%uint32(len(n.sessions))]
	sh.mu.Lock()
	_, ok := sh.m[s.id]
	delete(sh.m, s.id)
	sh.mu.Unlock()
	if !ok {
		return
	}
	s.mu.Lock()
	user, authed := s.user, s.authenticated
	s.mu.Unlock()
	if authed {
		ush := n.userShard(user)
		ush.mu.Lock()
		list := slices.DeleteFunc(ush.m[user], func(x *session) bool { return x == s })
		if len(list) == 0 {
			delete(ush.m, user)
		} else {
			ush.m[user] = list
		}
		ush.mu.Unlock()
	}
	if n.numClients.Add(-1) == 0 && n.draining.Load() {
		n.allGone.Do(func() { close(n.closed) })
	}
}

func (n *Node) userShard(user string) *userShard {
	return &n.users[maphash.String(n.seed, user)%uint64(len(n.users))]
}

func (n *Node) registerUser(s *session) {
	ush := n.userShard(s.user)
	ush.mu.Lock()
	ush.m[s.user] = append(ush.m[s.user], s)
	ush.mu.Unlock()
}

// userSessions returns the sessions of user, narrowed to one client id when given.
func (n *Node) userSessions(user, client string) []*session {
	if user == "" && client != "" {
		sh := &n.sessions[uint32(maphash.String(n.seed, client))%uint32(len(n.sessions))]
		sh.mu.RLock()
		s := sh.m[client]
		sh.mu.RUnlock()
		if s == nil {
			return nil
		}
		return []*session{s}
	}
	ush := n.userShard(user)
	ush.mu.RLock()
	list := slices.Clone(ush.m[user])
	ush.mu.RUnlock()
	if client != "" {
		list = slices.DeleteFunc(list, func(s *session) bool { return s.id != client })
	}
	return list
}

func (n *Node) eachSession(f func(*session)) {
	var batch []*session
	for i := range n.sessions {
		sh := &n.sessions[i]
		sh.mu.RLock()
		batch = batch[:0]
		for _, s := range sh.m {
			batch = append(batch, s)
		}
		sh.mu.RUnlock()
		for _, s := range batch {
			f(s)
		}
	}
}

func newClientID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// checkChannelName refuses empty, overlong or non-UTF-8 channel names.
func (n *Node) checkChannelName(ch string) *protocol.Error {
	if ch == "" || len(ch) > n.cfg.MaxChannelLength || !utf8.ValidString(ch) {
		return errBadRequest
	}
	return nil
}

// HandlePublication implements broker.EventHandler: encode once, enqueue
// to every local subscriber.
func (n *Node) HandlePublication(ch string, pub *broker.Publication, _ broker.StreamPosition) {
	frame, err := encodePush(&protocol.Push{Channel: ch, Pub: toProtoPub(pub)})
	if err != nil {
		n.log.Error("encode publication", "channel", ch, "err", err)
		return
	}
	n.metrics.published.Inc()
	d := n.hub.broadcast(ch, frame, pub.Offset, false)
	n.metrics.delivered.Add(float64(d))
}

// HandleJoin implements broker.EventHandler.
func (n *Node) HandleJoin(ch string, info *broker.ClientInfo) {
	if frame, err := encodePush(&protocol.Push{Channel: ch, Join: &protocol.Join{Info: toProtoInfo(info)}}); err == nil {
		n.hub.broadcast(ch, frame, 0, true)
	}
}

// HandleLeave implements broker.EventHandler.
func (n *Node) HandleLeave(ch string, info *broker.ClientInfo) {
	if frame, err := encodePush(&protocol.Push{Channel: ch, Leave: &protocol.Leave{Info: toProtoInfo(info)}}); err == nil {
		n.hub.broadcast(ch, frame, 0, true)
	}
}

// Errors the server API maps to its error codes.
var (
	ErrUnknownChannel    = errors.New("unknown channel")
	ErrBadRequest        = errors.New("bad request")
	ErrNotAvailable      = errors.New("not available")
	ErrDraining          = errors.New("node is shutting down")
	errBadHistoryRequest = fmt.Errorf("%w: reverse history needs an offset", ErrBadRequest)
)

// PublishOptions are the server API's extras for a publication.
type PublishOptions struct {
	Tags           map[string]string
	IdempotencyKey string
	SkipHistory    bool
}

// Publish sends data to every subscriber of channel, on every node, and
// keeps it in history when the channel's namespace has history.
func (n *Node) Publish(ctx context.Context, ch string, data json.RawMessage, o PublishOptions) (broker.StreamPosition, error) {
	if perr := n.checkChannelName(ch); perr != nil {
		return broker.StreamPosition{}, fmt.Errorf("publish %q: %w: bad channel name", ch, ErrBadRequest)
	}
	rules, ok := n.cfg.ChannelRules(ch)
	if !ok {
		return broker.StreamPosition{}, fmt.Errorf("publish %q: %w", ch, ErrUnknownChannel)
	}
	if !json.Valid(data) {
		return broker.StreamPosition{}, fmt.Errorf("publish %q: %w: data is not JSON", ch, ErrBadRequest)
	}
	if o.SkipHistory {
		rules.HistorySize = 0
	}
	return n.publish(ctx, ch, data, rules, nil, o.Tags, o.IdempotencyKey)
}

func (n *Node) publish(ctx context.Context, ch string, data []byte, rules config.ChannelOptions, info *broker.ClientInfo, tags map[string]string, key string) (broker.StreamPosition, error) {
	sp, err := n.broker.Publish(ctx, ch, data, broker.PublishOptions{
		HistorySize:    rules.HistorySize,
		HistoryTTL:     rules.HistoryTTL.D(),
		Info:           info,
		Tags:           tags,
		IdempotencyKey: key,
	})
	if err != nil {
		return sp, fmt.Errorf("publish %q: %w", ch, err)
	}
	return sp, nil
}

// Subscribe subscribes the sessions of user (or one client) to ch from the
// server side; each gets a subscribe push.
func (n *Node) Subscribe(ctx context.Context, user, client, ch string) (int, error) {
	if perr := n.checkChannelName(ch); perr != nil {
		return 0, fmt.Errorf("subscribe %q: %w", ch, ErrBadRequest)
	}
	rules, ok := n.cfg.ChannelRules(ch)
	if !ok {
		return 0, fmt.Errorf("subscribe %q: %w", ch, ErrUnknownChannel)
	}
	count := 0
	for _, s := range n.userSessions(user, client) {
		s.mu.Lock()
		skip := !s.authenticated || s.gone || s.findSub(ch) != nil
		s.mu.Unlock()
		if skip {
			continue
		}
		p, perr := s.prepareSubscribe(ctx, ch, rules, &protocol.SubscribeRequest{Channel: ch}, nil)
		if perr != nil {
			return count, fmt.Errorf("subscribe %q: %s", ch, perr.Message)
		}
		push, err := encodePush(&protocol.Push{Channel: ch, Subscribe: &protocol.Subscribe{
			Recoverable: p.result.Recoverable, Epoch: p.result.Epoch, Offset: p.result.Offset, Positioned: p.result.Positioned,
		}})
		if err != nil {
			s.rollback(ctx, p)
			return count, err
		}
		s.mu.Lock()
		p.sub.goLive(s, push, p.top)
		s.mu.Unlock()
		s.afterSubscribe(ctx, p)
		count++
	}
	return count, nil
}

// Unsubscribe removes user's sessions (or one client) from ch with an unsubscribe push.
func (n *Node) Unsubscribe(ctx context.Context, user, client, ch string) int {
	count := 0
	for _, s := range n.userSessions(user, client) {
		if s.unsubscribe(ctx, ch, true) {
			count++
		}
	}
	return count
}

// Disconnect closes the sessions of user (or one client) with d.
func (n *Node) Disconnect(user, client string, d Disconnect) int {
	list := n.userSessions(user, client)
	for _, s := range list {
		s.close(d, false)
	}
	return len(list)
}

// Presence lists the clients in ch.
func (n *Node) Presence(ctx context.Context, ch string) (*protocol.PresenceResult, error) {
	if err := n.presenceEnabled(ch); err != nil {
		return nil, err
	}
	m, err := n.presence.Presence(ctx, ch)
	if err != nil {
		return nil, fmt.Errorf("presence %q: %w", ch, err)
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
		return nil, err
	}
	st, err := n.presence.PresenceStats(ctx, ch)
	if err != nil {
		return nil, fmt.Errorf("presence stats %q: %w", ch, err)
	}
	return &protocol.PresenceStatsResult{NumClients: uint32(st.NumClients), NumUsers: uint32(st.NumUsers)}, nil
}

func (n *Node) presenceEnabled(ch string) error {
	rules, ok := n.cfg.ChannelRules(ch)
	if !ok {
		return fmt.Errorf("presence %q: %w", ch, ErrUnknownChannel)
	}
	if !rules.Presence {
		return fmt.Errorf("presence %q: %w", ch, ErrNotAvailable)
	}
	return nil
}

// History returns up to limit publications of ch after since (newest first
// with reverse); limit 0 returns only the position, -1 everything kept.
func (n *Node) History(ctx context.Context, ch string, limit int, since *protocol.StreamPosition, reverse bool) (*protocol.HistoryResult, error) {
	rules, ok := n.cfg.ChannelRules(ch)
	if !ok {
		return nil, fmt.Errorf("history %q: %w", ch, ErrUnknownChannel)
	}
	if rules.HistorySize <= 0 {
		return nil, fmt.Errorf("history %q: %w", ch, ErrNotAvailable)
	}
	f := broker.HistoryFilter{Limit: limit, Reverse: reverse}
	if since != nil {
		if reverse && since.Offset == 0 {
			return nil, errBadHistoryRequest
		}
		f.Since = &broker.StreamPosition{Offset: since.Offset, Epoch: since.Epoch}
	}
	pubs, sp, err := n.broker.History(ctx, ch, f)
	if err != nil {
		return nil, fmt.Errorf("history %q: %w", ch, err)
	}
	res := &protocol.HistoryResult{Publications: make([]*protocol.Publication, 0, len(pubs)), Epoch: sp.Epoch, Offset: sp.Offset}
	for _, p := range pubs {
		res.Publications = append(res.Publications, toProtoPub(p))
	}
	return res, nil
}

// RemoveHistory drops the stored publications of ch.
func (n *Node) RemoveHistory(ctx context.Context, ch string) error {
	if _, ok := n.cfg.ChannelRules(ch); !ok {
		return fmt.Errorf("history remove %q: %w", ch, ErrUnknownChannel)
	}
	if err := n.broker.RemoveHistory(ctx, ch); err != nil {
		return fmt.Errorf("history remove %q: %w", ch, err)
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
	users := 0
	for i := range n.users {
		n.users[i].mu.RLock()
		users += len(n.users[i].m)
		n.users[i].mu.RUnlock()
	}
	return Info{
		Name:        "spindle",
		Version:     n.version,
		NumClients:  n.NumClients(),
		NumUsers:    users,
		NumChannels: len(n.hub.channels()),
		NumSubs:     int(n.hub.subs.Load()),
		Uptime:      int64(time.Since(n.started).Seconds()),
		MaxClients:  n.maxConns,
		Goroutines:  runtime.NumGoroutine(),
		Draining:    n.draining.Load(),
	}
}

// Draining reports whether Drain has begun.
func (n *Node) Draining() bool { return n.draining.Load() }

// Drain stops admitting connections and disconnects every client with
// 3001 "shutdown" (reconnect advised), spread at random over window so
// they do not all reconnect elsewhere at once. It returns when every client
// is gone or ctx ends.
func (n *Node) Drain(ctx context.Context, window time.Duration) error {
	if !n.draining.CompareAndSwap(false, true) {
		return errors.New("drain already started")
	}
	var all []*session
	n.eachSession(func(s *session) { all = append(all, s) })
	if len(all) == 0 {
		n.allGone.Do(func() { close(n.closed) })
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	n.log.Info("draining clients", "clients", len(all), "window", window)
	const steps = 50
	per := (len(all) + steps - 1) / steps
	start := time.Now()
	for i := 0; i < len(all); i += max(per, 1) {
		due := start.Add(time.Duration(float64(window) * float64(i) / float64(len(all))))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		for _, s := range all[i:min(i+max(per, 1), len(all))] {
			s.close(DisconnectShutdown, false)
		}
	}
	// Sessions that connected while we were iterating.
	n.eachSession(func(s *session) { s.close(DisconnectShutdown, false) })
	select {
	case <-n.closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: %d clients left: %w", n.NumClients(), ctx.Err())
	}
}

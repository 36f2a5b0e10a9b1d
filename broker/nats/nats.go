// Package nats is the broker for several nodes sharing one NATS system:
// publications reach every node through core NATS subjects, and channel
// streams (history, offsets, epochs), idempotency keys and presence live
// in one JetStream stream.
//
// # Subjects
//
// With prefix P and a channel's subject token c (the channel itself when
// it is one plain subject token, else "~" and its unpadded base64url):
//
//	P.ch.c            core NATS: what nodes subscribe to, one subscription per channel
//	P.ev.h.c          JetStream: the channel stream (publications with history, and position markers)
//	P.ev.o.c          JetStream: publications without history that carry an idempotency key
//	P.presence.c.id   JetStream: one presence entry (id is the client id's token)
//
// The stream (named P with dots as underscores) holds P.ev.> and
// P.presence.>, allows per-message TTLs and rollups, and republishes every
// message stored under P.ev.*.c to P.ch.c once it is stored, in stream
// order. Joins, leaves and publications without history or key go to
// P.ch.c directly.
//
// # Offsets and order
//
// Every message on P.ev.h.c carries the channel's offset and epoch in its
// headers. Publish reads the last message of the subject (its offset N and
// stream sequence S) and stores the publication with offset N+1 and the
// header Nats-Expected-Last-Subject-Sequence: S; JetStream refuses it if
// another node stored one in between, and Publish reads again and retries.
// So each channel has one gapless offset sequence across nodes, stream
// order is offset order, and the republished copies reach subscribers in
// that order. A channel without messages gets a new random epoch.
//
// A publication is kept for its history TTL (checked when reading: the
// server's store time plus the TTL, against this node's clock), its stream message for at least an hour
// (minStreamTTL) and never shorter than the message before it, so that the
// last message, which carries the position, outlives the others. Publish
// purges the subject down to the history size. RemoveHistory stores a
// position marker with rollup, which drops everything before it; a History
// of a channel without stream stores a marker at offset 0.
//
// History reads the subject's messages through a short-lived consumer
// (create, fetch, delete); for the position only, or from a position at
// the top (a subscriber that missed nothing), it reads the last message.
//
// Idempotency keys are JetStream message ids (Nats-Msg-Id, deduplicated
// within the stream's 5-minute window). A repeated key returns the first
// publication's position while that is still stored, else the channel's
// current position.
//
// # Presence
//
// AddPresence stores the entry with rollup (so one message per client) and
// a per-message TTL; Presence reads the channel's entries and skips those
// past their TTL (store time plus TTL against this node's clock, so nodes
// need roughly synchronised clocks).
//
// # Without JetStream
//
// Fan-out, joins and leaves work on core NATS alone. On a server without
// JetStream, publications with history or an idempotency key, History,
// RemoveHistory and presence fail with an error saying so, and Healthy
// reports it: such a deployment needs a JetStream-enabled NATS.
//
// # Delivery and outages
//
// nats.go delivers each channel's subscription on its own goroutine, in
// order, so handler calls for one channel come in offset order and never
// concurrently. Publishes are not buffered while the connection is down:
// they fail instead of being accepted and lost. nats.go reconnects and
// resubscribes by itself; publications made meanwhile are recovered by
// clients through offsets and epochs.
package nats

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spindlehq/spindle/broker"
)

const (
	idempotencyTTL = 5 * time.Minute
	minStreamTTL   = time.Hour // a channel stream with no publication for this long (or its history TTL, if longer) is dropped
	maxAttempts    = 1000      // of a publish racing other nodes for the next offset
)

// Header names of the messages this broker writes.
const (
	hKind   = "Spindle-Kind"   // p publication, m position marker, j join, l leave
	hOffset = "Spindle-Offset" // offset in the channel stream
	hEpoch  = "Spindle-Epoch"
	hTTL    = "Spindle-TTL"    // history or presence TTL in milliseconds
	hClient = "Spindle-Client" // presence: the client id
)

// Options configure a Broker.
type Options struct {
	URL     string        // nats://host:port, or several separated by commas
	Prefix  string        // of subjects and the stream name; "" means "spindle"
	Timeout time.Duration // connect, request and flush timeout; 0 means 5s
	Logger  *slog.Logger  // nil means slog.Default()
}

// Broker implements broker.Broker and broker.PresenceManager on NATS.
//
// Ownership: nc and js are safe for concurrent use (nats.go) and, like
// connErr, prefix, name, timeout, log and now, written by New only (tests
// replace now right after New); h is written once by Start and read by the
// subscription callbacks; subs is guarded by mu; stream by smu.
type Broker struct {
	nc      *nats.Conn // nil when connErr is set
	connErr error      // why New could not make a connection
	js      jetstream.JetStream
	prefix  string
	name    string // of the JetStream stream
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time // the clock expiry is checked against; tests move it

	h atomic.Pointer[broker.EventHandler]

	mu   sync.Mutex
	subs map[string]*nats.Subscription // channels this node subscribed to

	smu    sync.Mutex
	stream jetstream.Stream // nil until created or found

	life broker.Lifecycle
}

// New returns a broker on the NATS at o.URL. It does not wait for the
// server: the connection is retried in the background, and Healthy says
// whether NATS answers.
func New(o Options) *Broker {
	if o.Prefix == "" {
		o.Prefix = "spindle"
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	b := &Broker{prefix: o.Prefix, name: strings.ReplaceAll(o.Prefix, ".", "_"), timeout: o.Timeout, log: o.Logger, now: time.Now, subs: map[string]*nats.Subscription{}}
	if err := checkPrefix(o.Prefix); err != nil {
		b.connErr = err
		return b
	}
	nc, err := nats.Connect(o.URL,
		nats.Name("spindle"),
		nats.Timeout(o.Timeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(-1), // a publish while disconnected fails instead of waiting in a buffer that may be lost
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if !c.IsClosed() { // not Close: the connection was lost
				b.log.Warn("nats broker: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { b.log.Info("nats broker: reconnected", "server", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			b.log.Warn("nats broker", "subject", subj, "err", err)
		}),
	)
	if err != nil {
		b.connErr = fmt.Errorf("nats connect %s: %w", o.URL, err)
		return b
	}
	b.nc = nc
	b.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(o.Timeout))
	if err != nil {
		nc.Close()
		b.nc, b.connErr = nil, fmt.Errorf("nats jetstream: %w", err)
	}
	return b
}

// checkPrefix accepts a prefix of plain subject tokens.
func checkPrefix(p string) error {
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n/\\") {
			return fmt.Errorf("nats prefix %q: want dot-separated tokens without wildcards, spaces or slashes", p)
		}
	}
	return nil
}

// token is s as one subject token: itself when it is plain, else "~" and
// its unpadded base64url (so no plain token collides with an encoded one).
func token(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_:@=,+", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

func (b *Broker) fanout(ch string) string         { return b.prefix + ".ch." + token(ch) }
func (b *Broker) history(ch string) string        { return b.prefix + ".ev.h." + token(ch) }
func (b *Broker) once(ch string) string           { return b.prefix + ".ev.o." + token(ch) }
func (b *Broker) presence(ch string) string       { return b.prefix + ".presence." + token(ch) }
func (b *Broker) presenceOf(ch, id string) string { return b.presence(ch) + "." + token(id) }

// Start implements broker.Broker: events of subscribed channels go to h
// from now on.
func (b *Broker) Start(h broker.EventHandler) error {
	return b.life.Start("nats", func() { b.h.Store(&h) })
}

// Close implements broker.Broker: it closes the connection, which ends
// nats.go's goroutines. It may be called before Start and more than once.
func (b *Broker) Close() error {
	if first, _ := b.life.Close(); first && b.nc != nil {
		b.nc.Close()
	}
	return nil
}

// Healthy reports whether NATS answers a round trip and the JetStream
// stream is there; /readyz uses it.
func (b *Broker) Healthy() error {
	if err := b.connected(); err != nil {
		return err
	}
	if err := b.nc.FlushTimeout(b.timeout); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	st, err := b.jstream(ctx)
	if err != nil {
		return err
	}
	if _, err := st.Info(ctx); err != nil {
		b.forget(err)
		return fmt.Errorf("nats jetstream stream %s: %w", b.name, err)
	}
	return nil
}

// connected fails at once while there is no connection to NATS, instead
// of a round trip waiting for its timeout.
func (b *Broker) connected() error {
	if b.connErr != nil {
		return b.connErr
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("nats: not connected (%s)", b.nc.Status())
	}
	return nil
}

// jstream returns the JetStream stream, creating or updating it first if
// this broker has not yet.
func (b *Broker) jstream(ctx context.Context) (jetstream.Stream, error) {
	if b.connErr != nil {
		return nil, b.connErr
	}
	b.smu.Lock()
	defer b.smu.Unlock()
	if b.stream != nil {
		return b.stream, nil
	}
	st, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        b.name,
		Description: "spindle channel streams and presence",
		Subjects:    []string{b.prefix + ".ev.>", b.prefix + ".presence.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  idempotencyTTL,
		AllowMsgTTL: true,
		AllowRollup: true,
		RePublish:   &jetstream.RePublish{Source: b.prefix + ".ev.*.*", Destination: b.prefix + ".ch.{{wildcard(2)}}"},
	})
	if errors.Is(err, nats.ErrNoResponders) {
		// Nobody answers the JetStream API: the server runs without it.
		err = fmt.Errorf("%w: %w", jetstream.ErrJetStreamNotEnabled, err)
	}
	if err != nil {
		return nil, fmt.Errorf("nats jetstream stream %s (JetStream is needed for history, idempotency and presence): %w", b.name, err)
	}
	b.stream = st
	return st, nil
}

// forget drops the stream handle after an error saying it is gone (a NATS
// restarted without its store), so the next use creates it again.
func (b *Broker) forget(err error) {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		b.smu.Lock()
		b.stream = nil
		b.smu.Unlock()
	}
}

// deliver hands one message of P.ch.c to the handler while this node is
// still subscribed to ch with the subscription that received it.
func (b *Broker) deliver(ch string, m *nats.Msg) {
	b.mu.Lock()
	cur, ok := b.subs[ch]
	b.mu.Unlock()
	hp := b.h.Load()
	if !ok || cur != m.Sub || hp == nil {
		return
	}
	h := *hp
	switch m.Header.Get(hKind) {
	case "p":
		pos, err := position(m.Header)
		if err != nil {
			b.log.Warn("nats broker: malformed publication", "channel", ch, "err", err)
			return
		}
		pub, err := decodePub(m.Data, pos.Offset)
		if err != nil {
			b.log.Warn("nats broker: malformed publication", "channel", ch, "err", err)
			return
		}
		h.HandlePublication(ch, pub, pos)
	case "j", "l":
		info, err := decodeInfo(m.Data)
		if err != nil {
			b.log.Warn("nats broker: malformed join or leave", "channel", ch, "err", err)
			return
		}
		if m.Header.Get(hKind) == "j" {
			h.HandleJoin(ch, info)
		} else {
			h.HandleLeave(ch, info)
		}
	}
}

// Subscribe implements broker.Broker. It returns once the server has the
// subscription, so every publication made after it returns reaches this
// node.
func (b *Broker) Subscribe(_ context.Context, ch string) error {
	if err := b.connected(); err != nil {
		return fmt.Errorf("nats subscribe %q: %w", ch, err)
	}
	b.mu.Lock()
	if _, ok := b.subs[ch]; ok {
		b.mu.Unlock()
		return nil
	}
	s, err := b.nc.Subscribe(b.fanout(ch), func(m *nats.Msg) { b.deliver(ch, m) })
	if err != nil {
		b.mu.Unlock()
		return fmt.Errorf("nats subscribe %q: %w", ch, err)
	}
	b.subs[ch] = s
	b.mu.Unlock()
	if err := b.nc.FlushTimeout(b.timeout); err != nil {
		// Not known to the server: undo, so that Channels and a retry see
		// the channel as not subscribed.
		b.mu.Lock()
		if b.subs[ch] == s {
			delete(b.subs, ch)
		}
		b.mu.Unlock()
		if uerr := s.Unsubscribe(); uerr != nil {
			return fmt.Errorf("nats subscribe %q: %w (undoing it: %w)", ch, err, uerr)
		}
		return fmt.Errorf("nats subscribe %q: %w", ch, err)
	}
	return nil
}

// Unsubscribe implements broker.Broker. Events of ch stop being delivered
// at once, even if NATS cannot be told.
func (b *Broker) Unsubscribe(_ context.Context, ch string) error {
	b.mu.Lock()
	s, ok := b.subs[ch]
	delete(b.subs, ch)
	b.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.Unsubscribe(); err != nil {
		return fmt.Errorf("nats unsubscribe %q: %w", ch, err)
	}
	return nil
}

// Channels implements broker.Broker.
func (b *Broker) Channels() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Collect(maps.Keys(b.subs))
}

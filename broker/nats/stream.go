package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/wire"
)

// Publish implements broker.Broker. An error means the publication may
// not have been made; it is never reported as made when it was not.
func (b *Broker) Publish(ctx context.Context, ch string, data json.RawMessage, o broker.PublishOptions) (broker.StreamPosition, error) {
	if b.connErr != nil {
		return broker.StreamPosition{}, b.connErr
	}
	body, err := wire.EncodeBody(data, o, time.Now().UnixMilli())
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
	}
	switch {
	case o.HistorySize > 0:
		return b.publishHistory(ctx, ch, body, o)
	case o.IdempotencyKey != "":
		// Through JetStream, which drops a repeated key and republishes
		// the rest to the channel's subject.
		if _, err := b.jstream(ctx); err != nil {
			return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		m := newMsg(b.once(ch), "p", body, broker.StreamPosition{})
		if _, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID(ch, o.IdempotencyKey)), jetstream.WithMsgTTL(idempotencyTTL)); err != nil {
			b.forget(err)
			return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		return broker.StreamPosition{}, nil
	}
	if err := b.nc.PublishMsg(newMsg(b.fanout(ch), "p", body, broker.StreamPosition{})); err != nil {
		return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
	}
	// The round trip makes sure the server has it: a publication on a
	// connection that just died is reported, not lost.
	if err := b.nc.FlushTimeout(b.timeout); err != nil {
		return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
	}
	return broker.StreamPosition{}, nil
}

// newMsg is a message of kind (p, m, j or l) at sp with body.
func newMsg(subject, kind, body string, sp broker.StreamPosition) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	m.Header.Set(hKind, kind)
	if kind == "p" || kind == "m" {
		m.Header.Set(hOffset, strconv.FormatUint(sp.Offset, 10))
		m.Header.Set(hEpoch, sp.Epoch)
	}
	return m
}

// msgID is the JetStream message id of an idempotency key of ch.
func msgID(ch, key string) string { return token(ch) + " " + token(key) }

// position reads a message's offset and epoch headers.
func position(h nats.Header) (broker.StreamPosition, error) {
	off, err := strconv.ParseUint(h.Get(hOffset), 10, 64)
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("offset header: %w", err)
	}
	return broker.StreamPosition{Offset: off, Epoch: h.Get(hEpoch)}, nil
}

func decodePub(data []byte, offset uint64) (*broker.Publication, error) {
	return wire.DecodeBody(string(data), offset)
}

func decodeInfo(data []byte) (*broker.ClientInfo, error) { return wire.DecodeInfo(string(data)) }

// wrongLast says JetStream refused a message because another one was
// stored on its subject since the last read.
func wrongLast(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// top is the last message of a channel stream.
type top struct {
	found bool
	seq   uint64 // stream sequence; 0 when not found
	pos   broker.StreamPosition
	until time.Time // when JetStream drops it
}

// keep is how long a message stored after t must be kept: d, and no
// shorter than t, in whole seconds (the TTL unit of JetStream).
func (t top) keep(d time.Duration) time.Duration {
	if t.found {
		d = max(d, time.Until(t.until))
	}
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// last reads the last message of subject.
func (b *Broker) last(ctx context.Context, st jetstream.Stream, subject string) (top, error) {
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return top{}, nil
	}
	if err != nil {
		b.forget(err)
		return top{}, err
	}
	pos, err := position(m.Header)
	if err != nil {
		return top{}, fmt.Errorf("message %d: %w", m.Sequence, err)
	}
	t := top{found: true, seq: m.Sequence, pos: pos, until: m.Time}
	if ttl, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader)); err == nil {
		t.until = m.Time.Add(ttl)
	}
	return t, nil
}

// publishHistory stores the publication at the channel's next offset,
// retrying while other nodes take offsets first.
func (b *Broker) publishHistory(ctx context.Context, ch, body string, o broker.PublishOptions) (broker.StreamPosition, error) {
	st, err := b.jstream(ctx)
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
	}
	subj := b.history(ch)
	for attempt := 1; ; attempt++ {
		t, err := b.last(ctx, st, subj)
		if err != nil {
			return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		pos := broker.StreamPosition{Offset: t.pos.Offset + 1, Epoch: t.pos.Epoch}
		if !t.found {
			pos.Epoch = broker.NewEpoch()
		}
		m := newMsg(subj, "p", body, pos)
		m.Header.Set(hTTL, strconv.FormatInt(o.HistoryTTL.Milliseconds(), 10))
		opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(t.seq), jetstream.WithMsgTTL(t.keep(max(o.HistoryTTL, minStreamTTL)))}
		if o.IdempotencyKey != "" {
			opts = append(opts, jetstream.WithMsgID(msgID(ch, o.IdempotencyKey)))
		}
		ack, err := b.js.PublishMsg(ctx, m, opts...)
		if wrongLast(err) && attempt < maxAttempts {
			continue
		}
		if err != nil {
			b.forget(err)
			return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		if ack.Duplicate {
			return b.positionOf(ctx, st, ch, ack.Sequence)
		}
		if pos.Offset > uint64(o.HistorySize) {
			// Not atomic with the publication: should it fail, the next
			// publication trims what this one left.
			if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(uint64(o.HistorySize))); err != nil {
				b.log.Warn("nats broker: trimming history", "channel", ch, "err", err)
			}
		}
		return pos, nil
	}
}

// positionOf is the position of the publication at stream sequence seq
// (the first one with a repeated idempotency key), or the channel's
// current position once that publication has left the stream.
func (b *Broker) positionOf(ctx context.Context, st jetstream.Stream, ch string, seq uint64) (broker.StreamPosition, error) {
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		t, err := b.last(ctx, st, b.history(ch))
		if err != nil {
			return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		return t.pos, nil
	}
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
	}
	pos, err := position(m.Header)
	if err != nil {
		return broker.StreamPosition{}, fmt.Errorf("nats publish %q: message %d: %w", ch, seq, err)
	}
	return pos, nil
}

func (b *Broker) publishInfo(ch, kind string, info *broker.ClientInfo) error {
	if b.connErr != nil {
		return b.connErr
	}
	s, err := wire.EncodeInfo(info)
	if err != nil {
		return err
	}
	return b.nc.PublishMsg(newMsg(b.fanout(ch), kind, s, broker.StreamPosition{}))
}

// PublishJoin implements broker.Broker.
func (b *Broker) PublishJoin(_ context.Context, ch string, info *broker.ClientInfo) error {
	if err := b.publishInfo(ch, "j", info); err != nil {
		return fmt.Errorf("nats publish join %q: %w", ch, err)
	}
	return nil
}

// PublishLeave implements broker.Broker.
func (b *Broker) PublishLeave(_ context.Context, ch string, info *broker.ClientInfo) error {
	if err := b.publishInfo(ch, "l", info); err != nil {
		return fmt.Errorf("nats publish leave %q: %w", ch, err)
	}
	return nil
}

// read returns the messages of st matching filter, as the consumer policy
// selects them, through a short-lived consumer.
func (b *Broker) read(ctx context.Context, st jetstream.Stream, filter string, policy jetstream.DeliverPolicy) ([]jetstream.Msg, error) {
	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: filter, DeliverPolicy: policy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute, // removed below; the threshold covers a lost delete
	})
	if err != nil {
		b.forget(err)
		return nil, err
	}
	info := c.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		defer cancel()
		if err := st.DeleteConsumer(dctx, info.Name); err != nil {
			b.log.Debug("nats broker: deleting a reader consumer (it expires by itself)", "consumer", info.Name, "err", err)
		}
	}()
	var out []jetstream.Msg
	for uint64(len(out)) < info.NumPending {
		batch, err := c.FetchNoWait(int(info.NumPending) - len(out))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if n == 0 { // expired since the consumer counted them
			break
		}
	}
	return out, nil
}

// stored is a publication read from a channel stream.
type stored struct {
	pub     *broker.Publication
	expires time.Time
}

// History implements broker.Broker, with the semantics of broker/memory.
func (b *Broker) History(ctx context.Context, ch string, f broker.HistoryFilter) ([]*broker.Publication, broker.StreamPosition, error) {
	// Only the position is needed for Limit 0 without Since, and for a
	// subscriber at the top (the common recovery): that is one request.
	pubs, sp, err := b.readStream(ctx, ch, func(top broker.StreamPosition) bool {
		return (f.Since != nil || f.Limit != 0) && (f.Since == nil || f.Reverse || *f.Since != top)
	})
	if err != nil {
		return nil, broker.StreamPosition{}, fmt.Errorf("nats history %q: %w", ch, err)
	}
	now := b.now()
	for len(pubs) > 0 && !now.Before(pubs[0].expires) {
		pubs = pubs[1:]
	}
	oldest := sp.Offset + 1
	if len(pubs) > 0 {
		oldest = pubs[0].pub.Offset
	}
	lo, hi := oldest, sp.Offset
	if s := f.Since; s != nil {
		if s.Epoch != sp.Epoch || s.Offset > sp.Offset || !f.Reverse && s.Offset+1 < oldest {
			return nil, sp, fmt.Errorf("history %q: %w", ch, broker.ErrUnrecoverablePosition)
		}
		if f.Reverse {
			hi = max(s.Offset, 1) - 1 // offsets start at 1: before 0 or 1 there is nothing
		} else {
			lo = s.Offset + 1
		}
	}
	if f.Limit == 0 {
		return nil, sp, nil
	}
	out := []*broker.Publication{}
	for _, p := range pubs {
		if p.pub.Offset >= lo && p.pub.Offset <= hi {
			out = append(out, p.pub)
		}
	}
	if f.Reverse {
		slices.Reverse(out)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, sp, nil
}

// readStream reads a channel's stream: its position and, when all says so
// for that position, its publications. A channel without stream gets one
// at offset 0 in a new epoch.
func (b *Broker) readStream(ctx context.Context, ch string, all func(top broker.StreamPosition) bool) ([]stored, broker.StreamPosition, error) {
	st, err := b.jstream(ctx)
	if err != nil {
		return nil, broker.StreamPosition{}, err
	}
	subj := b.history(ch)
	for attempt := 1; ; attempt++ {
		t, err := b.last(ctx, st, subj)
		if err != nil {
			return nil, broker.StreamPosition{}, err
		}
		if !t.found {
			sp := broker.StreamPosition{Epoch: broker.NewEpoch()}
			_, err := b.js.PublishMsg(ctx, newMsg(subj, "m", "", sp), jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithMsgTTL(minStreamTTL))
			if wrongLast(err) && attempt < maxAttempts {
				continue // another node created it
			}
			if err != nil {
				return nil, broker.StreamPosition{}, err
			}
			return nil, sp, nil
		}
		if !all(t.pos) {
			return nil, t.pos, nil
		}
		msgs, err := b.read(ctx, st, subj, jetstream.DeliverAllPolicy)
		if err != nil {
			return nil, broker.StreamPosition{}, err
		}
		var pubs []stored
		sp := t.pos
		for _, m := range msgs {
			pos, err := position(m.Headers())
			if err != nil {
				return nil, broker.StreamPosition{}, err
			}
			sp = pos // the last message read is the top, maybe newer than t
			if m.Headers().Get(hKind) != "p" {
				continue
			}
			pub, err := decodePub(m.Data(), pos.Offset)
			if err != nil {
				return nil, broker.StreamPosition{}, err
			}
			md, err := m.Metadata()
			if err != nil {
				return nil, broker.StreamPosition{}, err
			}
			ttl, _ := strconv.ParseInt(m.Headers().Get(hTTL), 10, 64)
			pubs = append(pubs, stored{pub: pub, expires: md.Timestamp.Add(time.Duration(ttl) * time.Millisecond)})
		}
		return pubs, sp, nil
	}
}

// RemoveHistory implements broker.Broker: a position marker with rollup
// replaces the stored publications, so epoch and offset stay.
func (b *Broker) RemoveHistory(ctx context.Context, ch string) error {
	st, err := b.jstream(ctx)
	if err != nil {
		return fmt.Errorf("nats remove history %q: %w", ch, err)
	}
	subj := b.history(ch)
	for attempt := 1; ; attempt++ {
		t, err := b.last(ctx, st, subj)
		if err != nil {
			return fmt.Errorf("nats remove history %q: %w", ch, err)
		}
		if !t.found {
			return nil
		}
		m := newMsg(subj, "m", "", t.pos)
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		_, err = b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(t.seq), jetstream.WithMsgTTL(t.keep(minStreamTTL)))
		if wrongLast(err) && attempt < maxAttempts {
			continue
		}
		if err != nil {
			return fmt.Errorf("nats remove history %q: %w", ch, err)
		}
		return nil
	}
}

// AddPresence implements broker.PresenceManager.
func (b *Broker) AddPresence(ctx context.Context, ch, clientID string, info *broker.ClientInfo, ttl time.Duration) error {
	if clientID == "" || strings.ContainsAny(clientID, "\r\n") {
		return fmt.Errorf("add presence: client id %q is empty or has a line break", clientID)
	}
	if _, err := b.jstream(ctx); err != nil {
		return fmt.Errorf("nats add presence %q: %w", ch, err)
	}
	s, err := wire.EncodeInfo(info)
	if err != nil {
		return err
	}
	m := nats.NewMsg(b.presenceOf(ch, clientID))
	m.Data = []byte(s)
	m.Header.Set(hClient, clientID)
	m.Header.Set(hTTL, strconv.FormatInt(max(ttl.Milliseconds(), 1), 10))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if _, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(top{}.keep(ttl))); err != nil {
		b.forget(err)
		return fmt.Errorf("nats add presence %q: %w", ch, err)
	}
	return nil
}

// RemovePresence implements broker.PresenceManager.
func (b *Broker) RemovePresence(ctx context.Context, ch, clientID, _ string) error {
	st, err := b.jstream(ctx)
	if err != nil {
		return fmt.Errorf("nats remove presence %q: %w", ch, err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(b.presenceOf(ch, clientID))); err != nil {
		b.forget(err)
		return fmt.Errorf("nats remove presence %q: %w", ch, err)
	}
	return nil
}

// Presence implements broker.PresenceManager.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string]*broker.ClientInfo, error) {
	st, err := b.jstream(ctx)
	if err != nil {
		return nil, fmt.Errorf("nats presence %q: %w", ch, err)
	}
	msgs, err := b.read(ctx, st, b.presence(ch)+".*", jetstream.DeliverLastPerSubjectPolicy)
	if err != nil {
		return nil, fmt.Errorf("nats presence %q: %w", ch, err)
	}
	now := b.now()
	out := make(map[string]*broker.ClientInfo, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("nats presence %q: %w", ch, err)
		}
		ttl, _ := strconv.ParseInt(m.Headers().Get(hTTL), 10, 64)
		if !now.Before(md.Timestamp.Add(time.Duration(ttl) * time.Millisecond)) {
			continue
		}
		info, err := decodeInfo(m.Data())
		if err != nil {
			return nil, fmt.Errorf("nats presence %q: %w", ch, err)
		}
		out[m.Headers().Get(hClient)] = info
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

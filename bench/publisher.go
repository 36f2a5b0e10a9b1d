package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
)

// publisher publishes on the scenario's schedule. Each channel belongs to
// one sender goroutine, so a channel's publications leave in sequence order;
// every payload carries its intended send time, so a publisher that falls
// behind shows up as latency rather than hiding it.
type publisher struct {
	sc      *Scenario
	http    *http.Client
	clients []*client.Client // publish_via: client
	queues  []chan pubJob

	mu        sync.Mutex
	starts    [][]int64
	failed    [][]uint64
	published uint64
	nFailed   uint64
	errors    map[string]uint64
	first     time.Time
	last      time.Time
	perSec    map[int]uint64
	start     time.Time
	// Reply times of publishes, from the actual send: accepted, and refused
	// or failed (how fast a shedding server says no).
	replyOK, replyRefused *hdr.Histogram
	// The publishing window, by intended send times: from the first
	// publication's to the end of the last one's slot (its time + 1/rate);
	// busy is the sum of the slots, the window less pauses at rate 0.
	windowFrom, windowTo time.Time
	busy                 time.Duration
}

type pubJob struct {
	channel  int
	seq      uint64
	intended time.Time
}

type pubStats struct {
	published, failed uint64
	errors            map[string]uint64
	first, last       time.Time     // actual: first send started, last reply came
	windowFrom        time.Time     // intended: first send
	windowTo          time.Time     // intended: end of the last send's slot
	busy              time.Duration // the sum of the send slots (1/rate each)
	replyOK           Percentiles   // reply times of accepted publishes
	replyRefused      Percentiles   // ... of refused or failed ones
}

func newPublisher(ctx context.Context, sc *Scenario) (*publisher, error) {
	senders := sc.PublishSenders
	p := &publisher{
		sc:     sc,
		starts: make([][]int64, sc.Channels), failed: make([][]uint64, sc.Channels),
		errors: map[string]uint64{}, perSec: map[int]uint64{},
		http:    &http.Client{Timeout: sc.PublishTimeout.D(), Transport: &http.Transport{MaxIdleConnsPerHost: senders}},
		replyOK: newHist(), replyRefused: newHist(),
	}
	if sc.PublishVia == "client" && sc.MaxRate() > 0 {
		for i := range senders {
			cfg := client.Config{URL: sc.URLs[i%len(sc.URLs)], Token: sc.Token}
			if sc.HMACSecret != "" {
				tok, err := auth.MintConnect(sc.HMACSecret, auth.ConnectClaims{UserID: fmt.Sprintf("bench-publisher-%d", i)}, 24*time.Hour)
				if err != nil {
					return nil, fmt.Errorf("publisher token: %w", err)
				}
				cfg.Token = tok
			}
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				p.close()
				return nil, fmt.Errorf("publisher %d: %w", i, err)
			}
			p.clients = append(p.clients, c)
			// Namespaces may let only subscribers publish.
			for ch := i; ch < sc.Channels; ch += senders {
				if _, err := c.Subscribe(ctx, sc.Channel(ch), client.SubscribeOptions{}); err != nil {
					p.close()
					return nil, fmt.Errorf("publisher %d: %w", i, err)
				}
			}
		}
	}
	for range senders {
		p.queues = append(p.queues, make(chan pubJob, 4096))
	}
	return p, nil
}

// run publishes until the stages end or stop is cancelled and returns the
// publish log; publications already scheduled complete under ctx.
func (p *publisher) run(stop, ctx context.Context, start time.Time) *publishLog {
	p.start = start
	var wg sync.WaitGroup
	for i, q := range p.queues {
		wg.Add(1)
		go func() { defer wg.Done(); p.send(ctx, i, q) }()
	}
	seqs := make([]uint64, p.sc.Channels)
	next := start
	var from, to time.Time
	var busy time.Duration
	for k := 0; ; {
		_, rate, ok := p.sc.at(next.Sub(start))
		if !ok {
			break
		}
		if d := time.Until(next); d > 0 {
			select {
			case <-time.After(d):
			case <-stop.Done():
			}
		}
		if stop.Err() != nil {
			if now := time.Now(); !to.IsZero() && to.After(now) {
				busy -= to.Sub(now) // interrupted within the last slot
				to = now
			}
			break
		}
		if rate <= 0 {
			next = next.Add(10 * time.Millisecond)
			continue
		}
		ch := k % p.sc.Channels
		seqs[ch]++
		p.queues[ch%len(p.queues)] <- pubJob{channel: ch, seq: seqs[ch], intended: next}
		if k == 0 {
			from = next
		}
		k++
		slot := time.Duration(float64(time.Second) / rate)
		next = next.Add(slot)
		to, busy = next, busy+slot
	}
	for _, q := range p.queues {
		close(q)
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.windowFrom, p.windowTo, p.busy = from, to, busy
	return &publishLog{Starts: p.starts, Failed: p.failed}
}

func (p *publisher) send(ctx context.Context, i int, q <-chan pubJob) {
	buf := make([]byte, 0, p.sc.MessageSize)
	for j := range q {
		buf = appendPayload(buf[:0], j.seq, j.intended.UnixNano(), p.sc.MessageSize)
		now := time.Now()
		p.mu.Lock()
		p.starts[j.channel] = append(p.starts[j.channel], now.UnixNano())
		if late := now.Sub(j.intended); late > p.sc.PublishTimeout.D() {
			// The senders cannot offer this much: a publication a whole
			// timeout late is not sent, so a flood's backlog stays bounded.
			p.nFailed++
			p.failed[j.channel] = append(p.failed[j.channel], j.seq)
			p.errors["publish_skipped_late"]++
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		var err error
		pctx, cancel := context.WithTimeout(ctx, p.sc.PublishTimeout.D())
		if p.clients != nil {
			err = p.clients[i].Publish(pctx, p.sc.Channel(j.channel), buf)
		} else {
			err = p.apiPublish(pctx, p.sc.Channel(j.channel), buf)
		}
		cancel()
		p.mu.Lock()
		if p.first.IsZero() {
			p.first = now
		}
		p.last = time.Now()
		if err != nil {
			p.nFailed++
			p.failed[j.channel] = append(p.failed[j.channel], j.seq)
			p.errors[publishErrorKind(err)]++
			recordDur(p.replyRefused, p.last.Sub(now))
		} else {
			p.published++
			p.perSec[int(now.Sub(p.start)/time.Second)+1]++
			recordDur(p.replyOK, p.last.Sub(now))
		}
		p.mu.Unlock()
	}
}

// statusError is a server API reply with another HTTP status than 200.
type statusError struct {
	status     int
	retryAfter string
	body       string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d (Retry-After %q): %s", e.status, e.retryAfter, e.body)
}

func publishErrorKind(err error) string {
	var se *client.Error
	var st *statusError
	switch {
	case errors.As(err, &st) && st.retryAfter != "":
		return fmt.Sprintf("publish_http_%d_retry_after", st.status)
	case errors.As(err, &st):
		return fmt.Sprintf("publish_http_%d", st.status)
	case errors.As(err, &se):
		return fmt.Sprintf("publish_error_%d", se.Code)
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "Timeout"):
		return "publish_timeout"
	default:
		return "publish_failed"
	}
}

// apiPublish publishes through the server API, as a backend would.
func (p *publisher) apiPublish(ctx context.Context, channel string, data []byte) error {
	body, err := json.Marshal(struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}{channel, data})
	if err != nil {
		return fmt.Errorf("publish %q: %w", channel, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(p.sc.API, "/")+"/publish", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("publish %q: %w", channel, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", p.sc.APIKey)
	resp, err := p.http.Do(req)
	if err != nil {
		return fmt.Errorf("publish %q: %w", channel, err)
	}
	defer resp.Body.Close()
	var reply struct {
		Error *struct {
			Code    uint32 `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish %q: %w", channel, &statusError{resp.StatusCode, resp.Header.Get("Retry-After"), string(bytes.TrimSpace(b))})
	}
	if err := json.Unmarshal(b, &reply); err != nil {
		return fmt.Errorf("publish %q: bad reply: %w", channel, err)
	}
	if reply.Error != nil {
		return &client.Error{Code: reply.Error.Code, Message: reply.Error.Message}
	}
	return nil
}

func (p *publisher) perSecond(sec int) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.perSec[sec]
}

func (p *publisher) stats() pubStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pubStats{published: p.published, failed: p.nFailed, errors: p.errors, first: p.first, last: p.last,
		windowFrom: p.windowFrom, windowTo: p.windowTo, busy: p.busy,
		replyOK: percentiles(p.replyOK), replyRefused: percentiles(p.replyRefused)}
}

func (p *publisher) close() {
	for _, c := range p.clients {
		c.Close()
	}
	p.http.CloseIdleConnections()
}

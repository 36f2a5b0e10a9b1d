// Package proxy asks the application backend about client events over
// HTTP, as Centrifugo's HTTP proxy does: each event is a POST of a JSON
// request to its endpoint, answered with {"result": …}, {"error": {code,
// message}} or {"disconnect": {code, reason}}. Calls run on a bounded pool
// of workers with a bounded queue and a per-call timeout, never on the
// caller's goroutine.
package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/spindlehq/spindle/guard/task"
)

// Event names a proxied client event.
type Event string

// The events, as Centrifugo names them.
const (
	Connect    Event = "connect"
	Refresh    Event = "refresh"
	Subscribe  Event = "subscribe"
	SubRefresh Event = "sub_refresh"
	Publish    Event = "publish"
	RPC        Event = "rpc"
)

// Endpoint is where one event is sent: a URL and how long one call may take.
type Endpoint struct {
	URL     string
	Timeout time.Duration
}

// Config sets up a Proxy. An event whose endpoint has no URL is not proxied.
type Config struct {
	Endpoints map[Event]Endpoint
	// Headers are copied from the client's upgrade request into every
	// call, when the client sent them (e.g. Cookie, Authorization).
	Headers []string
	Workers int // calls in flight at once; 0: 64
	Queue   int // calls waiting for a worker; 0: 1024
	Logger  *slog.Logger
}

// maxResponseSize bounds the body read from the backend.
const maxResponseSize = 4 << 20

// Errors a call ends with when the backend gave no usable answer.
var (
	ErrQueueFull = errors.New("proxy queue full")
	ErrClosed    = errors.New("proxy closed")
)

// Proxy sends events to the backend. Start it, Submit calls, Close it.
//
// Who owns what: cfg, client and headers are read-only after New; jobs is
// the queue between Submit and the workers; mu guards closed, so that no
// job is queued once Close has begun.
type Proxy struct {
	cfg     Config
	client  *http.Client
	headers []string // canonical header names
	log     *slog.Logger
	jobs    chan job
	tasks   *task.Group

	mu     sync.RWMutex
	closed bool
}

type job struct {
	ev      Event
	body    []byte
	headers http.Header
	done    func(raw *Reply, err error)
}

// Reply is the backend's answer: exactly one of its fields is set.
type Reply struct {
	Result     json.RawMessage `json:"result"`
	Error      *Error          `json:"error"`
	Disconnect *Disconnect     `json:"disconnect"`
}

// Error is an error the backend wants the client to get.
type Error struct {
	Code      uint32 `json:"code"`
	Message   string `json:"message"`
	Temporary bool   `json:"temporary"`
}

// Disconnect is a disconnect the backend asks for.
type Disconnect struct {
	Code   uint32 `json:"code"`
	Reason string `json:"reason"`
}

// New builds a proxy; nothing runs until Start.
func New(cfg Config) (*Proxy, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for ev, ep := range cfg.Endpoints {
		if ep.URL != "" && ep.Timeout <= 0 {
			return nil, fmt.Errorf("proxy %s: timeout must be positive", ev)
		}
	}
	p := &Proxy{
		cfg:   cfg,
		log:   cfg.Logger,
		jobs:  make(chan job, cfg.Queue),
		tasks: task.NewGroup(context.Background()),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: cfg.Workers,
			IdleConnTimeout:     90 * time.Second,
		}},
	}
	for _, h := range cfg.Headers {
		p.headers = append(p.headers, http.CanonicalHeaderKey(h))
	}
	return p, nil
}

// Enabled reports whether ev is proxied.
func (p *Proxy) Enabled(ev Event) bool {
	return p != nil && p.cfg.Endpoints[ev].URL != ""
}

// Headers are the header names copied from the client's upgrade request.
func (p *Proxy) Headers() []string {
	if p == nil {
		return nil
	}
	return p.headers
}

// Queued is the number of calls waiting for a worker.
func (p *Proxy) Queued() int { return len(p.jobs) }

// Start starts the workers (tasks gateway.proxy).
func (p *Proxy) Start() {
	for range p.cfg.Workers {
		p.tasks.Go("gateway.proxy", p.work)
	}
}

// Close stops the workers: calls in flight are cancelled and queued ones
// end with ErrClosed; each done is called once either way.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.tasks.Stop()
	for {
		select {
		case j := <-p.jobs:
			j.done(nil, ErrClosed)
		default:
			p.client.CloseIdleConnections()
			return
		}
	}
}

// Submit queues a call of ev with req as its JSON body and headers (only
// the allowed ones are sent). done runs on a worker with the backend's
// reply, or with an error when there is none (down, timeout, bad JSON).
// A full queue or a closed proxy is refused at once: done is not called.
func (p *Proxy) Submit(ev Event, req any, headers http.Header, done func(*Reply, error)) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("proxy %s: encode request: %w", ev, err)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.jobs <- job{ev: ev, body: body, headers: headers, done: done}:
		return nil
	default:
		return ErrQueueFull
	}
}

func (p *Proxy) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-p.jobs:
			rep, err := p.call(ctx, j)
			j.done(rep, err)
		}
	}
}

// call makes one HTTP request and decodes the reply.
func (p *Proxy) call(ctx context.Context, j job) (*Reply, error) {
	ep := p.cfg.Endpoints[j.ev]
	ctx, cancel := context.WithTimeout(ctx, ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(j.body))
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", j.ev, err)
	}
	for _, h := range p.headers {
		for _, v := range j.headers.Values(h) {
			req.Header.Add(h, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", j.ev, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("proxy %s: read response: %w", j.ev, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("proxy %s: backend answered HTTP %d", j.ev, resp.StatusCode)
	}
	if len(data) > maxResponseSize {
		return nil, fmt.Errorf("proxy %s: response larger than %d bytes", j.ev, maxResponseSize)
	}
	return decodeReply(j.ev, data)
}

// decodeReply checks the backend's answer: a JSON object with exactly one
// of result, error and disconnect, a disconnect with a code a close frame
// may carry.
func decodeReply(ev Event, data []byte) (*Reply, error) {
	var rep Reply
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("proxy %s: response is not a JSON object: %w", ev, err)
	}
	n := 0
	if len(rep.Result) > 0 && !bytes.Equal(rep.Result, []byte("null")) {
		n++
	} else {
		rep.Result = nil
	}
	if rep.Error != nil {
		n++
	}
	if rep.Disconnect != nil {
		n++
	}
	if n != 1 {
		return nil, fmt.Errorf("proxy %s: response has %d of result, error and disconnect, want exactly one", ev, n)
	}
	if d := rep.Disconnect; d != nil && (d.Code < 3000 || d.Code > 4999) {
		return nil, fmt.Errorf("proxy %s: disconnect code %d is not a WebSocket application code (3000-4999)", ev, d.Code)
	}
	return &rep, nil
}

// Decode unmarshals the reply's result into v, naming ev in the error.
func (r *Reply) Decode(ev Event, v any) error {
	if err := json.Unmarshal(r.Result, v); err != nil {
		return fmt.Errorf("proxy %s: bad result: %w", ev, err)
	}
	return nil
}

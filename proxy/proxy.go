package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Proxy forwards TCP connections from a loopback listener to an upstream
// address, injecting Faults. Create it with New, run it with Serve, stop it
// with Close or by cancelling Serve's context.
type Proxy struct {
	ln       *net.TCPListener
	upstream string
	log      *slog.Logger

	ctx    context.Context // cancelled by Close; every connection watches it
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per connection handler
	serve  atomic.Bool

	mu      sync.Mutex
	closed  bool
	faults  Faults
	changed chan struct{} // closed and replaced on every fault change
	conns   map[uint64]*conn
	nextID  uint64

	stats struct {
		accepted, dropped, reset, dialErrors, bytesUp, bytesDown atomic.Int64
	}
}

// Stats are the proxy's counters since New.
type Stats struct {
	// Accepted counts connections accepted, including dropped ones.
	Accepted int64 `json:"accepted"`
	// Active counts connections open now.
	Active int64 `json:"active"`
	// Dropped counts connections reset at once because of Faults.Drop.
	Dropped int64 `json:"dropped"`
	// Reset counts connections reset because of Faults.ResetAfter.
	Reset int64 `json:"reset"`
	// DialErrors counts connections closed because the upstream could not be dialed.
	DialErrors int64 `json:"dial_errors"`
	// BytesUp counts bytes delivered from clients to the upstream.
	BytesUp int64 `json:"bytes_up"`
	// BytesDown counts bytes delivered from the upstream to clients.
	BytesDown int64 `json:"bytes_down"`
}

// ConnInfo describes one open connection.
type ConnInfo struct {
	// ID identifies the connection for SetConnFaults.
	ID uint64 `json:"id"`
	// Client is the client's address: what the client's own
	// net.Conn.LocalAddr reports.
	Client string `json:"client"`
	// Started is when the connection was accepted.
	Started time.Time `json:"started"`
	// Faults is the connection's own override, nil if it follows the proxy's.
	Faults *Faults `json:"faults,omitempty"`
}

// New listens on listen, which must be a loopback address (port 0 picks a
// free port), and returns a Proxy that will forward to upstream with faults f.
func New(listen, upstream string, f Faults) (*Proxy, error) {
	if err := CheckLoopback(listen); err != nil {
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		return nil, fmt.Errorf("proxy: upstream %q: %w", upstream, err)
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen on %s: %w", listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{
		ln:       ln.(*net.TCPListener),
		upstream: upstream,
		log:      slog.Default(),
		ctx:      ctx,
		cancel:   cancel,
		faults:   f,
		changed:  make(chan struct{}),
		conns:    make(map[uint64]*conn),
	}, nil
}

// CheckLoopback returns an error unless addr is host:port with a loopback
// IP or "localhost" as host.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (want e.g. 127.0.0.1:PORT)", addr)
	}
	return nil
}

// SetLogger replaces the logger (slog.Default by default); call it before Serve.
func (p *Proxy) SetLogger(l *slog.Logger) { p.log = l }

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

// Upstream returns the address connections are forwarded to.
func (p *Proxy) Upstream() string { return p.upstream }

// Serve accepts connections until ctx is cancelled or Close is called, then
// closes every connection and returns nil once all of them are gone. It
// returns an error if the listener fails or Serve was already called.
func (p *Proxy) Serve(ctx context.Context) error {
	if !p.serve.CompareAndSwap(false, true) {
		return errors.New("proxy: Serve called twice")
	}
	stop := context.AfterFunc(ctx, p.shutdown)
	defer stop()
	p.log.Info("proxy serving", "listen", p.Addr().String(), "upstream", p.upstream, "faults", p.Faults().String())
	var err error
	backoff := 5 * time.Millisecond
	for {
		nc, aerr := p.ln.AcceptTCP()
		if aerr == nil {
			backoff = 5 * time.Millisecond
			p.track(nc)
			continue
		}
		if p.isClosed() {
			break
		}
		// Out of descriptors or an aborted handshake: wait and go on.
		if errors.Is(aerr, syscall.EMFILE) || errors.Is(aerr, syscall.ENFILE) || errors.Is(aerr, syscall.ECONNABORTED) {
			p.log.Warn("proxy accept", "err", aerr, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		err = fmt.Errorf("proxy: accept on %s: %w", p.Addr(), aerr)
		break
	}
	p.Close()
	return err
}

// Close stops accepting, closes every connection and waits until all the
// proxy's goroutines have returned. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.shutdown()
	p.wg.Wait()
	return nil
}

// shutdown closes the listener and tells every connection to close, without waiting.
func (p *Proxy) shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.cancel()
	p.ln.Close()
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Faults returns the faults applied to connections without an override.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// SetFaults replaces the faults of every connection without an override,
// open or new. Drop applies to connections accepted from now on.
func (p *Proxy) SetFaults(f Faults) error {
	return p.UpdateFaults(func(Faults) Faults { return f })
}

// UpdateFaults replaces the faults with fn(current) atomically, so
// concurrent changes (schedule, control endpoint) do not lose each other.
func (p *Proxy) UpdateFaults(fn func(Faults) Faults) error {
	p.mu.Lock()
	f := fn(p.faults)
	if err := f.Validate(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("proxy: %w", err)
	}
	p.faults = f
	p.notifyLocked()
	p.mu.Unlock()
	p.log.Info("proxy faults changed", "faults", f.String())
	return nil
}

// SetConnFaults gives the open connection id its own faults, which replace
// the proxy's for it until ClearConnFaults; it is how one client among many
// is made slow or cut off.
func (p *Proxy) SetConnFaults(id uint64, f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[id]
	if !ok {
		return fmt.Errorf("proxy: no open connection %d", id)
	}
	c.override = &f
	p.notifyLocked()
	p.log.Info("proxy connection faults changed", "conn", id, "faults", f.String())
	return nil
}

// ClearConnFaults makes connection id follow the proxy's faults again.
func (p *Proxy) ClearConnFaults(id uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[id]
	if !ok {
		return fmt.Errorf("proxy: no open connection %d", id)
	}
	c.override = nil
	p.notifyLocked()
	return nil
}

// notifyLocked wakes every goroutine waiting for a fault change.
func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// connFaults returns the faults in force for c and a channel closed at the next change.
func (p *Proxy) connFaults(c *conn) (Faults, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.override != nil {
		return *c.override, p.changed
	}
	return p.faults, p.changed
}

// Conns lists the open connections, oldest first.
func (p *Proxy) Conns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnInfo, 0, len(p.conns))
	for _, c := range p.conns {
		ci := ConnInfo{ID: c.id, Client: c.client.RemoteAddr().String(), Started: c.start}
		if c.override != nil {
			f := *c.override
			ci.Faults = &f
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ConnID returns the ID of the open connection whose client end has the
// local address clientAddr (what the client's net.Conn.LocalAddr reports).
func (p *Proxy) ConnID(clientAddr string) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if c.client.RemoteAddr().String() == clientAddr {
			return c.id, true
		}
	}
	return 0, false
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := int64(len(p.conns))
	p.mu.Unlock()
	return Stats{
		Accepted:   p.stats.accepted.Load(),
		Active:     active,
		Dropped:    p.stats.dropped.Load(),
		Reset:      p.stats.reset.Load(),
		DialErrors: p.stats.dialErrors.Load(),
		BytesUp:    p.stats.bytesUp.Load(),
		BytesDown:  p.stats.bytesDown.Load(),
	}
}

// track registers an accepted connection and starts its handler, unless
// the proxy is closing.
func (p *Proxy) track(nc *net.TCPConn) {
	p.stats.accepted.Add(1)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		nc.Close()
		return
	}
	p.nextID++
	c := &conn{p: p, id: p.nextID, client: nc, start: time.Now(), done: make(chan struct{}), finished: make(chan struct{})}
	p.conns[c.id] = c
	p.wg.Add(1)
	p.mu.Unlock()
	go p.handle(c)
}

func (p *Proxy) untrack(c *conn) {
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
}

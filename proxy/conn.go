package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	readBufSize = 16 << 10 // one read, one chunk at most
	lineBytes   = 4 << 20  // bytes a delay line holds before its reader waits
	lineChunks  = 1 << 16  // chunks a delay line holds before its reader waits
	dialTimeout = 5 * time.Second
)

// dir is a direction of one proxied connection.
type dir int

const (
	up   dir = iota // client to upstream
	down            // upstream to client
)

func (d dir) String() string {
	if d == up {
		return "up"
	}
	return "down"
}

// conn is one proxied connection. Its handler goroutine (Proxy.handle)
// owns it and, once the upstream is dialed, four pumps: a reader and a
// writer per direction, joined by a delay line.
type conn struct {
	p      *Proxy
	id     uint64
	client *net.TCPConn
	start  time.Time

	override *Faults // guarded by p.mu

	mu       sync.Mutex
	upstream *net.TCPConn // set once by the handler before the pumps start

	done      chan struct{} // closed by abort
	abortOnce sync.Once
	pumps     sync.WaitGroup

	finished    chan struct{} // closed when both writers have passed on EOF
	writersLeft atomic.Int32
}

// handle runs the connection until it ends, is reset, or the proxy closes,
// then closes both sockets and waits for the pumps.
func (p *Proxy) handle(c *conn) {
	defer p.wg.Done()
	rst, why := c.supervise()
	c.abort(rst)
	c.pumps.Wait()
	p.untrack(c)
	p.log.Debug("proxy connection closed", "conn", c.id, "client", c.client.RemoteAddr().String(), "why", why, "age", time.Since(c.start).Round(time.Millisecond))
}

// supervise applies the connection-level faults (drop, blackhole before
// dialing, reset-after) and returns when the connection must end, saying
// whether to reset it and why.
func (c *conn) supervise() (rst bool, why string) {
	p := c.p
	if f, _ := p.connFaults(c); f.Drop > 0 && rand.Float64() < f.Drop {
		p.stats.dropped.Add(1)
		return true, "dropped"
	}
	var (
		dialed   bool
		finished <-chan struct{} // nil until the pumps run
		stop     = func() bool { return false }
	)
	defer func() { stop() }()
	for {
		f, changed := p.connFaults(c)
		if !dialed && !f.Blackhole {
			if err := c.dial(); err != nil {
				p.stats.dialErrors.Add(1)
				p.log.Warn("proxy dial upstream", "conn", c.id, "err", err)
				return false, "dial failed"
			}
			dialed, finished = true, c.finished
			c.startPumps()
		}
		var resetC <-chan time.Time
		if f.ResetAfter > 0 {
			left := f.ResetAfter - time.Since(c.start)
			if left <= 0 {
				p.stats.reset.Add(1)
				return true, "reset-after"
			}
			t := time.NewTimer(left)
			resetC = t.C
			stop = t.Stop
		}
		select {
		case <-p.ctx.Done():
			return false, "proxy closed"
		case <-c.done:
			return true, "peer error"
		case <-finished:
			return false, "both sides closed"
		case <-resetC:
			p.stats.reset.Add(1)
			return true, "reset-after"
		case <-changed:
			stop()
		}
	}
}

func (c *conn) dial() error {
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(c.p.ctx, "tcp", c.p.upstream)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.upstream = nc.(*net.TCPConn)
	c.mu.Unlock()
	return nil
}

func (c *conn) startPumps() {
	upLine, downLine := newDelayLine(), newDelayLine()
	c.writersLeft.Store(2)
	c.pumps.Add(4)
	go c.read(c.client, upLine, up)
	go c.read(c.upstream, downLine, down)
	go c.write(c.upstream, upLine, up)
	go c.write(c.client, downLine, down)
}

// abort closes both sockets, with a reset (SO_LINGER 0) if rst, and stops
// the pumps. Only the first call acts.
func (c *conn) abort(rst bool) {
	c.abortOnce.Do(func() {
		c.mu.Lock()
		up := c.upstream
		c.mu.Unlock()
		for _, tc := range []*net.TCPConn{c.client, up} {
			if tc == nil {
				continue
			}
			if rst {
				_ = tc.SetLinger(0)
			}
			_ = tc.Close()
		}
		close(c.done)
	})
}

// waitReadable blocks while faults forbid reading in direction d; false
// means the connection is ending.
func (c *conn) waitReadable(d dir) bool {
	for {
		f, changed := c.p.connFaults(c)
		if !f.Blackhole && (d == up || !f.StallReads) {
			return true
		}
		select {
		case <-changed:
		case <-c.done:
			return false
		}
	}
}

// waitWritable blocks while a blackhole is in force; false means the
// connection is ending. It returns the faults in force.
func (c *conn) waitWritable() (Faults, bool) {
	for {
		f, changed := c.p.connFaults(c)
		if !f.Blackhole {
			return f, true
		}
		select {
		case <-changed:
		case <-c.done:
			return f, false
		}
	}
}

// sleepUntil waits until t; false means the connection is ending.
func (c *conn) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-c.done:
		return false
	}
}

// read stamps each chunk read from src with the time it is due and queues
// it on the delay line. The writer takes chunks in order, so a chunk whose
// jittered due time is earlier than the one ahead of it waits for that one:
// jitter never reorders bytes.
func (c *conn) read(src *net.TCPConn, line *delayLine, d dir) {
	defer c.pumps.Done()
	buf := make([]byte, readBufSize)
	due := func() time.Time {
		f, _ := c.p.connFaults(c)
		return time.Now().Add(f.delay())
	}
	for {
		if !c.waitReadable(d) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !line.push(chunk{data: append([]byte(nil), buf[:n]...), due: due()}, c.done) {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			line.push(chunk{eof: true, due: due()}, c.done)
			return
		}
		if err != nil {
			select {
			case <-c.done: // closed by us
			default:
				c.p.log.Debug("proxy read", "conn", c.id, "dir", d.String(), "err", err)
				c.abort(true) // pass a reset on to the other side
			}
			return
		}
	}
}

// write delivers the delay line's chunks to dst when they are due, at no
// more than the bandwidth cap, and passes EOF on as a half-close.
func (c *conn) write(dst *net.TCPConn, line *delayLine, d dir) {
	defer c.pumps.Done()
	counter := &c.p.stats.bytesUp
	if d == down {
		counter = &c.p.stats.bytesDown
	}
	var next time.Time // pacing: when the bandwidth cap allows the next write
	for {
		ch, ok := line.pop(c.done)
		if !ok || !c.sleepUntil(ch.due) {
			return
		}
		if ch.eof {
			if _, ok := c.waitWritable(); !ok {
				return
			}
			_ = dst.CloseWrite()
			if c.writersLeft.Add(-1) == 0 {
				close(c.finished)
			}
			return
		}
		for data := ch.data; len(data) > 0; {
			f, ok := c.waitWritable()
			if !ok {
				return
			}
			n := len(data)
			if f.Bandwidth > 0 {
				// Slices of ~1/20 s keep pacing smooth at any rate.
				n = int(min(int64(n), max(f.Bandwidth/20, 1)))
				if !c.sleepUntil(next) {
					return
				}
			}
			w, err := dst.Write(data[:n])
			counter.Add(int64(w))
			if err != nil {
				select {
				case <-c.done:
				default:
					c.p.log.Debug("proxy write", "conn", c.id, "dir", d.String(), "err", err)
					c.abort(true)
				}
				return
			}
			data = data[w:]
			if f.Bandwidth > 0 {
				now := time.Now()
				if next.Before(now) {
					next = now
				}
				next = next.Add(time.Duration(float64(w) / float64(f.Bandwidth) * float64(time.Second)))
			}
		}
	}
}

// chunk is one read's bytes (or EOF) and when it is due for delivery.
type chunk struct {
	data []byte
	due  time.Time
	eof  bool
}

// delayLine is a FIFO of chunks between one reader and one writer,
// bounded in bytes and chunks so a stalled writer stops its reader.
type delayLine struct {
	mu    sync.Mutex
	q     []chunk
	bytes int
	ready chan struct{} // signalled after a push
	space chan struct{} // signalled after a pop
}

func newDelayLine() *delayLine {
	return &delayLine{ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push queues ch, waiting for room; false means done was closed first.
func (l *delayLine) push(ch chunk, done <-chan struct{}) bool {
	for {
		l.mu.Lock()
		if len(l.q) == 0 || (l.bytes < lineBytes && len(l.q) < lineChunks) {
			l.q = append(l.q, ch)
			l.bytes += len(ch.data)
			l.mu.Unlock()
			signal(l.ready)
			return true
		}
		l.mu.Unlock()
		select {
		case <-l.space:
		case <-done:
			return false
		}
	}
}

// pop takes the oldest chunk, waiting for one; false means done was closed first.
func (l *delayLine) pop(done <-chan struct{}) (chunk, bool) {
	for {
		l.mu.Lock()
		if len(l.q) > 0 {
			ch := l.q[0]
			l.q[0] = chunk{}
			l.q = l.q[1:]
			l.bytes -= len(ch.data)
			l.mu.Unlock()
			signal(l.space)
			return ch, true
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-done:
			return chunk{}, false
		}
	}
}

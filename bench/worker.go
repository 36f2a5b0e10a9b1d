package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
)

// The coordinator and its workers speak JSON lines: the coordinator sends a
// plan, later the publish log; a worker sends progress every second and its
// result at the end.

type toWorker struct {
	Plan   *workerPlan `json:"plan,omitempty"`
	Finish *publishLog `json:"finish,omitempty"`
}

type workerPlan struct {
	Scenario  Scenario `json:"scenario"`
	Index     int      `json:"index"`
	Count     int      `json:"count"`
	StartNano int64    `json:"start"`
}

// publishLog says, per channel, when the publish of each sequence number
// started (index seq-1) and which sequences failed to publish.
type publishLog struct {
	Starts [][]int64  `json:"starts"`
	Failed [][]uint64 `json:"failed"`
}

type fromWorker struct {
	Progress *workerProgress `json:"progress,omitempty"`
	Result   *workerResult   `json:"result,omitempty"`
}

type workerProgress struct {
	Worker      int    `json:"worker"`
	Sec         int    `json:"sec"`
	Connections int    `json:"connections"`
	Delivered   uint64 `json:"delivered"` // during this second
	Errors      uint64 `json:"errors"`    // during this second
	Latency     []byte `json:"latency"`   // histogram of this second
	LagP99us    int64  `json:"lag_p99_us"`
}

type workerResult struct {
	Established uint64            `json:"established"`
	Failed      uint64            `json:"failed"`
	Delivered   uint64            `json:"delivered"`
	Expected    uint64            `json:"expected"`
	Missing     uint64            `json:"missing"`
	Duplicates  uint64            `json:"duplicates"`
	OutOfOrder  uint64            `json:"out_of_order"`
	Latency     []byte            `json:"latency"`
	Connect     []byte            `json:"connect"`
	Subscribe   []byte            `json:"subscribe"`
	Lag         []byte            `json:"lag"`
	Errors      map[string]uint64 `json:"errors"`
	Disconnects map[string]uint64 `json:"disconnects"`
	CPUSeconds  float64           `json:"cpu_seconds"`
	FirstDial   int64             `json:"first_dial"`       // unix ns of the first connection attempt
	LastUp      int64             `json:"last_established"` // unix ns of the last connection established
	Err         string            `json:"err,omitempty"`
}

// share is worker i's part of n when n is spread over count workers.
func share(n float64, i, count int) int {
	total := int(n)
	return total*(i+1)/count - total*i/count
}

// RunWorker runs one worker: it reads the plan from in, holds its share of
// the connections, reports to out, and returns when the coordinator has sent
// the publish log (or in ends).
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	var first toWorker
	if err := dec.Decode(&first); err != nil {
		return fmt.Errorf("worker: read plan: %w", err)
	}
	if first.Plan == nil {
		return errors.New("worker: the first message is not a plan")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := newWorker(first.Plan, out)
	// One event loop carries all of this worker's connections: no goroutine
	// per connection, one read per ready socket.
	loop, err := client.NewLoop(0)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer loop.Stop()
	w.loop = loop

	finish := make(chan *publishLog, 1)
	go func() {
		defer cancel() // the coordinator went away: stop
		var m toWorker
		if err := dec.Decode(&m); err == nil && m.Finish != nil {
			finish <- m.Finish
			<-ctx.Done()
		}
	}()
	var log *publishLog
	w.run(ctx, finish, &log)
	res := w.result(log)
	return w.send(fromWorker{Result: res})
}

type worker struct {
	plan  *workerPlan
	sc    *Scenario
	start time.Time
	loop  *client.Loop

	outMu sync.Mutex
	out   *json.Encoder

	shards [16]histShard // latency, sharded by connection to spread lock traffic

	mu          sync.Mutex // guards the fields below
	conns       []*wconn   // live, oldest first
	dialing     int
	ended       []*wconn // closed or disconnected before the end
	connect     *hdr.Histogram
	subscribe   *hdr.Histogram
	errors      map[string]uint64
	disconnects map[string]uint64
	established uint64
	failed      uint64
	firstDial   int64
	lastUp      int64
	seq         int  // connections started, for naming and spreading
	closing     bool // the run is over: opened connections are closed at once
	cpu         float64

	delivered atomic.Uint64
	errCount  atomic.Uint64
	lag       *hdr.Histogram // only the lag probe goroutine writes; read after it stops
	lagSec    *hdr.Histogram
	lagMu     sync.Mutex
}

type histShard struct {
	mu       sync.Mutex
	total    *hdr.Histogram
	interval *hdr.Histogram
}

// wconn is one bench connection; tr is touched only by the client's reader.
type wconn struct {
	n       int
	channel int
	c       *client.Client
	subDone atomic.Int64 // unix nanos when subscribe returned; 0 if it never did
	endedAt atomic.Int64 // unix nanos when it ended early
	tr      seqTracker
}

func newWorker(p *workerPlan, out io.Writer) *worker {
	w := &worker{
		plan: p, sc: &p.Scenario, start: time.Unix(0, p.StartNano),
		out:     json.NewEncoder(out),
		connect: newHist(), subscribe: newHist(), lag: newHist(), lagSec: newHist(),
		errors: map[string]uint64{}, disconnects: map[string]uint64{},
	}
	for i := range w.shards {
		w.shards[i].total, w.shards[i].interval = newHist(), newHist()
	}
	return w
}

func (w *worker) send(m fromWorker) error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	if err := w.out.Encode(m); err != nil {
		return fmt.Errorf("worker: write: %w", err)
	}
	return nil
}

func (w *worker) countError(kind string) {
	w.errCount.Add(1)
	w.mu.Lock()
	w.errors[kind]++
	w.mu.Unlock()
}

// run holds the connection targets until the stages end, then waits for the
// publish log; it returns with every connection closed.
func (w *worker) run(ctx context.Context, finish <-chan *publishLog, log **publishLog) {
	var wg sync.WaitGroup
	defer wg.Wait()
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	wg.Add(2)
	go func() { defer wg.Done(); w.lagProbe(probeCtx) }()
	go func() { defer wg.Done(); w.progress(probeCtx) }()

	select {
	case <-time.After(time.Until(w.start)):
	case <-ctx.Done():
		return
	}
	var cpu0 = cpuSeconds()
	defer func() { w.cpu = cpuSeconds() - cpu0 }()

	dialCtx, stopDials := context.WithCancel(ctx)
	defer stopDials()
	dials := make(chan struct{}, 128) // dials in flight
	perWorkerRate := w.sc.ConnectRate / float64(w.plan.Count)
	nextSlot := w.start
	const tickEvery = 10 * time.Millisecond
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			w.closeAll(stopDials)
			return
		case l := <-finish:
			*log = l
			w.closeAll(stopDials)
			return
		case now := <-tick.C:
			conns, _, ok := w.sc.at(now.Sub(w.start))
			if !ok {
				continue // hold what we have until the coordinator finishes
			}
			target := share(conns, w.plan.Index, w.plan.Count)
			w.mu.Lock()
			have := len(w.conns) + w.dialing
			for ; have > target && len(w.conns) > 0; have-- {
				c := w.conns[len(w.conns)-1]
				w.conns = w.conns[:len(w.conns)-1]
				w.ended = append(w.ended, c)
				wg.Add(1)
				go func() { defer wg.Done(); c.endedAt.Store(time.Now().UnixNano()); c.c.Close() }()
			}
			for ; have < target; have++ {
				intended := now
				if perWorkerRate > 0 {
					// Slots fall due at the connect rate; idle time earns
					// no credit beyond one tick.
					if nextSlot.Before(now.Add(-tickEvery)) {
						nextSlot = now.Add(-tickEvery)
					}
					if nextSlot.After(now) {
						break
					}
					intended = nextSlot
					nextSlot = nextSlot.Add(time.Duration(float64(time.Second) / perWorkerRate))
				}
				w.dialing++
				if w.firstDial == 0 {
					w.firstDial = now.UnixNano()
				}
				n := w.seq
				w.seq++
				wg.Add(1)
				go func() { defer wg.Done(); w.open(dialCtx, n, intended, dials) }()
			}
			w.mu.Unlock()
		}
	}
}

// open dials connection n and subscribes it to its channel.
func (w *worker) open(ctx context.Context, n int, intended time.Time, dials chan struct{}) {
	select {
	case dials <- struct{}{}:
	case <-ctx.Done():
		w.mu.Lock()
		w.dialing--
		w.mu.Unlock()
		return
	}
	defer func() { <-dials }()
	sc := w.sc
	global := n*w.plan.Count + w.plan.Index
	wc := &wconn{n: global, channel: global % sc.Channels}
	cfg := client.Config{
		URL:   sc.URLs[global%len(sc.URLs)],
		Token: sc.Token,
		Loop:  w.loop,
		OnPublication: func(_ string, pub *protocol.Publication) {
			w.deliver(wc, pub)
		},
		OnClose: func(err error) { w.closed(wc, err) },
	}
	if len(sc.SourceAddresses) > 0 {
		cfg.LocalAddr = net.ParseIP(sc.SourceAddresses[global%len(sc.SourceAddresses)])
	}
	if sc.HMACSecret != "" {
		tok, err := auth.MintConnect(sc.HMACSecret, auth.ConnectClaims{UserID: fmt.Sprintf("bench-%d", global)}, 24*time.Hour)
		if err != nil {
			w.fail("token", err)
			return
		}
		cfg.Token = tok
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, cfg)
	if err != nil {
		w.fail("connect", err)
		return
	}
	connected := time.Now()
	wc.c = c
	if _, err := c.Subscribe(dctx, sc.Channel(wc.channel), client.SubscribeOptions{}); err != nil {
		c.Close()
		w.fail("subscribe", err)
		return
	}
	done := time.Now()
	wc.subDone.Store(done.UnixNano())
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dialing--
	w.established++
	w.lastUp = done.UnixNano()
	recordDur(w.connect, connected.Sub(intended))
	recordDur(w.subscribe, done.Sub(connected))
	if w.closing {
		w.ended = append(w.ended, wc)
		c.Close()
		return
	}
	w.conns = append(w.conns, wc)
}

func (w *worker) fail(stage string, err error) {
	kind := stage
	var se *client.Error
	var de *client.DisconnectError
	var he *client.HandshakeError
	switch {
	case errors.As(err, &he):
		kind = fmt.Sprintf("%s_http_%d", stage, he.Status)
	case errors.As(err, &se):
		kind = fmt.Sprintf("%s_error_%d", stage, se.Code)
	case errors.As(err, &de):
		kind = fmt.Sprintf("%s_disconnect_%d", stage, de.Code)
	case errors.Is(err, context.Canceled):
		kind = stage + "_canceled"
	case errors.Is(err, context.DeadlineExceeded):
		kind = stage + "_timeout"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dialing--
	if w.closing {
		return // cut off by the end of the run, not a failure
	}
	w.errCount.Add(1)
	w.failed++
	w.errors[kind]++
}

func (w *worker) deliver(wc *wconn, pub *protocol.Publication) {
	now := time.Now().UnixNano()
	seq, intended, err := parsePayload(pub.Data)
	if err != nil {
		w.countError("foreign_payload")
		return
	}
	wc.tr.add(seq)
	w.delivered.Add(1)
	s := &w.shards[wc.n%len(w.shards)]
	s.mu.Lock()
	recordDur(s.interval, time.Duration(now-intended))
	s.mu.Unlock()
}

// closed is called by a connection's reader when it ends.
func (w *worker) closed(wc *wconn, err error) {
	if wc.subDone.Load() == 0 || errors.Is(err, client.ErrClosed) {
		return // failed while opening (counted there) or closed by us
	}
	code := "read_error"
	var de *client.DisconnectError
	if errors.As(err, &de) {
		code = strconv.Itoa(de.Code)
	}
	wc.endedAt.Store(time.Now().UnixNano())
	w.errCount.Add(1)
	w.mu.Lock()
	w.disconnects[code]++
	for i, c := range w.conns {
		if c == wc {
			w.conns = append(w.conns[:i], w.conns[i+1:]...)
			w.ended = append(w.ended, wc)
			break
		}
	}
	w.mu.Unlock()
}

// closeAll stops dialing and closes every connection.
func (w *worker) closeAll(stopDials func()) {
	w.mu.Lock()
	w.closing = true
	live := w.conns
	w.conns = nil
	w.mu.Unlock()
	stopDials()
	// Close in parallel but boundedly: thousands of close handshakes.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range live {
		sem <- struct{}{}
		wg.Add(1)
		go func() { defer wg.Done(); defer func() { <-sem }(); c.c.Close() }()
	}
	wg.Wait()
	w.mu.Lock()
	w.ended = append(w.ended, live...)
	w.mu.Unlock()
}

// lagProbe measures how late this process's timers fire: a saturated bench
// client shows here before it shows as server latency.
func (w *worker) lagProbe(ctx context.Context) {
	const every = 5 * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			lag := now.Sub(last) - every
			last = now
			w.lagMu.Lock()
			recordDur(w.lag, lag)
			recordDur(w.lagSec, lag)
			w.lagMu.Unlock()
		}
	}
}

// progress reports each second of the run.
func (w *worker) progress(ctx context.Context) {
	sec := 0
	for {
		next := w.start.Add(time.Duration(sec+1) * time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		sec++
		iv := newHist()
		for i := range w.shards {
			s := &w.shards[i]
			s.mu.Lock()
			s.total.Merge(s.interval)
			iv.Merge(s.interval)
			s.interval.Reset()
			s.mu.Unlock()
		}
		w.lagMu.Lock()
		lag := w.lagSec.ValueAtQuantile(99)
		w.lagSec.Reset()
		w.lagMu.Unlock()
		w.mu.Lock()
		n := len(w.conns)
		w.mu.Unlock()
		_ = w.send(fromWorker{Progress: &workerProgress{
			Worker: w.plan.Index, Sec: sec, Connections: n,
			Delivered: w.delivered.Swap(0), Errors: w.errCount.Swap(0),
			Latency: encodeHist(iv), LagP99us: lag,
		}})
	}
}

// result counts what was delivered against what the publish log says each
// connection should have received; every connection is closed by now.
func (w *worker) result(log *publishLog) *workerResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	lat := newHist()
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		s.total.Merge(s.interval)
		lat.Merge(s.total)
		s.mu.Unlock()
	}
	res := &workerResult{
		Established: w.established, Failed: w.failed,
		Latency: encodeHist(lat), Connect: encodeHist(w.connect), Subscribe: encodeHist(w.subscribe),
		Errors: w.errors, Disconnects: w.disconnects, CPUSeconds: w.cpu,
		FirstDial: w.firstDial, LastUp: w.lastUp,
	}
	w.lagMu.Lock()
	res.Lag = encodeHist(w.lag)
	w.lagMu.Unlock()
	if log == nil {
		res.Err = "no publish log: the run was cut short"
	}
	for _, c := range w.ended {
		res.Delivered += c.tr.received
		res.Duplicates += c.tr.duplicates
		res.OutOfOrder += c.tr.outOfOrder
		if log == nil || c.subDone.Load() == 0 || c.channel >= len(log.Starts) {
			continue
		}
		exp, miss := expectation(&c.tr, c.subDone.Load(), c.endedAt.Load(), log.Starts[c.channel], log.Failed[c.channel])
		res.Expected += exp
		res.Missing += miss
	}
	return res
}

// expectation says how many publications a subscription should have
// received and how many of those it did not: everything published after its
// subscribe returned (or from the first it got, if earlier) up to the last
// publication, or, for a connection that ended early, up to the last it got.
func expectation(tr *seqTracker, subDone, endedAt int64, starts []int64, failed []uint64) (expected, missing uint64) {
	first := uint64(sort.Search(len(starts), func(i int) bool { return starts[i] > subDone })) + 1
	if tr.first != 0 && tr.first < first {
		first = tr.first
	}
	last := uint64(len(starts))
	if endedAt != 0 && tr.last < last {
		last = tr.last
	}
	if last < first {
		return 0, 0
	}
	expected = last - first + 1
	missing = tr.missingWithin(first, last)
	for _, f := range failed {
		if f >= first && f <= last {
			expected--
			if tr.missing(f) {
				missing--
			}
		}
	}
	return expected, missing
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

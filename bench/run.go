package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options are how a run is carried out, apart from the scenario.
type Options struct {
	// WorkerCommand returns the command for worker i, which must run
	// RunWorker on its stdin and stdout (`spindle bench worker`). Nil runs
	// the workers in this process (tests, small runs).
	WorkerCommand func(i int) *exec.Cmd
	// Progress, if set, gets one line per second.
	Progress io.Writer
	// ServerPID, if set, is the server process whose RSS is sampled.
	ServerPID int
	// ServerMetrics, if set, is the server's Prometheus /metrics URL; its
	// go_goroutines is sampled every second.
	ServerMetrics string
	// MetricsListen, if set, serves Prometheus metrics of the run there.
	MetricsListen string
}

// Run carries out the scenario and returns what it measured. Cancelling
// ctx (an interrupt) stops publishing early; the workers still report, so
// the result covers the run so far and says it was interrupted.
func Run(stop context.Context, sc *Scenario, opt Options) (*Result, error) {
	// ctx is the run's own lifetime: workers, sampler and in-flight
	// publications outlive an interrupt until the results are in.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now().Add(time.Second).Truncate(time.Millisecond) // time for workers to start
	r := &run{sc: sc, opt: opt, start: start, seconds: map[int]*secondAgg{}, metrics: newRunMetrics()}

	if opt.MetricsListen != "" {
		stop, err := r.metrics.serve(opt.MetricsListen)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	pub, err := newPublisher(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer pub.close()
	r.pub = pub
	workers, err := r.startWorkers(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, w := range workers {
			w.stop()
		}
	}()
	plan := workerPlan{Scenario: *sc, Count: len(workers), StartNano: start.UnixNano()}
	for i, w := range workers {
		plan.Index = i
		if err := w.sendMsg(toWorker{Plan: &plan}); err != nil {
			return nil, err
		}
	}

	var rss0 uint64
	if opt.ServerPID != 0 {
		rss0, err = readRSS(opt.ServerPID)
		if err != nil {
			return nil, err
		}
	}
	results := make(chan *workerResult, len(workers))
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); r.readWorker(w, results) }()
	}
	secDone := make(chan struct{})
	go func() { defer close(secDone); r.sampleServer(ctx) }()

	log := pub.run(stop, ctx, start)
	if stop.Err() != nil {
		time.Sleep(sc.Drain.D()) // interrupted: a short drain, then report
	} else {
		r.drain(ctx)
	}
	r.drainEnd = time.Now()
	for _, w := range workers {
		if err := w.sendMsg(toWorker{Finish: log}); err != nil {
			return nil, err
		}
	}
	var collected []*workerResult
	timeout := time.After(2 * time.Minute)
	for len(collected) < len(workers) {
		select {
		case res := <-results:
			if res == nil {
				return nil, errors.New("a worker ended without a result (see its stderr)")
			}
			collected = append(collected, res)
		case <-timeout:
			return nil, fmt.Errorf("%d of %d workers did not report in 2 minutes", len(workers)-len(collected), len(workers))
		}
	}
	cancel()
	wg.Wait()
	<-secDone
	end := time.Now()
	res, err := r.merge(collected, pub, end)
	if err != nil {
		return nil, err
	}
	if opt.ServerPID != 0 || opt.ServerMetrics != "" {
		res.Server = r.serverStats(rss0)
	}
	res.Interrupted = stop.Err() != nil
	return res, nil
}

type run struct {
	sc      *Scenario
	opt     Options
	start   time.Time
	metrics *runMetrics
	pub     *publisher

	drainEnd time.Time // when the run stopped waiting for deliveries

	mu        sync.Mutex
	seconds   map[int]*secondAgg
	printed   int
	delivered uint64 // so far, from progress reports
}

// drain waits the scenario's drain time, then for as long as deliveries are
// still arriving (a server behind its publishers), up to maxDrain, so that
// late publications count as late, not as missing.
func (r *run) drain(ctx context.Context) {
	const maxDrain = time.Minute
	deadline := time.Now().Add(maxDrain)
	wait := r.sc.Drain.D()
	last := ^uint64(0)
	for {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		r.mu.Lock()
		now := r.delivered
		r.mu.Unlock()
		if now == last || time.Now().After(deadline) {
			return
		}
		last = now
		wait = 1500 * time.Millisecond // progress arrives once a second
	}
}

type secondAgg struct {
	reports    int
	conns      int
	delivered  uint64
	errors     uint64
	lat        *hdr.Histogram
	lagP99us   int64
	rss        uint64
	goroutines int // the server's, when sampled
}

// workerProc is one worker, in a child process or in this one.
type workerProc struct {
	in   io.WriteCloser
	out  io.Reader
	stop func()
	mu   sync.Mutex
	enc  *json.Encoder
}

func (w *workerProc) sendMsg(m toWorker) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(m); err != nil {
		return fmt.Errorf("send to worker: %w", err)
	}
	return nil
}

func (r *run) startWorkers(ctx context.Context) ([]*workerProc, error) {
	var ws []*workerProc
	for i := range r.sc.Workers {
		var w *workerProc
		if r.opt.WorkerCommand == nil {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			wctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				err := RunWorker(wctx, inR, outW)
				outW.CloseWithError(err)
			}()
			w = &workerProc{in: inW, out: outR, stop: func() { cancel(); inW.Close(); inR.Close(); <-done }}
		} else {
			cmd := r.opt.WorkerCommand(i)
			in, err := cmd.StdinPipe()
			if err != nil {
				return nil, fmt.Errorf("worker %d: %w", i, err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return nil, fmt.Errorf("worker %d: %w", i, err)
			}
			if cmd.Stderr == nil {
				cmd.Stderr = os.Stderr
			}
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("start worker %d: %w", i, err)
			}
			w = &workerProc{in: in, out: out, stop: func() {
				in.Close()
				done := make(chan struct{})
				go func() { _ = cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
			}}
		}
		w.enc = json.NewEncoder(w.in)
		ws = append(ws, w)
	}
	return ws, nil
}

// readWorker consumes a worker's reports until its result (or its end).
func (r *run) readWorker(w *workerProc, results chan<- *workerResult) {
	sc := bufio.NewScanner(w.out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var m fromWorker
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Progress != nil {
			r.addProgress(m.Progress)
		}
		if m.Result != nil {
			results <- m.Result
			return
		}
	}
	results <- nil
}

func (r *run) addProgress(p *workerProgress) {
	h, err := decodeHist(p.Latency)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.second(p.Sec)
	s.reports++
	s.conns += p.Connections
	s.delivered += p.Delivered
	r.delivered += p.Delivered
	s.errors += p.Errors
	s.lat.Merge(h)
	s.lagP99us = max(s.lagP99us, p.LagP99us)
	r.metrics.observe(p)
	if s.reports == r.sc.Workers {
		r.printUpTo(p.Sec)
	}
}

func (r *run) second(n int) *secondAgg {
	s := r.seconds[n]
	if s == nil {
		s = &secondAgg{lat: newHist()}
		r.seconds[n] = s
	}
	return s
}

// printUpTo writes the progress lines of every complete second up to n.
func (r *run) printUpTo(n int) {
	for ; r.printed < n; r.printed++ {
		s := r.seconds[r.printed+1]
		if s == nil || r.opt.Progress == nil {
			continue
		}
		fmt.Fprintf(r.opt.Progress, "t=%3ds conns=%-6d pub/s=%-7d deliv/s=%-9d p50=%7.2fms p99=%7.2fms errors=%d\n",
			r.printed+1, s.conns, r.pub.perSecond(r.printed+1), s.delivered, ms(s.lat.ValueAtQuantile(50)), ms(s.lat.ValueAtQuantile(99)), s.errors)
	}
}

// sampleServer reads the server's RSS and goroutine count once a second.
func (r *run) sampleServer(ctx context.Context) {
	if r.opt.ServerPID == 0 && r.opt.ServerMetrics == "" {
		return
	}
	hc := &http.Client{Timeout: 900 * time.Millisecond}
	for sec := 1; ; sec++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(r.start.Add(time.Duration(sec) * time.Second))):
		}
		var rss uint64
		var goroutines int
		if r.opt.ServerPID != 0 {
			rss, _ = readRSS(r.opt.ServerPID) // a missed second stays 0
		}
		if r.opt.ServerMetrics != "" {
			goroutines, _ = readGoroutines(ctx, hc, r.opt.ServerMetrics)
		}
		r.mu.Lock()
		r.second(sec).rss = rss
		r.second(sec).goroutines = goroutines
		r.mu.Unlock()
	}
}

// readGoroutines reads go_goroutines from a Prometheus text exposition.
func readGoroutines(ctx context.Context, hc *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("server metrics: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("server metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("server metrics: go_goroutines %q: %w", v, err)
			}
			return int(f), nil
		}
	}
	return 0, fmt.Errorf("server metrics: no go_goroutines at %s", url)
}

// serverStats takes the RSS at the last second with the most connections.
func (r *run) serverStats(rss0 uint64) *ServerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &ServerStats{PID: r.opt.ServerPID, RSSBeforeBytes: rss0, RSSPerConnNote: RSSPerConnNote}
	peak := 0
	for n := 1; n <= len(r.seconds); n++ {
		s := r.seconds[n]
		if s == nil {
			continue
		}
		st.RSSMaxBytes = max(st.RSSMaxBytes, s.rss)
		st.GoroutinesMax = max(st.GoroutinesMax, s.goroutines)
		if s.rss != 0 && s.conns >= peak && s.conns > 0 {
			peak, st.RSSAtPeakBytes = s.conns, s.rss
		}
	}
	if peak > 0 && st.RSSAtPeakBytes > rss0 {
		st.RSSPerConnBytes = float64(st.RSSAtPeakBytes-rss0) / float64(peak)
	}
	return st
}

// readRSS reads a process's resident set size from /proc.
func readRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("server RSS: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("server RSS: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("server RSS: no VmRSS in /proc/%d/status", pid)
}

func (r *run) merge(ws []*workerResult, pub *publisher, end time.Time) (*Result, error) {
	res := &Result{
		Scenario: r.sc.Name, Started: r.start, DurationS: end.Sub(r.start).Seconds(),
		Errors: map[string]uint64{}, Disconnects: map[string]uint64{},
	}
	res.Connections.Target = int(r.sc.MaxConnections())
	lat, conn, sub, lag := newHist(), newHist(), newHist(), newHist()
	var cpu float64
	var firstDial, lastUp int64
	for _, w := range ws {
		if w.FirstDial != 0 && (firstDial == 0 || w.FirstDial < firstDial) {
			firstDial = w.FirstDial
		}
		lastUp = max(lastUp, w.LastUp)
		if w.Err != "" {
			return nil, fmt.Errorf("worker: %s", w.Err)
		}
		res.Connections.Established += w.Established
		res.Connections.Failed += w.Failed
		res.Delivered += w.Delivered
		res.ExpectedDeliveries += w.Expected
		res.Missing += w.Missing
		res.Duplicates += w.Duplicates
		res.OutOfOrder += w.OutOfOrder
		for _, p := range []struct {
			to  *hdr.Histogram
			enc []byte
		}{{lat, w.Latency}, {conn, w.Connect}, {sub, w.Subscribe}, {lag, w.Lag}} {
			h, err := decodeHist(p.enc)
			if err != nil {
				return nil, err
			}
			p.to.Merge(h)
		}
		for k, v := range w.Errors {
			res.Errors[k] += v
		}
		for k, v := range w.Disconnects {
			res.Disconnects[k] += v
		}
		cpu += w.CPUSeconds
	}
	if lastUp > firstDial && firstDial != 0 {
		res.Connections.RatePerS = float64(res.Connections.Established) / time.Duration(lastUp-firstDial).Seconds()
	}
	pubStats := pub.stats()
	res.Published, res.PublishFailed = pubStats.published, pubStats.failed
	for k, v := range pubStats.errors {
		res.Errors[k] += v
	}
	cpu += cpuSeconds() // this process: publisher and coordination
	res.Latency, res.Connect, res.SubscribeLat = percentiles(lat), percentiles(conn), percentiles(sub)
	res.PublishReply = PublishReply{OK: pubStats.replyOK, Refused: pubStats.replyRefused}
	res.Spectrum = spectrum(lat)
	// The headline rates are over the publishing window alone; the drain
	// (waiting for the last deliveries) is reported beside them.
	if window := pubStats.busy; window > 0 {
		res.PublishingWindowS = roundTo(window.Seconds(), 3)
		res.DeliveriesPerSOverPublishingWindow = float64(res.Delivered) / window.Seconds()
		res.PublishedPerSOverPublishingWindow = float64(res.Published) / window.Seconds()
		res.DrainS = roundTo(max(0, r.drainEnd.Sub(pubStats.windowTo).Seconds()), 3)
	}
	// The older fields, as they always were (see Result).
	if span := pubStats.last.Sub(pubStats.first) + r.sc.Drain.D(); res.Published > 0 && span > 0 {
		res.DeliveriesPerS = float64(res.Delivered) / span.Seconds()
		res.PublishedPerS = float64(res.Published) / pubStats.last.Sub(pubStats.first).Seconds()
	}
	res.ClientCPUShare = cpu / (res.DurationS * float64(runtime.NumCPU()))

	r.mu.Lock()
	secs := make([]int, 0, len(r.seconds))
	for n := range r.seconds {
		secs = append(secs, n)
	}
	sort.Ints(secs)
	for _, n := range secs {
		s := r.seconds[n]
		res.Timeline = append(res.Timeline, Second{
			T: n, Connections: s.conns, Published: r.pub.perSecond(n), Delivered: s.delivered,
			P50: ms(s.lat.ValueAtQuantile(50)), P99: ms(s.lat.ValueAtQuantile(99)), P999: ms(s.lat.ValueAtQuantile(99.9)),
			Errors: s.errors, ServerRSS: s.rss, ServerGoroutines: s.goroutines, ClientLagP99: ms(s.lagP99us),
		})
		res.Connections.Peak = max(res.Connections.Peak, s.conns)
	}
	res.Stages = r.stageResults()
	r.mu.Unlock()

	// The bench cannot vouch for latency it measured while late itself.
	if lagP99 := lag.ValueAtQuantile(99); lagP99 > 10_000 {
		res.ClientSaturated = true
		res.SaturationReason = fmt.Sprintf("the bench's own timers fired %.1f ms late at p99 (limit 10 ms)", ms(lagP99))
	} else if res.ClientCPUShare > 0.8 {
		res.ClientSaturated = true
		res.SaturationReason = fmt.Sprintf("the bench used %.0f%% of all cores", 100*res.ClientCPUShare)
	}
	return res, nil
}

// stageResults merges the per-second reports of each stage. Second n covers
// (n-1, n] since the start; a second belongs to the stage it ends in.
func (r *run) stageResults() []StageResult {
	var out []StageResult
	from := 0
	for i, st := range r.sc.Stages {
		var end time.Duration
		for _, s := range r.sc.Stages[:i+1] {
			end += s.Duration.D()
		}
		to := int(end / time.Second)
		sr := StageResult{Stage: i + 1, FromS: from, ToS: to, PublishRate: st.PublishRate.value(st.Duration.D(), st.Duration.D())}
		h := newHist()
		var delivered, published uint64
		for n := from + 1; n <= to; n++ {
			s := r.seconds[n]
			if s == nil {
				continue
			}
			h.Merge(s.lat)
			delivered += s.delivered
			published += r.pub.perSecond(n)
			sr.Connections = s.conns
		}
		if secs := float64(to - from); secs > 0 {
			sr.DeliveriesPerS = float64(delivered) / secs
			sr.PublishedPerS = float64(published) / secs
		}
		sr.P50, sr.P99, sr.P999 = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(99)), ms(h.ValueAtQuantile(99.9))
		out = append(out, sr)
		from = to
	}
	return out
}

// runMetrics is the Prometheus view of a run in progress.
type runMetrics struct {
	reg       *prometheus.Registry
	conns     *prometheus.GaugeVec
	delivered prometheus.Counter
	errors    prometheus.Counter
	p99       prometheus.Gauge
}

func newRunMetrics() *runMetrics {
	m := &runMetrics{
		reg:       prometheus.NewRegistry(),
		conns:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bench_connections", Help: "Connections held, per worker."}, []string{"worker"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "bench_delivered_total", Help: "Publications delivered to subscribers."}),
		errors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "bench_errors_total", Help: "Errors and disconnects seen by the bench."}),
		p99:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "bench_latency_p99_seconds", Help: "Publish→deliver p99 over the last second reported."}),
	}
	m.reg.MustRegister(m.conns, m.delivered, m.errors, m.p99)
	return m
}

func (m *runMetrics) observe(p *workerProgress) {
	m.conns.WithLabelValues(strconv.Itoa(p.Worker)).Set(float64(p.Connections))
	m.delivered.Add(float64(p.Delivered))
	m.errors.Add(float64(p.Errors))
	if h, err := decodeHist(p.Latency); err == nil && h.TotalCount() > 0 {
		m.p99.Set(float64(h.ValueAtQuantile(99)) / 1e6)
	}
}

func (m *runMetrics) serve(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

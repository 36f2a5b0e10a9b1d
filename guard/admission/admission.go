// Package admission decides, from the runtime's own signals, how fast the
// gateway admits new WebSocket sessions and server API calls, and when it
// sheds them.
//
// A controller takes a signals.Reading every Interval: from the runtime the
// scheduler latency p99 over the interval, heap in use against the memory
// limit and the goroutine count; from the gateway the bytes queued for
// clients, slow-consumer disconnects per second, server API calls in
// flight and the publication fan-out p99. Pressure is the largest of those
// readings, each divided by its soft bound. Scheduler latency counts only
// while publications are being fanned out: it stands for their delay, and a
// node with nothing to deliver is not protected by throttling the storm of
// connections that raises it (clients refused and dialling again at once
// would keep it high by themselves, and the limit would fall to MinRate).
//
// The admission rate follows AIMD, as TCP congestion control and Netflix's
// concurrency-limits do. While calm, admission is not limited at all. When
// pressure first reaches 1, the limit starts at 0.7 of the rate the
// controller was admitting over the last interval (what the node was
// doing), or of StartRate when that was less (so that pressure at a quiet
// moment does not choke the ramp-up that follows), and is multiplied by 0.7 again every tick
// the pressure stays (multiplicative decrease, down to MinRate). Once the
// pressure is below 1 it grows by a twentieth of that starting rate a tick
// (additive increase, so a recovered node ramps up over seconds, not at
// once) until it is back there and the controller is calm. AIMD needs no
// model of the node, converges under steady load and backs off fast under
// a storm.
// Past the hard bound of any signal the controller sheds: nothing new is
// admitted until every signal has been below its soft bound for
// RecoverAfter (hysteresis, so it does not flap). Established sessions are
// never touched.
//
// A gateway runs one controller per kind of work, each with its own bounds:
// new sessions, which a storm of connections brings, and server API calls,
// which feed the established subscribers. Shedding new sessions costs the
// established clients nothing, so the session controller sheds at the
// default bounds; the API controller is given higher scheduler-latency
// bounds, so that a connection storm, which raises scheduler latency but is
// not helped by refusing publishes, does not cut the established clients'
// publications, while an API flood (calls in flight, fan-out time) still
// sheds API calls.
package admission

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/guard/signals"
	"github.com/spindlehq/spindle/guard/task"
)

// Config sets the controller's bounds; zero values take the defaults.
type Config struct {
	Kind         string                 // what it admits, "session" or "api": the kind label of its metrics
	Interval     time.Duration          // sampling period; 250 ms
	SchedSoft    time.Duration          // scheduler latency p99 where throttling starts; 10 ms
	SchedHard    time.Duration          // ... and shedding; 100 ms
	HeapSoft     float64                // heap in use / memory limit where throttling starts; 0.80
	HeapHard     float64                // ... and shedding; 0.95
	Goroutines   int                    // goroutines where throttling starts (twice that sheds); 0: not a signal
	QueuedSoft   int64                  // bytes queued for clients where throttling starts (4x sheds); 256 MiB
	SlowSoft     float64                // slow-consumer disconnects per second where throttling starts (5x sheds); 10
	APISoft      int                    // server API calls in flight where throttling starts (4x sheds); 1000
	FanoutSoft   time.Duration          // publication fan-out p99 where throttling starts (10x sheds); 25 ms
	Gateway      func() signals.Gateway // the gateway's own load; nil: those signals are not read
	MinRate      float64                // the least rate while throttling; 50
	StartRate    float64                // the least rate throttling starts from, when less was admitted before; 1000
	RecoverAfter time.Duration          // calm this long ends shedding; 2 s
	Logger       *slog.Logger
	Registry     prometheus.Registerer
}

// State is where the controller is.
type State int

// States, from calm to shedding.
const (
	Calm State = iota
	Throttling
	Shedding
)

func (s State) String() string {
	return [...]string{"calm", "throttling", "shedding"}[s]
}

// Controller is built with New, started with Start, stopped with Stop.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	tasks *task.Group

	mu        sync.Mutex // guards everything below
	state     State
	why       string
	rate      float64 // the limit while throttling or shedding
	ceiling   float64 // the admission rate when throttling began: back there is calm
	admitted  float64 // admissions since the last Observe
	lastAt    time.Time
	tokens    float64
	tokensAt  time.Time
	calmSince time.Time

	sampler signals.Sampler // owned by the sampling goroutine

	mLimit    prometheus.GaugeFunc
	mState    prometheus.GaugeFunc
	mPressure prometheus.Gauge
	mAdmitted prometheus.Counter
	mShed     *prometheus.CounterVec
}

// New returns a calm controller.
func New(cfg Config) *Controller {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Interval, 250*time.Millisecond)
	def(&cfg.SchedSoft, 10*time.Millisecond)
	def(&cfg.SchedHard, 100*time.Millisecond)
	def(&cfg.RecoverAfter, 2*time.Second)
	def(&cfg.FanoutSoft, 25*time.Millisecond)
	if cfg.QueuedSoft <= 0 {
		cfg.QueuedSoft = 256 << 20
	}
	if cfg.SlowSoft <= 0 {
		cfg.SlowSoft = 10
	}
	if cfg.APISoft <= 0 {
		cfg.APISoft = 1000
	}
	if cfg.HeapSoft <= 0 {
		cfg.HeapSoft = 0.80
	}
	if cfg.HeapHard <= 0 {
		cfg.HeapHard = 0.95
	}
	if cfg.MinRate <= 0 {
		cfg.MinRate = 50
	}
	if cfg.StartRate <= 0 {
		cfg.StartRate = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Kind == "" {
		cfg.Kind = "session"
	}
	c := &Controller{cfg: cfg, log: cfg.Logger, tasks: task.NewGroup(context.Background()), rate: math.Inf(1)}
	c.sampler.Gateway = cfg.Gateway
	kind := prometheus.Labels{"kind": cfg.Kind}
	c.mLimit = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spindle_admission_limit", Help: "Admissions per second the controller allows now (+Inf while calm: no limit), by kind.", ConstLabels: kind},
		func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return c.rate })
	c.mState = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spindle_admission_state", Help: "0 calm, 1 throttling, 2 shedding, by kind.", ConstLabels: kind},
		func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return float64(c.state) })
	c.mPressure = prometheus.NewGauge(prometheus.GaugeOpts{Name: "spindle_admission_pressure", Help: "The largest signal over its soft bound (1: throttling starts), by kind.", ConstLabels: kind})
	c.mAdmitted = prometheus.NewCounter(prometheus.CounterOpts{Name: "spindle_admission_admitted_total", Help: "Sessions and API calls admitted, by kind.", ConstLabels: kind})
	c.mShed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spindle_admission_shed_total", Help: "Sessions and API calls refused by admission, by kind and reason.", ConstLabels: kind}, []string{"reason"})
	c.mShed.WithLabelValues("shedding")
	c.mShed.WithLabelValues("throttled")
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(c.mLimit, c.mState, c.mPressure, c.mAdmitted, c.mShed)
	}
	return c
}

// Start samples the runtime until Stop.
func (c *Controller) Start() {
	c.tasks.Every("guard.admission."+c.cfg.Kind, c.cfg.Interval, func(_ context.Context, now time.Time) {
		c.Observe(c.sampler.Read(now))
	})
}

// Stop ends the sampling.
func (c *Controller) Stop() { c.tasks.Stop() }

// Observe moves the controller with one reading of the signals. Start
// calls it every Interval; tests drive it directly.
func (c *Controller) Observe(s signals.Reading) {
	now := s.At
	pressure, why, hard, hardWhy := c.pressure(s)
	c.mPressure.Set(pressure)
	c.mu.Lock()
	defer c.mu.Unlock()
	var rate float64 // admitted per second since the last reading
	if !c.lastAt.IsZero() && now.After(c.lastAt) {
		rate = c.admitted / now.Sub(c.lastAt).Seconds()
	}
	c.admitted, c.lastAt = 0, now
	before := c.state
	if before == Calm && (pressure >= 1 || hard >= 1) {
		c.ceiling = max(rate, c.cfg.StartRate, c.cfg.MinRate)
		c.rate, c.tokens, c.tokensAt = c.ceiling, c.ceiling/4, time.Time{}
	}
	switch {
	case hard >= 1:
		c.state, c.why = Shedding, hardWhy
		c.rate = c.cfg.MinRate
		c.calmSince = time.Time{}
	case c.state == Shedding && pressure >= 1:
		c.calmSince = time.Time{}
	case c.state == Shedding:
		if c.calmSince.IsZero() {
			c.calmSince = now
		}
		if now.Sub(c.calmSince) >= c.cfg.RecoverAfter {
			c.state, c.why = Throttling, "recovering"
		}
	case pressure >= 1:
		c.state, c.why = Throttling, why
		c.rate = max(c.rate*0.7, c.cfg.MinRate)
	case c.state == Throttling:
		c.rate = min(c.rate+c.ceiling/20, c.ceiling)
		if c.rate >= c.ceiling {
			c.state, c.why, c.rate = Calm, "", math.Inf(1)
		}
	}
	if c.state != before {
		c.log.Warn("admission "+c.state.String(), "kind", c.cfg.Kind, "was", before.String(), "why", c.why,
			"rate", math.Round(c.rate), "sched_p99", s.SchedP99, "heap_share", math.Round(s.HeapShare*100)/100, "goroutines", s.Goroutines,
			"queued_bytes", s.QueuedBytes, "slow_per_second", math.Round(s.SlowPerSecond), "api_in_flight", s.APIInFlight, "fanout_p99", s.FanoutP99)
	}
}

// pressure is the largest signal over its soft bound and which, then the
// largest over its hard bound and which.
func (c *Controller) pressure(s signals.Reading) (soft float64, softWhy string, hard float64, hardWhy string) {
	type signal struct {
		value, soft, hard float64 // hard 0: not a shedding signal
		what              string
	}
	var sched float64
	if s.Fanouts > 0 {
		sched = s.SchedP99.Seconds()
	}
	all := []signal{
		{sched, c.cfg.SchedSoft.Seconds(), c.cfg.SchedHard.Seconds(), fmt.Sprintf("scheduler latency p99 %v", s.SchedP99)},
		{s.HeapShare, c.cfg.HeapSoft, c.cfg.HeapHard, fmt.Sprintf("heap at %.0f%% of the memory limit", s.HeapShare*100)},
		{float64(s.QueuedBytes), float64(c.cfg.QueuedSoft), 4 * float64(c.cfg.QueuedSoft), fmt.Sprintf("%d MiB queued for clients", s.QueuedBytes>>20)},
		{s.SlowPerSecond, c.cfg.SlowSoft, 5 * c.cfg.SlowSoft, fmt.Sprintf("%.0f slow consumers disconnected per second", s.SlowPerSecond)},
		{float64(s.APIInFlight), float64(c.cfg.APISoft), 4 * float64(c.cfg.APISoft), fmt.Sprintf("%d API calls in flight", s.APIInFlight)},
		{s.FanoutP99.Seconds(), c.cfg.FanoutSoft.Seconds(), 10 * c.cfg.FanoutSoft.Seconds(), fmt.Sprintf("publication fan-out p99 %v", s.FanoutP99)},
	}
	if c.cfg.Goroutines > 0 {
		g := float64(c.cfg.Goroutines)
		all = append(all, signal{float64(s.Goroutines), g, 2 * g, fmt.Sprintf("%d goroutines", s.Goroutines)})
	}
	for _, g := range all {
		if p := g.value / g.soft; p > soft {
			soft, softWhy = p, g.what
		}
		if p := g.value / g.hard; p > hard {
			hard, hardWhy = p, g.what
		}
	}
	return soft, softWhy, hard, hardWhy
}

// Admit asks for one admission. It returns nil, or an error saying why not
// (overloaded or throttled).
func (c *Controller) Admit() error {
	now := time.Now()
	c.mu.Lock()
	if c.state == Shedding {
		why := c.why
		c.mu.Unlock()
		c.mShed.WithLabelValues("shedding").Inc()
		return fmt.Errorf("overloaded, shedding load: %s", why)
	}
	if c.state == Calm { // no limit while calm: the rate only binds under pressure
		c.admitted++
		c.mu.Unlock()
		c.mAdmitted.Inc()
		return nil
	}
	if !c.tokensAt.IsZero() {
		c.tokens = min(c.tokens+now.Sub(c.tokensAt).Seconds()*c.rate, max(c.rate/4, 1))
	}
	c.tokensAt = now
	if c.tokens < 1 {
		rate := c.rate
		c.mu.Unlock()
		c.mShed.WithLabelValues("throttled").Inc()
		return fmt.Errorf("overloaded, admitting %.0f/s", rate)
	}
	c.tokens--
	c.admitted++
	c.mu.Unlock()
	c.mAdmitted.Inc()
	return nil
}

// Ready is nil unless the controller sheds: then readiness should fail so
// a load balancer sends traffic elsewhere.
func (c *Controller) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == Shedding {
		return fmt.Errorf("shedding load: %s", c.why)
	}
	return nil
}

// State says where the controller is, and why.
func (c *Controller) State() (State, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.why
}

// Package gcpace makes the garbage collector run sooner while the live heap
// grows. A gateway's heap grows by connection state that lives for hours,
// allocated between the garbage of the connects that made it; the garbage
// of the last collection cycle before the growth stopped leaves holes in
// the spans those long-lived objects keep, and a cycle lets the heap grow by
// GOGC percent of what is live. A lower GOGC while the heap grows makes that
// last cycle, and so the holes an idle node keeps, a fraction of the size;
// once the live heap holds still the process's own GOGC is back, and a
// steady node under traffic pays nothing for it. Nor does a node delivering
// to its established clients while new ones arrive: they would wait behind
// the extra collections' mark phases, so while Config.Delivered moves the
// process's own GOGC stays.
package gcpace

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/guard/task"
)

// Config sets up a Pacer; zero fields take the defaults named.
type Config struct {
	// Percent is the GOGC while the live heap grows. A process whose own
	// GOGC is off or not above Percent is left alone.
	Percent  int
	Interval time.Duration // how often the live heap is looked at; 0: 250 ms
	// The live heap grows when it passes the last size it grew to by a
	// 32nd, and at least MinGrowth bytes (0: 512 KiB); it holds still when
	// it has not for Settle (0: 5 s).
	MinGrowth uint64
	Settle    time.Duration
	// Delivered counts the latency-sensitive work done so far (the node's
	// deliveries); while it moves between two looks, the process's own GOGC
	// stays. nil: never busy.
	Delivered func() uint64
	Logger    *slog.Logger
	Registry  prometheus.Registerer // nil: no metrics
}

// Pacer sets the GC percent from the live heap's growth. The GC percent is
// the process's, so a process runs one Pacer. Its state is owned by the one
// goroutine that calls Observe (Start's task, or a test).
type Pacer struct {
	cfg   Config
	log   *slog.Logger
	tasks *task.Group
	base  int              // the process's GOGC when the Pacer was made
	set   func(int) int    // debug.SetGCPercent; tests replace it
	live  []metrics.Sample // /gc/heap/live:bytes

	seen      bool      // Observe has had a first look
	delivered uint64    // Config.Delivered at the last look
	ref       uint64    // the live heap's size at its last growth, or lower when it shrank since
	grewAt    time.Time // the last growth
	pacing    bool      // Percent is in force

	mPercent prometheus.Gauge
	mPaced   prometheus.Counter
}

// New prepares a Pacer; Start begins watching.
func New(cfg Config) *Pacer {
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.MinGrowth == 0 {
		cfg.MinGrowth = 512 << 10
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	p := &Pacer{cfg: cfg, log: cfg.Logger, tasks: task.NewGroup(context.Background()), base: base,
		set: debug.SetGCPercent, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	p.mPercent = prometheus.NewGauge(prometheus.GaugeOpts{Name: "spindle_gc_percent",
		Help: "The GC percent (GOGC) in force: lower while the live heap grows (heap_grow_gc_percent)."})
	p.mPaced = prometheus.NewCounter(prometheus.CounterOpts{Name: "spindle_gc_paced_total",
		Help: "Times the live heap began to grow and the GC percent was lowered."})
	p.mPercent.Set(float64(base))
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(p.mPercent, p.mPaced)
	}
	return p
}

// Enabled reports whether the Pacer would ever change the GC percent.
func (p *Pacer) Enabled() bool { return p.cfg.Percent > 0 && p.base > p.cfg.Percent }

// Start looks at the live heap every Interval until Stop.
func (p *Pacer) Start() {
	if !p.Enabled() {
		return
	}
	p.tasks.Every("guard.gcpace", p.cfg.Interval, func(_ context.Context, now time.Time) {
		metrics.Read(p.live)
		if p.live[0].Value.Kind() == metrics.KindUint64 {
			p.Observe(now, p.live[0].Value.Uint64(), p.busy())
		}
	})
}

// Stop ends the watching and gives the process its own GC percent back.
func (p *Pacer) Stop() {
	p.tasks.Stop()
	if p.pacing {
		p.pacing = false
		p.apply(p.base)
	}
}

// Observe takes the live heap's size at now and sets the GC percent: Percent
// from a growth on, the process's own once the heap has held still for
// Settle, or at once when busy (a growth while busy does not count). It
// returns the percent in force. Start calls it every Interval; tests drive
// it directly.
func (p *Pacer) Observe(now time.Time, live uint64, busy bool) int {
	if !p.Enabled() {
		return p.base
	}
	if !p.seen || busy {
		p.seen, p.ref = true, live
		if p.pacing {
			p.pacing = false
			p.apply(p.base)
			p.log.Debug("deliveries are running: the GC percent is back", "live_bytes", live, "gc_percent", p.base)
		}
		return p.base
	}
	switch {
	case live > p.ref+max(p.ref/32, p.cfg.MinGrowth):
		p.ref, p.grewAt = live, now
		if !p.pacing {
			p.pacing = true
			p.mPaced.Inc()
			p.apply(p.cfg.Percent)
			p.log.Debug("the live heap grows: the GC runs sooner", "live_bytes", live, "gc_percent", p.cfg.Percent)
		}
	case live < p.ref:
		p.ref = live
	}
	if p.pacing && now.Sub(p.grewAt) >= p.cfg.Settle {
		p.pacing = false
		p.apply(p.base)
		p.log.Debug("the live heap holds still: the GC percent is back", "live_bytes", live, "gc_percent", p.base)
	}
	if p.pacing {
		return p.cfg.Percent
	}
	return p.base
}

// busy reports whether Config.Delivered moved since the last look.
func (p *Pacer) busy() bool {
	if p.cfg.Delivered == nil {
		return false
	}
	d := p.cfg.Delivered()
	moved := d != p.delivered
	p.delivered = d
	return moved
}

func (p *Pacer) apply(percent int) {
	p.set(percent)
	p.mPercent.Set(float64(percent))
}

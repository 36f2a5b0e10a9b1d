// Package trim gives the heap's free memory back to the operating system
// once the process has gone quiet after its heap grew. A gateway's heap is
// mostly long-lived connection state; the garbage of a connect burst (TLS
// and WebSocket handshakes, tokens, JSON) would otherwise stay resident,
// because a collection lets the heap reach twice what is live (GOGC=100)
// and the runtime's scavenger keeps what is under that goal.
package trim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/guard/signals"
	"github.com/spindlehq/spindle/guard/task"
)

// Config sets up a Trimmer; zero fields take the defaults named.
type Config struct {
	Interval time.Duration // how often the heap is looked at; 0: 1 s
	// Quiet is how long allocation must stay below QuietRate before a
	// trim; 0: 3 s. QuietRate is in bytes per second of allocation; 0: 1 %
	// of the live heap per second, and at least 1 MiB/s.
	Quiet     time.Duration
	QuietRate float64
	// MinExcess is how far the heap the process holds must exceed the
	// live heap, in bytes, before a trim is worth a collection; 0: a
	// sixteenth of the live heap, and at least 1 MiB.
	MinExcess uint64
	Cooldown  time.Duration // the least time between two trims; 0: 10 s
	// Delivered counts the latency-sensitive work done so far (the node's
	// deliveries); while it moves, the process is not quiet, however little
	// it allocates: a trim's collection would stall that work. nil: never.
	Delivered func() uint64
	Logger    *slog.Logger
	Registry  prometheus.Registerer // nil: no metrics
}

// Heap is one look at the heap, from runtime/metrics.
type Heap struct {
	At       time.Time
	Allocs   uint64 // bytes allocated since the process started
	Live     uint64 // bytes marked live by the last collection
	Retained uint64 // heap bytes the process holds and has not released: objects, unused span space, free pages
	// Delivered is Config.Delivered at the look (0 without one).
	Delivered uint64
}

// Trimmer watches the heap and trims it when it is worth it. Its state is
// owned by the one goroutine that calls Observe (Start's task, or a test).
type Trimmer struct {
	cfg   Config
	log   *slog.Logger
	tasks *task.Group

	prev    Heap
	busyAt  time.Time // when allocation was last above the quiet rate
	trimmed time.Time // the last trim; zero: never
	samples []metrics.Sample
	mTrims  prometheus.Counter
	mFreed  prometheus.Counter
}

// New prepares a Trimmer; Start begins watching.
func New(cfg Config) *Trimmer {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 3 * time.Second
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Trimmer{cfg: cfg, log: cfg.Logger, tasks: task.NewGroup(context.Background())}
	t.mTrims = prometheus.NewCounter(prometheus.CounterOpts{Name: "spindle_heap_trims_total",
		Help: "Times the heap's free memory was given back to the OS after the process went quiet."})
	t.mFreed = prometheus.NewCounter(prometheus.CounterOpts{Name: "spindle_heap_trimmed_bytes_total",
		Help: "Heap bytes the trims gave back to the OS."})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(t.mTrims, t.mFreed)
	}
	return t
}

// Start looks at the heap every Interval until Stop.
func (t *Trimmer) Start() {
	t.tasks.Every("guard.trim", t.cfg.Interval, func(_ context.Context, now time.Time) {
		t.Observe(t.Read(now))
	})
}

// Stop ends the watching and waits for a trim in progress.
func (t *Trimmer) Stop() { t.tasks.Stop() }

var heapNames = []string{
	"/gc/heap/allocs:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// Read takes a look at the heap at now.
func (t *Trimmer) Read(now time.Time) Heap {
	if t.samples == nil {
		t.samples = signals.Samples(heapNames)
	}
	metrics.Read(t.samples)
	v := func(i int) uint64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return t.samples[i].Value.Uint64()
	}
	h := Heap{At: now, Allocs: v(0), Live: v(1), Retained: v(2) + v(3) + v(4)}
	if t.cfg.Delivered != nil {
		h.Delivered = t.cfg.Delivered()
	}
	return h
}

// Observe takes one look at the heap and trims it when the process has
// been quiet (allocating under QuietRate, delivering nothing) for Quiet,
// holds MinExcess more than is live, and did not trim within Cooldown. It
// reports whether it trimmed. Start calls it every Interval; tests drive it
// directly.
func (t *Trimmer) Observe(h Heap) bool {
	prev := t.prev
	t.prev = h
	if prev.At.IsZero() || !h.At.After(prev.At) {
		t.busyAt = h.At
		return false
	}
	rate := float64(h.Allocs-prev.Allocs) / h.At.Sub(prev.At).Seconds()
	if rate > t.quietRate(h) || h.Delivered != prev.Delivered {
		t.busyAt = h.At
		return false
	}
	if h.At.Sub(t.busyAt) < t.cfg.Quiet || (!t.trimmed.IsZero() && h.At.Sub(t.trimmed) < t.cfg.Cooldown) {
		return false
	}
	if h.Retained <= h.Live || h.Retained-h.Live < t.minExcess(h) {
		return false
	}
	start := time.Now()
	debug.FreeOSMemory()
	after := t.Read(h.At)
	t.prev, t.trimmed = after, h.At
	var freed uint64
	if h.Retained > after.Retained {
		freed = h.Retained - after.Retained
	}
	t.mTrims.Inc()
	t.mFreed.Add(float64(freed))
	t.log.Info("heap trimmed after the process went quiet", "held_bytes", h.Retained, "live_bytes", after.Live,
		"freed_bytes", freed, "took", time.Since(start).Round(time.Millisecond))
	return true
}

func (t *Trimmer) quietRate(h Heap) float64 {
	if t.cfg.QuietRate > 0 {
		return t.cfg.QuietRate
	}
	return max(1<<20, float64(h.Live)/100)
}

func (t *Trimmer) minExcess(h Heap) uint64 {
	if t.cfg.MinExcess > 0 {
		return t.cfg.MinExcess
	}
	return max(1<<20, h.Live/16)
}

package gateway

import (
	"math"
	"sync"

	dto "github.com/prometheus/client_model/go"

	"github.com/spindlehq/spindle/guard/signals"
)

// Load reports what the node carries now, for admission control and the
// watchdog: bytes queued for clients, slow consumers disconnected so far,
// and the fan-out histogram (spindle_fanout_seconds). APIInFlight is the
// server API's to fill in.
func (n *Node) Load() signals.Gateway {
	return signals.Gateway{
		QueuedBytes:     n.writers.queued(),
		SlowDisconnects: n.slowTotal.Load(),
		Fanout:          n.fanoutAt.read(n),
	}
}

// fanoutReading keeps the fan-out histogram as last read: the guards read it
// several times a second, and reading a Prometheus histogram allocates, so an
// idle node reads it again only after new observations.
type fanoutReading struct {
	mu   sync.Mutex // guards seen and h
	seen uint64     // n.fanouts when h was read
	h    signals.Histogram
}

// read returns the histogram, read again if anything was observed since.
// The slices returned are never written after.
func (r *fanoutReading) read(n *Node) signals.Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := n.fanouts.Load(); c != r.seen || r.h.Counts == nil {
		r.seen = c // before reading: a later observation makes the next read look again
		r.h = histogram(n.metrics.fanout)
	}
	return r.h
}

// Delivered is the number of publications queued for subscribers since the
// node started.
func (n *Node) Delivered() uint64 { return n.delivered.Load() }

// histogram reads a Prometheus histogram as per-bucket counts.
func histogram(h interface{ Write(*dto.Metric) error }) signals.Histogram {
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return signals.Histogram{}
	}
	bs := m.Histogram.GetBucket()
	out := signals.Histogram{Bounds: make([]float64, 0, len(bs)+1), Counts: make([]uint64, 0, len(bs)+1)}
	var below uint64
	for _, b := range bs {
		out.Bounds = append(out.Bounds, b.GetUpperBound())
		out.Counts = append(out.Counts, b.GetCumulativeCount()-below)
		below = b.GetCumulativeCount()
	}
	out.Bounds = append(out.Bounds, math.Inf(1))
	out.Counts = append(out.Counts, m.Histogram.GetSampleCount()-below)
	return out
}

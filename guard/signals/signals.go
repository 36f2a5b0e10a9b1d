// Package signals reads what admission control and the watchdog decide
// from: the runtime's own measurements (goroutines, heap against the memory
// limit, scheduler latency) through runtime/metrics, and what the gateway
// reports of its load (bytes queued for clients, slow consumers, API calls
// in flight, publication fan-out time).
package signals

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Gateway is what the gateway reports of its own load at one moment.
type Gateway struct {
	QueuedBytes     int64     // bytes waiting in client queues
	SlowDisconnects uint64    // slow consumers disconnected since start
	APIInFlight     int       // server API calls being served
	Fanout          Histogram // cumulative: time from a publication reaching the node to its last local enqueue
}

// Histogram is a cumulative histogram: Counts[i] observations were at most
// Bounds[i] seconds and above Bounds[i-1]; the last bound may be +Inf.
type Histogram struct {
	Bounds []float64
	Counts []uint64
}

// Reading is one look at the process.
type Reading struct {
	At            time.Time
	Goroutines    int
	HeapBytes     uint64        // heap objects in use
	HeapShare     float64       // HeapBytes / the Go memory limit; 0 without a limit
	SchedP99      time.Duration // scheduler latency p99 since the previous reading
	QueuedBytes   int64         // bytes waiting in client queues
	SlowPerSecond float64       // slow-consumer disconnects per second since the previous reading
	APIInFlight   int
	FanoutP99     time.Duration // publication fan-out p99 since the previous reading
	Fanouts       uint64        // publications fanned out since the previous reading
}

// Sampler takes Readings. Rates and percentiles cover the time since its
// previous Read, so each consumer keeps its own Sampler. A Sampler is owned
// by the one goroutine that calls Read.
type Sampler struct {
	Gateway func() Gateway // nil: the gateway fields stay zero

	samples  []metrics.Sample
	sched    Histogram
	spare    []uint64 // the counts array of the reading before sched, reused for the next
	fanout   Histogram
	slow     uint64
	previous time.Time
}

var sampleNames = []string{"/sched/latencies:seconds", "/memory/classes/heap/objects:bytes", "/sched/goroutines:goroutines"}

// Samples returns runtime/metrics samples of names, for metrics.Read.
func Samples(names []string) []metrics.Sample {
	out := make([]metrics.Sample, len(names))
	for i, n := range names {
		out[i].Name = n
	}
	return out
}

// Read takes a reading at now.
func (s *Sampler) Read(now time.Time) Reading {
	if s.samples == nil {
		s.samples = Samples(sampleNames)
	}
	metrics.Read(s.samples)
	r := Reading{At: now}
	if v := s.samples[0].Value; v.Kind() == metrics.KindFloat64Histogram {
		h := fromRuntime(v.Float64Histogram(), s.spare)
		r.SchedP99 = P99Since(s.sched, h)
		s.sched, s.spare = h, s.sched.Counts
	}
	if v := s.samples[1].Value; v.Kind() == metrics.KindUint64 {
		r.HeapBytes = v.Uint64()
		if lim := debug.SetMemoryLimit(-1); lim > 0 && lim < math.MaxInt64 {
			r.HeapShare = float64(r.HeapBytes) / float64(lim)
		}
	}
	if v := s.samples[2].Value; v.Kind() == metrics.KindUint64 {
		r.Goroutines = int(v.Uint64())
	}
	if s.Gateway != nil {
		g := s.Gateway()
		r.QueuedBytes, r.APIInFlight = g.QueuedBytes, g.APIInFlight
		r.FanoutP99 = P99Since(s.fanout, g.Fanout)
		r.Fanouts = CountSince(s.fanout, g.Fanout)
		s.fanout = g.Fanout
		if !s.previous.IsZero() && g.SlowDisconnects >= s.slow {
			if dt := now.Sub(s.previous).Seconds(); dt > 0 {
				r.SlowPerSecond = float64(g.SlowDisconnects-s.slow) / dt
			}
		}
		s.slow = g.SlowDisconnects
	}
	s.previous = now
	return r
}

// fromRuntime converts runtime/metrics' histogram (len(Counts)+1 bucket
// boundaries) to upper bounds with a copy of the counts, made in buf.
func fromRuntime(h *metrics.Float64Histogram, buf []uint64) Histogram {
	return Histogram{Bounds: h.Buckets[1:], Counts: append(buf[:0], h.Counts...)}
}

// CountSince is how many observations cur counted since prev (an empty
// prev: since the start).
func CountSince(prev, cur Histogram) uint64 {
	var n, was uint64
	for _, c := range cur.Counts {
		n += c
	}
	for _, c := range prev.Counts {
		was += c
	}
	if was > n {
		return 0
	}
	return n - was
}

// P99Since is the upper bound of the bucket holding the 99th percentile of
// what cur counted since prev (an empty prev: since the start). An
// unbounded last bucket reports the bound below it.
func P99Since(prev, cur Histogram) time.Duration {
	delta := func(i int) uint64 {
		n := cur.Counts[i]
		if i < len(prev.Counts) && prev.Counts[i] <= n {
			n -= prev.Counts[i]
		}
		return n
	}
	var total uint64
	for i := range cur.Counts {
		total += delta(i)
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(float64(total) * 0.99))
	var seen uint64
	for i := range cur.Counts {
		seen += delta(i)
		if seen >= want {
			hi := cur.Bounds[i]
			if math.IsInf(hi, 1) && i > 0 {
				hi = cur.Bounds[i-1]
			}
			return time.Duration(hi * float64(time.Second))
		}
	}
	return 0
}

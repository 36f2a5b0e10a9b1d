package signals

import (
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// p99 of what a histogram counted between two readings.
func TestP99Since(t *testing.T) {
	b := []float64{0.001, 0.01, 0.1, 1}
	prev := Histogram{Bounds: b, Counts: []uint64{100, 0, 0, 0}}
	cur := Histogram{Bounds: b, Counts: []uint64{198, 0, 0, 2}}
	if got := P99Since(prev, cur); got != time.Second {
		t.Fatalf("p99 %v, want 1s (2 of 100 new samples in the top bucket)", got)
	}
	if got := P99Since(cur, cur); got != 0 {
		t.Fatalf("nothing new: %v", got)
	}
	inf := Histogram{Bounds: []float64{0.001, math.Inf(1)}, Counts: []uint64{0, 5}}
	if got := P99Since(Histogram{}, inf); got != time.Millisecond {
		t.Fatalf("unbounded top bucket: %v, want the bound below it", got)
	}
	// The controllers call it several times a second for the life of the
	// process; on an idle node its garbage would be most of what grows the heap.
	if n := testing.AllocsPerRun(100, func() { P99Since(prev, cur) }); n != 0 {
		t.Errorf("%v allocations per call, want none", n)
	}
}

// A Sampler reads the real runtime, and turns the gateway's totals into
// rates and percentiles over its own interval.
func TestSampler(t *testing.T) {
	g := Gateway{QueuedBytes: 42, APIInFlight: 3, SlowDisconnects: 10,
		Fanout: Histogram{Bounds: []float64{0.001, 0.1, math.Inf(1)}, Counts: []uint64{50, 0, 0}}}
	s := Sampler{Gateway: func() Gateway { return g }}
	t0 := time.Now()
	r := s.Read(t0)
	if r.Goroutines == 0 || r.HeapBytes == 0 {
		t.Fatalf("runtime signals not read: %+v", r)
	}
	if r.QueuedBytes != 42 || r.APIInFlight != 3 || r.SlowPerSecond != 0 {
		t.Fatalf("first reading %+v", r)
	}
	g.SlowDisconnects = 30
	g.Fanout.Counts = []uint64{50, 10, 0}
	r = s.Read(t0.Add(2 * time.Second))
	if r.SlowPerSecond != 10 {
		t.Fatalf("slow consumers %v/s, want 10 (20 over 2 s)", r.SlowPerSecond)
	}
	if r.FanoutP99 != 100*time.Millisecond || r.Fanouts != 10 {
		t.Fatalf("fan-out p99 %v of %d, want 100ms of 10 (only the new ones count)", r.FanoutP99, r.Fanouts)
	}
	if r = s.Read(t0.Add(3 * time.Second)); r.Fanouts != 0 || r.FanoutP99 != 0 {
		t.Fatalf("no fan-out since: %d, p99 %v", r.Fanouts, r.FanoutP99)
	}
}

// Reading the runtime's signals makes no garbage once the Sampler has its
// buffers: the controllers and the watchdog read several times a second for
// the life of the process, and on an idle node that garbage is what grows the
// heap between trims.
func TestSamplerReadsWithoutGarbage(t *testing.T) {
	var s Sampler
	s.Read(time.Now())
	s.Read(time.Now())
	if n := testing.AllocsPerRun(50, func() { s.Read(time.Now()) }); n != 0 {
		t.Errorf("%v allocations per Read, want none", n)
	}
}

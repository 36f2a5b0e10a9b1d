package admission

import (
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Unix(1000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// Pressure over the soft bound throttles and the rate falls
// multiplicatively; calm raises it additively back to the maximum.
func TestAIMD(t *testing.T) {
	c := New(Config{MaxRate: 1000, MinRate: 10})
	c.Observe(at(0), Signals{SchedP99: 20 * time.Millisecond}) // 2x the soft bound
	if st, _ := c.State(); st != Throttling || c.rate != 700 {
		t.Fatalf("after pressure: %v at %v/s", st, c.rate)
	}
	for i := 1; i <= 20; i++ {
		c.Observe(at(250*i), Signals{SchedP99: 20 * time.Millisecond})
	}
	if c.rate != 10 {
		t.Fatalf("rate %v under steady pressure, want the minimum 10", c.rate)
	}
	for i := 21; i <= 60; i++ {
		c.Observe(at(250*i), Signals{SchedP99: time.Millisecond})
	}
	if st, _ := c.State(); st != Calm || c.rate != 1000 {
		t.Fatalf("after calm: %v at %v/s", st, c.rate)
	}
}

// Past the hard bound it sheds: nothing is admitted, readiness fails; it
// recovers only after a whole RecoverAfter of calm, and a relapse resets it.
func TestShedAndHysteresis(t *testing.T) {
	c := New(Config{RecoverAfter: time.Second})
	c.Observe(at(0), Signals{HeapShare: 0.97})
	if err := c.Admit("session"); err == nil || c.Ready() == nil {
		t.Fatal("admitted while shedding")
	}
	c.Observe(at(250), Signals{})
	c.Observe(at(750), Signals{HeapShare: 0.9}) // over soft again: the calm clock restarts
	c.Observe(at(1000), Signals{})
	c.Observe(at(1750), Signals{})
	if st, _ := c.State(); st != Shedding {
		t.Fatalf("left shedding after %v of calm: %v", 750*time.Millisecond, st)
	}
	c.Observe(at(2100), Signals{})
	if st, _ := c.State(); st != Throttling || c.Ready() != nil {
		t.Fatalf("after a whole second of calm: %v", st)
	}
}

// The admission rate is a token bucket at the controller's rate.
func TestAdmitRate(t *testing.T) {
	c := New(Config{MaxRate: 40})
	if c.Admit("api") != nil {
		t.Fatal("refused while calm")
	}
	c.Observe(at(0), Signals{SchedP99: 12 * time.Millisecond}) // throttling: 28/s
	admitted := 0
	for range 100 {
		if c.Admit("api") == nil {
			admitted++
		}
	}
	if admitted < 3 || admitted > 12 {
		t.Fatalf("%d of 100 at once admitted at 28/s (burst a quarter second)", admitted)
	}
}

// p99 of what a histogram counted between two readings.
func TestP99Since(t *testing.T) {
	b := []float64{0, 0.001, 0.01, 0.1, 1}
	prev := &metrics.Float64Histogram{Counts: []uint64{100, 0, 0, 0}, Buckets: b}
	cur := &metrics.Float64Histogram{Counts: []uint64{198, 0, 0, 2}, Buckets: b}
	if got := p99Since(prev, cur); got != time.Second {
		t.Fatalf("p99 %v, want 1s (2 of 100 new samples in the top bucket)", got)
	}
	if got := p99Since(cur, cur); got != 0 {
		t.Fatalf("nothing new: %v", got)
	}
}

// The controller samples the real runtime.
func TestRun(t *testing.T) {
	c := New(Config{Interval: 10 * time.Millisecond})
	s := c.read()
	if s.Goroutines == 0 {
		t.Fatalf("signals %+v", s)
	}
	c.Start()
	c.Stop()
}

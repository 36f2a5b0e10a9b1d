package admission

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/guard/signals"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Unix(1000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// Pressure over the soft bound throttles, starting from the rate the
// controller was admitting, and the rate falls multiplicatively; calm
// raises it additively back to where it started, and then it is calm.
func TestAIMD(t *testing.T) {
	c := New(Config{MinRate: 10, StartRate: 100})
	c.Observe(signals.Reading{At: at(-250)})
	for range 250 { // 1,000/s over the interval
		if err := c.Admit(); err != nil {
			t.Fatal(err)
		}
	}
	c.Observe(signals.Reading{At: at(0), SchedP99: 20 * time.Millisecond, Fanouts: 1}) // 2x the soft bound
	if st, _ := c.State(); st != Throttling || c.rate != 700 {
		t.Fatalf("after pressure: %v at %v/s, want throttling at 0.7 of 1,000/s", st, c.rate)
	}
	for i := 1; i <= 20; i++ {
		c.Observe(signals.Reading{At: at(250 * i), SchedP99: 20 * time.Millisecond, Fanouts: 1})
	}
	if c.rate != 10 {
		t.Fatalf("rate %v under steady pressure, want the minimum 10", c.rate)
	}
	for i := 21; i <= 60; i++ {
		c.Observe(signals.Reading{At: at(250 * i), SchedP99: time.Millisecond, Fanouts: 1})
	}
	if st, _ := c.State(); st != Calm || c.Admit() != nil {
		t.Fatalf("after calm: %v at %v/s", st, c.rate)
	}
}

// Scheduler latency is the delay of deliveries: with no publication fanned
// out it throttles nothing, however high, while the other signals still do.
func TestSchedLatencyOnlyWithFanout(t *testing.T) {
	c := New(Config{})
	c.Observe(signals.Reading{At: at(0)})
	c.Observe(signals.Reading{At: at(250), SchedP99: time.Second})
	if st, why := c.State(); st != Calm || c.Admit() != nil {
		t.Fatalf("a connection storm on a node with nothing to deliver: %v (%s), want calm", st, why)
	}
	c.Observe(signals.Reading{At: at(500), SchedP99: time.Second, Fanouts: 3})
	if st, _ := c.State(); st != Shedding {
		t.Fatalf("the same latency while publications are fanned out: %v, want shedding", st)
	}
	c = New(Config{})
	c.Observe(signals.Reading{At: at(0), SchedP99: time.Second, HeapShare: 0.9})
	if st, why := c.State(); st != Throttling || why != "heap at 90% of the memory limit" {
		t.Fatalf("heap pressure without fan-out: %v (%s), want throttling for the heap", st, why)
	}
}

// Past the hard bound it sheds: nothing is admitted, readiness fails; it
// recovers only after a whole RecoverAfter of calm, and a relapse resets it.
func TestShedAndHysteresis(t *testing.T) {
	c := New(Config{RecoverAfter: time.Second})
	c.Observe(signals.Reading{At: at(0), HeapShare: 0.97})
	if err := c.Admit(); err == nil || c.Ready() == nil {
		t.Fatal("admitted while shedding")
	}
	c.Observe(signals.Reading{At: at(250)})
	c.Observe(signals.Reading{At: at(750), HeapShare: 0.9}) // over soft again: the calm clock restarts
	c.Observe(signals.Reading{At: at(1000)})
	c.Observe(signals.Reading{At: at(1750)})
	if st, _ := c.State(); st != Shedding {
		t.Fatalf("left shedding after %v of calm: %v", 750*time.Millisecond, st)
	}
	c.Observe(signals.Reading{At: at(2100)})
	if st, _ := c.State(); st != Throttling || c.Ready() != nil {
		t.Fatalf("after a whole second of calm: %v", st)
	}
}

// The admission rate is a token bucket at the controller's rate.
func TestAdmitRate(t *testing.T) {
	c := New(Config{MinRate: 5, StartRate: 5})
	c.Observe(signals.Reading{At: at(-250)})
	for range 10 { // 40/s over the interval
		if c.Admit() != nil {
			t.Fatal("refused while calm")
		}
	}
	c.Observe(signals.Reading{At: at(0), SchedP99: 12 * time.Millisecond, Fanouts: 1}) // throttling: 28/s
	admitted := 0
	for range 100 {
		if c.Admit() == nil {
			admitted++
		}
	}
	if admitted < 3 || admitted > 12 {
		t.Fatalf("%d of 100 at once admitted at 28/s (burst a quarter second)", admitted)
	}
}

// The controller samples the real runtime.
func TestRun(t *testing.T) {
	c := New(Config{Interval: 10 * time.Millisecond})
	s := c.sampler.Read(time.Now())
	if s.Goroutines == 0 {
		t.Fatalf("signals %+v", s)
	}
	c.Start()
	c.Stop()
}

// The gateway's own signals throttle past their soft bound and shed past
// their hard bound, and the reason names the signal.
func TestGatewaySignals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		soft, hard signals.Reading
		why        string
	}{
		{"queued", signals.Reading{QueuedBytes: 300 << 20}, signals.Reading{QueuedBytes: 1100 << 20}, "MiB queued for clients"},
		{"slow", signals.Reading{SlowPerSecond: 12}, signals.Reading{SlowPerSecond: 60}, "slow consumers disconnected per second"},
		{"api", signals.Reading{APIInFlight: 1500}, signals.Reading{APIInFlight: 4500}, "API calls in flight"},
		{"fanout", signals.Reading{FanoutP99: 50 * time.Millisecond}, signals.Reading{FanoutP99: 300 * time.Millisecond}, "fan-out p99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Config{})
			tc.soft.At = at(0)
			c.Observe(tc.soft)
			if st, why := c.State(); st != Throttling || !strings.Contains(why, tc.why) {
				t.Fatalf("over the soft bound: %v (%s)", st, why)
			}
			tc.hard.At = at(250)
			c.Observe(tc.hard)
			if st, why := c.State(); st != Shedding || !strings.Contains(why, tc.why) {
				t.Fatalf("over the hard bound: %v (%s)", st, why)
			}
		})
	}
}

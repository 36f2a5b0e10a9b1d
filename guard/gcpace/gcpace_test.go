package gcpace

import (
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const mib = 1 << 20

// fake is a Pacer whose process GOGC is base and whose settings are recorded.
func fake(cfg Config, base int) (*Pacer, *[]int) {
	p := New(cfg)
	p.base = base
	var set []int
	p.set = func(v int) int { set = append(set, v); return 0 }
	return p, &set
}

// The percent drops at the first growth, stays while the heap keeps
// growing, and comes back once the heap held still for Settle, or at once
// while deliveries run.
func TestPacesWhileGrowing(t *testing.T) {
	p, set := fake(Config{Percent: 25, Settle: 5 * time.Second}, 100)
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	steps := []struct {
		ms   int
		live uint64
		busy bool
		want int
	}{
		{0, 20 * mib, false, 100},       // the first look: a size to grow from
		{250, 20*mib + 100, false, 100}, // noise
		{500, 22 * mib, false, 25},      // growth
		{3000, 30 * mib, false, 25},     // more
		{7000, 30 * mib, false, 25},     // still within Settle of the last growth
		{8000, 30 * mib, false, 100},    // held still for 5 s
		{9000, 24 * mib, false, 100},    // shrank: the next growth counts from here
		{9250, 24*mib + 1, false, 100},  // not a growth
		{9500, 25*mib + 1, false, 25},   // a growth from the lower size
		{14500, 25*mib + 1, false, 100}, // settled again
		{15000, 30 * mib, false, 25},    // a growth
		{15250, 31 * mib, true, 100},    // deliveries: back at once
		{15500, 31 * mib, false, 100},   // the growth while busy does not count
		{15750, 33 * mib, false, 25},    // a growth after
	}
	for _, s := range steps {
		if got := p.Observe(at(s.ms), s.live, s.busy); got != s.want {
			t.Fatalf("at %d ms with %d live bytes: percent %d, want %d", s.ms, s.live, got, s.want)
		}
	}
	if want := []int{25, 100, 25, 100, 25, 100, 25}; !slices.Equal(*set, want) {
		t.Errorf("set %v, want %v", *set, want)
	}
}

// A process with GOGC off, or at or below Percent already, is left alone.
func TestLeavesLowGOGCAlone(t *testing.T) {
	for _, base := range []int{-1, 10, 25} {
		p, set := fake(Config{Percent: 25}, base)
		p.Observe(time.Now(), 10*mib, false)
		if got := p.Observe(time.Now().Add(time.Second), 100*mib, false); got != base || len(*set) != 0 {
			t.Errorf("base %d: percent %d, settings %v; want it left alone", base, got, *set)
		}
	}
}

var sink [][]byte

// On a real heap: the percent drops while the heap grows and the process's
// own is back once it stops, and after Stop.
func TestPacesTheRealHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer func() { sink = nil }()
	p := New(Config{Percent: 30, Interval: 20 * time.Millisecond, Settle: 300 * time.Millisecond})
	p.Start()
	defer p.Stop()
	current := func() int { v := debug.SetGCPercent(-1); debug.SetGCPercent(v); return v }
	deadline := time.Now().Add(20 * time.Second)
	for current() != 30 {
		if time.Now().After(deadline) {
			t.Fatalf("the heap grew to %d MiB and the percent stayed %d", len(sink), current())
		}
		sink = append(sink, make([]byte, mib))
		runtime.GC() // the live heap's size is known after a collection
		time.Sleep(5 * time.Millisecond)
	}
	for current() != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("the heap held still and the percent stayed %d", current())
		}
		time.Sleep(20 * time.Millisecond)
	}
	sink = append(sink, make([]byte, 8*mib))
	runtime.GC()
	for current() != 30 {
		if time.Now().After(deadline) {
			t.Fatalf("the heap grew again and the percent stayed %d", current())
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Stop()
	if v := current(); v != 100 {
		t.Errorf("after Stop the percent is %d, want the process's 100", v)
	}
}

// Busy means the delivery count moved since the last look.
func TestBusyWhileDelivering(t *testing.T) {
	var n uint64
	p := New(Config{Percent: 25, Delivered: func() uint64 { return n }})
	if p.busy() {
		t.Fatal("busy with nothing delivered")
	}
	n = 5
	if !p.busy() {
		t.Fatal("not busy after 5 deliveries")
	}
	if p.busy() {
		t.Fatal("busy with no delivery since the last look")
	}
	if (&Pacer{}).busy() {
		t.Fatal("busy without a delivery count")
	}
}

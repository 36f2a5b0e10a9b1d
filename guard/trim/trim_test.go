package trim

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var sink [][]byte

// A heap that grew with garbage is trimmed once the process is quiet: the
// heap it holds falls by most of the garbage.
func TestTrimsGarbageOnceQuiet(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collection sees the garbage before the trim
	runtime.GC()
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil

	tr := New(Config{})
	t0 := time.Now()
	before := tr.Read(t0)
	if tr.Observe(before) {
		t.Fatal("trimmed at the first look")
	}
	if tr.Observe(tr.Read(t0.Add(time.Second))) {
		t.Fatal("trimmed before the process was quiet for 3 s")
	}
	if !tr.Observe(tr.Read(t0.Add(5 * time.Second))) {
		t.Fatalf("no trim after 5 quiet seconds holding %d bytes with %d live", before.Retained, before.Live)
	}
	after := tr.Read(t0.Add(6 * time.Second))
	if before.Retained < after.Retained+48<<20 {
		t.Errorf("held %d bytes before the trim, %d after: want at least 48 MiB less", before.Retained, after.Retained)
	}
	if tr.Observe(tr.Read(t0.Add(9 * time.Second))) {
		t.Error("trimmed again within the cooldown")
	}
}

func TestNoTrim(t *testing.T) {
	const mib = 1 << 20
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name  string
		heaps []Heap
	}{
		{"allocating", []Heap{
			{At: at(0), Allocs: 0, Live: 20 * mib, Retained: 60 * mib},
			{At: at(5), Allocs: 50 * mib, Live: 20 * mib, Retained: 60 * mib},
			{At: at(10), Allocs: 100 * mib, Live: 20 * mib, Retained: 60 * mib},
		}},
		{"busy a moment ago", []Heap{
			{At: at(0), Allocs: 0, Live: 20 * mib, Retained: 60 * mib},
			{At: at(1), Allocs: 50 * mib, Live: 20 * mib, Retained: 60 * mib},
			{At: at(3), Allocs: 50 * mib, Live: 20 * mib, Retained: 60 * mib},
		}},
		// 10,000 subscribers at a few publications a second allocate
		// under the quiet rate; a trim then stalled their deliveries for
		// 50-110 ms.
		{"delivering", []Heap{
			{At: at(0), Allocs: 0, Live: 20 * mib, Retained: 60 * mib, Delivered: 1},
			{At: at(5), Allocs: mib, Live: 20 * mib, Retained: 60 * mib, Delivered: 2},
			{At: at(10), Allocs: 2 * mib, Live: 20 * mib, Retained: 60 * mib, Delivered: 3},
			{At: at(15), Allocs: 3 * mib, Live: 20 * mib, Retained: 60 * mib, Delivered: 4},
		}},
		{"little to gain", []Heap{
			{At: at(0), Allocs: 0, Live: 20 * mib, Retained: 21 * mib},
			{At: at(5), Allocs: 0, Live: 20 * mib, Retained: 21 * mib},
			{At: at(10), Allocs: 0, Live: 20 * mib, Retained: 21 * mib},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Config{})
			for _, h := range tc.heaps {
				if tr.Observe(h) {
					t.Fatalf("trimmed at %v", h.At.Sub(t0))
				}
			}
		})
	}
}

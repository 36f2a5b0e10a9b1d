package goroutines

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// genDump writes a debug=2 style dump of n goroutines shaped like a busy
// server: a few huge groups (a leak, connection readers), many small ones,
// stack depths 6-40 frames (mean about 15), per-goroutine argument values,
// wait durations and "created by" lines. It is deterministic for a seed.
func genDump(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 42))
	type frame struct {
		fn, file string
		line     int
		off      int
	}
	std := []string{"net/http.(*conn).serve", "net/http.(*connReader).Read", "bufio.(*Reader).fill", "bufio.(*Reader).ReadSlice",
		"net.(*conn).Read", "net.(*netFD).Read", "internal/poll.(*FD).Read", "internal/poll.(*pollDesc).waitRead",
		"internal/poll.(*pollDesc).wait", "internal/poll.runtime_pollWait", "sync.(*Mutex).Lock", "sync.(*WaitGroup).Wait",
		"context.(*cancelCtx).Done", "encoding/json.(*Decoder).Decode", "crypto/tls.(*Conn).Read", "io.ReadAtLeast", "io.ReadFull"}
	pool := make([]frame, 0, 400)
	for i := 0; i < 400; i++ {
		var f frame
		if i < len(std) {
			pkg := PackageOf(std[i])
			f = frame{fn: std[i], file: "/usr/local/go/src/" + pkg + "/file" + strconv.Itoa(i%7) + ".go"}
		} else {
			pkg := "github.com/acme/gateway/internal/svc" + strconv.Itoa(i%23)
			f = frame{fn: pkg + ".(*Handler" + strconv.Itoa(i%11) + ").Method" + strconv.Itoa(i),
				file: "/home/build/go/pkg/mod/github.com/acme/gateway@v1.42.0/internal/svc" + strconv.Itoa(i%23) + "/handler" + strconv.Itoa(i%5) + ".go"}
		}
		f.line, f.off = 20+rng.IntN(900), rng.IntN(0x400)
		pool = append(pool, f)
	}
	states := []string{"chan send", "chan receive", "select", "IO wait", "sync.Mutex.Lock", "semacquire", "sleep", "sync.Cond.Wait", "runnable", "sync.WaitGroup.Wait"}
	type tmpl struct {
		state   string
		frames  []frame
		creator frame
	}
	tmpls := make([]tmpl, 300)
	for i := range tmpls {
		depth := 6 + rng.IntN(12) + rng.IntN(12) + rng.IntN(12) // 6..39, mean ~22
		if i%3 == 0 {
			depth = 6 + rng.IntN(8)
		}
		t := tmpl{state: states[rng.IntN(len(states))], creator: pool[len(std)+rng.IntN(len(pool)-len(std))]}
		t.frames = append(t.frames, frame{fn: "runtime.gopark", file: "/usr/local/go/src/runtime/proc.go", line: 462, off: 0xce})
		for d := 1; d < depth; d++ {
			t.frames = append(t.frames, pool[rng.IntN(len(pool))])
		}
		tmpls[i] = t
	}
	// Group sizes: 35% one leak, 20% connection readers, the rest Zipf-like.
	pick := func() int {
		x := rng.Float64()
		switch {
		case x < 0.35:
			return 0
		case x < 0.55:
			return 1
		}
		return 2 + int(float64(len(tmpls)-2)*rng.Float64()*rng.Float64())
	}
	b := make([]byte, 0, n*2200)
	for id := 1; id <= n; id++ {
		t := &tmpls[pick()]
		b = append(b, "goroutine "...)
		b = strconv.AppendInt(b, int64(id), 10)
		b = append(b, " ["...)
		b = append(b, t.state...)
		if w := rng.IntN(40); w > 20 {
			b = append(b, ", "...)
			b = strconv.AppendInt(b, int64(w), 10)
			b = append(b, " minutes"...)
		}
		b = append(b, "]:\n"...)
		for j, f := range t.frames {
			b = append(b, f.fn...)
			switch j % 3 {
			case 0:
				b = append(b, "(0xc000"...)
				b = strconv.AppendUint(b, uint64(rng.Uint32()), 16)
				b = append(b, ", {0xc00"...)
				b = strconv.AppendUint(b, uint64(rng.Uint32()), 16)
				b = append(b, ", 0x10})\n"...)
			case 1:
				b = append(b, "(...)\n"...)
			default:
				b = append(b, "(0x"...)
				b = strconv.AppendUint(b, uint64(rng.IntN(1<<20)), 16)
				b = append(b, "?)\n"...)
			}
			b = append(b, '\t')
			b = append(b, f.file...)
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(f.line), 10)
			if j%3 != 1 {
				b = append(b, " +0x"...)
				b = strconv.AppendUint(b, uint64(f.off), 16)
			}
			b = append(b, '\n')
		}
		b = append(b, "created by "...)
		b = append(b, t.creator.fn...)
		b = append(b, " in goroutine "...)
		b = strconv.AppendInt(b, int64(1+rng.IntN(id)), 10)
		b = append(b, "\n\t"...)
		b = append(b, t.creator.file...)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(t.creator.line), 10)
		b = append(b, " +0x"...)
		b = strconv.AppendUint(b, uint64(t.creator.off), 16)
		b = append(b, "\n\n"...)
	}
	return b
}

var (
	benchOnce sync.Once
	benchData []byte
)

// BenchmarkParseGroup parses and groups (loose) a generated dump of 200,000
// goroutines. Compare MB/s with the 150 MB/s per core goal and alloc/input
// (bytes allocated per input byte) with the 2x memory goal; run with
// -cpu 1 for a per-core figure. Timings are not asserted.
func BenchmarkParseGroup(b *testing.B) {
	benchOnce.Do(func() { benchData = genDump(200_000, 1) })
	data := benchData
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	iters := 0
	for b.Loop() {
		r, err := Analyze(bytes.NewReader(data), Options{})
		if err != nil || r.Total != 200_000 || r.SkippedLines != 0 {
			b.Fatalf("total %d skipped %d err %v", r.Total, r.SkippedLines, err)
		}
		iters++
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(iters)/float64(len(data)), "alloc/input")
	b.ReportMetric(float64(len(data))/1e6, "input-MB")
}

// BenchmarkParseGroupExact is the same with exact grouping (argument values kept).
func BenchmarkParseGroupExact(b *testing.B) {
	benchOnce.Do(func() { benchData = genDump(200_000, 1) })
	data := benchData
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Analyze(bytes.NewReader(data), Options{Mode: Exact}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPeakMemory checks the 2x-input memory bound on the generated dump
// (heap in use while analyzing, sampled after the analysis, excluding the
// input buffer), and that the report is complete.
func TestPeakMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a large dump")
	}
	data := genDump(50_000, 7)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r, err := Analyze(bytes.NewReader(data), Options{})
	runtime.ReadMemStats(&after)
	if err != nil || r.Total != 50_000 || r.SkippedLines != 0 {
		t.Fatalf("total %d skipped %d err %v", r.Total, r.SkippedLines, err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	if alloc > 2*uint64(len(data)) {
		t.Errorf("allocated %d bytes for a %d-byte dump (> 2x)", alloc, len(data))
	}
	t.Logf("input %d bytes, allocated %d (%.3fx), %d groups", len(data), alloc, float64(alloc)/float64(len(data)), len(r.Groups))
}

// oneGroup is a dump of n identical goroutines (ids consecutive), for the
// streaming check.
func oneGroup(n int) []byte {
	var b bytes.Buffer
	for id := 1; id <= n; id++ {
		b.WriteString("goroutine ")
		b.WriteString(strconv.Itoa(id + 100))
		b.WriteString(" [chan send, 3 minutes]:\nmain.(*hub).deliver(0xc000")
		b.WriteString(strconv.FormatInt(int64(id), 16))
		b.WriteString(", {0xc0001, 0x2})\n\t/src/app/hub.go:26 +0x2d\nmain.(*hub).publisher.gowrap1()\n\t/src/app/hub.go:33 +0x25\ncreated by main.(*hub).publisher in goroutine 7\n\t/src/app/hub.go:33 +0x8e\n\n")
	}
	return b.Bytes()
}

// TestStreamingMemory: memory retained by the analysis must not grow with
// the number of goroutines in one group.
func TestStreamingMemory(t *testing.T) {
	retained := func(n int) (uint64, *Report) {
		data := oneGroup(n)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		p := NewParser(bytes.NewReader(data))
		a := NewAnalyzer(Options{})
		for p.Next() {
			a.Add(p.Goroutine())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		r := a.Report(p.Dump())
		runtime.KeepAlive(data)
		runtime.KeepAlive(a)
		runtime.KeepAlive(p)
		return after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc), r
	}
	small, rs := retained(1_000)
	big, rb := retained(100_000)
	if rs.Groups[0].Count != 1_000 || rb.Groups[0].Count != 100_000 || len(rb.Groups) != 1 {
		t.Fatalf("groups %+v / %+v", rs.Groups, rb.Groups)
	}
	if big > small+64<<10 {
		t.Errorf("retained %d bytes for 100k goroutines vs %d for 1k: memory grows with group size", big, small)
	}
	t.Logf("retained: 1k=%d bytes 100k=%d bytes", small, big)
}

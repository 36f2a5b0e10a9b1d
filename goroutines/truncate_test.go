package goroutines

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestDumpCutAtRuntimeLimit: a program whose debug=2 dump passes 64 MiB gets
// it cut by the runtime (runtime/pprof.writeGoroutineStacks stops at a full
// 64 MiB buffer, mid-line); the report says so and counts what it saw.
func TestDumpCutAtRuntimeLimit(t *testing.T) {
	dump := runProg(t, "bigdump", "-n", "5000", "-out", "debug2")
	if len(dump) != DebugLimit {
		t.Fatalf("dump is %d bytes, want the runtime's limit %d", len(dump), DebugLimit)
	}
	r := analyzeBytes(t, dump, Loose)
	if r.Truncated == nil || r.Truncated.Bytes != DebugLimit || !strings.Contains(r.Truncated.Reason, "64 MiB debug=2 limit") {
		t.Fatalf("truncated = %+v", r.Truncated)
	}
	if r.Bytes != DebugLimit || r.Total < 1000 || r.Total >= 5001 {
		t.Errorf("bytes %d total %d, want all bytes and fewer than the 5001 goroutines", r.Bytes, r.Total)
	}
	if r.Partial {
		t.Errorf("a cut dump read to its end is not partial: %q", r.PartialReason)
	}
	// The same dump saved after a few lines of log is still at the limit:
	// its size counts from its first goroutine header. (Whether its last
	// goroutine also looks cut depends on where the runtime's cut fell: a
	// cut inside a line number cannot be told, see TestCutPoints.)
	r = analyzeBytes(t, append([]byte("log line\nanother\n"), dump...), Loose)
	if r.Truncated == nil || !strings.Contains(r.Truncated.Reason, fmt.Sprintf("dump is %d bytes, the runtime's 64 MiB debug=2 limit", DebugLimit)) {
		t.Errorf("with log lines before: truncated = %+v", r.Truncated)
	}
	// debug=1 of the same program is not cut and counts them all.
	r = analyzeBytes(t, runProg(t, "bigdump", "-n", "5000", "-out", "debug1"), Loose)
	if r.Truncated != nil || r.DeclaredTotal < 5001 || r.Total != r.DeclaredTotal {
		t.Errorf("debug1: truncated %+v total %d declared %d", r.Truncated, r.Total, r.DeclaredTotal)
	}
}

// TestPartialGzip: a gzip file cut in half is analyzed as far as it goes and
// marked partial, with the reason.
func TestPartialGzip(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(runDump(t, "broadcast", "debug2"))
	zw.Close()
	half := gz.Bytes()[:gz.Len()/2]
	in, err := Decompress(bytes.NewReader(half))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Analyze(in, Options{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
	if r == nil || !r.Partial || !strings.Contains(r.PartialReason, "unexpected EOF") || r.Total == 0 || r.Total >= 42 {
		t.Fatalf("report %+v", r)
	}
}

// TestCutPoints: a real dump cut at each kind of line is reported cut
// mid-stack; the whole dump, with or without its last line ending, is not.
func TestCutPoints(t *testing.T) {
	dump := runDump(t, "broadcast", "debug2")
	lines := strings.SplitAfter(string(dump), "\n")
	at := func(prefix string) int { // index of the last line starting with prefix
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.HasPrefix(lines[i], prefix) {
				return i
			}
		}
		t.Fatalf("no line %q", prefix)
		return 0
	}
	upTo := func(i int) string { return strings.Join(lines[:i+1], "") }
	for _, c := range []struct {
		name string
		in   string
		cut  bool
	}{
		{"whole", string(dump), false},
		{"no final line ending", strings.TrimRight(string(dump), "\n"), false},
		{"after a header", upTo(at("goroutine ")), true},
		{"after a function line", upTo(at("main.(*hub).deliver(")), true},
		{"inside a function line", upTo(at("main.(*hub).deliver("))[:len(upTo(at("main.(*hub).deliver(")))-5], true},
		{"after created by", upTo(at("created by ")), true},
		// Cut inside the file name; a cut inside the line number or offset
		// leaves a location line that looks whole and cannot be told.
		{"inside a location line", upTo(at("created by ") + 1)[:len(upTo(at("created by ")+1))-15], true},
	} {
		r := analyzeBytes(t, []byte(c.in), Loose)
		if got := r.Truncated != nil; got != c.cut || (c.cut && !strings.Contains(r.Truncated.Reason, "cut mid-stack")) {
			t.Errorf("%s: truncated = %+v, want cut %v", c.name, r.Truncated, c.cut)
		}
	}
}

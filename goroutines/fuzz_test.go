package goroutines

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes through the parser, analyzer and diff.
// The seed corpus lives in testdata/fuzz/FuzzParse (real dump fragments).
func FuzzParse(f *testing.F) {
	f.Add([]byte("goroutine 1 [running]:\nmain.main()\n\t/x/main.go:3 +0x1d\n"))
	f.Add([]byte("goroutine profile: total 1\n1 @ 0x1 0x2\n# labels: {\"a\":\"b\"}\n#\t0x1\tmain.f+0x1\t/x.go:1\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := NewParser(bytes.NewReader(data))
		a := NewAnalyzer(Options{Mode: Exact})
		n := 0
		for p.Next() {
			g := p.Goroutine()
			if len(g.Frames) > maxFrames || len(g.Labels) > maxLabels || g.Count < 0 {
				t.Fatalf("limits broken: %d frames %d labels count %d", len(g.Frames), len(g.Labels), g.Count)
			}
			a.Add(g)
			n++
			if n > len(data)+1 {
				t.Fatalf("%d goroutines from %d bytes: parser loops", n, len(data))
			}
		}
		d := p.Dump()
		if d.Lines > bytes.Count(data, []byte("\n"))+1 || d.SkippedLines > d.Lines || len(d.Skipped) > maxSkippedKept {
			t.Fatalf("lines %d skipped %d kept %d for %d newlines", d.Lines, d.SkippedLines, len(d.Skipped), bytes.Count(data, []byte("\n")))
		}
		r := a.Report(d)
		loose, err := Analyze(bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if loose.Total != r.Total || len(loose.Groups) > len(r.Groups) {
			t.Fatalf("loose total %d groups %d vs exact %d %d", loose.Total, len(loose.Groups), r.Total, len(r.Groups))
		}
		Diff(r, loose, time.Second)
		// Gzip wrapping must give the same answer.
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(data)
		zw.Close()
		zr, err := Decompress(&gz)
		if err != nil {
			t.Fatal(err)
		}
		z, err := Analyze(zr, Options{})
		if err != nil || z.Total != loose.Total || z.SkippedLines != loose.SkippedLines {
			t.Fatalf("gzip: %v total %d/%d skipped %d/%d", err, z.Total, loose.Total, z.SkippedLines, loose.SkippedLines)
		}
		_, _ = io.Copy(io.Discard, zr)
	})
}

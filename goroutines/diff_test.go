package goroutines

import (
	"strings"
	"testing"
	"time"
)

func TestDiffAcrossDumpsAndFormats(t *testing.T) {
	before := analyzeBytes(t, runDumpArgs(t, []string{"-scenario", "broadcast", "-out", "debug2", "-msgs", "2"}), Loose)
	after := analyzeBytes(t, runDumpArgs(t, []string{"-scenario", "broadcast", "-out", "debug2", "-msgs", "10"}), Loose)
	d := Diff(before, after, 30*time.Second)
	if d.BeforeTotal != 10 || d.AfterTotal != 42 || d.Delta != 32 || d.IntervalSeconds != 30 {
		t.Fatalf("totals %+v", d)
	}
	g := d.Groups[0]
	if g.TopFunction != "main.(*hub).deliver" || g.Before != 8 || g.After != 40 || g.Delta != 32 || g.Status != "grew" || g.State != "chan send" {
		t.Fatalf("first diff group %+v", g)
	}
	if g.PerSecond == nil || *g.PerSecond < 1.066 || *g.PerSecond > 1.067 {
		t.Errorf("per second %v", g.PerSecond)
	}
	if g.ShareBefore != 0.8 || g.ShareAfter != 0.9523 {
		t.Errorf("shares %v %v", g.ShareBefore, g.ShareAfter)
	}
	for _, o := range d.Groups[1:] {
		if o.Delta != 0 || o.Status != "unchanged" {
			t.Errorf("other group changed: %+v", o)
		}
	}
	if len(d.Groups) != 3 {
		t.Errorf("%d diff groups, want 3", len(d.Groups))
	}

	// The same program dumped at debug=1 (no runtime frames, no states) and
	// as a GOTRACEBACK=system SIGQUIT (all runtime frames and wrappers) still matches.
	d1 := analyzeBytes(t, runDumpArgs(t, []string{"-scenario", "broadcast", "-out", "debug1", "-msgs", "3"}), Loose)
	sq := analyzeBytes(t, runDumpArgs(t, []string{"-scenario", "broadcast", "-out", "wait", "-msgs", "5"}, "GOTRACEBACK=system"), Loose)
	d = Diff(d1, sq, 0)
	g = d.Groups[0]
	if g.TopFunction != "main.(*hub).deliver" || g.Before != 12 || g.After != 20 || g.Delta != 8 || g.PerSecond != nil {
		t.Fatalf("cross-format: %+v", g)
	}
	if g.State != "chan send" { // debug=1's "chan or select" gives way to the traceback's state
		t.Errorf("cross-format state %q", g.State)
	}
	if d.Truncated != nil || d.Partial != nil {
		t.Errorf("whole dumps marked: %q %q", d.Truncated, d.Partial)
	}
	for _, o := range d.Groups {
		if strings.HasPrefix(o.TopFunction, "main.(*hub).publisher") && (o.Before != 1 || o.After != 1) {
			t.Errorf("publisher not matched across formats: %+v", o)
		}
	}
}

func TestDiffTimestamps(t *testing.T) {
	dump := string(runDump(t, "mutex", "debug2"))
	a := analyzeBytes(t, []byte("2026-11-25T14:00:00Z taking dump\n"+dump), Loose)
	b := analyzeBytes(t, []byte("2026-11-25T14:00:10Z taking dump\n"+dump+dump), Loose)
	d := Diff(a, b, 0)
	if d.IntervalSeconds != 10 || d.Groups[0].Delta != 12 || *d.Groups[0].PerSecond != 1.2 {
		t.Fatalf("interval %v first %+v", d.IntervalSeconds, d.Groups[0])
	}
}

func TestWatcher(t *testing.T) {
	mk := func(n int) *Report {
		return &Report{Total: n + 1, Groups: []Group{
			{Count: n, Signature: "grow", TopFunction: "main.leak", State: "chan send"},
			{Count: 1, Signature: "flat", TopFunction: "main.main", State: "sleep"},
		}}
	}
	w := &Watcher{}
	t0 := time.Unix(1000, 0)
	steps := []WatchStep{}
	for i, n := range []int{5, 10, 15, 15, 20} {
		steps = append(steps, w.Observe(mk(n), t0.Add(time.Duration(i)*10*time.Second)))
	}
	got := []int{}
	for _, s := range steps {
		got = append(got, len(s.Growing))
	}
	// poll 2 grew once (needs min(2, polls-1)=1), poll 3 twice, poll 4 flat, poll 5 restarts the streak at 1 < 2.
	if want := []int{0, 1, 1, 0, 0}; !equalInts(got, want) {
		t.Fatalf("growing per poll %v, want %v", got, want)
	}
	g := steps[2].Growing[0]
	if g.Count != 15 || g.Delta != 5 || g.Streak != 2 || g.First != 5 || *g.PerSecond != 0.5 {
		t.Errorf("growth %+v", g)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

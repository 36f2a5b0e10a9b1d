package goroutines

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestBroadcastLeakDebug2(t *testing.T) {
	r := analyzeBytes(t, runDump(t, "broadcast", "debug2"), Loose)
	if r.Format != FormatTraceback || r.Total != 42 || r.SkippedLines != 0 {
		t.Fatalf("format %s total %d skipped %d; want traceback 42 0", r.Format, r.Total, r.SkippedLines)
	}
	wantStates(t, r, map[string]int{"chan send": 40, "chan receive": 1, "running": 1})
	if len(r.Groups) != 3 {
		t.Fatalf("%d groups, want 3:\n%s", len(r.Groups), summary(r))
	}
	d := r.Groups[0]
	if d.Count != 40 || d.State != "chan send" || d.TopFunction != "main.(*hub).deliver" ||
		d.CreatedBy != "main.(*hub).publisher" || d.ID != 1 {
		t.Fatalf("largest group = %+v", d)
	}
	if want := lineOf(t, "testdata/progs/dumpee/main.go", "sub <- msg"); !strings.HasSuffix(d.TopFile, "testdata/progs/dumpee/main.go") || d.TopLine != want {
		t.Errorf("deliver at %s:%d, want dumpee/main.go:%d", d.TopFile, d.TopLine, want)
	}
	pub := groupBy(t, r, "main.(*hub).publisher", "chan receive")
	if pub.Count != 1 || !reflect.DeepEqual(d.CreatorGroups, []int{pub.ID}) {
		t.Errorf("creator groups %v, want [%d]", d.CreatorGroups, pub.ID)
	}
	if len(r.Suspects) == 0 || r.Suspects[0].Group != d.ID {
		t.Errorf("top suspect %+v, want group %d", r.Suspects, d.ID)
	}
	if len(r.Patterns) == 0 || !strings.HasPrefix(r.Patterns[0].Text, "40 goroutines blocked sending on a channel in main.(*hub).deliver at ") {
		t.Errorf("patterns %+v", r.Patterns)
	}
	// Exact grouping keeps the distinct channel arguments apart: the deliver
	// frame is inlined (args "..."), so argument values only differ in
	// runtime frames that loose mode ignores anyway.
	e := analyzeBytes(t, runDump(t, "broadcast", "debug2"), Exact)
	if e.Total != 42 || e.Grouping != "exact" {
		t.Errorf("exact: total %d grouping %s", e.Total, e.Grouping)
	}
}

func TestBroadcastLeakDebug1(t *testing.T) {
	r := analyzeBytes(t, runDump(t, "broadcast", "debug1"), Loose)
	if r.Format != FormatDebug1 || r.Total != 42 || r.DeclaredTotal != 42 || r.SkippedLines != 0 {
		t.Fatalf("format %s total %d declared %d skipped %d", r.Format, r.Total, r.DeclaredTotal, r.SkippedLines)
	}
	g := r.Groups[0]
	if g.Count != 40 || g.TopFunction != "main.(*hub).deliver" || g.State != StateChanOrSelect || !g.StateInferred {
		t.Fatalf("largest group %+v", g)
	}
	wantStates(t, r, map[string]int{StateChanOrSelect: 41, "running": 1})
	// debug=1 carries no wait times: no "<1m" bucket may be claimed.
	if !g.WaitUnknown || len(g.Wait) != 0 {
		t.Errorf("debug1 wait data claimed: unknown=%v buckets %+v", g.WaitUnknown, g.Wait)
	}
	// The leak is ranked from counts and stacks alone.
	if len(r.Suspects) == 0 || r.Suspects[0].Group != g.ID || r.Suspects[0].Count != 40 {
		t.Fatalf("debug1 suspects %+v, want group %d first", r.Suspects, g.ID)
	}
}

func TestMutexContention(t *testing.T) {
	for _, out := range []string{"debug2", "debug1"} {
		r := analyzeBytes(t, runDump(t, "mutex", out), Loose)
		if r.Total != 14 {
			t.Fatalf("%s: total %d, want 14:\n%s", out, r.Total, summary(r))
		}
		g := groupBy(t, r, "main.(*store).update", "sync.Mutex.Lock")
		if g.Count != 12 || g.ID != 1 {
			t.Errorf("%s: mutex group %+v", out, g)
		}
		if out == "debug1" && !g.StateInferred {
			t.Errorf("debug1 mutex state should be inferred")
		}
		wantStates(t, r, map[string]int{"sync.Mutex.Lock": 12, "sleep": 1, "running": 1})
		found := false
		for _, p := range r.Patterns {
			want := "12 goroutines waiting to lock one sync.Mutex (contention) in main.(*store).update"
			if out == "debug1" { // debug=1 prints no receivers: "one" would be a guess
				want = "12 goroutines waiting to lock a sync.Mutex in main.(*store).update"
			}
			if p.Kind == "mutex" && p.Count == 12 && strings.Contains(p.Text, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no mutex contention pattern in %+v", out, r.Patterns)
		}
	}
}

func TestLabels(t *testing.T) {
	check := func(name string, r *Report) {
		t.Helper()
		state := "chan receive"
		if name == "debug1" {
			state = StateChanOrSelect
		}
		g := groupBy(t, r, "main.serveConn", state)
		if g.Count != 10 {
			t.Fatalf("%s: serveConn count %d", name, g.Count)
		}
		want := []LabelCount{{`{"handler":"ws", "room":"r1"}`, 7}, {`{"handler":"ws", "room":"r2"}`, 3}}
		if !reflect.DeepEqual(g.Labels, want) {
			t.Errorf("%s: labels %+v, want %+v", name, g.Labels, want)
		}
	}
	check("debug1", analyzeBytes(t, runDump(t, "labels", "debug1"), Loose))
	// Go 1.26 prints labels in traceback headers with GODEBUG=tracebacklabels=1.
	check("sigquit", analyzeBytes(t, runDump(t, "labels", "wait", "GODEBUG=tracebacklabels=1", "GOTRACEBACK=all"), Loose))
}

func TestDeadlock(t *testing.T) {
	r := analyzeBytes(t, runDump(t, "deadlock", "debug2"), Loose)
	if !reflect.DeepEqual(r.Reason, []string{"fatal error: all goroutines are asleep - deadlock!"}) {
		t.Errorf("reason %q", r.Reason)
	}
	if r.Total != 4 || r.SkippedLines != 0 {
		t.Fatalf("total %d skipped %d:\n%s", r.Total, r.SkippedLines, summary(r))
	}
	wantStates(t, r, map[string]int{"sync.WaitGroup.Wait": 1, "chan receive": 3})
	g := groupBy(t, r, "main.waitJob", "chan receive")
	if g.Count != 3 || g.CreatedBy != "main.main" {
		t.Errorf("workers %+v", g)
	}
}

func TestPanicInGoroutine(t *testing.T) {
	r := analyzeBytes(t, runDump(t, "panic", "debug2", "GOTRACEBACK=all"), Loose)
	if !reflect.DeepEqual(r.Reason, []string{"panic: worker 3 failed"}) {
		t.Errorf("reason %q", r.Reason)
	}
	if r.Total != 7 || r.SkippedLines != 0 {
		t.Fatalf("total %d skipped %d %v:\n%s", r.Total, r.SkippedLines, r.Skipped, summary(r))
	}
	wantStates(t, r, map[string]int{"running": 1, "chan receive": 5, "sleep": 1})
	if g := groupBy(t, r, "main.worker", "running"); g.Count != 1 || g.CreatedBy != "main.main" {
		t.Errorf("panicking group %+v", g)
	}
	if g := groupBy(t, r, "main.worker", "chan receive"); g.Count != 5 {
		t.Errorf("waiting workers %+v", g)
	}
	// The default GOTRACEBACK=single prints only the panicking goroutine.
	r = analyzeBytes(t, runDump(t, "panic", "debug2"), Loose)
	if r.Total != 1 || r.States["running"] != 1 {
		t.Errorf("single: total %d states %v", r.Total, r.States)
	}
}

func TestSIGQUIT(t *testing.T) {
	for _, tb := range []string{"single", "all", "system", "crash"} {
		out := runDump(t, "broadcast", "wait", "GOTRACEBACK="+tb)
		if !bytes.HasPrefix(out, []byte("SIGQUIT: quit\n")) {
			t.Fatalf("%s: unexpected start %q", tb, out[:min(len(out), 40)])
		}
		r := analyzeBytes(t, out, Loose)
		if r.SkippedLines != 0 {
			t.Errorf("%s: skipped %d: %v", tb, r.SkippedLines, r.Skipped)
		}
		g := r.Groups[0]
		if g.Count != 40 || g.State != "chan send" || g.TopFunction != "main.(*hub).deliver" {
			t.Errorf("%s: largest group %+v", tb, g)
		}
		if r.States["sleep"] != 1 || r.States["chan receive"] != 1 {
			t.Errorf("%s: states %v", tb, r.States)
		}
		if len(r.Reason) == 0 || r.Reason[0] != "SIGQUIT: quit" {
			t.Errorf("%s: reason %q", tb, r.Reason)
		}
	}
}

func TestNoiseAroundDump(t *testing.T) {
	dump := runDump(t, "mutex", "debug2")
	in := "2026/11/25 14:00:00 server started\nsome log line (with parens)\n" + string(dump) + "\ntrailing garbage\n\tindented garbage\n"
	r := analyzeBytes(t, []byte(in), Loose)
	if r.Total != 14 || r.SkippedLines != 4 {
		t.Fatalf("total %d skipped %d %v", r.Total, r.SkippedLines, r.Skipped)
	}
	want := []SkippedLine{{1, "2026/11/25 14:00:00 server started"}, {2, "some log line (with parens)"}}
	if !reflect.DeepEqual(r.Skipped[:2], want) {
		t.Errorf("skipped %+v", r.Skipped)
	}
	if r.Time == nil || r.Time.Format("15:04:05") != "14:00:00" {
		t.Errorf("time %v", r.Time)
	}
}

// Fixtures captured on this machine (Go 1.26, linux/amd64): SIGQUIT with
// GOTRACEBACK=crash (per-M dumps, register lines), a recovered panic, debug=1
// with escaped labels, and testdata/progs/deepleak run with
// GODEBUG=tracebacklabels=1,tracebackancestors=2 and, built with
// GOEXPERIMENT=goroutineleakprofile, with -leak.
func TestFixtures(t *testing.T) {
	read := func(name string) *Report {
		b, err := os.ReadFile("testdata/dumps/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return analyzeBytes(t, b, Loose)
	}
	r := read("sigquit_crash.txt")
	if r.SkippedLines != 0 || r.Total != 22 {
		t.Errorf("crash: total %d skipped %v", r.Total, r.Skipped)
	}
	wantStates(t, r, map[string]int{"idle": 5, "chan send": 5, "sync.Mutex.Lock": 3, "select (no cases)": 1, "IO wait": 1, "GC sweep wait": 1})

	r = read("panic_recovered.txt")
	if !reflect.DeepEqual(r.Reason, []string{"panic: first [recovered]", "panic: again first"}) || r.Total != 1 || r.SkippedLines != 0 {
		t.Errorf("recovered: %q total %d skipped %d", r.Reason, r.Total, r.SkippedLines)
	}

	r = read("pprof_debug1_labels.txt")
	g := groupBy(t, r, "main.main.func2.1", StateChanOrSelect)
	if len(g.Labels) != 1 || g.Labels[0].Labels != `{"handler":"ws", "user":"a\"b"}` {
		t.Errorf("escaped labels %+v", g.Labels)
	}

	r = read("deadlock_labels_ancestors_elided.txt")
	if r.SkippedLines != 0 || r.Total != 4 {
		t.Fatalf("ancestors: total %d skipped %v\n%s", r.Total, r.Skipped, summary(r))
	}
	deep := groupBy(t, r, "main.deep", "chan send")
	if deep.Count != 1 || deep.ElidedFrames != 101 || len(deep.Stack) != 100 {
		t.Errorf("deep: count %d elided %d frames %d", deep.Count, deep.ElidedFrames, len(deep.Stack))
	}
	lab := groupBy(t, r, "main.main.func1.1", "chan receive")
	if len(lab.Labels) != 1 || lab.Labels[0].Labels != `{"handler":"ws"}` || len(lab.Stack) != 1 {
		t.Errorf("labelled: %+v", lab)
	}
	if g := groupBy(t, r, "main.main.func2", "select (no cases)"); g.LockedToThread != 1 {
		t.Errorf("locked: %+v", g)
	}

	r = read("goroutineleak.txt")
	leaked := 0
	for _, g := range r.Groups {
		leaked += g.Leaked
	}
	if leaked != 6 || r.SkippedLines != 0 {
		t.Errorf("leak profile: leaked %d skipped %v\n%s", leaked, r.Skipped, summary(r))
	}
}

func TestNetworkAndSelect(t *testing.T) {
	r := analyzeBytes(t, runDump(t, "net", "debug2"), Loose)
	if r.Total != 11 || r.SkippedLines != 0 {
		t.Fatalf("total %d skipped %d:\n%s", r.Total, r.SkippedLines, summary(r))
	}
	wantStates(t, r, map[string]int{"IO wait": 6, "select": 4, "running": 1})
	conn := groupBy(t, r, "main.handleConn", "IO wait")
	if conn.Count != 5 || conn.Blocking != "network-io" || conn.CreatedBy != "main.acceptLoop" ||
		!strings.HasPrefix(conn.Description, "5 goroutines waiting to read from the network in main.handleConn") {
		t.Errorf("conn group %+v", conn)
	}
	acc := groupBy(t, r, "main.acceptLoop", "IO wait")
	if acc.Count != 1 || !strings.HasPrefix(acc.Description, "1 goroutine waiting to accept network connections") {
		t.Errorf("accept group %+v", acc)
	}
	if !reflect.DeepEqual(conn.CreatorGroups, []int{acc.ID}) {
		t.Errorf("conn creator groups %v, want [%d]", conn.CreatorGroups, acc.ID)
	}
	sel := groupBy(t, r, "main.waitEither", "select")
	if sel.Count != 4 || !strings.HasPrefix(sel.Description, "4 goroutines waiting in a select with no ready case (no timeout fired) in main.waitEither") {
		t.Errorf("select group %+v", sel)
	}
}

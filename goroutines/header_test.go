package goroutines

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestHeaderVariants(t *testing.T) {
	tests := []struct {
		header string
		want   Goroutine
	}{
		{"goroutine 18 [chan receive, 2 minutes]:", Goroutine{ID: 18, State: "chan receive", WaitMinutes: 2}},
		{"goroutine 7 gp=0xc000007c00 m=nil [select, 61 minutes, locked to thread]:", Goroutine{ID: 7, State: "select", WaitMinutes: 61, Locked: true}},
		{"goroutine 0 gp=0x40bc7a0 m=0 mp=0x40beb80 [idle]:", Goroutine{ID: 0, State: "idle"}},
		{"goroutine 21 [select (no cases) (leaked), locked to thread]:", Goroutine{ID: 21, State: "select (no cases)", Leaked: true, Locked: true}},
		{"goroutine 9 [chan send (scan)]:", Goroutine{ID: 9, State: "chan send"}},
		{"goroutine 5 [chan receive (nil chan)]:", Goroutine{ID: 5, State: "chan receive (nil chan)"}},
		{"goroutine 3 [sync.WaitGroup.Wait, 5 minutes, synctest bubble 2]:", Goroutine{ID: 3, State: "sync.WaitGroup.Wait", WaitMinutes: 5}},
		{`goroutine 8 [chan receive, 3 minutes labels:{"handler": "ws", "q": "a]b\"c"}]:`, Goroutine{ID: 8, State: "chan receive", WaitMinutes: 3,
			Labels: []Label{{"handler", "ws"}, {"q", `a]b"c`}}}},
	}
	for _, tt := range tests {
		p := NewParser(strings.NewReader(tt.header + "\nmain.f()\n    /m.go:3 +0x1\n"))
		if !p.Next() {
			t.Fatalf("%s: no goroutine", tt.header)
		}
		g := p.Goroutine()
		got := Goroutine{ID: g.ID, State: g.State, WaitMinutes: g.WaitMinutes, Locked: g.Locked, Leaked: g.Leaked}
		if len(g.Labels) > 0 {
			got.Labels = g.Labels
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.header, got, tt.want)
		}
		if len(g.Frames) != 1 || g.Frames[0].File != "/m.go" || g.Frames[0].Line != 3 || p.Dump().SkippedLines != 0 {
			t.Errorf("%s: frames %+v skipped %v", tt.header, g.Frames, p.Dump().Skipped)
		}
	}
}

// TestWaitDurations rewrites a real dump's headers to carry Go's "N minutes"
// (a test cannot block for minutes) and checks the distribution and words.
func TestWaitDurations(t *testing.T) {
	dump := runDump(t, "broadcast", "debug2")
	var out bytes.Buffer
	i := 0
	mins := []string{"", ", 1 minutes", ", 7 minutes", ", 20 minutes", ", 90 minutes", ", 400 minutes"}
	for _, line := range bytes.SplitAfter(dump, []byte("\n")) {
		if bytes.HasSuffix(line, []byte(" [chan send]:\n")) {
			m := mins[i%len(mins)]
			if i >= 30 {
				m = ", 7 minutes"
			}
			line = bytes.Replace(line, []byte("[chan send]"), []byte("[chan send"+m+"]"), 1)
			i++
		}
		out.Write(line)
	}
	r := analyzeBytes(t, out.Bytes(), Loose)
	g := r.Groups[0]
	if g.Count != 40 || g.WaitMinutesMin != 0 || g.WaitMinutesMax != 400 {
		t.Fatalf("group %+v", g)
	}
	want := []WaitCount{{"<1m", 5}, {"1-4m", 5}, {"5-14m", 15}, {"15-59m", 5}, {"1-5h", 5}, {">=6h", 5}}
	if !reflect.DeepEqual(g.Wait, want) {
		t.Errorf("distribution %+v, want %+v", g.Wait, want)
	}
	if !strings.HasSuffix(g.Description, "(some for up to 400 minutes)") {
		t.Errorf("description %q", g.Description)
	}
	if r.Suspects[0].Group != 1 || r.Suspects[0].Score != 3*40*(1+80) {
		t.Errorf("suspect %+v", r.Suspects[0])
	}
}

func TestParserAllAndClone(t *testing.T) {
	p := NewParser(bytes.NewReader(runDump(t, "mutex", "debug2")))
	var kept []*Goroutine
	for g := range p.All() {
		kept = append(kept, g.Clone())
	}
	if len(kept) != 14 || p.Err() != nil {
		t.Fatalf("%d goroutines, err %v", len(kept), p.Err())
	}
	seen := map[int64]bool{}
	for _, g := range kept {
		if seen[g.ID] {
			t.Errorf("duplicate id %d: clones share memory", g.ID)
		}
		seen[g.ID] = true
		if g.State == "sync.Mutex.Lock" && (g.Frames[len(g.Frames)-1].Function != "main.(*store).update" || g.CreatedBy.Function != "main.main") {
			t.Errorf("mutex waiter %+v", g)
		}
	}
}

func TestElidedForms(t *testing.T) {
	in := "goroutine 4 [select]:\nmain.a(...)\n\t/m.go:1\n...additional frames elided...\n" +
		"created by main.b in goroutine 1\n\t/m.go:9 +0x2\n\n" +
		"goroutine 5 [select]:\nmain.a(...)\n\t/m.go:1\n...37 frames elided...\nmain.c(0x1)\n\t/m.go:5 +0x1\n\n"
	p := NewParser(strings.NewReader(in))
	var got []string
	for g := range p.All() {
		var fns []string
		for _, f := range g.Frames {
			fns = append(fns, f.Function)
		}
		got = append(got, strings.Join(fns, ",")+"|"+g.CreatedBy.Function+"|"+itoa(g.Elided)+"|"+itoa(int(g.CreatorID)))
	}
	want := []string{"main.a|main.b|1|1", "main.a,main.c||37|0"}
	if !reflect.DeepEqual(got, want) || p.Dump().SkippedLines != 0 {
		t.Errorf("got %q want %q (skipped %v)", got, want, p.Dump().Skipped)
	}
}

func TestRecordStartNeedsPCs(t *testing.T) {
	in := "12 @ home: log line\n" +
		"goroutine profile: total 2\n2 @ 0x47e80e 0x4159ee\n#\t0x4159ed\tmain.f+0x1d\t/m.go:4\n\n"
	r, err := Analyze(strings.NewReader(in), Options{})
	if err != nil || r.Total != 2 || r.SkippedLines != 1 || len(r.Groups) != 1 || r.Groups[0].TopFunction != "main.f" {
		t.Fatalf("total %d skipped %v groups %+v err %v", r.Total, r.Skipped, r.Groups, err)
	}
}

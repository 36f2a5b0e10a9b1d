package watchdog

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/guard/signals"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
		bad  bool
	}{
		{in: "goroutines > 10000 for 2m", want: Rule{Signal: Goroutines, Above: 10000, For: 2 * time.Minute}},
		{in: "goroutines grow > 50/s over 5m", want: Rule{Signal: Goroutines, PerSecond: 50, Window: 5 * time.Minute}},
		{in: " goroutines grow > 2.5 /s over 30s ", want: Rule{Signal: Goroutines, PerSecond: 2.5, Window: 30 * time.Second}},
		{in: "heap > 2GiB for 1m", want: Rule{Signal: Heap, Above: 2 << 30, For: time.Minute}},
		{in: "heap grow > 1MiB/s over 10m", want: Rule{Signal: Heap, PerSecond: 1 << 20, Window: 10 * time.Minute}},
		{in: "sched_p99 > 50ms for 30s", want: Rule{Signal: SchedP99, Above: 0.05, For: 30 * time.Second}},
		{in: "slow_consumers > 5/s for 1m", want: Rule{Signal: SlowConsumers, Above: 5, For: time.Minute}},
		{in: "goroutines > x for 2m", bad: true},
		{in: "goroutines > 5 for -1s", bad: true},
		{in: "heap > 1GiB", bad: true},
		{in: "heap > lots for 1m", bad: true},
		{in: "sched_p99 > 50 for 1m", bad: true},
		{in: "slow_consumers > 5 for 1m", bad: true},
		{in: "sched_p99 grow > 1/s over 1m", bad: true},
		{in: "fish > 5 for 1m", bad: true},
	} {
		r, err := ParseRule(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q parsed", tc.in)
			}
			continue
		}
		r.Text = ""
		if err != nil || r != tc.want {
			t.Errorf("%q = %+v, %v", tc.in, r, err)
		}
	}
}

func TestRuleHolds(t *testing.T) {
	t0 := time.Unix(1000, 0)
	series := func(ns ...int) []sample {
		var s []sample
		for i, n := range ns {
			s = append(s, sample{t0.Add(time.Duration(i) * time.Second), signals.Reading{Goroutines: n}})
		}
		return s
	}
	above := Rule{Signal: Goroutines, Above: 100, For: 3 * time.Second}
	if !above.holds(series(50, 200, 200, 200, 200)) || above.holds(series(200, 200, 50, 200, 200)) || above.holds(series(200, 200)) {
		t.Error("threshold rule")
	}
	grow := Rule{Signal: Goroutines, PerSecond: 10, Window: 4 * time.Second}
	if !grow.holds(series(100, 120, 140, 160, 180)) || grow.holds(series(100, 105, 110, 115, 120)) || grow.holds(series(100, 200)) {
		t.Error("growth rule")
	}
	// A ticker a little late every time: each reading a whole window back
	// is just past it; the rule must still see the window.
	var late []sample
	for i := range 6 {
		late = append(late, sample{t0.Add(time.Duration(i) * (time.Second + time.Millisecond)), signals.Reading{Goroutines: 100 + 20*i}})
	}
	if !grow.holds(late) {
		t.Error("growth rule with a late ticker")
	}
	// The other signals, each read from its own field.
	readings := func(rs ...signals.Reading) []sample {
		var s []sample
		for i, r := range rs {
			s = append(s, sample{t0.Add(time.Duration(i) * time.Second), r})
		}
		return s
	}
	slow := Rule{Signal: SlowConsumers, Above: 5, For: 2 * time.Second}
	if !slow.holds(readings(signals.Reading{SlowPerSecond: 6}, signals.Reading{SlowPerSecond: 9}, signals.Reading{SlowPerSecond: 6})) ||
		slow.holds(readings(signals.Reading{SlowPerSecond: 6}, signals.Reading{SlowPerSecond: 2}, signals.Reading{SlowPerSecond: 6})) {
		t.Error("slow-consumer rule")
	}
	sched := Rule{Signal: SchedP99, Above: 0.05, For: time.Second}
	if !sched.holds(readings(signals.Reading{SchedP99: time.Second}, signals.Reading{SchedP99: 60 * time.Millisecond})) ||
		sched.holds(readings(signals.Reading{SchedP99: time.Second}, signals.Reading{SchedP99: 40 * time.Millisecond, Goroutines: 1e6})) {
		t.Error("scheduler latency rule")
	}
	heap := Rule{Signal: Heap, PerSecond: 1 << 20, Window: 2 * time.Second}
	if !heap.holds(readings(signals.Reading{HeapBytes: 10 << 20}, signals.Reading{HeapBytes: 11 << 20}, signals.Reading{HeapBytes: 13 << 20})) ||
		heap.holds(readings(signals.Reading{HeapBytes: 10 << 20}, signals.Reading{HeapBytes: 11 << 20}, signals.Reading{HeapBytes: 11 << 20})) {
		t.Error("heap growth rule")
	}
}

// leaky blocks forever (until release) in a function the diff must name.
func leaky(started *sync.WaitGroup, release chan struct{}) {
	started.Done()
	<-release
}

// A capture holds a dump, a heap profile and a report; diffed against the
// previous one it names the function whose goroutines grew.
func TestCaptureNamesTheGrowth(t *testing.T) {
	w, err := New(Config{Dir: t.TempDir(), CPUProfile: -1})
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	defer w.Stop()
	release := make(chan struct{})
	defer close(release)
	var started sync.WaitGroup
	started.Add(200)
	for range 200 {
		go leaky(&started, release)
	}
	started.Wait()
	c, err := w.Capture("test: growth")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"goroutine.txt", "heap.pprof", "goroutine-report.json"} {
		if fi, err := os.Stat(filepath.Join(w.Dir(), c.ID, f)); err != nil || fi.Size() == 0 {
			t.Errorf("capture file %s: %v", f, err)
		}
	}
	if len(c.TopGrowth) == 0 || !strings.HasSuffix(c.TopGrowth[0].Function, ".leaky") || c.TopGrowth[0].Delta != 200 {
		t.Fatalf("top growth %+v, want watchdog.leaky +200 first", c.TopGrowth)
	}
	if list := w.List(); len(list) != 1 || list[0].ID != c.ID || list[0].Reason != "test: growth" {
		t.Fatalf("list %+v", list)
	}
}

// The archive keeps the newest MaxCaptures.
func TestRotation(t *testing.T) {
	w, err := New(Config{Dir: t.TempDir(), CPUProfile: -1, MaxCaptures: 3})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 5 {
		c, err := w.Capture("test")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
	}
	list := w.List()
	if len(list) != 3 || list[0].ID != ids[2] || list[2].ID != ids[4] {
		t.Fatalf("kept %+v, want the last 3 of %v", list, ids)
	}
	entries, _ := os.ReadDir(w.Dir())
	if len(entries) != 3 {
		t.Fatalf("%d folders in the archive", len(entries))
	}
}

// The endpoints: a capture on POST, the list, a file, and Alertmanager.
func TestRoutes(t *testing.T) {
	w, err := New(Config{Dir: t.TempDir(), CPUProfile: -1})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	w.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	resp, err := http.Post(srv.URL+"/debug/capture", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var c Capture
	_ = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if c.ID == "" || c.Reason != "api" {
		t.Fatalf("capture %+v", c)
	}
	resp, err = http.Get(srv.URL + "/debug/captures/" + c.ID + "/goroutine.txt")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("dump file: %v %v", err, resp)
	}
	resp.Body.Close()
	if resp, err := http.Get(srv.URL + "/debug/captures/" + c.ID + "/../../etc/passwd"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("served a file outside the capture")
		}
	}
	alert := `{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"SpindleGoroutineGrowth"}}]}`
	resp, err = http.Post(srv.URL+"/alertmanager", "application/json", bytes.NewBufferString(alert))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if c.Reason != "alertmanager: SpindleGoroutineGrowth" {
		t.Fatalf("alertmanager capture %+v", c)
	}
	resp, _ = http.Post(srv.URL+"/alertmanager", "application/json", bytes.NewBufferString(`{nope`))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad webhook body: %d", resp.StatusCode)
	}
	resp.Body.Close()
	var list struct {
		Captures []Capture `json:"captures"`
	}
	resp, _ = http.Get(srv.URL + "/debug/captures")
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Captures) != 2 {
		t.Fatalf("list %+v", list)
	}
}

// A rule that holds captures on its own.
func TestRuleCaptures(t *testing.T) {
	w, err := New(Config{Dir: t.TempDir(), CPUProfile: -1, Rules: []Rule{{Text: "goroutines > 1 for 2s", Signal: Goroutines, Above: 1, For: 2 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	defer w.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for len(w.List()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no capture from a rule that holds")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := w.List()[0].Reason; r != "rule: goroutines > 1 for 2s" {
		t.Fatalf("reason %q", r)
	}
}

package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "64KiB": 64 << 10, "1MiB": 1 << 20, "1mib": 1 << 20, "2GiB": 2 << 30,
		"64K": 64 << 10, "10KB": 10000, "1.5MB": 1500000, "64KiB/s": 64 << 10, " 7B ": 7, "0": 0,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "64XB", "-5", "1e300", "NaN", "inf", "0x10", "64 KiB extra"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
	for _, n := range []int64{512, 64 << 10, 3 << 20, 1 << 30, 1000} {
		if got, err := ParseSize(FormatSize(n)); err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d)=%q) = %d, %v", n, FormatSize(n), got, err)
		}
	}
}

func TestFaultsJSON(t *testing.T) {
	f := Faults{Latency: 50 * time.Millisecond, Jitter: time.Millisecond, Bandwidth: 65536, Drop: 0.25, ResetAfter: 5 * time.Second, StallReads: true, Blackhole: true}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"latency":"50ms"`) || !strings.Contains(string(b), `"reset_after":"5s"`) {
		t.Fatalf("marshalled %s", b)
	}
	var back Faults
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Fatalf("round trip %+v, %v; want %+v", back, err, f)
	}
	// Decoding onto existing faults patches them; sizes may be strings.
	if err := json.Unmarshal([]byte(`{"bandwidth":"1MiB","stall_reads":false}`), &back); err != nil {
		t.Fatal(err)
	}
	if want := f; true {
		want.Bandwidth, want.StallReads = 1<<20, false
		if back != want {
			t.Fatalf("patched %+v, want %+v", back, want)
		}
	}
	for _, bad := range []string{`{"latncy":"1s"}`, `{"latency":"soon"}`, `{"drop":2}`, `{"jitter":"-1s"}`, `{"bandwidth":"lots"}`, `[]`} {
		before := back
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s accepted", bad)
		}
		if back != before {
			t.Errorf("%s changed the faults on error", bad)
		}
	}
}

func TestControlEndpoint(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{})
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	getFaults := func() Faults {
		t.Helper()
		code, body := do("GET", "/faults", "")
		var f Faults
		if err := json.Unmarshal([]byte(body), &f); code != 200 || err != nil {
			t.Fatalf("GET /faults: %d %s %v", code, body, err)
		}
		return f
	}

	if f := getFaults(); f != (Faults{}) {
		t.Fatalf("initial faults %+v", f)
	}
	if code, body := do("PUT", "/faults", `{"latency":"40ms","bandwidth":"64KiB"}`); code != 200 {
		t.Fatalf("PUT /faults: %d %s", code, body)
	}
	want := Faults{Latency: 40 * time.Millisecond, Bandwidth: 64 << 10}
	if f := p.Faults(); f != want {
		t.Fatalf("after PUT: %+v, want %+v", f, want)
	}
	if code, body := do("PATCH", "/faults", `{"drop":0.5}`); code != 200 {
		t.Fatalf("PATCH /faults: %d %s", code, body)
	}
	want.Drop = 0.5
	if f := getFaults(); f != want {
		t.Fatalf("after PATCH: %+v, want %+v", f, want)
	}
	// PUT replaces: fields left out go back to zero.
	if code, body := do("PUT", "/faults", `{"jitter":"1ms"}`); code != 200 {
		t.Fatalf("PUT /faults: %d %s", code, body)
	}
	want = Faults{Jitter: time.Millisecond}
	if f := p.Faults(); f != want {
		t.Fatalf("after second PUT: %+v, want %+v", f, want)
	}
	for _, bad := range []struct{ method, body string }{
		{"PUT", `{"drop":2}`}, {"PUT", `{"latncy":"1s"}`}, {"PUT", `{"latency":"abc"}`}, {"PUT", `not json`},
		{"PATCH", `{"drop":-1}`}, {"PATCH", `{"x":1}`},
	} {
		if code, body := do(bad.method, "/faults", bad.body); code != http.StatusBadRequest {
			t.Errorf("%s /faults %s: %d %s, want 400", bad.method, bad.body, code, body)
		}
	}
	if f := p.Faults(); f != want {
		t.Fatalf("rejected requests changed the faults: %+v", f)
	}
	if code, _ := do("POST", "/faults", `{}`); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /faults: %d, want 405", code)
	}

	// Per-connection faults.
	c := dial(t, p.Addr().String())
	minRTT(t, c, 1)
	code, body := do("GET", "/conns", "")
	var conns []ConnInfo
	if err := json.Unmarshal([]byte(body), &conns); code != 200 || err != nil || len(conns) != 1 || conns[0].Client != c.LocalAddr().String() {
		t.Fatalf("GET /conns: %d %s %v", code, body, err)
	}
	path := fmt.Sprintf("/conns/%d/faults", conns[0].ID)
	if code, body := do("PUT", path, `{"latency":"70ms"}`); code != 200 {
		t.Fatalf("PUT %s: %d %s", path, code, body)
	}
	if rtt := minRTT(t, c, 2); rtt < 140*time.Millisecond {
		t.Fatalf("round trip %v with a 70ms per-connection latency", rtt)
	}
	if code, body := do("DELETE", path, ""); code != http.StatusNoContent {
		t.Fatalf("DELETE %s: %d %s", path, code, body)
	}
	if cs := p.Conns(); len(cs) != 1 || cs[0].Faults != nil {
		t.Fatalf("after DELETE: %+v", cs)
	}
	for _, bad := range []struct {
		method, path string
		want         int
	}{{"PUT", "/conns/999/faults", 404}, {"DELETE", "/conns/999/faults", 404}, {"PUT", "/conns/x/faults", 400}} {
		if code, body := do(bad.method, bad.path, `{}`); code != bad.want {
			t.Errorf("%s %s: %d %s, want %d", bad.method, bad.path, code, body, bad.want)
		}
	}

	code, body = do("GET", "/stats", "")
	var st Stats
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.Accepted != 1 || st.Active != 1 || st.BytesUp < 3 {
		t.Fatalf("GET /stats: %d %s %v", code, body, err)
	}
}

func TestParseSchedule(t *testing.T) {
	s, err := ParseSchedule(strings.NewReader(`
# warm up, then degrade
at 0s latency=50ms jitter=10ms
at 5s   bandwidth=64KiB   # adds
at 10s stall-reads
at 10s stall-reads=false drop=0.5
at 20s clear
at 25s clear reset-after=2s blackhole
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 6 || s[1].At != 5*time.Second || !s[4].Clear {
		t.Fatalf("parsed %+v", s)
	}
	var f Faults
	var states []Faults
	for _, st := range s {
		if f, err = st.Apply(f); err != nil {
			t.Fatal(err)
		}
		states = append(states, f)
	}
	want := []Faults{
		{Latency: 50 * time.Millisecond, Jitter: 10 * time.Millisecond},
		{Latency: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Bandwidth: 64 << 10},
		{Latency: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Bandwidth: 64 << 10, StallReads: true},
		{Latency: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Bandwidth: 64 << 10, Drop: 0.5},
		{},
		{ResetAfter: 2 * time.Second, Blackhole: true},
	}
	for i := range want {
		if states[i] != want[i] {
			t.Errorf("after step %d: %+v, want %+v", i+1, states[i], want[i])
		}
	}
	for _, bad := range []string{
		"latency=5ms", "at", "at soon latency=1ms", "at -1s latency=1ms", "at 1s", "at 1s latency", "at 1s speed=3",
		"at 1s drop=2", "at 1s bandwidth=lots", "at 1s stall-reads=maybe", "at 2s latency=1ms\nat 1s jitter=1ms",
	} {
		if _, err := ParseSchedule(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseSchedule(%q) succeeded", bad)
		}
	}
}

func TestScheduleRun(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{Drop: 0.1})
	s, err := ParseSchedule(strings.NewReader("at 0s latency=10ms\nat 30ms jitter=1ms\nat 60ms clear bandwidth=1KiB"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Run(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 60*time.Millisecond {
		t.Fatalf("schedule finished after %v, before its last step at 60ms", el)
	}
	if f := p.Faults(); f != (Faults{Bandwidth: 1 << 10}) {
		t.Fatalf("after the schedule: %+v", f)
	}
	// A step far in the future does not hold up cancellation.
	s, _ = ParseSchedule(strings.NewReader("at 1h blackhole"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Faults().Blackhole {
		t.Fatal("cancelled step was applied")
	}
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCommandFlagErrors(t *testing.T) {
	dir := t.TempDir()
	badSched := filepath.Join(dir, "bad.sched")
	if err := os.WriteFile(badSched, []byte("at 1s latency=fast\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := []string{"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "--listen is required"},
		{[]string{"--listen", "127.0.0.1:0"}, "--upstream is required"},
		{[]string{"--listen", "0.0.0.0:9000", "--upstream", "127.0.0.1:1"}, "not a loopback"},
		{[]string{"--listen", ":9000", "--upstream", "127.0.0.1:1"}, "not a loopback"},
		{[]string{"--listen", "127.0.0.1", "--upstream", "127.0.0.1:1"}, "missing port"},
		{[]string{"--listen", "127.0.0.1:0", "--upstream", "nowhere"}, "--upstream"},
		{append(up, "--bandwidth", "64XB"), "want a byte count"},
		{append(up, "--bandwidth", "-5"), "bandwidth"},
		{append(up, "--latency", "-1s"), "negative"},
		{append(up, "--latency", "soon"), "latency"},
		{append(up, "--jitter", "-1ms"), "negative"},
		{append(up, "--drop", "1.5"), "between 0 and 1"},
		{append(up, "--drop", "x"), "drop"},
		{append(up, "--reset-after", "-5s"), "negative"},
		{append(up, "--control", "10.1.2.3:80"), "not a loopback"},
		{append(up, "--schedule", filepath.Join(dir, "missing")), "no such file"},
		{append(up, "--schedule", badSched), "line 1"},
		{append(up, "extra"), `unexpected argument "extra"`},
		{append(up, "--nope"), "not defined"},
	} {
		var out, errb syncBuffer
		code := Command(context.Background(), tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 mentioning %q", tc.args, code, errb.String(), tc.want)
		}
	}
	var out, errb syncBuffer
	if code := Command(context.Background(), []string{"-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--reset-after") && !strings.Contains(errb.String(), "-reset-after") {
		t.Errorf("-h: exit %d, stderr %q", code, errb.String())
	}
}

func TestCommandRuns(t *testing.T) {
	echo := startEcho(t)
	sched := filepath.Join(t.TempDir(), "faults.sched")
	if err := os.WriteFile(sched, []byte("at 0s jitter=1ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- Command(ctx, []string{"--listen", "127.0.0.1:0", "--upstream", echo.addr(), "--latency", "30ms",
			"--bandwidth", "1MiB", "--control", "127.0.0.1:0", "--schedule", sched}, &out, &errb)
	}()
	listenRe := regexp.MustCompile(`listening on (\S+)\ncontrol on (\S+)\n`)
	var m []string
	waitFor(t, 5*time.Second, "the listening lines on stdout", func() bool {
		m = listenRe.FindStringSubmatch(out.String())
		return m != nil
	})
	c := dial(t, m[1])
	// The schedule adds 1ms of jitter at once: each way takes ≥ 29ms.
	if rtt := minRTT(t, c, 3); rtt < 58*time.Millisecond {
		t.Fatalf("round trip %v through `spindle proxy --latency 30ms` (jitter 1ms)", rtt)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var f Faults
	waitFor(t, 5*time.Second, "the schedule's jitter to show on the control endpoint", func() bool {
		resp, err := client.Get(m[2] + "/faults")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
			t.Fatal(err)
		}
		return f.Jitter == time.Millisecond
	})
	if f.Latency != 30*time.Millisecond || f.Bandwidth != 1<<20 {
		t.Fatalf("control endpoint reports %+v", f)
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("command still running 5s after cancel")
	}
	if !strings.Contains(errb.String(), "proxy stopped") {
		t.Fatalf("stderr lacks the final stats:\n%s", errb.String())
	}
}

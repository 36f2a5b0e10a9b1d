package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dumpeeDump builds and runs goroutines/testdata/progs/dumpee and returns its dump.
func dumpeeDump(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := buildGoroutinesProg(t, "dumpee")
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("dumpee %v: %v", args, err)
	}
	return out
}

func runG(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runGoroutines(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestGoroutinesAnalyzeJSONContract(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dump.txt.gz")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("log noise before the dump\n"))
	zw.Write(dumpeeDump(t, "-scenario", "broadcast", "-out", "debug2"))
	zw.Close()
	if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runG(t, "analyze", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var out struct {
		Total  int            `json:"total"`
		States map[string]int `json:"states"`
		Groups []struct {
			Count          int     `json:"count"`
			State          string  `json:"state"`
			TopFunction    string  `json:"top_function"`
			CreatedBy      *string `json:"created_by"`
			WaitMinutesMax *int    `json:"wait_minutes_max"`
			Stack          []struct {
				Function string `json:"function"`
				File     string `json:"file"`
				Line     int    `json:"line"`
			} `json:"stack"`
		} `json:"groups"`
		SkippedLines *int `json:"skipped_lines"`
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode: %v\n%s", err, stdout)
	}
	if out.Total != 42 || out.States["chan send"] != 40 || out.States["chan receive"] != 1 || out.States["running"] != 1 {
		t.Errorf("total %d states %v", out.Total, out.States)
	}
	if out.SkippedLines == nil || *out.SkippedLines != 1 {
		t.Errorf("skipped_lines %v, want 1 (the log line)", out.SkippedLines)
	}
	if len(out.Groups) != 3 {
		t.Fatalf("%d groups", len(out.Groups))
	}
	g := out.Groups[0]
	if g.Count != 40 || g.State != "chan send" || g.TopFunction != "main.(*hub).deliver" ||
		g.CreatedBy == nil || *g.CreatedBy != "main.(*hub).publisher" || g.WaitMinutesMax == nil || *g.WaitMinutesMax != 0 {
		t.Errorf("group 0: %+v", g)
	}
	if len(g.Stack) == 0 || g.Stack[0].Function != "main.(*hub).deliver" || g.Stack[0].Line != dumpeeLine(t, "sub <- msg") ||
		!strings.HasSuffix(g.Stack[0].File, "dumpee/main.go") {
		t.Errorf("stack %+v", g.Stack)
	}
	for i := 1; i < len(out.Groups); i++ {
		if out.Groups[i].Count > out.Groups[i-1].Count {
			t.Errorf("groups not largest first")
		}
		if out.Groups[i].CreatedBy == nil {
			t.Errorf("created_by missing (must be present, empty when unknown)")
		}
	}

	// Text output from stdin, no colour when not a terminal.
	text, _, code := runGoroutinesStdin(t, gz.Bytes(), "analyze", "-")
	if code != 0 || !strings.Contains(text, "40 goroutines blocked sending on a channel in main.(*hub).deliver") ||
		strings.Contains(text, "\x1b[") || !strings.Contains(text, "grouping loose") {
		t.Errorf("text output:\n%s", text)
	}
	text, _, _ = runG(t, "analyze", "--color", "always", path)
	if !strings.Contains(text, "\x1b[") {
		t.Errorf("--color always printed no colour")
	}
	html := filepath.Join(dir, "r.html")
	if _, stderr, code := runG(t, "analyze", "--html", html, path); code != 0 {
		t.Fatalf("--html: %d %s", code, stderr)
	}
	if b, err := os.ReadFile(html); err != nil || !strings.Contains(string(b), `<details class="group" id="g1" data-count="40" data-state="chan send">`) {
		t.Errorf("HTML report: %v", err)
	}
}

func runGoroutinesStdin(t *testing.T, in []byte, args ...string) (string, string, int) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(in)
	f.Seek(0, 0)
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old; f.Close() }()
	return runG(t, args...)
}

func TestGoroutinesDiffJSON(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")
	os.WriteFile(a, dumpeeDump(t, "-scenario", "broadcast", "-out", "debug2", "-msgs", "3"), 0o644)
	os.WriteFile(b, dumpeeDump(t, "-scenario", "broadcast", "-out", "debug1", "-msgs", "7"), 0o644)
	stdout, stderr, code := runG(t, "diff", "--json", "--interval", "1m", a, b)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var out struct {
		Groups []struct {
			Before, After, Delta int
			TopFunction          string   `json:"top_function"`
			State                string   `json:"state"`
			PerSecond            *float64 `json:"per_second"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatal(err)
	}
	g := out.Groups[0]
	if g.TopFunction != "main.(*hub).deliver" || g.Before != 12 || g.After != 28 || g.Delta != 16 || g.PerSecond == nil || *g.PerSecond < 0.266 || *g.PerSecond > 0.267 {
		t.Errorf("first group %+v", g)
	}
	for i := 1; i < len(out.Groups); i++ {
		if out.Groups[i].Delta > out.Groups[i-1].Delta {
			t.Errorf("not sorted by delta: %+v", out.Groups)
		}
	}
	if _, _, code := runG(t, "diff", a); code != 2 {
		t.Errorf("diff with one file: exit %d, want 2", code)
	}
	if _, stderr, code := runG(t, "analyze", filepath.Join(dir, "missing")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d %s", code, stderr)
	}
}

// leakyWorker blocks until the test ends; each watch poll adds five.
func leakyWorker(stop chan struct{}) { <-stop }

func TestGoroutinesWatch(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	mux := http.NewServeMux()
	prof := pprof.Handler("goroutine")
	mux.HandleFunc("/debug/pprof/goroutine", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 5; i++ {
			go leakyWorker(stop)
		}
		time.Sleep(20 * time.Millisecond) // let them block before the snapshot
		prof.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// analyze fetches a URL too (debug=2 is added).
	stdout, stderr, code := runG(t, "analyze", "--json", srv.URL+"/debug/pprof/goroutine")
	if code != 0 {
		t.Fatalf("analyze URL: exit %d: %s", code, stderr)
	}
	var one struct {
		Format string `json:"format"`
		Groups []struct {
			Count       int    `json:"count"`
			State       string `json:"state"`
			TopFunction string `json:"top_function"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(stdout), &one); err != nil {
		t.Fatal(err)
	}
	okURL := false
	for _, g := range one.Groups {
		if strings.HasSuffix(g.TopFunction, ".leakyWorker") && g.Count == 5 && g.State == "chan receive" {
			okURL = true
		}
	}
	if !okURL || one.Format != "traceback" {
		t.Errorf("analyze URL: %s", stdout)
	}
	stdout, stderr, code = runG(t, "watch", "--every", "50ms", "--count", "4", "--json", srv.URL+"/debug/pprof/goroutine")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	type growth struct {
		TopFunction string `json:"top_function"`
		Count       int    `json:"count"`
		Delta       int    `json:"delta"`
		Streak      int    `json:"streak"`
	}
	var steps []struct {
		Poll    int      `json:"poll"`
		Growing []growth `json:"growing"`
	}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var s struct {
			Poll    int      `json:"poll"`
			Growing []growth `json:"growing"`
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		steps = append(steps, s)
	}
	if len(steps) != 4 {
		t.Fatalf("%d steps:\n%s", len(steps), stdout)
	}
	last := steps[3]
	var found *growth
	for i, g := range last.Growing {
		if strings.HasSuffix(g.TopFunction, ".leakyWorker") {
			found = &last.Growing[i]
		}
	}
	if found == nil || found.Delta != 5 || found.Streak != 3 || found.Count != 25 {
		t.Fatalf("leakyWorker growth in last poll: %+v\n%s", found, stdout)
	}
	// Text mode names the growing group too; flags may follow the URL, as
	// in the documented `watch URL --every 10s`.
	text, _, code := runG(t, "watch", srv.URL+"/debug/pprof/goroutine", "--every", "30ms", "--count", "3")
	if code != 0 || !strings.Contains(text, "growing") || !strings.Contains(text, "leakyWorker") {
		t.Errorf("text watch:\n%s", text)
	}
	// A cancelled context ends an unbounded watch.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var o, e bytes.Buffer
	if code := runGoroutines(ctx, []string{"watch", "--every", "50ms", srv.URL + "/debug/pprof/goroutine"}, &o, &e); code != 0 {
		t.Errorf("cancelled watch exit %d: %s", code, e.String())
	}
}

// dumpeeLine is the line of dumpee's main.go that contains substr.
func dumpeeLine(t *testing.T, substr string) int {
	t.Helper()
	b, err := os.ReadFile("../../goroutines/testdata/progs/dumpee/main.go")
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			return i + 1
		}
	}
	t.Fatalf("dumpee has no line with %q", substr)
	return 0
}

// buildGoroutinesProg builds goroutines/testdata/progs/<name> into a
// temporary directory.
func buildGoroutinesProg(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", bin, "../../goroutines/testdata/progs/"+name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // a cgo program never reports a deadlock
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// TestGoroutinesCutDumpURL: a live server whose debug=2 dump passes the
// runtime's 64 MiB limit; analyze reports the cut in JSON, text and HTML
// and adds the true count from the same URL's debug=1 profile.
func TestGoroutinesCutDumpURL(t *testing.T) {
	bin := buildGoroutinesProg(t, "bigdump")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-serve", "-n", "5000")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(stdoutPipe).ReadString('\n')
	if err != nil {
		t.Fatalf("bigdump printed no URL: %v", err)
	}
	u := strings.TrimSpace(line)

	html := filepath.Join(t.TempDir(), "cut.html")
	stdout, stderr, code := runG(t, "analyze", "--json", "--html", html, u)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var out struct {
		Total     int   `json:"total"`
		Bytes     int64 `json:"bytes"`
		Truncated *struct {
			Reason    string `json:"reason"`
			Bytes     int64  `json:"bytes"`
			TrueTotal int    `json:"true_total"`
			Missing   int    `json:"missing"`
		} `json:"truncated"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatal(err)
	}
	tr := out.Truncated
	if tr == nil || tr.Bytes != 64<<20 || out.Bytes != 64<<20 || !strings.Contains(tr.Reason, "64 MiB") {
		t.Fatalf("truncated %+v bytes %d", tr, out.Bytes)
	}
	if tr.TrueTotal < 5001 || out.Total >= tr.TrueTotal || tr.Missing != tr.TrueTotal-out.Total {
		t.Errorf("total %d, true_total %d, missing %d", out.Total, tr.TrueTotal, tr.Missing)
	}
	if !strings.Contains(stderr, "dump is truncated") {
		t.Errorf("no warning on stderr: %s", stderr)
	}
	want := fmt.Sprintf("the debug=1 profile of the same URL counts %d goroutines, %d missing here", tr.TrueTotal, tr.Missing)
	if b, err := os.ReadFile(html); err != nil || !strings.Contains(string(b), `<p class="reason" id="truncated">Truncated: dump is 67108864 bytes`) ||
		!strings.Contains(string(b), want) {
		t.Errorf("HTML report lacks the truncation (%v)", err)
	}
	text, _, code := runG(t, "analyze", u)
	if code != 0 || !strings.Contains(text, "TRUNCATED dump is 67108864 bytes, the runtime's 64 MiB debug=2 limit") ||
		!strings.Contains(text, "counts ") || !strings.Contains(text, " missing here") {
		t.Errorf("text output (exit %d):\n%s", code, text[:min(len(text), 2000)])
	}
}

// TestGoroutinesPartialInput: a gzip file cut in half and an HTTP body that
// stalls midway are analyzed as far as they go, marked partial, and exit 1
// unless --allow-partial; --timeout bounds the stall.
func TestGoroutinesPartialInput(t *testing.T) {
	dump := dumpeeDump(t, "-scenario", "broadcast", "-out", "debug2")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(dump)
	zw.Close()
	dir := t.TempDir()
	cut := filepath.Join(dir, "cut.txt.gz")
	if err := os.WriteFile(cut, gz.Bytes()[:gz.Len()/2], 0o644); err != nil {
		t.Fatal(err)
	}
	type partial struct {
		Total         int    `json:"total"`
		Partial       bool   `json:"partial"`
		PartialReason string `json:"partial_reason"`
	}
	check := func(name, stdout, reason string) {
		t.Helper()
		var p partial
		if err := json.Unmarshal([]byte(stdout), &p); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, stdout)
		}
		if !p.Partial || !strings.Contains(p.PartialReason, reason) || p.Total == 0 || p.Total >= 42 {
			t.Errorf("%s: %+v, want partial with %q", name, p, reason)
		}
	}
	stdout, stderr, code := runG(t, "analyze", "--json", cut)
	if code != 1 || !strings.Contains(stderr, "--allow-partial") {
		t.Errorf("cut gzip: exit %d, want 1: %s", code, stderr)
	}
	check("cut gzip", stdout, "unexpected EOF")
	stdout, _, code = runG(t, "analyze", "--json", "--allow-partial", cut)
	if code != 0 {
		t.Errorf("cut gzip --allow-partial: exit %d", code)
	}
	check("cut gzip --allow-partial", stdout, "unexpected EOF")
	html := filepath.Join(dir, "partial.html")
	text, _, code := runG(t, "analyze", "--allow-partial", "--html", html, cut)
	if code != 0 || !strings.Contains(text, "PARTIAL input read only in part") {
		t.Errorf("text (exit %d):\n%s", code, text)
	}
	if b, err := os.ReadFile(html); err != nil || !strings.Contains(string(b), `<p class="reason" id="partial">Partial: `) {
		t.Errorf("HTML report lacks partial (%v)", err)
	}
	if _, _, code := runG(t, "diff", cut, cut); code != 1 {
		t.Errorf("diff of partial dumps: exit %d, want 1", code)
	}
	stdout, _, code = runG(t, "diff", "--json", "--allow-partial", cut, cut)
	var d struct {
		Partial []string `json:"partial"`
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil || code != 0 || len(d.Partial) != 2 ||
		!strings.HasPrefix(d.Partial[0], "before: ") || !strings.HasPrefix(d.Partial[1], "after: ") {
		t.Errorf("diff --allow-partial: exit %d partial %q (%v)", code, d.Partial, err)
	}
	text, _, _ = runG(t, "diff", "--allow-partial", cut, cut)
	if !strings.Contains(text, "PARTIAL before: analyzing goroutine dump: ") {
		t.Errorf("diff text:\n%s", text)
	}

	// An HTTP body that stops halfway and hangs until the client goes away.
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(dump[:len(dump)/2])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	stdout, stderr, code = runG(t, "analyze", "--json", "--timeout", "1s", srv.URL+"/debug/pprof/goroutine")
	if code != 1 {
		t.Errorf("stalled body: exit %d, want 1: %s", code, stderr)
	}
	check("stalled body", stdout, "Client.Timeout")
	if _, _, code := runG(t, "analyze", "--timeout", "-1s", cut); code != 2 {
		t.Errorf("negative --timeout: exit %d, want 2", code)
	}
}

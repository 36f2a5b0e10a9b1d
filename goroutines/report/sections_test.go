package report

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/goroutines"
)

// renderInChromium writes the HTML report of r, loads it in headless
// Chromium and returns the DOM after its script ran.
func renderInChromium(t *testing.T, browser string, r *goroutines.Report) string {
	t.Helper()
	var page bytes.Buffer
	if err := WriteHTML(&page, HTMLInput{Report: r}); err != nil {
		t.Fatal(err)
	}
	return chromiumDOM(t, browser, page.Bytes())
}

// chromiumDOM loads page in headless Chromium and returns the DOM after the
// page's script ran.
func chromiumDOM(t *testing.T, browser string, page []byte) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "report.html")
	if err := os.WriteFile(path, page, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--no-first-run", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--dump-dom", "file://"+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(string(dom), `<body data-rendered="yes">`) {
		t.Fatalf("the page's script did not run:\n%s", dom)
	}
	return string(dom)
}

func textOf(t *testing.T, r *goroutines.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteText(&b, r, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestPerConnectionSection: the dump of a healthy gorilla/websocket server
// with 500 clients shows its write pumps as per-connection goroutines, and
// no leak suspects, in text and in the HTML rendered by Chromium.
func TestPerConnectionSection(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "wshub")
	if out, err := exec.Command("go", "build", "-o", bin, "../testdata/progs/wshub").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dump, err := exec.CommandContext(ctx, bin, "-clients", "500").Output()
	if err != nil {
		t.Fatalf("wshub: %v", err)
	}
	r, err := goroutines.Analyze(bytes.NewReader(dump), goroutines.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const want = "500 goroutines per open connection (500 connections reading from the network in group #"
	text := textOf(t, r)
	if !strings.Contains(text, "PER CONNECTION (not leak suspects)\n  - "+want) || strings.Contains(text, "LEAK SUSPECTS") {
		t.Errorf("text:\n%s", text)
	}
	dom := renderInChromium(t, chromium(t), r)
	if !strings.Contains(dom, `<ul id="per-connection">`) || !strings.Contains(dom, want) || strings.Contains(dom, `id="suspects"`) {
		t.Errorf("DOM lacks the per-connection section or has suspects:\n%s", dom)
	}
}

// TestPartialTruncatedRunningTests: the output of a real `go test -timeout`
// run, cut mid-stack and gzipped without its trailer, is shown partial,
// truncated and with its running tests, in text and in Chromium.
func TestPartialTruncatedRunningTests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "test", "-count=1", "-timeout", "2s", "../testdata/progs/hangtest").CombinedOutput()
	if err == nil {
		t.Fatalf("hanging tests passed:\n%s", out)
	}
	// Cut after the function line of the first goroutine's first frame.
	i := bytes.Index(out, []byte("\ngoroutine "))
	j := bytes.IndexByte(out[i+1:], '\n')
	k := bytes.IndexByte(out[i+1+j+1:], '\n')
	if i < 0 || j < 0 || k < 0 {
		t.Fatalf("unexpected go test output:\n%s", out)
	}
	cut := out[:i+1+j+1+k+1]
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(cut)
	zw.Close()
	in, err := goroutines.Decompress(bytes.NewReader(gz.Bytes()[:gz.Len()-8])) // no CRC and size
	if err != nil {
		t.Fatal(err)
	}
	r, err := goroutines.Analyze(in, goroutines.Options{})
	if err == nil || !r.Partial || r.Truncated == nil || len(r.RunningTests) != 2 {
		t.Fatalf("err %v partial %v truncated %+v running %q", err, r.Partial, r.Truncated, r.RunningTests)
	}
	text := textOf(t, r)
	for _, want := range []string{
		"TRUNCATED the last goroutine (line ",
		"is cut mid-stack; the counts below are lower bounds",
		"PARTIAL input read only in part, the counts cover what was read: analyzing goroutine dump: ",
		"running tests TestHangsReading, TestHangsToo\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	dom := renderInChromium(t, chromium(t), r)
	for _, want := range []string{
		`<p class="reason" id="truncated">Truncated: the last goroutine (line `,
		`<p class="reason" id="partial">Partial: input read only in part`,
		`<p id="running-tests">Running tests: <code>TestHangsReading</code>, <code>TestHangsToo</code></p>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q:\n%s", want, dom)
		}
	}
}

// TestDebug1ClaimsNoWaits: a real debug=1 dump carries no wait times, so
// neither text nor HTML prints wait buckets or durations for it.
func TestDebug1ClaimsNoWaits(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "dumpee")
	if out, err := exec.Command("go", "build", "-o", bin, "../testdata/progs/dumpee").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	r := dumpee(t, bin, "-scenario", "broadcast", "-out", "debug1")
	if len(r.Groups) == 0 || !r.Groups[0].WaitUnknown || len(r.Suspects) == 0 {
		t.Fatalf("debug1 report: %+v", r)
	}
	text := textOf(t, r)
	if strings.Contains(text, "waited") || strings.Contains(text, "<1m") || regexp.MustCompile(`waiting \d+-\d+ min`).MatchString(text) {
		t.Errorf("text claims waits:\n%s", text)
	}
	var page bytes.Buffer
	if err := WriteHTML(&page, HTMLInput{Report: r}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.String(), "waited:") || strings.Contains(page.String(), "waiting up to") {
		t.Errorf("HTML claims waits")
	}
}

package report

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/goroutines"
)

func dumpee(t *testing.T, bin string, args ...string) *goroutines.Report {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("dumpee %v: %v", args, err)
	}
	r, err := goroutines.Analyze(bytes.NewReader(out), goroutines.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Source = strings.Join(args, " ")
	return r
}

func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("SPINDLE_REQUIRE_TOOLS") == "1" {
		t.Fatal("chromium not installed and SPINDLE_REQUIRE_TOOLS=1")
	}
	t.Skip("chromium not installed (apt-get install -y chromium)")
	return ""
}

// TestHTMLInChromium renders a diff report of two real dumps in headless
// Chromium and checks the DOM after its script ran.
func TestHTMLInChromium(t *testing.T) {
	browser := chromium(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "dumpee")
	if out, err := exec.Command("go", "build", "-o", bin, "../testdata/progs/dumpee").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	before := dumpee(t, bin, "-scenario", "broadcast", "-out", "debug2", "-msgs", "2")
	after := dumpee(t, bin, "-scenario", "broadcast", "-out", "debug2", "-msgs", "10")
	var page bytes.Buffer
	err := WriteHTML(&page, HTMLInput{Report: before, Diff: goroutines.Diff(before, after, 10*time.Second), After: after})
	if err != nil {
		t.Fatal(err)
	}
	// Self-contained: nothing fetched from elsewhere.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:|//)|url\(|@import|<link|<script[^>]+src`).Find(page.Bytes()); m != nil {
		t.Fatalf("external reference %q", m)
	}
	s := chromiumDOM(t, browser, page.Bytes())
	for _, want := range []string{
		`3 of 3 groups shown (42 goroutines)`,                          // filter summary computed by the script
		`<g class="state-bar" data-state="chan send" data-count="40">`, // state chart
		`40 (95.2%)`,
		`<details class="group" id="g1" data-count="40" data-state="chan send" open="">`, // largest first, opened
		`<code class="fn">main.(*hub).deliver</code>`,
		`Diff: 10 → 42 goroutines (+32) over 10s`,
		`<td class="n">8</td><td class="n">40</td><td class="n">+32</td>`,
		`+3.200/s`,
		`40 goroutines blocked sending on a channel in main.(*hub).deliver`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	// Groups appear largest first and the first diff row is the growth.
	if i, j := strings.Index(s, `id="g1"`), strings.Index(s, `id="g2"`); i < 0 || j < i {
		t.Errorf("groups out of order")
	}
	if i := strings.Index(s, `class="diffrow grew"`); i < 0 || strings.Index(s, `class="diffrow unchanged"`) < i {
		t.Errorf("diff rows out of order")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", s)
	}
}

func TestTextOutput(t *testing.T) {
	r := &goroutines.Report{Total: 3, States: map[string]int{"chan send": 3}, GroupingNote: "loose", Groups: []goroutines.Group{{
		ID: 1, Count: 3, State: "chan send", TopFunction: "main.f", TopFile: "/a/main.go", TopLine: 7,
		Stack: []goroutines.Frame{{Function: "main.f", File: "/a/main.go", Line: 7}},
	}}}
	var plain, color bytes.Buffer
	if err := WriteText(&plain, r, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	WriteText(&color, r, TextOptions{Color: true})
	if strings.Contains(plain.String(), "\x1b[") || !strings.Contains(color.String(), "\x1b[") {
		t.Errorf("colour only when asked")
	}
	if !strings.Contains(plain.String(), "#1 3 × [chan send]  main.f main.go:7") {
		t.Errorf("text:\n%s", plain.String())
	}
}

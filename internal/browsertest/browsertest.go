// Package browsertest runs pages of the gateway in headless Chromium for
// tests: it finds Debian's browser, starts it through chromedp, and keeps
// what the page writes to its console so that a test can require none of
// it to be an error.
package browsertest

import (
	"context"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Path is where Debian installs chromium.
const Path = "/usr/bin/chromium"

// Chromium returns Path. While apt or dpkg runs (scripts/deps.sh may still
// be installing it) it waits, bounded; absent, the test skips, unless
// SPINDLE_REQUIRE_TOOLS=1.
func Chromium(t testing.TB) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if _, err := os.Stat(Path); err == nil {
			return Path
		}
		if !installing() || time.Now().After(deadline) {
			break
		}
		t.Logf("%s not there yet and apt/dpkg is running: waiting", Path)
		time.Sleep(5 * time.Second) // polling for the install, not synchronising the test
	}
	if os.Getenv("SPINDLE_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s not installed and SPINDLE_REQUIRE_TOOLS=1", Path)
	}
	t.Skipf("%s not installed (apt-get install -y chromium)", Path)
	return ""
}

// installing reports whether an apt-get, apt or dpkg process is running.
func installing() bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(b)) {
		case "apt-get", "apt", "dpkg":
			return true
		}
	}
	return false
}

// Start runs a headless Chromium with a window of w×h pixels and returns a
// tab's context and the console it records from before anything loads.
// The test's cleanup (registered now, so it runs before cleanups
// registered earlier, such as a server's) closes the browser.
func Start(t testing.TB, w, h int) (context.Context, *Console) {
	t.Helper()
	browser := Chromium(t)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(w, h))...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	con := &Console{}
	read := make(chan struct{})
	t.Cleanup(func() { cancelTab(); cancelAlloc(); <-read })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		close(read)
		t.Fatalf("start chromium: %v", err)
	}
	go con.read(chromedp.Console(ctx), read)
	return ctx, con
}

// Console keeps what a page wrote to its console.
type Console struct {
	mu   sync.Mutex // guards msgs
	msgs []chromedp.ConsoleMessage
}

// read collects the messages until their stream ends.
func (c *Console) read(msgs iter.Seq2[chromedp.ConsoleMessage, error], done chan<- struct{}) {
	defer close(done)
	for m, err := range msgs {
		if err != nil {
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	}
}

// Errors are the uncaught exceptions, console.error calls and error entries
// of the browser log (a failed request, a CSP violation) for which allowed,
// when not nil, is false.
func (c *Console) Errors(allowed func(chromedp.ConsoleMessage) bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if (m.IsException() || m.Type == chromedp.ConsoleError) && (allowed == nil || !allowed(m)) {
			out = append(out, m.URL+": "+m.String())
		}
	}
	return out
}

// Has reports whether a message with exactly this text was logged.
func (c *Console) Has(text string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.Text == text {
			return true
		}
	}
	return false
}

// Settle logs a marker in the page and waits (10 s at most) until the
// console has it: every message logged before it has then been read.
func (c *Console) Settle(t testing.TB, ctx context.Context) {
	t.Helper()
	const marker = "spindle-test-end"
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`console.info("`+marker+`")`)); err != nil {
		t.Fatalf("log the console's end marker: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.Has(marker) {
		if time.Now().After(deadline) {
			t.Fatal("the console's end marker never arrived")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// Steps are a test's steps in a page, run in Ctx: a step that fails stops
// the test with the page's console errors and, when Show is set, the value
// of that JavaScript expression (what the page holds, as a string).
type Steps struct {
	T       testing.TB
	Ctx     context.Context
	Console *Console
	Show    string // a JavaScript expression of a string, shown when a wait fails; "": none
}

// Must stops the test when err, the outcome of the step named what, is not nil.
func (s Steps) Must(what string, err error) {
	s.T.Helper()
	if err != nil {
		s.T.Fatalf("%s: %v\nconsole: %q", what, err, s.Console.Errors(nil))
	}
}

// Wait polls expr in the page until it is truthy, for at most within.
func (s Steps) Wait(what, expr string, within time.Duration) {
	s.T.Helper()
	_, err := chromedp.Run(s.Ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil && s.Show != "" {
		shown, _ := chromedp.Run(s.Ctx, chromedp.Evaluate[string](s.Show))
		what += " (" + shown + ")"
	}
	s.Must("wait for "+what, err)
}

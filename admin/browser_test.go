package admin_test

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

	"github.com/spindlehq/spindle/internal/browsertest"
)

// artifactDir is where the test leaves its screenshot: $SPINDLE_ARTIFACTS,
// or a temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SPINDLE_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// console keeps what the page wrote to its console.
type console struct {
	mu   sync.Mutex // guards msgs
	msgs []chromedp.ConsoleMessage
	// the URL of the one document that answers 401 by design: / before the
	// login; the browser logs that as a failed load
	unauthorized string
}

// read collects the messages until their stream ends.
func (c *console) read(msgs iter.Seq2[chromedp.ConsoleMessage, error], done chan<- struct{}) {
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

// errors are the uncaught exceptions, console.error calls and error entries
// of the browser log (a failed request, a CSP violation).
func (c *console) errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	allowed := 1
	for _, m := range c.msgs {
		if allowed > 0 && m.Source == "network" && m.URL == c.unauthorized && strings.Contains(m.Text, "status of 401") {
			allowed--
			continue
		}
		if m.IsException() || m.Type == chromedp.ConsoleError {
			out = append(out, m.URL+": "+m.String())
		}
	}
	return out
}

// The admin page in headless Chromium against a real gateway: log in
// through the form, see 0 connections, connect a real client that
// subscribes, see it counted and its channel listed, publish from the form,
// see the publication counter move and the client receive exactly that
// message, see a capture listed with its files, all with a console free of
// errors (but the 401 of / before the login); the screenshot is kept in
// $SPINDLE_ARTIFACTS, or a temporary directory.
func TestAdminPageInChromium(t *testing.T) {
	browser := browsertest.Chromium(t)
	srv, base := startGateway(t, adminToken)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1100))...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	con := console{unauthorized: base + "/"}
	read := make(chan struct{})
	// Registered after the server's cleanup, so it runs first: the browser
	// is gone before the server closes.
	t.Cleanup(func() { cancelTab(); cancelAlloc(); <-read })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		close(read)
		t.Fatalf("start chromium: %v", err)
	}
	go con.read(chromedp.Console(ctx), read) // subscribed before anything loads

	step, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	dir := artifactDir(t)
	// screenshot keeps the page as it is now in the artifact directory.
	screenshot := func(name string) {
		t.Helper()
		shot, err := chromedp.Run(step, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Errorf("screenshot: %v", err)
			return
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, shot, 0o644); err != nil {
			t.Errorf("screenshot: %v", err)
			return
		}
		t.Logf("screenshot: %s (%d bytes)", file, len(shot))
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			screenshot("admin-page-failed.png")
			t.Fatalf("%s: %v\nconsole: %q", what, err, con.errors())
		}
	}
	// waitJS waits until the expression is truthy in the page.
	waitJS := func(what, expr string) {
		t.Helper()
		_, err := chromedp.Run(step, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
		must("wait for "+what, err)
	}
	text := func(id string) string { return "document.getElementById(" + quote(id) + ").textContent" }

	// / without a session answers 401 with the login form
	must("open / and get the login form", chromedp.Do(step, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("login-token"))))
	must("log in", chromedp.Do(step,
		chromedp.SendKeys(chromedp.ID("login-token"), adminToken),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("connections"))))
	waitJS("0 connections", text("connections")+` === "0"`)
	waitJS("admission state", text("admission")+` === "calm"`)

	sub := subscribe(t, srv, "alice", "news")
	waitJS("1 connection", text("connections")+` === "1"`)
	waitJS("news in the top channels", `(() => { const r = document.querySelector('#top-channels tr[data-channel="news"]'); return r && r.cells[1].textContent === "1"; })()`)
	waitJS("no publication yet", text("publications")+` === "0"`)

	must("publish from the form", chromedp.Do(step,
		chromedp.SetValue(chromedp.ID("publish-channel"), "news"),
		chromedp.SetValue(chromedp.ID("publish-data"), `{"text": "from the browser"}`),
		chromedp.Click(chromedp.ID("publish-button"))))
	waitJS("the form's answer", text("publish-result")+` === "published to news"`)
	if got := sub.next(t); got != `news:{"text":"from the browser"}` {
		t.Errorf("subscriber received %q, want the form's message", got)
	}
	waitJS("publication counter 1", text("publications")+` === "1"`)
	waitJS("delivery counter 1", text("deliveries")+` === "1"`)
	if got := sub.received(); len(got) != 1 {
		t.Errorf("subscriber received %q, want exactly one publication", got)
	}
	waitJS("a rate and goroutine chart of 2+ readings",
		`document.getElementById("publication-rate").textContent !== "–" && Number(document.getElementById("goroutine-line").dataset.samples) >= 2`)

	c, err := srv.Capture("browser test")
	must("capture", err)
	waitJS("the capture listed with its files", `(() => {
		const links = [...document.querySelectorAll("#captures a")].map(a => a.getAttribute("href"));
		return links.includes("/debug/captures/`+c.ID+`/goroutine.txt");
	})()`)
	status, err := chromedp.Run(step, chromedp.Evaluate[int](`fetch(document.querySelector("#captures a[href$='goroutine.txt']").href).then(r => r.status)`, chromedp.EvalAwaitPromise))
	must("open the capture's goroutine dump", err)
	if status != 200 {
		t.Errorf("the capture's goroutine.txt link answered %d in the logged-in browser", status)
	}

	screenshot("admin-page.png")

	// A console error or exception anywhere above fails the test; the
	// marker, logged last, says every earlier message has been read.
	_, err = chromedp.Run(step, chromedp.Evaluate[chromedp.Void](`console.info("spindle-test-end")`))
	must("log the end marker", err)
	waitFor(t, "the console's end marker", func() bool { return con.has("spindle-test-end") })
	if errs := con.errors(); len(errs) > 0 {
		t.Errorf("browser console has errors:\n%s", strings.Join(errs, "\n"))
	}
}

func (c *console) has(text string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.Text == text {
			return true
		}
	}
	return false
}

func quote(s string) string { return `"` + s + `"` }

package demo_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/internal/browsertest"
)

// The demo page in headless Chromium against a real gateway started with
// demo on, opened as the README's tour opens it (/demo/#token=…): the
// embedded SDK connects and subscribes to news (the gateway counts the
// subscriber), a publication sent through the server API appears in the
// page's list, the token is gone from the address, and the console has no
// error; the screenshot is kept in $SPINDLE_ARTIFACTS, or a temporary
// directory.
func TestDemoPageInChromium(t *testing.T) {
	srv := startGateway(t, true)
	tok, err := auth.MintConnect(hmacSecret, auth.ConnectClaims{UserID: "42"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, con := browsertest.Start(t, 1100, 800)

	step, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	st := browsertest.Steps{T: t, Ctx: step, Console: con, Show: `document.body.innerText`}

	page := "http://" + srv.Addr() + "/demo/#token=" + tok
	st.Must("open the demo page", chromedp.Do(step, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("publications"))))
	st.Wait("connected", `document.getElementById("state").textContent.startsWith("connected as ")`, 15*time.Second)
	st.Wait("subscribed to news", `document.getElementById("sub-state").textContent === "subscribed to news"`, 15*time.Second)
	if n := srv.Node.Channels("news")["news"]; n != 1 {
		t.Fatalf("the gateway counts %d subscribers on news, want the page's 1", n)
	}
	addr, err := chromedp.Run(step, chromedp.Evaluate[string](`location.href`))
	st.Must("read the address", err)
	if strings.Contains(addr, tok) {
		t.Errorf("the token is still in the address bar: %s", addr)
	}

	req, _ := http.NewRequest(http.MethodPost, srv.APIURL()+"/publish", strings.NewReader(`{"channel":"news","data":{"text":"from the API"}}`))
	req.Header.Set("X-API-Key", "key")
	resp, err := http.DefaultClient.Do(req)
	st.Must("publish", err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %s", resp.Status)
	}
	st.Wait("the publication listed", `(() => {
		const li = document.querySelectorAll("#publications li");
		return li.length === 1 && li[0].textContent === '{"text":"from the API"}' && document.getElementById("count").textContent === "1";
	})()`, 15*time.Second)

	shot, err := chromedp.Run(step, chromedp.FullScreenshot(100)) // 100: PNG
	st.Must("screenshot", err)
	dir := os.Getenv("SPINDLE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	st.Must("artifact dir", os.MkdirAll(dir, 0o755))
	file := filepath.Join(dir, "demo-page.png")
	st.Must("save screenshot", os.WriteFile(file, shot, 0o644))
	t.Logf("screenshot: %s (%d bytes)", file, len(shot))

	con.Settle(t, step)
	if errs := con.Errors(nil); len(errs) > 0 {
		t.Errorf("browser console has errors:\n%s", strings.Join(errs, "\n"))
	}
}

// Without a token the page says what to do and opens no connection; a bad
// token is refused by the gateway and the page shows the disconnect, not a
// console error.
func TestDemoPageWithoutOrWithABadToken(t *testing.T) {
	srv := startGateway(t, true)
	ctx, con := browsertest.Start(t, 1000, 700)
	step, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	st := browsertest.Steps{T: t, Ctx: step, Console: con, Show: `document.body.innerText`}
	if err := chromedp.Do(step, chromedp.Navigate("http://"+srv.Addr()+"/demo/"), chromedp.WaitVisible(chromedp.ID("connect-button"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(step, chromedp.Click(chromedp.ID("connect-button"))); err != nil {
		t.Fatal(err)
	}
	st.Wait("the ask for a token", `document.getElementById("error").textContent.startsWith("paste a connection token first")`, 15*time.Second)
	if n := srv.Node.Info().NumClients; n != 0 {
		t.Errorf("the page without a token opened %d connections", n)
	}
	if err := chromedp.Do(step, chromedp.SetValue(chromedp.ID("token"), "not-a-token"), chromedp.Click(chromedp.ID("connect-button"))); err != nil {
		t.Fatal(err)
	}
	st.Wait("the refusal shown", `document.getElementById("error").textContent.includes("3500")`, 15*time.Second)
	con.Settle(t, step)
	if errs := con.Errors(nil); len(errs) > 0 {
		t.Errorf("browser console has errors:\n%s", strings.Join(errs, "\n"))
	}
}

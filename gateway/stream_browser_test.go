package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/spindlehq/spindle/internal/browsertest"
)

// A browser's EventSource, in headless Chromium, reads the SSE endpoint
// from a page of another origin (allowed by allowed_origins): the connect
// push with the token's channel, then a publication; the console has no
// error.
func TestUniSSEEventSourceInChromium(t *testing.T) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>sse</title><body><script>window.got = [];</script></body>`)
	}))
	defer page.Close()
	tn, base := startStreamNode(t, func(c *Config) { c.AllowedOrigins = []string{page.URL} })
	const ch = "chat:browser"
	ctx, con := browsertest.Start(t, 800, 600)
	step, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	st := browsertest.Steps{T: t, Ctx: step, Console: con, Show: `JSON.stringify(window.got)`}
	st.Must("open the page", chromedp.Do(step, chromedp.Navigate(page.URL)))
	open := fmt.Sprintf(`window.es = new EventSource(%q + "?cf_connect=" + encodeURIComponent(JSON.stringify({token: %q})));
		window.es.onmessage = (e) => window.got.push(JSON.parse(e.data));`, base+UniSSEPath, connectToken(t, "u1", ch))
	_, err := chromedp.Run(step, chromedp.Evaluate[chromedp.Void](open))
	st.Must("open the EventSource", err)
	st.Wait("the connect push", fmt.Sprintf(`window.got.length > 0 && window.got[0].connect && %q in window.got[0].connect.subs`, ch), 15*time.Second)
	publishUni(t, tn, ch, `{"text":"from the server"}`)
	st.Wait("the publication", fmt.Sprintf(`window.got.some((p) => p.channel === %q && p.pub && p.pub.data.text === "from the server" && p.pub.offset === 1)`, ch), 15*time.Second)
	_, err = chromedp.Run(step, chromedp.Evaluate[chromedp.Void](`window.es.close()`))
	st.Must("close the EventSource", err)
	waitFor(t, "the session to be gone", func() bool { return tn.NumClients() == 0 })
	con.Settle(t, step)
	if errs := con.Errors(nil); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

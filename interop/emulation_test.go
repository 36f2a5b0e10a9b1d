package interop_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/internal/browsertest"
)

// The official SDK's fallback transports in headless Chromium, with
// WebSocket left out of its transport list: http_stream, then sse, each
// alone. From a page of another origin (allowed_origins), the SDK connects,
// subscribes and publishes through the emulation endpoint, receives a
// publication sent through the server API, and answers pings there for
// several pong timeouts; the gateway counts its subscriber; the console
// has no error. The SDK is the copy the demo page embeds (the version
// interop/package-lock.json pins), so no npm install is needed.
func TestCentrifugeJSEmulationInChromium(t *testing.T) {
	sdk, err := os.ReadFile("../demo/ui/centrifuge.js")
	if err != nil {
		t.Fatal(err)
	}
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/centrifuge.js" {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			_, _ = w.Write(sdk)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>emulation</title><script src="/centrifuge.js"></script><body></body>`)
	}))
	defer page.Close()

	cfg := gatewayConfig()
	cfg.AllowedOrigins = []string{page.URL}
	cfg.Channel.AllowPublishForSubscriber = true
	cfg.PingInterval = config.Duration(time.Second)
	cfg.PongTimeout = config.Duration(500 * time.Millisecond)
	srv := startGateway(t, cfg)
	base := "http://" + srv.Addr()

	ctx, con := browsertest.Start(t, 800, 600)
	for _, transport := range []string{"http_stream", "sse"} {
		t.Run(transport, func(t *testing.T) {
			step, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			st := browsertest.Steps{T: t, Ctx: step, Console: con, Show: `JSON.stringify(window.st)`}
			user := "emu-" + transport
			tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: user}, time.Hour)
			st.Must("mint a token", err)
			ch := "emulation-" + transport
			endpoint := base + map[string]string{"http_stream": "/connection/http_stream", "sse": "/connection/sse"}[transport]
			st.Must("open the page", chromedp.Do(step, chromedp.Navigate(page.URL)))
			script := fmt.Sprintf(`(() => {
				window.st = {connected: null, connects: 0, subscribed: false, pubs: [], published: false, disconnects: [], errors: []};
				const c = new Centrifuge([{transport: %q, endpoint: %q}], {token: %q, emulationEndpoint: %q});
				c.on('connected', (ctx) => { window.st.connected = ctx.transport; window.st.connects++; });
				c.on('disconnected', (ctx) => { window.st.disconnects.push(ctx.code + ' ' + ctx.reason); });
				c.on('error', (ctx) => { window.st.errors.push(String(ctx.error && ctx.error.message)); });
				const sub = c.newSubscription(%q);
				sub.on('subscribed', () => {
					window.st.subscribed = true;
					sub.publish({from: 'page'}).then(() => { window.st.published = true; }, (e) => window.st.errors.push('publish ' + e.message));
				});
				sub.on('publication', (ctx) => window.st.pubs.push(ctx.data));
				sub.subscribe();
				c.connect();
				window.client = c;
			})()`, transport, endpoint, tok, base+"/emulation", ch)
			_, err = chromedp.Run(step, chromedp.Evaluate[chromedp.Void](script))
			st.Must("start the SDK", err)
			st.Wait("connected over "+transport, fmt.Sprintf(`window.st.connected === %q`, transport), 15*time.Second)
			st.Wait("subscribed and published", `window.st.subscribed && window.st.published && window.st.pubs.some((d) => d.from === 'page')`, 15*time.Second)
			if n := srv.Node.Channels(ch)[ch]; n != 1 {
				t.Fatalf("the gateway counts %d subscribers on %s, want the page's 1", n, ch)
			}
			req, _ := http.NewRequest(http.MethodPost, srv.APIURL()+"/publish", strings.NewReader(fmt.Sprintf(`{"channel":%q,"data":{"from":"api"}}`, ch)))
			req.Header.Set("X-API-Key", apiKey)
			resp, err := http.DefaultClient.Do(req)
			st.Must("publish", err)
			_ = resp.Body.Close()
			st.Wait("the API's publication", `window.st.pubs.some((d) => d.from === 'api')`, 15*time.Second)
			// Pings every second, 0.5 s to answer: after several of them still
			// on the first connection (a missed pong would reconnect it).
			time.Sleep(3500 * time.Millisecond) // the span being tested, not synchronisation
			st.Wait("still connected", `window.st.connects === 1 && window.st.disconnects.length === 0 && window.st.errors.length === 0 && window.client.state === 'connected'`, time.Second)
			_, err = chromedp.Run(step, chromedp.Evaluate[chromedp.Void](`window.client.disconnect()`))
			st.Must("disconnect", err)
			deadline := time.Now().Add(10 * time.Second)
			for srv.Node.NumClients() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d sessions left after the SDK disconnected", srv.Node.NumClients())
				}
				time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
			}
		})
	}
	con.Settle(t, ctx)
	if errs := con.Errors(nil); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

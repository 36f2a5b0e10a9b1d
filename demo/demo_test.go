package demo_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/demo"
	"github.com/spindlehq/spindle/server"
)

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// The page and every file it links under /demo/ are served with their
// content type; other paths and methods are refused.
func TestHandlerServesThePageAndItsFiles(t *testing.T) {
	ts := httptest.NewServer(demo.Handler())
	defer ts.Close()

	code, hdr, page := get(t, ts.URL+"/demo/")
	if code != 200 || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("/demo/: %d %q", code, hdr.Get("Content-Type"))
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("/demo/ Content-Security-Policy %q does not keep the page to its own origin", csp)
	}
	links := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	want := map[string]string{
		"/demo/centrifuge.js": "text/javascript", "/demo/app.js": "text/javascript",
		"/demo/style.css": "text/css", "/demo/centrifuge.LICENSE": "text/plain",
	}
	for _, l := range links {
		u := l[1]
		if strings.HasPrefix(u, "data:") {
			continue
		}
		if !strings.HasPrefix(u, demo.Prefix) {
			t.Errorf("the page links %q, outside /demo/: it must load nothing from elsewhere", u)
			continue
		}
		code, hdr, body := get(t, ts.URL+u)
		if code != 200 || body == "" {
			t.Errorf("%s: %d, %d bytes", u, code, len(body))
		}
		if typ, ok := want[u]; ok && !strings.HasPrefix(hdr.Get("Content-Type"), typ) {
			t.Errorf("%s: Content-Type %q, want %s", u, hdr.Get("Content-Type"), typ)
		}
		delete(want, u)
	}
	for u := range want {
		t.Errorf("the page does not link %s", u)
	}
	for _, p := range []string{"/demo/nope.js", "/demo/ui/app.js", "/demo/../demo.go", "/demo/index.htm", "/other"} {
		if code, _, _ := get(t, ts.URL+p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	resp, err := http.Post(ts.URL+"/demo/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /demo/: %d, want 405", resp.StatusCode)
	}
}

// The embedded SDK is the version interop/package-lock.json pins, carries
// its MIT notice, and is byte for byte npm's dist/centrifuge.js (when
// interop/node_modules is installed) but for the header and the source-map
// line.
func TestEmbeddedSDKIsThePinnedRelease(t *testing.T) {
	ts := httptest.NewServer(demo.Handler())
	defer ts.Close()
	_, _, sdk := get(t, ts.URL+"/demo/centrifuge.js")
	header, body, ok := strings.Cut(sdk, "\n")
	m := regexp.MustCompile(`^/\*! centrifuge (\d+\.\d+\.\d+), .*MIT License`).FindStringSubmatch(header)
	if !ok || m == nil {
		t.Fatalf("centrifuge.js starts with %q, want the version and license header", header)
	}
	lock, err := os.ReadFile("../interop/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Packages map[string]struct{ Version, License string } `json:"packages"`
	}
	if err := json.Unmarshal(lock, &l); err != nil {
		t.Fatal(err)
	}
	pinned := l.Packages["node_modules/centrifuge"]
	if pinned.Version != m[1] || pinned.License != "MIT" {
		t.Errorf("embedded centrifuge %s; interop pins %s (%s): copy node_modules/centrifuge/dist/centrifuge.js again", m[1], pinned.Version, pinned.License)
	}
	if _, _, notice := get(t, ts.URL+"/demo/centrifuge.LICENSE"); !strings.Contains(notice, "The MIT License") || !strings.Contains(notice, "Centrifugal Labs") {
		t.Errorf("centrifuge.LICENSE is not the SDK's MIT notice: %.80q", notice)
	}
	npm, err := os.ReadFile("../interop/node_modules/centrifuge/dist/centrifuge.js")
	if os.IsNotExist(err) && os.Getenv("SPINDLE_REQUIRE_TOOLS") != "1" {
		t.Skip("interop/node_modules not installed (scripts/deps.sh): not compared with npm's copy")
	} else if err != nil {
		t.Fatal(err)
	}
	orig := regexp.MustCompile(`(?m)^//# sourceMappingURL=.*\n?`).ReplaceAllString(string(npm), "")
	if body != orig {
		t.Errorf("the embedded SDK (%d bytes) differs from npm's dist/centrifuge.js (%d bytes)", len(body), len(orig))
	}
}

func startGateway(t *testing.T, demoOn bool) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKey, cfg.TokenHMACSecret = "key", hmacSecret
	cfg.CaptureDir = t.TempDir()
	cfg.Demo = demoOn
	srv, err := server.Run(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

const hmacSecret = "demo-test-secret"

// A real gateway serves /demo/ on its client listener only with demo on;
// the API beside it works either way.
func TestGatewayServesDemoOnlyWhenOn(t *testing.T) {
	for _, on := range []bool{false, true} {
		srv := startGateway(t, on)
		want := 404
		if on {
			want = 200
		}
		for _, p := range []string{"/demo/", "/demo/centrifuge.js"} {
			if code, _, _ := get(t, "http://"+srv.Addr()+p); code != want {
				t.Errorf("demo %v: %s answered %d, want %d", on, p, code, want)
			}
		}
		if code, _, _ := get(t, "http://"+srv.AdminAddr()+"/demo/"); code == 200 {
			t.Errorf("demo %v: the admin listener serves /demo/ too", on)
		}
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

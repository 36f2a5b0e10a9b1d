package admin_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// guarded are endpoints the admin token protects; each answers 200 with it.
var guarded = []string{"/", "/index", "/info", "/admin/stats", "/admin/channels", "/debug/captures", "/debug/tasks", "/debug/pprof/"}

// probes stay open whatever the token.
var probes = []string{"/healthz", "/readyz", "/metrics"}

// With --admin-token every endpoint but the probes, the scraper and the
// login form answers 401 without it: no header, a wrong token, another
// scheme, or the token in the URL; with "Bearer TOKEN" each answers 200.
func TestTokenGuardsAllButProbes(t *testing.T) {
	_, base := startGateway(t, adminToken)
	for _, p := range guarded {
		for name, h := range map[string]http.Header{
			"no header":   nil,
			"wrong token": bearer("wrong"),
			"prefix only": bearer(adminToken[:5]),
			"longer":      bearer(adminToken + "x"),
			"basic":       {"Authorization": {"Basic " + adminToken}},
			"bare token":  {"Authorization": {adminToken}},
		} {
			code, hdr, body := do(t, http.MethodGet, base+p, h, "")
			if code != http.StatusUnauthorized {
				t.Errorf("GET %s (%s): %d, want 401", p, name, code)
			}
			if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || strings.Contains(body, "spindle_connections") {
				t.Errorf("GET %s (%s): WWW-Authenticate %q, body %.80q", p, name, hdr.Get("WWW-Authenticate"), body)
			}
		}
		if code, _, _ := do(t, http.MethodGet, base+p+"?token="+adminToken, nil, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s?token=…: %d; a token in the URL must not count", p, code)
		}
		if code, _, body := do(t, http.MethodGet, base+p, bearer(adminToken), ""); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d %.200s", p, code, body)
		}
	}
	for _, p := range []string{"/debug/capture", "/admin/publish", "/alertmanager"} {
		if code, _, _ := do(t, http.MethodPost, base+p, http.Header{"Content-Type": {"application/json"}}, `{}`); code != http.StatusUnauthorized {
			t.Errorf("POST %s without the token: %d, want 401", p, code)
		}
	}
	for _, p := range append(probes, "/login", "/ui/app.js", "/ui/style.css") {
		if code, _, body := do(t, http.MethodGet, base+p, nil, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %.200s; want it open", p, code, body)
		}
	}
	// A browser sent to / without a session is shown the login form, with 401.
	code, _, body := do(t, http.MethodGet, base+"/", http.Header{"Accept": {"text/html"}}, "")
	if code != http.StatusUnauthorized || !strings.Contains(body, `action="/login"`) || strings.Contains(body, adminToken) {
		t.Errorf("GET / as a browser without a session: %d %.300s; want 401 and the login form", code, body)
	}
}

// POST /login with the token in its body sets an HttpOnly, SameSite=Strict
// session cookie that opens the guarded endpoints; a wrong token, or the
// token in the query string, sets none; a forged or logged-out cookie does
// not open anything.
func TestLoginSetsSessionCookie(t *testing.T) {
	_, base := startGateway(t, adminToken)
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}

	code, hdr, body := do(t, http.MethodPost, base+"/login", form, url.Values{"token": {"wrong"}}.Encode())
	if code != http.StatusUnauthorized || hdr.Get("Set-Cookie") != "" || !strings.Contains(body, "Wrong admin token") {
		t.Errorf("login with a wrong token: %d, Set-Cookie %q, body %.300s", code, hdr.Get("Set-Cookie"), body)
	}
	code, hdr, _ = do(t, http.MethodPost, base+"/login?token="+adminToken, form, "")
	if code != http.StatusUnauthorized || hdr.Get("Set-Cookie") != "" {
		t.Errorf("login with the token in the URL: %d, Set-Cookie %q; want 401 and no cookie", code, hdr.Get("Set-Cookie"))
	}

	code, hdr, _ = do(t, http.MethodPost, base+"/login", form, url.Values{"token": {adminToken}}.Encode())
	if code != http.StatusSeeOther || hdr.Get("Location") != "/" {
		t.Fatalf("login: %d, Location %q; want 303 to /", code, hdr.Get("Location"))
	}
	cookies := (&http.Response{Header: hdr}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("login set %d cookies: %q", len(cookies), hdr.Values("Set-Cookie"))
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 || strings.Contains(c.Value, adminToken) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, a lifetime, and not the token itself", c)
	}
	withCookie := http.Header{"Cookie": {c.Name + "=" + c.Value}}
	for _, p := range guarded {
		if code, _, body := do(t, http.MethodGet, base+p, withCookie, ""); code != http.StatusOK {
			t.Errorf("GET %s with the session cookie: %d %.200s", p, code, body)
		}
	}
	exp, mac, _ := strings.Cut(c.Value, ".")
	for name, v := range map[string]string{
		"later expiry": "9" + exp + "." + mac,
		"other mac":    exp + "." + strings.Repeat("0", len(mac)),
		"no mac":       exp,
		"token":        adminToken,
	} {
		if code, _, _ := do(t, http.MethodGet, base+"/admin/stats", http.Header{"Cookie": {c.Name + "=" + v}}, ""); code != http.StatusUnauthorized {
			t.Errorf("forged cookie (%s): %d, want 401", name, code)
		}
	}
	// Logging out clears the cookie in the browser.
	code, hdr, _ = do(t, http.MethodPost, base+"/logout", withCookie, "")
	out := (&http.Response{Header: hdr}).Cookies()
	if code != http.StatusSeeOther || len(out) != 1 || out[0].Name != c.Name || out[0].MaxAge >= 0 {
		t.Errorf("logout: %d, cookies %+v; want 303 and the cookie cleared", code, out)
	}
}

// Without a token the page and its endpoints are open, the page says so,
// and /login leads back to it.
func TestOpenWithoutToken(t *testing.T) {
	_, base := startGateway(t, "")
	code, hdr, body := do(t, http.MethodGet, base+"/", http.Header{"Accept": {"text/html"}}, "")
	if code != http.StatusOK || !strings.Contains(body, `id="open-banner"`) || !strings.Contains(body, "--admin-token") {
		t.Errorf("GET / as a browser: %d %.300s; want the page with the open banner", code, body)
	}
	for _, p := range append(guarded[1:], probes...) { // the page links to the other endpoints
		if !strings.Contains(body, `href="`+p+`"`) {
			t.Errorf("the page has no link to %s", p)
		}
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("page CSP %q: want default-src 'self' (nothing loaded from elsewhere)", csp)
	}
	for _, p := range guarded {
		if code, _, _ := do(t, http.MethodGet, base+p, nil, ""); code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200 with no token configured", p, code)
		}
	}
	if code, hdr, _ := do(t, http.MethodGet, base+"/login", nil, ""); code != http.StatusSeeOther || hdr.Get("Location") != "/" {
		t.Errorf("GET /login with no token: %d → %q, want 303 to /", code, hdr.Get("Location"))
	}
	// the page's templates are not served raw, nor is a directory listing
	for _, p := range []string{"/ui/", "/ui/index.html", "/ui/login.html"} {
		if code, _, _ := do(t, http.MethodGet, base+p, nil, ""); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
}

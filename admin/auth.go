package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// sessionCookie names the cookie a login sets.
const sessionCookie = "spindle_admin"

// sessionTTL is how long one login lasts.
const sessionTTL = 12 * time.Hour

// gate asks every request but the open ones for the admin token: in an
// "Authorization: Bearer TOKEN" header, or as the session cookie POST /login
// sets. Its fields are set by newGate and only read after.
type gate struct {
	token []byte // SHA-256 of the admin token; nil: no token, everything is open
	key   []byte // HMAC key of session cookies, new each process
}

func newGate(token string) *gate {
	if token == "" {
		return &gate{}
	}
	sum := sha256.Sum256([]byte(token))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &gate{token: sum[:], key: key}
}

// unguarded reports whether path is served without the token: probes and
// the scraper, the login form and the page's script and style sheet (no
// data in them).
func unguarded(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics", "/login", "/ui/app.js", "/ui/style.css":
		return true
	}
	return false
}

// wrap answers 401 to a request that is not open and carries no valid token.
func (g *gate) wrap(next http.Handler) http.Handler {
	if g.token == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if unguarded(r.URL.Path) || g.allowed(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="spindle admin"`)
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodGet && r.URL.Path == "/" && wantsHTML(r) {
			serveLogin(w, http.StatusUnauthorized, "")
			return
		}
		http.Error(w, "401 unauthorized: send the admin token as \"Authorization: Bearer TOKEN\", or log in at /login", http.StatusUnauthorized)
	})
}

// allowed reports whether r carries the token in its header or a valid
// session cookie.
func (g *gate) allowed(r *http.Request) bool {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		return ok && strings.EqualFold(scheme, "Bearer") && g.match(strings.TrimSpace(tok))
	}
	c, err := r.Cookie(sessionCookie)
	return err == nil && g.validSession(c.Value, time.Now())
}

// match compares a token with the admin token in constant time (both are
// hashed first, so the length does not show either).
func (g *gate) match(token string) bool {
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], g.token) == 1
}

// session is a cookie value valid until exp: "exp.mac".
func (g *gate) session(exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + g.mac(e)
}

func (g *gate) mac(exp string) string {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte("spindle admin session " + exp))
	return hex.EncodeToString(m.Sum(nil))
}

func (g *gate) validSession(v string, now time.Time) bool {
	e, mac, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || now.Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(g.mac(e)))
}

// routes adds GET /login (the form), POST /login (token in the form body,
// never the URL) and POST /logout.
func (g *gate) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		if g.token == nil {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		serveLogin(w, http.StatusOK, "")
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if g.token == nil {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
		if err := r.ParseForm(); err != nil {
			serveLogin(w, http.StatusBadRequest, "The login form could not be read: "+err.Error())
			return
		}
		// PostForm is the body only: a token in the query string is ignored.
		if !g.match(r.PostForm.Get("token")) {
			serveLogin(w, http.StatusUnauthorized, "Wrong admin token.")
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: sessionCookie, Value: g.session(time.Now().Add(sessionTTL)), Path: "/",
			MaxAge: int(sessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
		})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	})
}

var loginPage = template.Must(template.ParseFS(ui, "ui/login.html"))

// serveLogin writes the login form with status and, when set, a message.
func serveLogin(w http.ResponseWriter, status int, msg string) {
	setPageHeaders(w)
	w.WriteHeader(status)
	_ = loginPage.Execute(w, struct{ Error string }{msg})
}

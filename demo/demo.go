// Package demo is the page `spindle serve --demo` serves at /demo/ on the
// client listener: the official centrifuge JS SDK, embedded, connects to the
// gateway, subscribes to a channel and lists its publications.
package demo

import (
	"embed"
	"net/http"
	"path"
	"strings"
)

// The SDK is a copy of centrifuge-js's dist/centrifuge.js (the version
// interop/package-lock.json pins) with its license header added and its
// source-map line removed; centrifuge.LICENSE is its MIT notice.
//
//go:embed ui
var ui embed.FS

// Prefix is the path the page is served under.
const Prefix = "/demo/"

// types are the content types of the files in ui by extension.
var types = map[string]string{
	".html":    "text/html; charset=utf-8",
	".js":      "text/javascript; charset=utf-8",
	".css":     "text/css; charset=utf-8",
	".LICENSE": "text/plain; charset=utf-8",
}

// Handler serves the page at Prefix and its files below it; any other path
// is 404. The page loads nothing but these files and opens a WebSocket only
// to the host it came from.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if !ok || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		if name == "" {
			name = "index.html"
		}
		typ, known := types[path.Ext(name)]
		body, err := ui.ReadFile("ui/" + name)
		if !known || err != nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", typ)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if name == "index.html" {
			// 'self' covers ws:// and wss:// to the page's own host (CSP 3).
			h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		}
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}

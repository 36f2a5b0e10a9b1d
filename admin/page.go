package admin

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ui holds the web page's files; nothing is fetched from elsewhere.
//
//go:embed ui
var ui embed.FS

// Page is what the admin web page reads and does; the server wires its
// node in.
type Page struct {
	Stats    func() Stats          // one reading of the node, polled by the page
	Channels func() map[string]int // channels with subscribers on this node, and how many each
	// Publish sends data to channel; a *RequestError is the caller's fault.
	Publish func(ctx context.Context, channel string, data json.RawMessage) error
}

// Stats is one reading of the node. The counters only grow: the page
// computes rates from two readings and their times.
type Stats struct {
	TimeMS         int64          `json:"time_ms"` // when read, unix milliseconds; set by the admin server
	Version        string         `json:"version"`
	UptimeSeconds  int64          `json:"uptime_seconds"`
	Connections    int            `json:"connections"`
	MaxConnections int            `json:"max_connections"`
	Users          int            `json:"users"`
	Subscriptions  int            `json:"subscriptions"`
	Channels       int            `json:"channels"`
	Publications   float64        `json:"publications_total"` // spindle_publications_total
	Deliveries     float64        `json:"deliveries_total"`   // spindle_deliveries_total
	Goroutines     int            `json:"goroutines"`
	Admission      string         `json:"admission"` // calm, throttling or shedding
	AdmissionWhy   string         `json:"admission_why"`
	Draining       bool           `json:"draining"`
	TopChannels    []ChannelCount `json:"top_channels"` // most subscribers first; set by the admin server
}

// ChannelCount is a channel and its subscribers on this node.
type ChannelCount struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

// RequestError is a publish refused for what the caller sent (unknown
// namespace, too large): the endpoint answers 400 with it.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// topChannels is how many channels GET /admin/stats lists.
const topChannels = 10

// maxPublishBody bounds the body of POST /admin/publish.
const maxPublishBody = 1 << 20

func (s *Server) pageRoutes() {
	for _, f := range []string{"app.js", "style.css"} {
		s.mux.HandleFunc("GET /ui/"+f, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, ui, "ui/"+f)
		})
	}
	s.mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, _ *http.Request) {
		st := s.page.Stats()
		st.TimeMS = time.Now().UnixMilli()
		st.TopChannels = sortChannels(s.page.Channels(), topChannels)
		writeJSON(w, http.StatusOK, st)
	})
	s.mux.HandleFunc("GET /admin/channels", func(w http.ResponseWriter, r *http.Request) {
		limit := 0
		if q := r.URL.Query().Get("limit"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want a whole number >= 0 (0: all)", q))
				return
			}
			limit = n
		}
		writeJSON(w, http.StatusOK, map[string]any{"channels": sortChannels(s.page.Channels(), limit)})
	})
	s.mux.HandleFunc("POST /admin/publish", s.servePublish)
}

// sortChannels lists m by subscribers, most first (then by name), at most
// limit of them (0: all).
func sortChannels(m map[string]int, limit int) []ChannelCount {
	out := make([]ChannelCount, 0, len(m))
	for ch, n := range m {
		out = append(out, ChannelCount{ch, n})
	}
	slices.SortFunc(out, func(a, b ChannelCount) int {
		if a.Subscribers != b.Subscribers {
			return b.Subscribers - a.Subscribers
		}
		return strings.Compare(a.Channel, b.Channel)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// servePublish publishes {"channel": "...", "data": <JSON>} through the
// node. It takes only application/json, which a cross-site form cannot
// send, and publishes nothing when the request is bad.
func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "send the message as Content-Type: application/json")
		return
	}
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPublishBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the body is not a publish request {\"channel\": \"...\", \"data\": {...}}: "+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "the body has more after the publish request's JSON object")
		return
	}
	switch {
	case req.Channel == "":
		writeError(w, http.StatusBadRequest, "channel is empty: name the channel to publish to")
		return
	case len(req.Data) == 0 || bytes.Equal(req.Data, []byte("null")):
		writeError(w, http.StatusBadRequest, "data is missing: give any JSON value, e.g. {\"text\": \"hello\"}")
		return
	}
	if err := s.page.Publish(r.Context(), req.Channel, req.Data); err != nil {
		if re := (*RequestError)(nil); errors.As(err, &re) {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("admin page publish", "channel", req.Channel, "err", err)
		writeError(w, http.StatusInternalServerError, "publish failed: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"published": true, "channel": req.Channel})
}

// renderPage renders the web page once; nil without a page.
func (s *Server) renderPage() []byte {
	if s.page == nil {
		return nil
	}
	t := template.Must(template.ParseFS(ui, "ui/index.html"))
	var b bytes.Buffer
	if err := t.Execute(&b, struct {
		Open  bool
		Links []link
	}{s.gate.token == nil, s.index}); err != nil {
		panic(fmt.Sprintf("admin: render the page: %v", err)) // the template is embedded: a test renders it
	}
	return b.Bytes()
}

func (s *Server) servePage(w http.ResponseWriter) {
	setPageHeaders(w)
	_, _ = w.Write(s.html)
}

// setPageHeaders marks a response as an HTML page that loads nothing but
// this listener's own files and cannot be framed.
func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

package watchdog

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
)

// Routes mounts the watchdog's endpoints on mux: POST /debug/capture,
// GET /debug/captures (and each capture's files below it), and
// POST /alertmanager for Alertmanager's webhook.
func (w *Watchdog) Routes(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("POST /debug/capture", func(rw http.ResponseWriter, r *http.Request) {
		reason := "api"
		if q := r.URL.Query().Get("reason"); q != "" {
			reason = "api: " + q
		}
		w.serveCapture(rw, reason)
	})
	mux.HandleFunc("GET /debug/captures", func(rw http.ResponseWriter, _ *http.Request) {
		writeJSON(rw, http.StatusOK, map[string]any{"dir": w.cfg.Dir, "captures": w.List()})
	})
	mux.HandleFunc("GET /debug/captures/{id}/{file}", func(rw http.ResponseWriter, r *http.Request) {
		id, file := r.PathValue("id"), r.PathValue("file")
		for _, c := range w.List() {
			if c.ID == id && (slices.Contains(c.Files, file) || file == "capture.json") {
				if strings.HasSuffix(file, ".txt") {
					rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
				}
				http.ServeFile(rw, r, filepath.Join(w.cfg.Dir, id, file))
				return
			}
		}
		http.NotFound(rw, r)
	})
	mux.HandleFunc("POST /alertmanager", func(rw http.ResponseWriter, r *http.Request) {
		var msg struct {
			Status string `json:"status"`
			Alerts []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&msg); err != nil {
			http.Error(rw, "not an Alertmanager webhook message: "+err.Error(), http.StatusBadRequest)
			return
		}
		var names []string
		for _, a := range msg.Alerts {
			if a.Status == "firing" || (a.Status == "" && msg.Status == "firing") {
				names = append(names, a.Labels["alertname"])
			}
		}
		if len(names) == 0 {
			writeJSON(rw, http.StatusOK, map[string]any{"captured": false, "why": "no firing alert"})
			return
		}
		w.serveCapture(rw, "alertmanager: "+strings.Join(names, ","))
	})
}

func (w *Watchdog) serveCapture(rw http.ResponseWriter, reason string) {
	c, err := w.Capture(reason)
	if err != nil {
		writeJSON(rw, http.StatusInternalServerError, map[string]any{"error": fmt.Sprint(err)})
		return
	}
	writeJSON(rw, http.StatusOK, c)
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}

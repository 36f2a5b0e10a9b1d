package floor

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/spindlehq/spindle/auth"
)

// maxAPIBody bounds a publish request body.
const maxAPIBody = 16 << 20

// Replies of the server API, as Spindle's: HTTP 200 with a result or an error.
var (
	apiOK         = []byte(`{"result":{}}` + "\n")
	apiBadRequest = []byte(`{"error":{"code":107,"message":"bad request"}}` + "\n")
)

// servePublish serves POST /api/publish {"channel":"ch","data":…}: it
// replies {"result":{}} as soon as the publication is framed, then writes
// it to the channel's subscribers before it returns.
func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var p struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Channel == "" || len(p.Data) == 0 {
		reply(w, apiBadRequest)
		return
	}
	s.channel(p.Channel).publish(s, p.Data, func() {
		reply(w, apiOK)
		// The publisher may send its next request while this one's
		// writes go on.
		if err := http.NewResponseController(w).Flush(); err != nil {
			s.log.Debug("api reply flush failed", "remote", r.RemoteAddr, "err", err)
		}
	})
}

// reply writes body with its length, so that a flushed reply is complete
// before the handler returns.
func reply(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body) // a client gone before its reply is nobody's error
}

// authorized checks the X-API-Key header (or "Authorization: apikey K").
func (s *Server) authorized(r *http.Request) bool {
	return s.cfg.APIKey == "" || auth.APIKeyMatches(r, s.cfg.APIKey)
}

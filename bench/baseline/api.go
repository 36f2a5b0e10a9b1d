package baseline

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spindlehq/spindle/auth"
)

// maxAPIBody bounds a server API request body.
const maxAPIBody = 16 << 20

// apiError is an error result of the server API, as Spindle's and
// Centrifugo's: {"error":{"code":…,"message":…}} with HTTP status 200.
type apiError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

var (
	apiErrInternal   = &apiError{100, "internal server error"}
	apiErrBadRequest = &apiError{107, "bad request"}
)

// serveAPI wraps one API method with the key check, the method check and
// the JSON envelope.
func (s *Server) serveAPI(method func(body []byte) (any, *apiError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		var body json.RawMessage
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody)).Decode(&body); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
				return
			}
			writeJSON(w, map[string]any{"error": apiErrBadRequest})
			return
		}
		res, aerr := method(body)
		if aerr != nil {
			writeJSON(w, map[string]any{"error": aerr})
			return
		}
		writeJSON(w, map[string]any{"result": res})
	}
}

// authorized checks the X-API-Key header (or "Authorization: apikey K").
func (s *Server) authorized(r *http.Request) bool {
	return s.cfg.APIKey == "" || auth.APIKeyMatches(r, s.cfg.APIKey)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// apiPublish serves {"channel":"ch","data":…} → {}.
func (s *Server) apiPublish(body []byte) (any, *apiError) {
	var p struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Channel == "" || len(p.Data) == 0 {
		return nil, apiErrBadRequest
	}
	if err := s.publish(p.Channel, p.Data); err != nil {
		s.log.Warn("api publish failed", "channel", p.Channel, "err", err)
		return nil, apiErrInternal
	}
	return struct{}{}, nil
}

// apiBroadcast serves {"channels":[…],"data":…} →
// {"responses":[{"result":{}},…]}, one response per channel.
func (s *Server) apiBroadcast(body []byte) (any, *apiError) {
	var p struct {
		Channels []string        `json:"channels"`
		Data     json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil || len(p.Channels) == 0 || len(p.Data) == 0 {
		return nil, apiErrBadRequest
	}
	out := make([]map[string]any, len(p.Channels))
	for i, ch := range p.Channels {
		switch {
		case ch == "":
			out[i] = map[string]any{"error": apiErrBadRequest}
		default:
			if err := s.publish(ch, p.Data); err != nil {
				s.log.Warn("api broadcast failed", "channel", ch, "err", err)
				out[i] = map[string]any{"error": apiErrInternal}
				continue
			}
			out[i] = map[string]any{"result": struct{}{}}
		}
	}
	return map[string]any{"responses": out}, nil
}

// publish hands one publication to the hub.
func (s *Server) publish(channel string, data []byte) error {
	if err := toHub(s.hub, s.hub.broadcast, publication{channel: channel, data: data}); err != nil {
		return fmt.Errorf("publish to %q: %w", channel, err)
	}
	return nil
}

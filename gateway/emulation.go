package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/spindlehq/spindle/transport"
)

// The bidirectional emulation of Centrifugo, which the official JS SDK
// falls back to where WebSocket is blocked: the server's half is a stream
// (SSEPath or HTTPStreamPath) carrying the replies and pushes of the JSON
// protocol, one per event or per newline-ended chunk; the first command
// (the connect) is the stream's request, the cf_connect query parameter or
// the body; every later command, pongs included, comes by a POST to
// EmulationPath naming the session by the id its connect result gave.

// Endpoints of the emulation (transport.Config.SSEPath and HTTPStreamPath,
// and the SDK's emulationEndpoint, served on net/http).
const (
	SSEPath        = "/connection/sse"
	HTTPStreamPath = "/connection/http_stream"
	EmulationPath  = "/emulation"
)

// emulations finds an emulated session by its emulation id. mu guards m;
// the zero value is ready.
type emulations struct {
	mu sync.Mutex
	m  map[string]*session
}

// emulation is what an emulated session has beside a session: id is set
// when it opens, never written again; mu keeps its frames one at a time.
type emulation struct {
	id string
	mu sync.Mutex
}

// add gives s an emulation id (secret: the client id is not, presence
// shows it) and registers it.
func (e *emulations) add(s *session) {
	s.emu = &emulation{id: newClientID()}
	e.mu.Lock()
	if e.m == nil {
		e.m = make(map[string]*session)
	}
	e.m[s.emu.id] = s
	e.mu.Unlock()
}

func (e *emulations) remove(s *session) {
	if s.emu == nil {
		return
	}
	e.mu.Lock()
	delete(e.m, s.emu.id)
	e.mu.Unlock()
}

func (e *emulations) get(id string) *session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[id]
}

// emulated reports whether c is the stream of an emulated session.
func emulated(c *transport.Conn) bool { return c.Stream() != transport.StreamNone && !c.Uni() }

// emuFrame runs one frame of commands of an emulated session. The stream's
// request and the emulation requests arrive on different goroutines:
// emu.mu keeps them one at a time, as the transport does a WebSocket's.
func (s *session) emuFrame(data []byte) {
	s.emu.mu.Lock()
	defer s.emu.mu.Unlock()
	s.handleFrame(data)
}

// emuRequest is the first frame of an emulated session: its request body,
// or for a GET the cf_connect query parameter.
func (s *session) emuRequest(body []byte) []byte {
	if len(body) == 0 {
		return []byte(s.conn.Query().Get("cf_connect"))
	}
	return body
}

// emulationRequest is what the SDK posts to EmulationPath: data is the
// frame of commands, as a JSON string.
type emulationRequest struct {
	Session string `json:"session"`
	Node    string `json:"node"`
	Data    string `json:"data"`
}

// EmulationHandler serves EmulationPath: it runs the posted commands on the
// session they name and answers 204; the replies go out on its stream. An
// unknown session is 404, which makes the SDK reconnect.
func (n *Node) EmulationHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && n.CheckOrigin(r) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
		}
		switch r.Method {
		case http.MethodOptions:
			w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			if h := r.Header.Get("Access-Control-Request-Headers"); h != "" {
				w.Header().Set("Access-Control-Allow-Headers", h)
			}
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "POST, OPTIONS")
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		if !n.CheckOrigin(r) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		var req emulationRequest
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, emulationMaxBody))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			http.Error(w, "emulation request too large", http.StatusRequestEntityTooLarge)
			return
		case err != nil:
			http.Error(w, "malformed emulation request: "+err.Error(), http.StatusBadRequest)
			return
		}
		s := n.emu.get(req.Session)
		if s == nil {
			http.Error(w, "no such session", http.StatusNotFound)
			return
		}
		s.emuFrame([]byte(req.Data))
		w.WriteHeader(http.StatusNoContent)
	})
}

// emulationMaxBody bounds an emulation request: a frame of commands, as a
// JSON string, with the session and node ids.
const emulationMaxBody = 256 << 10

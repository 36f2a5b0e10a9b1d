// Package api serves the server HTTP API, compatible with Centrifugo's:
// POST /api/<method> with a JSON body and the X-API-Key header, answering
// {"result": …} or {"error": {"code", "message"}}.
package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/gateway"
)

// Config sets up a Handler.
type Config struct {
	Key              string // X-API-Key; empty refuses every call
	MaxBodySize      int64  // bytes of one request body; 0: 16 MiB
	MaxBatchCommands int    // commands in one batch; 0: 1000
	// Admit, when set, is asked before each call; an error refuses the
	// call with 503 and Retry-After (see guard/admission).
	Admit func() error
}

// Handler serves /api/. Build it with New; Shutdown refuses new calls
// and waits for those in flight.
type Handler struct {
	node     *gateway.Node
	key      string
	log      *slog.Logger
	maxBody  int64
	maxBatch int
	admit    func() error
	inflight inflight
}

// New returns the API handler for node.
func New(node *gateway.Node, cfg Config, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{node: node, key: cfg.Key, log: log, maxBody: cfg.MaxBodySize, maxBatch: cfg.MaxBatchCommands, admit: cfg.Admit}
	if h.maxBody <= 0 {
		h.maxBody = 16 << 20
	}
	if h.maxBatch <= 0 {
		h.maxBatch = 1000
	}
	return h
}

// errMalformed marks a request whose body cannot be read as the method's
// params: HTTP 400, as Centrifugo answers.
var errMalformed = fmt.Errorf("malformed request: %w", gateway.ErrBadRequest)

// Shutdown makes the handler refuse new calls with 503 and waits until the
// calls being served have finished or ctx ends.
func (h *Handler) Shutdown(ctx context.Context) error {
	if err := h.inflight.shutdown(ctx); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// InFlight is the number of calls being served now.
func (h *Handler) InFlight() int { return h.inflight.count() }

// An API error reply: {"error": {"code": …, "message": …}}.
type apiError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

func replyError(e *gateway.Error) map[string]any {
	return map[string]any{"error": apiError{Code: e.Code, Message: e.Message}}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.inflight.enter() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer h.inflight.leave()
	if h.admit != nil {
		if err := h.admit(); err != nil {
			w.Header().Set("Retry-After", "1")
			writeJSONStatus(w, http.StatusServiceUnavailable, replyError(&gateway.Error{
				Code: gateway.ErrTooManyRequests.Code, Message: gateway.ErrTooManyRequests.Message + ": " + err.Error(), Temporary: true}))
			return
		}
	}
	if !h.authorized(r) {
		h.log.Info("api request refused: bad or missing key", "remote", r.RemoteAddr, "path", r.URL.Path)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	method := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api"), "/")
	// The key was checked on the headers; the body is read only now, and
	// never past the limit: refused on its Content-Length, or cut while
	// it streams in.
	if r.ContentLength > h.maxBody {
		h.bodyTooLarge(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		h.bodyTooLarge(w)
		return
	case err != nil:
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		writeJSONStatus(w, http.StatusBadRequest, replyError(gateway.ErrBadRequest))
		return
	}
	if method == "" { // legacy form: {"method": "...", "params": {...}}
		var legacy struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(body, &legacy); err != nil {
			writeJSONStatus(w, http.StatusBadRequest, replyError(gateway.ErrBadRequest))
			return
		}
		method, body = legacy.Method, legacy.Params
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	res, err := h.call(ctx, method, body)
	switch {
	case errors.Is(err, errMalformed):
		writeJSONStatus(w, http.StatusBadRequest, replyError(h.replyErr(method, err)))
	case errors.Is(err, gateway.ErrMethodNotFound):
		writeJSONStatus(w, http.StatusNotFound, replyError(h.replyErr(method, err)))
	case err != nil:
		writeJSON(w, replyError(h.replyErr(method, err)))
	case method == "batch":
		writeJSON(w, res) // {"replies": [...]} at the top, as Centrifugo answers
	default:
		writeJSON(w, map[string]any{"result": res})
	}
}

func (h *Handler) bodyTooLarge(w http.ResponseWriter) {
	w.Header().Set("Connection", "close") // the rest of the body is not read
	http.Error(w, fmt.Sprintf("body over %d bytes", h.maxBody), http.StatusRequestEntityTooLarge)
}

func (h *Handler) authorized(r *http.Request) bool { return auth.APIKeyMatches(r, h.key) }

func writeJSON(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// call runs one API method with its JSON params.
func (h *Handler) call(ctx context.Context, method string, params json.RawMessage) (any, error) {
	if len(params) == 0 {
		params = json.RawMessage("{}")
	}
	switch method {
	case "publish":
		var p publishParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return h.publish(ctx, p.Channel, p)
	case "broadcast":
		var p struct {
			Channels []string `json:"channels"`
			publishParams
		}
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if len(p.Channels) == 0 {
			return nil, gateway.ErrBadRequest
		}
		out := make([]map[string]any, len(p.Channels))
		for i, ch := range p.Channels {
			res, err := h.publish(ctx, ch, p.publishParams)
			if err != nil {
				out[i] = replyError(h.replyErr("broadcast", err))
			} else {
				out[i] = map[string]any{"result": res}
			}
		}
		return map[string]any{"responses": out}, nil
	case "subscribe":
		var p struct{ User, Channel, Client string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if p.Channel == "" {
			return nil, fmt.Errorf("no channel: %w", gateway.ErrBadRequest)
		}
		if _, err := h.node.Subscribe(ctx, p.User, p.Client, p.Channel); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	case "unsubscribe":
		var p struct{ User, Channel, Client string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if p.Channel == "" {
			return nil, fmt.Errorf("no channel: %w", gateway.ErrBadRequest)
		}
		h.node.Unsubscribe(ctx, p.User, p.Client, p.Channel)
		return struct{}{}, nil
	case "disconnect":
		var p struct {
			User       string `json:"user"`
			Client     string `json:"client"`
			Disconnect *struct {
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			} `json:"disconnect"`
		}
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if p.User == "" && p.Client == "" {
			return nil, gateway.ErrBadRequest
		}
		d := gateway.DisconnectForce
		if p.Disconnect != nil {
			if p.Disconnect.Code < 3000 || p.Disconnect.Code > 4999 || len(p.Disconnect.Reason) > 123 {
				return nil, gateway.ErrBadRequest
			}
			d = gateway.Disconnect{Code: p.Disconnect.Code, Reason: p.Disconnect.Reason}
		}
		h.node.Disconnect(p.User, p.Client, d)
		return struct{}{}, nil
	case "presence":
		var p struct{ Channel string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		res, err := h.node.Presence(ctx, p.Channel)
		if err != nil {
			return nil, err
		}
		return res, nil
	case "presence_stats":
		var p struct{ Channel string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		res, err := h.node.PresenceStats(ctx, p.Channel)
		if err != nil {
			return nil, err
		}
		return res, nil
	case "history":
		var p struct {
			Channel string                   `json:"channel"`
			Limit   int                      `json:"limit"`
			Since   *protocol.StreamPosition `json:"since"`
			Reverse bool                     `json:"reverse"`
		}
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		res, err := h.node.History(ctx, p.Channel, p.Limit, p.Since, p.Reverse)
		if err != nil {
			return nil, err
		}
		return res, nil
	case "history_remove":
		var p struct{ Channel string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if err := h.node.RemoveHistory(ctx, p.Channel); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	case "channels":
		var p struct{ Pattern string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		out := map[string]map[string]int{}
		for ch, n := range h.node.Channels(p.Pattern) {
			out[ch] = map[string]int{"num_clients": n}
		}
		return map[string]any{"channels": out}, nil
	case "info":
		i := h.node.Info()
		return map[string]any{"nodes": []any{map[string]any{
			"uid": "local", "name": i.Name, "version": i.Version, "num_clients": i.NumClients,
			"num_users": i.NumUsers, "num_channels": i.NumChannels, "num_subs": i.NumSubs, "uptime": i.Uptime,
			// Centrifugo aggregates over an interval; these are read live (interval 0).
			"metrics": map[string]any{"interval": 0, "items": h.node.Metrics()},
		}}}, nil
	case "batch":
		var p struct {
			Commands []map[string]json.RawMessage `json:"commands"`
		}
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if len(p.Commands) > h.maxBatch {
			return nil, &gateway.Error{Code: gateway.ErrLimitExceeded.Code,
				Message: fmt.Sprintf("limit exceeded: %d commands in one batch, at most %d (api_batch_max_commands)", len(p.Commands), h.maxBatch)}
		}
		replies := make([]map[string]any, 0, len(p.Commands))
		for _, c := range p.Commands {
			if len(c) != 1 {
				replies = append(replies, replyError(gateway.ErrBadRequest))
				continue
			}
			for m, params := range c {
				if m == "batch" {
					replies = append(replies, replyError(gateway.ErrBadRequest))
					continue
				}
				res, err := h.call(ctx, m, params)
				if err != nil {
					replies = append(replies, replyError(h.replyErr(m, err)))
				} else {
					replies = append(replies, map[string]any{m: res})
				}
			}
		}
		return map[string]any{"replies": replies}, nil
	case "refresh":
		var p struct {
			User     string `json:"user"`
			Client   string `json:"client"`
			Expired  bool   `json:"expired"`
			ExpireAt int64  `json:"expire_at"`
		}
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		h.node.Refresh(p.User, p.Client, p.Expired, p.ExpireAt)
		return struct{}{}, nil
	}
	return nil, fmt.Errorf("method %q: %w", method, gateway.ErrMethodNotFound)
}

type publishParams struct {
	Channel        string            `json:"channel"`
	Data           json.RawMessage   `json:"data"`
	B64Data        string            `json:"b64data"` // data in base64, used when data is absent
	SkipHistory    bool              `json:"skip_history"`
	Tags           map[string]string `json:"tags"`
	IdempotencyKey string            `json:"idempotency_key"`
}

func (h *Handler) publish(ctx context.Context, ch string, p publishParams) (any, error) {
	if len(p.Data) == 0 && p.B64Data != "" {
		data, err := base64.StdEncoding.DecodeString(p.B64Data)
		if err != nil {
			return nil, fmt.Errorf("publish: b64data: %v: %w", err, gateway.ErrBadRequest)
		}
		p.Data = data
	}
	if ch == "" || len(p.Data) == 0 {
		return nil, fmt.Errorf("publish: no channel or no data: %w", gateway.ErrBadRequest)
	}
	sp, err := h.node.Publish(ctx, ch, p.Data, gateway.PublishOptions{Tags: p.Tags, IdempotencyKey: p.IdempotencyKey, SkipHistory: p.SkipHistory})
	if err != nil {
		return nil, err
	}
	res := map[string]any{}
	if sp.Offset > 0 {
		res["offset"], res["epoch"] = sp.Offset, sp.Epoch
	}
	return res, nil
}

func decode(params json.RawMessage, v any) error {
	if err := json.Unmarshal(params, v); err != nil {
		return fmt.Errorf("params: %v: %w", err, errMalformed)
	}
	return nil
}

// replyErr is what the caller is told of err; internal errors are logged
// with their context, which the caller is not shown.
func (h *Handler) replyErr(method string, err error) *gateway.Error {
	e := gateway.AsError(err)
	if e.Code == gateway.ErrInternal.Code {
		h.log.Error("api call failed", "method", method, "err", err)
	}
	return e
}

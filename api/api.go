// Package api serves the server HTTP API, compatible with Centrifugo's:
// POST /api/<method> with a JSON body and the X-API-Key header, answering
// {"result": …} or {"error": {"code", "message"}}.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/gateway"
)

// Handler serves /api/. Build it with New.
type Handler struct {
	node    *gateway.Node
	key     string
	log     *slog.Logger
	maxBody int64
	// inflight counts requests being served, so shutdown can wait for them.
	inflight sync.WaitGroup
}

// New returns the API handler for node, guarded by key.
func New(node *gateway.Node, key string, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{node: node, key: key, log: log, maxBody: 16 << 20}
}

// Wait blocks until the requests being served have finished or ctx ends.
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("api requests still running: %w", ctx.Err())
	}
}

// apiError is an error reply of the server API.
type apiError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

var (
	errInternal     = &apiError{100, "internal server error"}
	errUnknownChan  = &apiError{102, "unknown channel"}
	errMethod       = &apiError{104, "method not found"}
	errBadRequest   = &apiError{107, "bad request"}
	errNotAvailable = &apiError{108, "not available"}
	errUnrecov      = &apiError{112, "unrecoverable position"}
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.inflight.Add(1)
	defer h.inflight.Done()
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
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(body)) > h.maxBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if method == "" { // legacy form: {"method": "...", "params": {...}}
		var legacy struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(body, &legacy); err != nil {
			writeJSON(w, map[string]any{"error": errBadRequest})
			return
		}
		method, body = legacy.Method, legacy.Params
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	res, aerr := h.call(ctx, method, body)
	if aerr != nil {
		writeJSON(w, map[string]any{"error": aerr})
		return
	}
	writeJSON(w, map[string]any{"result": res})
}

func (h *Handler) authorized(r *http.Request) bool {
	got := r.Header.Get("X-API-Key")
	if got == "" {
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "apikey ") {
			got = strings.TrimPrefix(a, "apikey ")
		}
	}
	return h.key != "" && subtle.ConstantTimeCompare([]byte(got), []byte(h.key)) == 1
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// call runs one API method with its JSON params.
func (h *Handler) call(ctx context.Context, method string, params json.RawMessage) (any, *apiError) {
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
			return nil, errBadRequest
		}
		out := make([]map[string]any, len(p.Channels))
		for i, ch := range p.Channels {
			res, aerr := h.publish(ctx, ch, p.publishParams)
			if aerr != nil {
				out[i] = map[string]any{"error": aerr}
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
		if p.Channel == "" || (p.User == "" && p.Client == "") {
			return nil, errBadRequest
		}
		if _, err := h.node.Subscribe(ctx, p.User, p.Client, p.Channel); err != nil {
			return nil, h.mapErr("subscribe", err)
		}
		return struct{}{}, nil
	case "unsubscribe":
		var p struct{ User, Channel, Client string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if p.Channel == "" || (p.User == "" && p.Client == "") {
			return nil, errBadRequest
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
			return nil, errBadRequest
		}
		d := gateway.DisconnectForce
		if p.Disconnect != nil {
			if p.Disconnect.Code < 3000 || p.Disconnect.Code > 4999 || len(p.Disconnect.Reason) > 123 {
				return nil, errBadRequest
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
			return nil, h.mapErr("presence", err)
		}
		return res, nil
	case "presence_stats":
		var p struct{ Channel string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		res, err := h.node.PresenceStats(ctx, p.Channel)
		if err != nil {
			return nil, h.mapErr("presence_stats", err)
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
			return nil, h.mapErr("history", err)
		}
		return res, nil
	case "history_remove":
		var p struct{ Channel string }
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		if err := h.node.RemoveHistory(ctx, p.Channel); err != nil {
			return nil, h.mapErr("history_remove", err)
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
		}}}, nil
	case "batch":
		var p struct {
			Commands []map[string]json.RawMessage `json:"commands"`
		}
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		replies := make([]map[string]any, 0, len(p.Commands))
		for _, c := range p.Commands {
			if len(c) != 1 {
				replies = append(replies, map[string]any{"error": errBadRequest})
				continue
			}
			for m, params := range c {
				if m == "batch" {
					replies = append(replies, map[string]any{"error": errBadRequest})
					continue
				}
				res, aerr := h.call(ctx, m, params)
				if aerr != nil {
					replies = append(replies, map[string]any{"error": aerr})
				} else {
					replies = append(replies, map[string]any{m: res})
				}
			}
		}
		return map[string]any{"replies": replies}, nil
	}
	return nil, errMethod
}

type publishParams struct {
	Channel        string            `json:"channel"`
	Data           json.RawMessage   `json:"data"`
	SkipHistory    bool              `json:"skip_history"`
	Tags           map[string]string `json:"tags"`
	IdempotencyKey string            `json:"idempotency_key"`
}

func (h *Handler) publish(ctx context.Context, ch string, p publishParams) (any, *apiError) {
	if ch == "" || len(p.Data) == 0 {
		return nil, errBadRequest
	}
	sp, err := h.node.Publish(ctx, ch, p.Data, gateway.PublishOptions{Tags: p.Tags, IdempotencyKey: p.IdempotencyKey, SkipHistory: p.SkipHistory})
	if err != nil {
		return nil, h.mapErr("publish", err)
	}
	res := map[string]any{}
	if sp.Offset > 0 {
		res["offset"], res["epoch"] = sp.Offset, sp.Epoch
	}
	return res, nil
}

func decode(params json.RawMessage, v any) *apiError {
	if err := json.Unmarshal(params, v); err != nil {
		return &apiError{107, "bad request: " + err.Error()}
	}
	return nil
}

func (h *Handler) mapErr(method string, err error) *apiError {
	switch {
	case errors.Is(err, gateway.ErrUnknownChannel):
		return errUnknownChan
	case errors.Is(err, gateway.ErrBadRequest):
		return &apiError{107, "bad request: " + err.Error()}
	case errors.Is(err, gateway.ErrNotAvailable):
		return errNotAvailable
	case errors.Is(err, broker.ErrUnrecoverablePosition):
		return errUnrecov
	}
	h.log.Error("api call failed", "method", method, "err", err)
	return errInternal
}

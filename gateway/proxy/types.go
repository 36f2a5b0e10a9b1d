package proxy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// The JSON bodies of Centrifugo's HTTP proxy protocol. Every request
// starts with the fields of Client.

// Client describes the connection an event comes from.
type Client struct {
	Client    string `json:"client"`
	Transport string `json:"transport"`
	Protocol  string `json:"protocol"`
	Encoding  string `json:"encoding"`
}

// ConnectRequest is sent when a client connects without a token.
type ConnectRequest struct {
	Client
	Name    string          `json:"name,omitempty"`
	Version string          `json:"version,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Payload is the info and data a connect or subscribe result carries, as
// JSON or as base64.
type Payload struct {
	Info    json.RawMessage `json:"info,omitempty"`
	B64Info string          `json:"b64info,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	B64Data string          `json:"b64data,omitempty"`
}

// JSON returns info and data as JSON (see JSONField).
func (p Payload) JSON() (info, data json.RawMessage, err error) {
	if info, err = JSONField("info", p.Info, p.B64Info); err != nil {
		return nil, nil, err
	}
	if data, err = JSONField("data", p.Data, p.B64Data); err != nil {
		return nil, nil, err
	}
	return info, data, nil
}

// ConnectResult authenticates the connection.
type ConnectResult struct {
	User     string `json:"user"`
	ExpireAt int64  `json:"expire_at,omitempty"`
	Payload
	Channels []string        `json:"channels,omitempty"`
	Meta     json.RawMessage `json:"meta,omitempty"`
}

// RefreshRequest is sent when an authenticated connection's expire_at passes.
type RefreshRequest struct {
	Client
	User string          `json:"user"`
	Meta json.RawMessage `json:"meta,omitempty"`
}

// RefreshResult, the answer to refresh and to sub_refresh, prolongs the
// session or subscription to ExpireAt, or ends it when Expired.
type RefreshResult struct {
	Expired  bool  `json:"expired,omitempty"`
	ExpireAt int64 `json:"expire_at,omitempty"`
}

// SubscribeRequest is sent when a client subscribes to a channel of a
// namespace with proxy_subscribe.
type SubscribeRequest struct {
	Client
	User    string          `json:"user"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data,omitempty"`
	Meta    json.RawMessage `json:"meta,omitempty"`
}

// SubscribeResult allows the subscription, with channel info and data;
// with ExpireAt it ends then, unless the sub_refresh proxy prolongs it.
type SubscribeResult struct {
	Payload
	ExpireAt int64 `json:"expire_at,omitempty"`
}

// SubRefreshRequest is sent when a proxied subscription's expire_at passes.
type SubRefreshRequest struct {
	Client
	User    string          `json:"user"`
	Channel string          `json:"channel"`
	Meta    json.RawMessage `json:"meta,omitempty"`
}

// PublishRequest is sent when a client publishes to a channel of a
// namespace with proxy_publish.
type PublishRequest struct {
	Client
	User    string          `json:"user"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Meta    json.RawMessage `json:"meta,omitempty"`
}

// PublishResult allows the publication; Data, when set, replaces the
// client's, and SkipHistory keeps it out of the channel's history.
type PublishResult struct {
	Data        json.RawMessage `json:"data,omitempty"`
	B64Data     string          `json:"b64data,omitempty"`
	SkipHistory bool            `json:"skip_history,omitempty"`
}

// RPCRequest carries a client's rpc command.
type RPCRequest struct {
	Client
	User   string          `json:"user"`
	Method string          `json:"method,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Meta   json.RawMessage `json:"meta,omitempty"`
}

// RPCResult is the answer the client gets.
type RPCResult struct {
	Data    json.RawMessage `json:"data,omitempty"`
	B64Data string          `json:"b64data,omitempty"`
}

// JSONField returns raw, or b64 decoded, as JSON the client protocol can
// carry; nil when both are empty. name says which field in the error.
func JSONField(name string, raw json.RawMessage, b64 string) (json.RawMessage, error) {
	if len(raw) > 0 && string(raw) != "null" {
		return raw, nil
	}
	if b64 == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("b64%s: %w", name, err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("b64%s: decoded bytes are not JSON, which a JSON client cannot receive", name)
	}
	return b, nil
}

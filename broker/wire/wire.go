// Package wire is how the shared brokers (Redis, NATS) write a publication
// and a ClientInfo as bytes that every node can read back.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spindlehq/spindle/broker"
)

// meta is the JSON of a publication's metadata.
type meta struct {
	Info *info             `json:"i,omitempty"`
	Tags map[string]string `json:"t,omitempty"`
	Time int64             `json:"ts,omitempty"`
}

// info is the JSON of a ClientInfo.
type info struct {
	ClientID string          `json:"c,omitempty"`
	UserID   string          `json:"u,omitempty"`
	ConnInfo json.RawMessage `json:"ci,omitempty"`
	ChanInfo json.RawMessage `json:"chi,omitempty"`
}

func toInfo(i *broker.ClientInfo) *info {
	if i == nil {
		return nil
	}
	return &info{ClientID: i.ClientID, UserID: i.UserID, ConnInfo: rawJSON(i.ConnInfo), ChanInfo: rawJSON(i.ChanInfo)}
}

func (w *info) clientInfo() *broker.ClientInfo {
	if w == nil {
		return nil
	}
	return &broker.ClientInfo{ClientID: w.ClientID, UserID: w.UserID, ConnInfo: string(w.ConnInfo), ChanInfo: string(w.ChanInfo)}
}

// rawJSON is s as raw JSON; "" is none.
func rawJSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// EncodeBody is a publication without its offset: metadata JSON (which
// holds no raw newline), a newline, and the data bytes as given. t is the
// publication's time in unix milliseconds.
func EncodeBody(data json.RawMessage, o broker.PublishOptions, t int64) (string, error) {
	m, err := json.Marshal(meta{Info: toInfo(o.Info), Tags: o.Tags, Time: t})
	if err != nil {
		return "", fmt.Errorf("encode publication: %w", err)
	}
	return string(m) + "\n" + string(data), nil
}

// DecodeBody reads what EncodeBody wrote, as the publication at offset.
func DecodeBody(body string, offset uint64) (*broker.Publication, error) {
	m, data, ok := strings.Cut(body, "\n")
	if !ok {
		return nil, errors.New("malformed publication: no metadata line")
	}
	var w meta
	if err := json.Unmarshal([]byte(m), &w); err != nil {
		return nil, fmt.Errorf("malformed publication: %w", err)
	}
	return &broker.Publication{Offset: offset, Data: json.RawMessage(data), Info: w.Info.clientInfo(), Tags: w.Tags, Time: w.Time}, nil
}

// EncodeInfo is the JSON of i; nil is written as an empty ClientInfo.
func EncodeInfo(i *broker.ClientInfo) (string, error) {
	if i == nil {
		i = &broker.ClientInfo{}
	}
	b, err := json.Marshal(toInfo(i))
	if err != nil {
		return "", fmt.Errorf("encode client info: %w", err)
	}
	return string(b), nil
}

// DecodeInfo reads what EncodeInfo wrote.
func DecodeInfo(s string) (*broker.ClientInfo, error) {
	var w info
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return nil, fmt.Errorf("malformed client info: %w", err)
	}
	return w.clientInfo(), nil
}

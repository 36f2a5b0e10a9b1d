package gateway

import (
	"encoding/json"
	"fmt"

	"github.com/centrifugal/protocol"
)

// The unidirectional WebSocket transport (UniPath), as in Centrifugo: the
// client's first message, or the cf_connect query parameter of the upgrade,
// is a JSON ConnectRequest (the streams' first message is their request
// body, stream.go); the session then only receives (encUni), and
// whatever the client sends later is ignored.

// uniOpen connects a unidirectional session by its cf_connect parameter,
// when the upgrade carried one.
func (s *session) uniOpen() {
	if v := s.conn.Query().Get("cf_connect"); v != "" {
		s.uniAsked = true
		s.uniConnect([]byte(v))
	}
}

// uniMessage takes a unidirectional session's first message as its connect
// request and ignores the rest.
func (s *session) uniMessage(data []byte) {
	s.hb.touch()
	s.node.metrics.bytesIn.Add(float64(len(data)))
	if s.uniAsked {
		return
	}
	s.uniAsked = true
	s.uniConnect(s.uniRequest(data))
}

// uniConnect runs data, a JSON ConnectRequest, as the session's connect
// command; anything else closes the session with 3501.
func (s *session) uniConnect(data []byte) {
	req, err := decodeUniConnect(data)
	if err != nil {
		s.node.log.Info("malformed unidirectional connect request", "client", s.id, "remote", s.conn.RemoteAddr(), "err", err)
		s.node.metrics.commandErrors.WithLabelValues("decode").Inc()
		s.close(DisconnectBadRequest, false)
		return
	}
	cmds := []*protocol.Command{{Id: 1, Connect: req}}
	if s.queueCommands(cmds) {
		return
	}
	s.runCommands(cmds)
}

func decodeUniConnect(data []byte) (*protocol.ConnectRequest, error) {
	var req protocol.ConnectRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("connect request: %w", err)
	}
	return &req, nil
}

// uniRefusal is the disconnect that ends a unidirectional session whose
// connect got err, since it can not be sent a reply: an expired token
// 3005, a temporary failure 3004, anything else 3501.
func uniRefusal(err *protocol.Error) Disconnect {
	switch {
	case err.Code == ErrTokenExpired.Code:
		return DisconnectExpired
	case err.Temporary || err.Code == ErrInternal.Code:
		return DisconnectServerError
	}
	return DisconnectBadRequest
}

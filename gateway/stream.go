package gateway

import (
	"bytes"
	"encoding/json"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/transport"
)

// The unidirectional HTTP streams of Centrifugo (transport/stream.go): a
// session at UniSSEPath reads Server-Sent Events, one at UniHTTPStreamPath
// a chunked body of newline-ended JSON pushes. Either connects like the
// unidirectional WebSocket (uni.go), by the cf_connect query parameter or
// else by the request body (a JSON ConnectRequest; none is {}), and then
// gets the same pushes and pings through the same bounded queue. A stream
// has no close frame: its session ends with a disconnect push, then the
// end of the response.

// Endpoints of the unidirectional streams (transport.Config.UniSSEPath and
// UniHTTPStreamPath).
const (
	UniSSEPath        = "/connection/uni_sse"
	UniHTTPStreamPath = "/connection/uni_http_stream"
)

// uniRequest is the connect request a unidirectional session's first
// message carries: a stream's request body, where an empty one (a GET
// without cf_connect) connects with no token, as Centrifugo's does.
func (s *session) uniRequest(data []byte) []byte {
	if len(data) == 0 && s.conn.Stream() != transport.StreamNone {
		return []byte("{}")
	}
	return data
}

// StreamEnd implements transport.StreamEnder: a stream or a
// unidirectional WebSocket closed with code and reason gets a disconnect
// push first, unless the client went away itself (3000), as in Centrifugo.
func (n *Node) StreamEnd(c *transport.Conn, code int, reason string) []byte {
	s, ok := c.Session.(*session)
	if !ok || code == DisconnectConnectionClosed.Code {
		return nil
	}
	frame, err := encodePush(s.enc(), &protocol.Push{Disconnect: &protocol.Disconnect{Code: uint32(code), Reason: reason}})
	if err != nil {
		n.log.Error("encode disconnect push", "client", s.id, "err", err)
		return nil
	}
	return frame
}

// streamEvent frames a JSON message (a push or a reply) as one
// Server-Sent Event.
func streamEvent(msg []byte) []byte {
	return transport.AppendEvent(make([]byte, 0, len(msg)+8), oneLine(msg))
}

// streamChunk frames a JSON message, ended by a newline, as one chunk.
func streamChunk(msg []byte) []byte {
	line := append(bytes.Clone(oneLine(msg)), '\n')
	return transport.AppendChunk(make([]byte, 0, len(line)+12), line)
}

// oneLine returns msg without line breaks: publication data is raw JSON
// and may be indented, and a stream's client splits messages at line ends.
func oneLine(msg []byte) []byte {
	if !bytes.ContainsAny(msg, "\r\n") {
		return msg
	}
	var b bytes.Buffer
	if err := json.Compact(&b, msg); err != nil {
		return msg // not JSON: the encoder wrote it, so it can not happen
	}
	return b.Bytes()
}

package gateway

import (
	"encoding/binary"
	"fmt"
	"net/http"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/transport"
)

// The encodings of the client protocol, fixed per connection at the
// upgrade as in Centrifugo: JSON in text frames (several commands in one
// frame separated by newlines), Protobuf in binary frames (each
// protocol.Command or protocol.Reply prefixed with its length as a varint),
// and uni JSON, the unidirectional WebSocket's (UniPath): bare Push objects,
// one per text frame, the connect reply as a connect push, no other reply.
// The unidirectional streams (stream.go) carry the same pushes framed as
// Server-Sent Events (UniSSEPath) or as newline-ended chunks of a chunked
// body (UniHTTPStreamPath); the emulation's streams (emulation.go) carry
// JSON replies framed those two ways.

// ProtobufSubprotocol is the WebSocket subprotocol of the Protobuf encoding.
const ProtobufSubprotocol = "centrifuge-protobuf"

// Subprotocols are the WebSocket subprotocols the gateway offers
// (transport.Config.Subprotocols).
var Subprotocols = []string{ProtobufSubprotocol}

// Binary reports whether an upgrade asks for the Protobuf encoding
// (transport.Config.Binary): by the subprotocol, or by the query
// parameters Centrifugo also reads, ?format=protobuf or ?cf_protocol=protobuf.
func Binary(r *http.Request, subprotocol string) bool {
	if subprotocol == ProtobufSubprotocol {
		return true
	}
	if r.URL == nil || r.URL.RawQuery == "" {
		return false
	}
	q := r.URL.Query()
	return q.Get("format") == "protobuf" || q.Get("cf_protocol") == "protobuf"
}

// encoding is a session's wire format.
type encoding uint8

const (
	encJSON encoding = iota
	encProtobuf
	encSSE        // JSON replies as Server-Sent Events (the emulation)
	encHTTPStream // JSON replies, each ended by a newline, one per chunk (the emulation)
	encUni
	encUniSSE        // uni JSON pushes as Server-Sent Events
	encUniHTTPStream // uni JSON pushes, each ended by a newline, one per chunk
	numEncodings
)

// UniPath is the endpoint of the unidirectional WebSocket transport
// (transport.Config.UniPath).
const UniPath = "/connection/uni_websocket"

func (e encoding) String() string {
	switch e {
	case encProtobuf:
		return "protobuf"
	case encUni:
		return "uni_json"
	case encSSE:
		return "sse"
	case encHTTPStream:
		return "http_stream"
	case encUniSSE:
		return "uni_sse"
	case encUniHTTPStream:
		return "uni_http_stream"
	}
	return "json"
}

// uni reports whether e is a unidirectional encoding: bare pushes, no
// replies but the connect push, pings that need no pong.
func (e encoding) uni() bool { return e >= encUni }

// enc is the session's encoding, which its connection's upgrade chose.
func (s *session) enc() encoding {
	switch st := s.conn.Stream(); {
	case st == transport.StreamSSE && s.conn.Uni():
		return encUniSSE
	case st == transport.StreamHTTP && s.conn.Uni():
		return encUniHTTPStream
	case st == transport.StreamSSE:
		return encSSE
	case st == transport.StreamHTTP:
		return encHTTPStream
	case s.conn.Uni():
		return encUni
	case s.conn.Binary():
		return encProtobuf
	}
	return encJSON
}

var (
	replyEncoder = protocol.NewJSONReplyEncoder()
	pushEncoder  = protocol.NewJSONPushEncoder()
)

// pingFrames are the server ping in each encoding: an empty reply.
var pingFrames = [numEncodings][]byte{
	encJSON:     transport.AppendFrame(nil, transport.OpText, []byte("{}")),
	encProtobuf: transport.AppendFrame(nil, transport.OpBinary, []byte{0}), // length 0, no fields
	encUni:      transport.AppendFrame(nil, transport.OpText, []byte("{}")),

	encSSE:           transport.AppendEvent(nil, []byte("{}")),
	encHTTPStream:    transport.AppendChunk(nil, []byte("{}\n")),
	encUniSSE:        transport.AppendEvent(nil, []byte("{}")),
	encUniHTTPStream: transport.AppendChunk(nil, []byte("{}\n")),
}

// encodeReply returns rep as one WebSocket frame of encoding enc; nil in
// uni JSON for a reply that is neither a push nor a connect result.
func encodeReply(enc encoding, rep *protocol.Reply) ([]byte, error) {
	switch enc {
	case encProtobuf:
		return encodeProtobufReply(rep)
	case encUni, encUniSSE, encUniHTTPStream:
		return encodeUniReply(enc, rep)
	}
	data, err := replyEncoder.Encode(rep)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	switch enc {
	case encSSE:
		return streamEvent(data), nil
	case encHTTPStream:
		return streamChunk(data), nil
	}
	return transport.AppendFrame(make([]byte, 0, transport.FrameSize(len(data))), transport.OpText, data), nil
}

// encodeProtobufReply frames rep, length-delimited, in one binary frame
// built in a single allocation.
func encodeProtobufReply(rep *protocol.Reply) ([]byte, error) {
	size := rep.SizeCF()
	payload := uvarintLen(uint64(size)) + size
	frame := transport.AppendFrameHeader(make([]byte, 0, transport.FrameSize(payload)), transport.OpBinary, payload)
	frame = binary.AppendUvarint(frame, uint64(size))
	body := frame[len(frame) : len(frame)+size]
	if _, err := rep.MarshalToSizedBufferCF(body); err != nil {
		return nil, fmt.Errorf("encode protobuf reply: %w", err)
	}
	return frame[:len(frame)+size], nil
}

// encodeUniReply frames rep as a bare Push in the unidirectional encoding
// enc: the connect result becomes a connect push (without pong: the client
// can not answer pings).
func encodeUniReply(enc encoding, rep *protocol.Reply) ([]byte, error) {
	p := rep.Push
	if r := rep.Connect; r != nil {
		p = &protocol.Push{Connect: &protocol.Connect{
			Client: r.Client, Version: r.Version, Data: r.Data, Subs: r.Subs,
			Expires: r.Expires, Ttl: r.Ttl, Ping: r.Ping, Session: r.Session, Node: r.Node,
		}}
	}
	if p == nil {
		return nil, nil
	}
	data, err := pushEncoder.Encode(p)
	if err != nil {
		return nil, fmt.Errorf("encode uni push: %w", err)
	}
	switch enc {
	case encUniSSE:
		return streamEvent(data), nil
	case encUniHTTPStream:
		return streamChunk(data), nil
	}
	return transport.AppendFrame(make([]byte, 0, transport.FrameSize(len(data))), transport.OpText, data), nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func encodePush(enc encoding, p *protocol.Push) ([]byte, error) {
	return encodeReply(enc, &protocol.Reply{Push: p})
}

// sharedPush is one push for many sessions (a publication, a join or
// leave, an unsubscribe notice), framed at most once per encoding and only
// for an encoding some session asks for. It is used by one goroutine, the
// one fanning the push out; the frames it returns are shared, never written.
type sharedPush struct {
	push   *protocol.Push
	frames [numEncodings][]byte
	err    [numEncodings]error
}

func newSharedPush(p *protocol.Push) *sharedPush { return &sharedPush{push: p} }

// frame returns the push framed for enc; nil when it does not encode in
// enc (see failed).
func (p *sharedPush) frame(enc encoding) []byte {
	if p.frames[enc] == nil && p.err[enc] == nil {
		p.frames[enc], p.err[enc] = encodePush(enc, p.push)
	}
	return p.frames[enc]
}

// failed is the first encoding error, for the fan-out to log once.
func (p *sharedPush) failed() error {
	for _, err := range p.err {
		if err != nil {
			return err
		}
	}
	return nil
}

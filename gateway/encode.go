package gateway

import (
	"fmt"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/transport"
)

var replyEncoder = protocol.NewJSONReplyEncoder()

// pingFrame is the server ping: an empty reply.
var pingFrame = transport.AppendFrame(nil, transport.OpText, []byte("{}"))

// encodeReply returns rep as one WebSocket text frame.
func encodeReply(rep *protocol.Reply) ([]byte, error) {
	data, err := replyEncoder.Encode(rep)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	return transport.AppendFrame(make([]byte, 0, transport.FrameSize(len(data))), transport.OpText, data), nil
}

func encodePush(p *protocol.Push) ([]byte, error) { return encodeReply(&protocol.Reply{Push: p}) }

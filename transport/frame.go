package transport

import "encoding/binary"

// Opcodes of the WebSocket frames the server writes (RFC 6455 §5.2).
const (
	OpText   byte = 0x1
	OpBinary byte = 0x2
	OpClose  byte = 0x8
	OpPing   byte = 0x9
	OpPong   byte = 0xA
)

// AppendFrame appends one unmasked, final server frame carrying payload to
// dst. A broadcast builds its frame once and hands the same bytes to every
// connection.
func AppendFrame(dst []byte, op byte, payload []byte) []byte {
	return append(AppendFrameHeader(dst, op, len(payload)), payload...)
}

// AppendFrameHeader appends the header of one unmasked, final server frame
// whose payload of n bytes the caller appends next.
func AppendFrameHeader(dst []byte, op byte, n int) []byte {
	switch {
	case n < 126:
		return append(dst, 0x80|op, byte(n))
	case n <= 0xFFFF:
		return append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// FrameSize is the length AppendFrame adds for a payload of n bytes.
func FrameSize(n int) int {
	switch {
	case n < 126:
		return n + 2
	case n <= 0xFFFF:
		return n + 4
	default:
		return n + 10
	}
}

// CloseFrame returns a close frame with a status code and a reason, the
// reason cut so the control frame stays within 125 bytes.
func CloseFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	p = append(p, reason...)
	return AppendFrame(make([]byte, 0, 4+len(p)), OpClose, p)
}

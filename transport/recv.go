package transport

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// The frame check: every byte a session's client sends passes through
// Conn.check on the event loop before nbio's parser (websocket.Conn.Parse)
// sees it. nbio still buffers, unmasks and reassembles the messages; the
// check follows the frame headers and the text payloads as they stream by
// and does what nbio v1.6.8 gets wrong (RFC 6455, and Autobahn|Testsuite,
// see docs/conformance.md):
//
//   - a protocol error fails the connection with a 1002 close frame (nbio
//     dropped TCP without one, and answered a control frame over 125 bytes
//     with 1009), after the messages before it were handled;
//   - invalid UTF-8 in a text message or a close reason fails it with 1007
//     (nbio: 1002), as soon as the offending byte arrives;
//   - a message over MaxMessageSize fails it with 1009 once its frame
//     header announces it;
//   - a client frame that is not masked fails it with 1002 (RFC 6455
//     §5.1; nbio accepted it);
//   - an empty message reaches the Handler (nbio dropped zero-length
//     payloads);
//   - a close frame never reaches nbio: the reply goes after what is
//     queued, and the socket closes once it is written (close.go), where
//     nbio closed at once, cutting off what was queued.
//
// The state is four words in Conn, touched only by the event loop's
// goroutine that reads the connection. Whatever the check decides for the
// Handler runs through the connection's executor (nbio.Conn.Execute), in
// order with the messages nbio hands it.

// rxState is the frame check's state for one connection.
type rxState struct {
	hdr    uint8 // header bytes of the current frame read
	hlen   uint8 // the header's length, known after its second byte; 0 before
	b0     byte  // the current frame's first byte: FIN, RSV1-3, opcode
	kpos   uint8 // index in key of the next payload byte
	key    [4]byte
	left   uint64 // payload bytes of the current frame still to come
	msgOp  byte   // opcode of the message in progress; 0 between messages
	text   uint8  // UTF-8 state of the text message in progress
	reason uint8  // UTF-8 state of the close frame's reason
	cpos   uint8  // close payload bytes read, up to 2
	code   uint16 // the close frame's status code
	state  uint8  // rxOpen, rxClose or rxDone
	msgLen uint32 // payload bytes of the message in progress, announced by its frame headers
	// attached is set by serveUpgrade once the Conn is complete, before it
	// is attached to nbio's connection; the event loop reads it before
	// anything else of the Conn (the one field here it does not own).
	attached atomic.Bool
}

const (
	rxOpen  = iota // frames go to nbio
	rxClose        // a close frame is being read: nothing more goes to nbio
	rxDone         // the connection failed or the close frame was read: the rest is ignored
)

// Close codes of RFC 6455 §7.4.1.
const (
	closeNormal        = 1000
	closeProtocolError = 1002
	closeInvalidData   = 1007
	closeTooBig        = 1009
	closeNoStatus      = 1005 // never in a frame: the close frame had no payload
)

// check follows the frames in data, the next bytes from the peer, and
// hands nbio the part it may parse.
func (c *Conn) check(s *Server, nc *nbio.Conn, ws *websocket.Conn, data []byte) {
	r := &c.rx
	if r.state != rxDone && c.flags.has(flagClosed) {
		r.state = rxDone // the server sent its close frame: what follows is dropped
	}
	if r.state == rxDone {
		return
	}
	from := 0   // data[from:] was not handed to nbio yet
	fstart := 0 // where the current frame starts in data; 0 when it started in an earlier read
	i := 0
	for i < len(data) && r.state != rxDone {
		if r.hlen == 0 || r.hdr < r.hlen { // a header byte
			b := data[i]
			switch {
			case r.hdr == 0:
				fstart = i
				r.b0 = b
				if code, why := r.checkFirst(); code != 0 {
					c.fail(s, nc, ws, data[from:fstart], code, why)
					return
				}
				if b&0x0F == OpClose && r.state == rxOpen {
					if !c.pass(nc, ws, data[from:fstart]) {
						return
					}
					r.state = rxClose
				}
			case r.hdr == 1:
				if b&0x80 == 0 {
					c.fail(s, nc, ws, data[from:fstart], closeProtocolError, "unmasked client frame")
					return
				}
				switch n := b & 0x7F; {
				case r.b0&0x08 != 0 && n > 125:
					c.fail(s, nc, ws, data[from:fstart], closeProtocolError, "control frame over 125 bytes")
					return
				case n == 126:
					r.hlen = 2 + 2 + 4
				case n == 127:
					r.hlen = 2 + 8 + 4
				default:
					r.hlen = 2 + 4
					r.left = uint64(n)
				}
			case r.hdr < r.hlen-4: // extended payload length, big-endian
				r.left = r.left<<8 | uint64(b)
			default:
				r.key[r.hdr-(r.hlen-4)] = b
			}
			i++
			r.hdr++
			if r.hdr < 2 || r.hdr < r.hlen {
				continue
			}
			// The header is complete.
			r.kpos = 0
			if r.b0&0x08 == 0 { // a data frame
				if max := s.maxMessage(); r.left > max || uint64(r.msgLen)+r.left > max {
					c.fail(s, nc, ws, data[from:fstart], closeTooBig, fmt.Sprintf("message over %d bytes", max))
					return
				}
				r.msgLen += uint32(r.left)
			}
			if r.left > 0 {
				continue
			}
		} else { // payload
			n := len(data) - i
			if uint64(n) > r.left {
				n = int(r.left)
			}
			if code, why := r.scan(data[i : i+n]); code != 0 {
				c.fail(s, nc, ws, data[from:fstart], code, why)
				return
			}
			i += n
			r.left -= uint64(n)
			if r.left > 0 {
				continue
			}
		}
		// The frame is complete; data[:i] ends with it.
		op, fin := r.b0&0x0F, r.b0&0x80 != 0
		r.hdr, r.hlen = 0, 0
		switch {
		case op == OpClose:
			c.peerClose(s, nc, ws)
			return
		case op&0x08 == 0 && fin: // the message is complete
			if r.msgOp == OpText && r.text != utf8Accept {
				c.fail(s, nc, ws, data[from:fstart], closeInvalidData, "invalid UTF-8 in a text message")
				return
			}
			msgOp, empty := r.msgOp, r.msgLen == 0
			r.msgOp, r.msgLen, r.text = 0, 0, utf8Accept
			if empty { // nbio drops it: hand it over here, after what nbio has
				if !c.pass(nc, ws, data[from:i]) {
					return
				}
				from = i
				nc.Execute(func() { s.deliverEmpty(c, ws, msgOp) })
			}
		}
	}
	if r.state == rxOpen {
		c.pass(nc, ws, data[from:])
	}
}

// checkFirst checks a frame's first byte against the message in progress
// and notes the message a data frame starts.
func (r *rxState) checkFirst() (int, string) {
	op, fin := r.b0&0x0F, r.b0&0x80 != 0
	if r.b0&0x70 != 0 {
		return closeProtocolError, "reserved bits set" // no extension is negotiated
	}
	switch op {
	case 0:
		if r.msgOp == 0 {
			return closeProtocolError, "continuation frame without a message to continue"
		}
	case OpText, OpBinary:
		if r.msgOp != 0 {
			return closeProtocolError, "new message inside a fragmented one"
		}
		r.msgOp = op
	case OpClose, OpPing, OpPong:
		if !fin {
			return closeProtocolError, "fragmented control frame"
		}
	default:
		return closeProtocolError, fmt.Sprintf("reserved opcode %d", op)
	}
	return 0, ""
}

// scan checks a piece of the current frame's payload: the UTF-8 of a text
// message, the code and reason of a close frame.
func (r *rxState) scan(p []byte) (int, string) {
	switch op := r.b0 & 0x0F; {
	case op == OpClose:
		for len(p) > 0 && r.cpos < 2 {
			r.code = r.code<<8 | uint16(p[0]^r.key[r.kpos])
			r.kpos = (r.kpos + 1) & 3
			r.cpos++
			p = p[1:]
			if r.cpos == 2 && !validCloseCode(r.code) {
				return closeProtocolError, fmt.Sprintf("invalid close code %d", r.code)
			}
		}
		if r.reason = utf8Scan(r.reason, p, &r.key, &r.kpos); r.reason == utf8Reject {
			return closeInvalidData, "invalid UTF-8 in a close reason"
		}
	case op&0x08 == 0 && r.msgOp == OpText:
		if r.text = utf8Scan(r.text, p, &r.key, &r.kpos); r.text == utf8Reject {
			return closeInvalidData, "invalid UTF-8 in a text message"
		}
	}
	return 0, ""
}

// pass hands p to nbio's parser; false when that failed the connection.
func (c *Conn) pass(nc *nbio.Conn, ws *websocket.Conn, p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if err := ws.Parse(p); err != nil {
		c.rx.state = rxDone
		_ = nc.CloseWithError(err)
		return false
	}
	return true
}

// fail hands nbio the frames before the offending one and closes the
// connection with code once the Handler has had those.
func (c *Conn) fail(s *Server, nc *nbio.Conn, ws *websocket.Conn, before []byte, code int, why string) {
	ok := c.rx.state != rxOpen || c.pass(nc, ws, before)
	c.rx.state = rxDone
	if !ok {
		return
	}
	s.log.Debug("websocket protocol error", "remote", nc.RemoteAddr(), "code", code, "err", why)
	nc.Execute(func() {
		ws.SetCloseError(fmt.Errorf("websocket: %s (closed with %d)", why, code))
		c.Close(code, why)
	})
}

// peerClose answers a valid close frame from the peer, after what is
// queued: the same code (RFC 6455 §5.5.1), or an empty close frame when
// it had none. Nothing more is owed to the peer from now on.
func (c *Conn) peerClose(s *Server, nc *nbio.Conn, ws *websocket.Conn) {
	r := &c.rx
	r.state = rxDone
	code := int(r.code)
	if r.cpos == 1 {
		c.fail(s, nc, ws, nil, closeProtocolError, "close frame with a 1-byte payload")
		return
	}
	if r.reason != utf8Accept {
		c.fail(s, nc, ws, nil, closeInvalidData, "invalid UTF-8 in a close reason")
		return
	}
	if r.cpos == 0 {
		code = closeNoStatus
	}
	c.flags.set(flagClosing)
	nc.Execute(func() {
		if code != closeNormal {
			ws.SetCloseError(&websocket.CloseError{Code: code})
		}
		if code == closeNoStatus {
			c.closeWith(AppendFrame(make([]byte, 0, 2), OpClose, nil), false)
		} else {
			c.closeWith(CloseFrame(code, ""), false)
		}
	})
}

// maxMessage is MaxMessageSize as the frame check counts it (below 4 GiB).
func (s *Server) maxMessage() uint64 {
	return min(uint64(s.cfg.MaxMessageSize), math.MaxUint32)
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 §7.4; 1012-1014 are registered with IANA since).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// deliver hands a message to the Handler, on the connection's executor.
func (s *Server) deliver(c *Conn, op byte, data []byte) {
	if s.oh != nil {
		s.oh.OnMessageOp(c, op, data)
	} else {
		s.h.OnMessage(c, data)
	}
}

// deliverEmpty hands the Handler an empty message, which nbio drops, and
// refreshes the read deadline as nbio does after a message. It never runs
// after OnClose: nbio.Conn.Execute refuses jobs once the connection is
// closed, and OnClose is the job queued when it closes.
func (s *Server) deliverEmpty(c *Conn, ws *websocket.Conn, op byte) {
	s.deliver(c, op, nil)
	if s.cfg.IdleTimeout > 0 {
		_ = ws.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	}
}

// onData receives what the event loop read from a connection. Before the
// upgrade, that is the request, for nbhttp's parser; after it, frames, for
// the frame check.
func (s *Server) onData(nc *nbio.Conn, data []byte) {
	ws, ok := nc.Session().(*websocket.Conn)
	if !ok || ws == nil {
		nc.DataHandler()(nc, data)
		return
	}
	defer func() {
		if err := recover(); err != nil {
			s.log.Error("websocket frame check panicked", "remote", nc.RemoteAddr(), "err", err, "stack", string(debug.Stack()))
			_ = nc.Close()
		}
	}()
	// serveUpgrade attaches the Conn to ws after nbio wrote the 101, so a
	// fast client's first frames can arrive in between: wait for it.
	// (A torn read of the session gives nil here too, never a bad pointer;
	// attached orders what serveUpgrade wrote before what check does.)
	c, _ := ws.Session().(*Conn)
	if c == nil || !c.rx.attached.Load() {
		s.upgrading.Lock()
		s.upgrading.Unlock() //nolint:staticcheck // waiting for the upgrades in flight is the point
		if c, _ = ws.Session().(*Conn); c == nil || !c.rx.attached.Load() {
			_ = nc.Close() // the upgrade failed
			return
		}
	}
	c.check(s, nc, ws, data)
}

// UTF-8 validation as a state machine over bytes that arrive in pieces, so
// that a text message is refused at its first invalid byte (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF).
const (
	utf8Accept = 0 // between characters
	// 1..3: that many continuation bytes (80..BF) to come
	utf8E0     = 4 // after E0: A0..BF, then 1
	utf8ED     = 5 // after ED: 80..9F, then 1
	utf8F0     = 6 // after F0: 90..BF, then 2
	utf8F4     = 7 // after F4: 80..8F, then 2
	utf8Reject = 8
)

func utf8Next(st uint8, b byte) uint8 {
	switch st {
	case utf8Accept:
		switch {
		case b < 0x80:
			return utf8Accept
		case b < 0xC2:
			return utf8Reject // a continuation byte, or an overlong 2-byte form
		case b < 0xE0:
			return 1
		case b == 0xE0:
			return utf8E0
		case b == 0xED:
			return utf8ED
		case b < 0xF0:
			return 2
		case b == 0xF0:
			return utf8F0
		case b < 0xF4:
			return 3
		case b == 0xF4:
			return utf8F4
		}
	case 1, 2, 3:
		if b&0xC0 == 0x80 {
			return st - 1
		}
	case utf8E0:
		if b >= 0xA0 && b <= 0xBF {
			return 1
		}
	case utf8ED:
		if b >= 0x80 && b <= 0x9F {
			return 1
		}
	case utf8F0:
		if b >= 0x90 && b <= 0xBF {
			return 2
		}
	case utf8F4:
		if b >= 0x80 && b <= 0x8F {
			return 2
		}
	}
	return utf8Reject
}

// utf8Scan runs the state machine over p unmasked with key from *kpos on,
// eight ASCII bytes at a time where it can; it returns the new state
// (utf8Reject at the first invalid byte) and advances *kpos.
func utf8Scan(st uint8, p []byte, key *[4]byte, kpos *uint8) uint8 {
	k := *kpos
	*kpos = uint8((int(k) + len(p)) & 3)
	// The key as it applies from the next byte on, little-endian.
	k32 := uint32(key[k&3]) | uint32(key[(k+1)&3])<<8 | uint32(key[(k+2)&3])<<16 | uint32(key[(k+3)&3])<<24
	for i := 0; i < len(p); {
		if st == utf8Accept && len(p)-i >= 8 {
			if (binary.LittleEndian.Uint64(p[i:])^(uint64(k32)|uint64(k32)<<32))&0x8080808080808080 == 0 {
				i += 8 // eight ASCII bytes; the key is where it was
				continue
			}
		}
		st = utf8Next(st, p[i]^byte(k32))
		if st == utf8Reject {
			return st
		}
		k32 = k32>>8 | k32<<24
		i++
	}
	return st
}

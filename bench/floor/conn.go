package floor

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/spindlehq/spindle/transport"
)

// conn is one WebSocket connection. Its reader is the net/http handler
// goroutine that upgraded it; writes come from the reader (replies) and
// from publishers, each one net.Conn.Write call, which never interleave.
type conn struct {
	srv *Server
	nc  net.Conn
	id  string

	// Owned by the reader goroutine.
	connected bool
	subs      []*channel

	broken atomic.Bool // a write failed: the connection is being closed
}

// serveWS upgrades the request by hand and runs the connection's reader
// until the connection ends.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if r.Method != http.MethodGet || key == "" || r.Header.Get("Sec-WebSocket-Version") != "13" ||
		!headerHas(r.Header, "Upgrade", "websocket") || !headerHas(r.Header, "Connection", "upgrade") {
		http.Error(w, "floor: want a WebSocket upgrade (GET, Upgrade: websocket, Sec-WebSocket-Version: 13, a key)", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		http.Error(w, "floor: shutting down", http.StatusServiceUnavailable)
		return
	}
	s.readers.Add(1)
	s.mu.Unlock()
	defer s.readers.Done()

	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.log.Debug("hijack failed", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "floor: cannot take over the connection", http.StatusInternalServerError)
		return
	}
	// What the client sent after its request (nothing, usually) is read
	// first; the hijacked buffers are dropped after that.
	pending := make([]byte, brw.Reader.Buffered())
	_, _ = io.ReadFull(brw.Reader, pending) // reads buffered bytes only: cannot fail
	c := &conn{srv: s, nc: nc, id: fmt.Sprintf("floor-%d", s.nextID.Add(1))}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer c.end()

	if _, err := nc.Write(handshakeReply(key)); err != nil {
		s.log.Debug("handshake write failed", "client", c.id, "err", err)
		return
	}
	if err := c.read(pending); err != nil {
		s.log.Debug("connection ended", "client", c.id, "err", err)
	}
}

// headerHas reports whether the comma-separated header name lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// handshakeReply is the 101 response accepting Sec-WebSocket-Key key.
func handshakeReply(key string) []byte {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
}

// end closes the connection, which ends any write blocked on it, then
// unsubscribes it. It runs on the reader goroutine.
func (c *conn) end() {
	_ = c.nc.Close() // it may be closed already
	for _, ch := range c.subs {
		ch.remove(c)
	}
	c.srv.subscriptions.Add(-int64(len(c.subs)))
	c.subs = nil
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
}

// write writes one text frame carrying payload.
func (c *conn) write(payload []byte) error {
	frame := transport.AppendFrame(make([]byte, 0, transport.FrameSize(len(payload))), transport.OpText, payload)
	if _, err := c.nc.Write(frame); err != nil {
		return fmt.Errorf("write to %s: %w", c.id, err)
	}
	return nil
}

// writeFailed counts a failed publication write and closes the connection,
// which makes its reader end and unsubscribe it.
func (s *Server) writeFailed(c *conn, err error) {
	s.writeErrors.Add(1)
	if c.broken.CompareAndSwap(false, true) {
		s.log.Debug("publication write failed", "client", c.id, "err", err)
		_ = c.nc.Close()
	}
}

// disconnect sends a close frame with code and reason and closes the
// connection; err says why, for the reader to return.
func (c *conn) disconnect(code int, reason string, err error) error {
	_, _ = c.nc.Write(transport.CloseFrame(code, reason)) // best effort: the connection is closed next
	_ = c.nc.Close()
	return err
}

// Close codes the floor sends: the protocol's bad request (3501) for
// commands it cannot read, RFC 6455's for frames it does not take.
const (
	closeBadRequest    = 3501
	closeProtocolError = 1002
	closeUnsupported   = 1003
	closeTooBig        = 1009
)

// errClosed is a connection the client closed with a close frame.
var errClosed = errors.New("closed by the client")

// read reads client frames until the connection ends; pending is what was
// read before the upgrade completed. A clean end returns nil.
func (c *conn) read(pending []byte) error {
	b := make([]byte, max(1024, len(pending)))
	n := copy(b, pending)
	for {
		start := 0
		for {
			f, size, err := parseFrame(b[start:n], c.srv.cfg.MaxMessageSize)
			if err != nil {
				code := closeProtocolError
				if errors.Is(err, errTooBig) {
					code = closeTooBig
				}
				return c.disconnect(code, err.Error(), err)
			}
			if !f.complete {
				if size > len(b) {
					grown := make([]byte, size)
					copy(grown, b[start:n])
					b, n, start = grown, n-start, 0
				}
				break
			}
			start += size
			if err := c.handleFrame(f); err != nil {
				if errors.Is(err, errClosed) {
					return nil
				}
				return err
			}
		}
		n = copy(b, b[start:n])
		m, err := c.nc.Read(b[n:])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read from %s: %w", c.id, err)
		}
		n += m
	}
}

// handleFrame handles one complete client frame.
func (c *conn) handleFrame(f frame) error {
	switch {
	case !f.fin || f.op == opContinuation:
		return c.disconnect(closeUnsupported, "fragmented messages are not supported", errors.New("fragmented message"))
	case f.op == transport.OpText:
		return c.commands(f.payload)
	case f.op == transport.OpClose:
		code := f.payload[:min(2, len(f.payload))]
		_, _ = c.nc.Write(transport.AppendFrame(nil, transport.OpClose, code)) // the closing handshake, best effort
		_ = c.nc.Close()
		return errClosed
	case f.op == transport.OpPing:
		if _, err := c.nc.Write(transport.AppendFrame(nil, transport.OpPong, f.payload)); err != nil {
			return fmt.Errorf("pong to %s: %w", c.id, err)
		}
		return nil
	case f.op == transport.OpPong:
		return nil
	default:
		return c.disconnect(closeUnsupported, "only text frames are supported", fmt.Errorf("frame opcode %d", f.op))
	}
}

// opContinuation is the opcode of a message's later fragments.
const opContinuation = 0x0

// frame is one client frame, its payload unmasked in place.
type frame struct {
	complete bool
	fin      bool
	op       byte
	payload  []byte
}

var errTooBig = errors.New("frame too big")

// parseFrame parses the client frame at the start of b. An incomplete
// frame comes back with complete false and size its whole length when the
// header says it, else 0.
func parseFrame(b []byte, maxSize int) (frame, int, error) {
	if len(b) < 2 {
		return frame{}, 0, nil
	}
	f := frame{fin: b[0]&0x80 != 0, op: b[0] & 0x0f}
	if b[0]&0x70 != 0 {
		return f, 0, errors.New("reserved bits set")
	}
	if b[1]&0x80 == 0 {
		return f, 0, errors.New("client frame not masked")
	}
	n, hdr := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		n, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	if n > uint64(maxSize) {
		return f, 0, fmt.Errorf("%w: %d bytes, at most %d", errTooBig, n, maxSize)
	}
	if f.op >= transport.OpClose && (n > 125 || !f.fin) {
		return f, 0, errors.New("bad control frame")
	}
	size := hdr + 4 + int(n)
	if len(b) < size {
		return f, size, nil
	}
	key := b[hdr : hdr+4]
	f.payload = b[hdr+4 : size]
	for i := range f.payload {
		f.payload[i] ^= key[i&3]
	}
	f.complete = true
	return f, size, nil
}

package transport

// RFC 6455 conformance of the transport, over raw TCP: the behaviours the
// frame check (recv.go) fixes in nbio and those the gateway depends on.
// The whole Autobahn|Testsuite runs with scripts/autobahn.sh (a quick part
// of it in make test); see docs/conformance.md.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echo is a Handler that echoes every message with its opcode.
type echo struct {
	mu     sync.Mutex
	opened int
	closed int
	msgs   int
	last   *Conn
}

func (e *echo) OnOpen(c *Conn) { e.mu.Lock(); e.opened++; e.last = c; e.mu.Unlock() }
func (e *echo) OnMessage(c *Conn, data []byte) {
	e.OnMessageOp(c, OpText, data)
}
func (e *echo) OnMessageOp(c *Conn, op byte, data []byte) {
	e.mu.Lock()
	e.msgs++
	e.mu.Unlock()
	_ = c.Write(AppendFrame(nil, op, data))
}
func (e *echo) OnClose(*Conn, error) { e.mu.Lock(); e.closed++; e.mu.Unlock() }

func (e *echo) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		closed := e.closed
		e.mu.Unlock()
		if closed == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("OnClose not called")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedUnheard waits for OnClose and checks that no message reached the handler.
func (e *echo) closedUnheard(t *testing.T) {
	t.Helper()
	e.waitClosed(t)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.msgs != 0 {
		t.Fatalf("%d messages reached the handler", e.msgs)
	}
}

func startEcho(t *testing.T) (*Server, *echo) {
	t.Helper()
	h := &echo{}
	return serve(t, Config{MaxMessageSize: 1 << 16}, h), h
}

// serve starts a Server for h on a free port of 127.0.0.1 with cfg (an
// idle timeout of a minute unless cfg says) and shuts it down after the test.
func serve(t *testing.T, cfg Config, h Handler) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = time.Minute
	}
	s, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// t.Context() has ended by the time cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

type raw struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// handshake opens a TCP connection and performs the upgrade by hand,
// checking Sec-WebSocket-Accept.
func handshake(t *testing.T, s *Server) *raw {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	fmt.Fprintf(c, "GET /connection/websocket HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", s.Addr(), key)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status %d", resp.StatusCode)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, want)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return &raw{t: t, c: c, r: r}
}

// frame writes one client frame; masked as clients must unless mask is false.
func (w *raw) frame(fin bool, rsv, op byte, payload []byte, mask bool) {
	w.t.Helper()
	if _, err := w.c.Write(clientFrame(fin, rsv, op, payload, mask)); err != nil {
		w.t.Fatalf("write frame: %v", err)
	}
}

// clientFrame encodes one client frame, masked unless mask is false.
func clientFrame(fin bool, rsv, op byte, payload []byte, mask bool) []byte {
	b0 := op | rsv<<4
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
	m := byte(0)
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, m|byte(n))
	case n <= 0xFFFF:
		hdr = append(hdr, m|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, m|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	body := append([]byte(nil), payload...)
	if mask {
		key := [4]byte{1, 2, 3, 4}
		hdr = append(hdr, key[:]...)
		for i := range body {
			body[i] ^= key[i%4]
		}
	}
	return append(hdr, body...)
}

// read returns the next server frame's opcode and payload.
func (w *raw) read() (byte, []byte) {
	w.t.Helper()
	op, p, err := w.readErr()
	if err != nil {
		w.t.Fatalf("read frame: %v", err)
	}
	return op, p
}

// readErr reads one server frame, checking that the server never masks.
func (w *raw) readErr() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(w.r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		w.t.Fatal("server frame is masked")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var x [2]byte
		io.ReadFull(w.r, x[:])
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		io.ReadFull(w.r, x[:])
		n = binary.BigEndian.Uint64(x[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(w.r, p); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0F, p, nil
}

// expectClose reads until a close frame and checks its code, then does
// what RFC 6455 §7.1.1 asks of a client: it waits for the server to close
// TCP (a reset fails the test) and closes its side. With eofOK a
// connection dropped without a close frame also passes: §7.1.7 only says
// an endpoint SHOULD send one when it fails the connection.
func (w *raw) expectClose(eofOK bool, codes ...int) int {
	w.t.Helper()
	for {
		op, p, err := w.readErr()
		if err != nil {
			if eofOK && errors.Is(err, io.EOF) {
				return 1006
			}
			w.t.Fatalf("waiting for close: %v", err)
		}
		if op != OpClose {
			continue
		}
		code := 1005
		if len(p) >= 2 {
			code = int(binary.BigEndian.Uint16(p))
		}
		if !slices.Contains(codes, code) {
			w.t.Fatalf("close code %d, want one of %v", code, codes)
		}
		if _, err := io.Copy(io.Discard, w.r); err != nil {
			w.t.Fatalf("after the close frame: %v, want the server's FIN", err)
		}
		_ = w.c.Close()
		return code
	}
}

func TestEchoAndSizes(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	for _, n := range []int{1, 125, 126, 127, 65535, 65536} {
		p := []byte(strings.Repeat("a", n))
		w.frame(true, 0, OpText, p, true)
		op, got := w.read()
		if op != OpText || string(got) != string(p) {
			t.Fatalf("echo of %d bytes: op %d, %d bytes back", n, op, len(got))
		}
	}
}

func TestFragmentedMessage(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	w.frame(false, 0, OpText, []byte(`{"id":`), true)
	w.frame(true, 0, OpPing, []byte("mid"), true) // control frames may interleave
	w.frame(false, 0, 0, []byte(`1,`), true)
	w.frame(true, 0, 0, []byte(`"x":2}`), true)
	op, p := w.read()
	if op != OpPong || string(p) != "mid" {
		t.Fatalf("first frame op %d %q, want pong \"mid\"", op, p)
	}
	op, p = w.read()
	if op != OpText || string(p) != `{"id":1,"x":2}` {
		t.Fatalf("reassembled: op %d %q", op, p)
	}
}

func TestPingPong(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	w.frame(true, 0, OpPing, []byte("hello"), true)
	if op, p := w.read(); op != OpPong || string(p) != "hello" {
		t.Fatalf("op %d %q, want pong hello", op, p)
	}
}

func TestCloseHandshake(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	w.frame(true, 0, OpClose, []byte{0x03, 0xE8, 'b', 'y', 'e'}, true)
	if code := w.expectClose(false, 1000); code != 1000 {
		t.Fatal(code)
	}
}

// Every protocol error fails the connection with a close frame and the
// RFC's code (the frame check; nbio dropped TCP without a close frame, sent
// 1009 for an oversized control frame and 1002 for invalid UTF-8), and
// OnClose follows.
func TestProtocolViolationsClose(t *testing.T) {
	long := []byte(strings.Repeat("r", 124))
	cases := []struct {
		name string
		send func(w *raw)
		code int
	}{
		{"reserved bit RSV2", func(w *raw) { w.frame(true, 2, OpText, []byte("x"), true) }, 1002},
		{"RSV1 without an extension", func(w *raw) { w.frame(true, 4, OpText, []byte("x"), true) }, 1002},
		{"reserved opcode 3", func(w *raw) { w.frame(true, 0, 0x3, []byte("x"), true) }, 1002},
		{"reserved control opcode 11", func(w *raw) { w.frame(true, 0, 0xB, nil, true) }, 1002},
		{"fragmented ping", func(w *raw) { w.frame(false, 0, OpPing, []byte("x"), true) }, 1002},
		{"ping over 125 bytes", func(w *raw) { w.frame(true, 0, OpPing, []byte(strings.Repeat("p", 126)), true) }, 1002},
		{"close reason over 123 bytes", func(w *raw) { w.frame(true, 0, OpClose, append([]byte{0x03, 0xE8}, long...), true) }, 1002},
		{"continuation without start", func(w *raw) { w.frame(true, 0, 0, []byte("x"), true) }, 1002},
		{"new message inside a fragmented one", func(w *raw) {
			w.frame(false, 0, OpText, []byte("a"), true)
			w.frame(true, 0, OpText, []byte("b"), true)
		}, 1002},
		{"unmasked client frame", func(w *raw) { w.frame(true, 0, OpText, []byte("plain"), false) }, 1002},
		{"close with a 1-byte payload", func(w *raw) { w.frame(true, 0, OpClose, []byte{0x03}, true) }, 1002},
		{"close code 999", func(w *raw) { w.frame(true, 0, OpClose, []byte{0x03, 0xE7}, true) }, 1002},
		{"close code 1005", func(w *raw) { w.frame(true, 0, OpClose, []byte{0x03, 0xED}, true) }, 1002},
		{"close code 1015", func(w *raw) { w.frame(true, 0, OpClose, []byte{0x03, 0xF7}, true) }, 1002},
		{"close code 5000", func(w *raw) { w.frame(true, 0, OpClose, []byte{0x13, 0x88}, true) }, 1002},
		{"invalid UTF-8 text", func(w *raw) { w.frame(true, 0, OpText, []byte{0xff, 0xfe}, true) }, 1007},
		{"surrogate in text", func(w *raw) { w.frame(true, 0, OpText, []byte("a\xed\xa0\x80"), true) }, 1007},
		{"text ending inside a character", func(w *raw) { w.frame(true, 0, OpText, []byte("\xce"), true) }, 1007},
		{"character split over fragments, cut", func(w *raw) {
			w.frame(false, 0, OpText, []byte("\xce"), true)
			w.frame(true, 0, 0, []byte("x"), true)
		}, 1007},
		{"invalid UTF-8 close reason", func(w *raw) { w.frame(true, 0, OpClose, []byte{0x03, 0xE8, 0xff}, true) }, 1007},
		{"message over the limit", func(w *raw) { w.frame(true, 0, OpText, make([]byte, 1<<16+1), true) }, 1009},
		{"fragments over the limit", func(w *raw) {
			w.frame(false, 0, OpBinary, make([]byte, 1<<15), true)
			w.frame(false, 0, 0, make([]byte, 1<<15), true)
			w.frame(true, 0, 0, []byte{1}, true)
		}, 1009},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, h := startEcho(t)
			w := handshake(t, s)
			c.send(w)
			w.expectClose(false, c.code)
			h.closedUnheard(t)
		})
	}
}

// The messages before a protocol error are handled and answered before
// the close frame (Autobahn 3.2, 4.1.3): nbio closed at once and lost them.
func TestMessagesBeforeAnErrorAreAnswered(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	b := clientFrame(true, 0, OpText, []byte("first"), true)
	b = append(b, clientFrame(true, 0, OpBinary, []byte("second"), true)...)
	b = append(b, clientFrame(true, 2, OpText, []byte("bad"), true)...)
	b = append(b, clientFrame(true, 0, OpPing, nil, true)...)
	if _, err := w.c.Write(b); err != nil {
		t.Fatal(err)
	}
	if op, p := w.read(); op != OpText || string(p) != "first" {
		t.Fatalf("op %d %q, want the echo of first", op, p)
	}
	if op, p := w.read(); op != OpBinary || string(p) != "second" {
		t.Fatalf("op %d %q, want the echo of second", op, p)
	}
	// Next is the close frame: no pong for the ping after the bad frame.
	op, p := w.read()
	if op != OpClose || len(p) < 2 || binary.BigEndian.Uint16(p) != 1002 {
		t.Fatalf("op %d %q, want close 1002", op, p)
	}
}

// A connection the server closes ends as RFC 6455 §7.1.1 asks: the close
// frame, then the server's FIN, while what the peer still sends is read
// and dropped until the peer closes too. Closing the socket at once
// answered the peer's next bytes with a reset: its writes failed, and a
// peer that writes before it reads never saw the close frame (Autobahn
// 5.14 under load: "TCP dropped without a close frame").
func TestServerCloseWhilePeerSends(t *testing.T) {
	s, h := startEcho(t)
	w := handshake(t, s)
	w.frame(true, 0, OpText, []byte("plain"), false) // unmasked: the server fails the connection
	if op, p := w.read(); op != OpClose || len(p) < 2 || binary.BigEndian.Uint16(p) != 1002 {
		t.Fatalf("op %d %q, want close 1002", op, p)
	}
	more := clientFrame(true, 0, OpText, []byte(strings.Repeat("m", 1000)), true)
	for i := range 64 {
		if _, err := w.c.Write(more); err != nil {
			t.Fatalf("write %d after the server's close frame: %v", i, err)
		}
	}
	if _, err := w.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the close frame: %v, want the server's FIN", err)
	}
	w.c.Close()
	h.closedUnheard(t)
}

// A peer that reads the server's close frame but never closes its side
// holds the socket for the close grace only: then it is reset, and the
// Handler's OnClose runs.
func TestCloseGraceEndsAPeerThatStaysOpen(t *testing.T) {
	h := &echo{}
	s := serve(t, Config{CloseGrace: 200 * time.Millisecond}, h)
	w := handshake(t, s)
	w.frame(true, 0, OpText, []byte("hi"), true)
	w.read() // the echo: the Conn is open
	h.mu.Lock()
	c := h.last
	h.mu.Unlock()
	c.Close(4000, "bye")
	if op, p := w.read(); op != OpClose || len(p) < 2 || binary.BigEndian.Uint16(p) != 4000 {
		t.Fatalf("op %d %q, want close 4000", op, p)
	}
	if err := c.Write(AppendFrame(nil, OpText, []byte("late"))); !errors.Is(err, ErrClosing) {
		t.Fatalf("Write after Close: %v, want ErrClosing", err)
	}
	// The server's FIN, then, with this side still open, the reset.
	if _, err := w.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the close frame: %v, want the server's FIN", err)
	}
	h.waitClosed(t)
	if _, err := w.c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after the close grace: %v, want a reset connection", err)
	}
}

// Invalid UTF-8 fails the connection when it arrives, not when the message
// ends (Autobahn 6.4.*): here the final fragment is never sent.
func TestInvalidUTF8FailsFast(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames [][]byte
	}{
		{"in a later fragment", [][]byte{[]byte("κόσμε"), []byte("\xf4\x90\x80\x80")}},
		{"a character cut between fragments", [][]byte{[]byte("κόσμε\xf4"), []byte("\x90")}},
		{"in the first fragment", [][]byte{[]byte("ok \xc0\xaf")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := startEcho(t)
			w := handshake(t, s)
			for i, f := range tc.frames {
				op := byte(0)
				if i == 0 {
					op = OpText
				}
				w.frame(false, 0, op, f, true)
			}
			w.expectClose(false, 1007)
		})
	}
}

// Empty messages reach the handler: text, binary, and a message of empty
// fragments (Autobahn 1.1.1, 1.2.1, 6.1.*); nbio dropped them.
func TestEmptyMessages(t *testing.T) {
	s, h := startEcho(t)
	w := handshake(t, s)
	w.frame(true, 0, OpText, nil, true)
	if op, p := w.read(); op != OpText || len(p) != 0 {
		t.Fatalf("op %d %q, want an empty text message", op, p)
	}
	w.frame(true, 0, OpBinary, nil, true)
	if op, p := w.read(); op != OpBinary || len(p) != 0 {
		t.Fatalf("op %d %q, want an empty binary message", op, p)
	}
	w.frame(false, 0, OpText, nil, true)
	w.frame(false, 0, 0, nil, true)
	w.frame(true, 0, 0, nil, true)
	if op, p := w.read(); op != OpText || len(p) != 0 {
		t.Fatalf("op %d %q, want an empty text message", op, p)
	}
	// In order with the messages around them, in one read.
	b := clientFrame(true, 0, OpText, []byte("a"), true)
	b = append(b, clientFrame(true, 0, OpText, nil, true)...)
	b = append(b, clientFrame(true, 0, OpText, []byte("b"), true)...)
	if _, err := w.c.Write(b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a", "", "b"} {
		if op, p := w.read(); op != OpText || string(p) != want {
			t.Fatalf("op %d %q, want %q", op, p, want)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs != 6 {
		t.Fatalf("%d messages handled, want 6", h.msgs)
	}
}

// A Handler without OnMessageOp gets empty messages through OnMessage.
func TestEmptyMessagePlainHandler(t *testing.T) {
	got := make(chan int, 1)
	s := serve(t, Config{}, plain(func(c *Conn, data []byte) { got <- len(data) }))
	w := handshake(t, s)
	w.frame(true, 0, OpBinary, nil, true)
	select {
	case n := <-got:
		if n != 0 {
			t.Fatalf("%d bytes", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("OnMessage not called for an empty message")
	}
}

type plain func(c *Conn, data []byte)

func (plain) OnOpen(*Conn)                     {}
func (f plain) OnMessage(c *Conn, data []byte) { f(c, data) }
func (plain) OnClose(*Conn, error)             {}

// A close frame from the peer is answered with its code, or with an empty
// close frame when it had none, and nothing after it is handled.
func TestCloseReplies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		want    int
	}{
		{"no status", nil, 1005},
		{"normal with reason", append([]byte{0x03, 0xE8}, "bye"...), 1000},
		{"registered 1012", []byte{0x03, 0xF4}, 1012},
		{"application 3000", []byte{0x0B, 0xB8}, 3000},
		{"private 4999", []byte{0x13, 0x87}, 4999},
		{"reason of 123 bytes", append([]byte{0x03, 0xE8}, strings.Repeat("é", 61)+"x"...), 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, h := startEcho(t)
			w := handshake(t, s)
			b := clientFrame(true, 0, OpClose, tc.payload, true)
			b = append(b, clientFrame(true, 0, OpText, []byte("after close"), true)...)
			if _, err := w.c.Write(b); err != nil {
				t.Fatal(err)
			}
			op, p, err := w.readErr()
			if err != nil || op != OpClose {
				t.Fatalf("op %d %q %v, want a close frame", op, p, err)
			}
			code := 1005
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			if code != tc.want {
				t.Fatalf("close code %d, want %d", code, tc.want)
			}
			if _, _, err := w.readErr(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the close frame: %v, want EOF", err)
			}
			h.closedUnheard(t)
		})
	}
}

// Frames cut anywhere, headers included, across reads: the frame check
// keeps its place (extended lengths, masks, UTF-8 split inside characters).
func TestFramesSplitAcrossReads(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	big := []byte(strings.Repeat("ü€𝄞", 6000)) // 54,000 bytes: a 16-bit length
	huge := make([]byte, 65536)                // a 64-bit length, at the limit
	for i := range huge {
		huge[i] = byte(i)
	}
	var stream []byte
	stream = append(stream, clientFrame(true, 0, OpText, []byte("κόσμε"), true)...)
	stream = append(stream, clientFrame(false, 0, OpText, []byte("a\xf0\x9d"), true)...)
	stream = append(stream, clientFrame(true, 0, OpPing, []byte("p"), true)...)
	stream = append(stream, clientFrame(false, 0, 0, []byte("\x84"), true)...)
	stream = append(stream, clientFrame(true, 0, 0, []byte("\x9eb"), true)...)
	stream = append(stream, clientFrame(true, 0, OpText, nil, true)...)
	stream = append(stream, clientFrame(true, 0, OpText, big, true)...)
	stream = append(stream, clientFrame(true, 0, OpBinary, huge, true)...)
	go func() {
		for i, n := 0, 1; i < len(stream); i, n = i+n, n%13+1 {
			if i > 200 {
				n = 4096
			}
			end := min(i+n, len(stream))
			if _, err := w.c.Write(stream[i:end]); err != nil {
				return
			}
			if i < 200 {
				time.Sleep(time.Millisecond) // separate reads on the server
			}
		}
	}()
	want := []struct {
		op byte
		p  string
	}{{OpText, "κόσμε"}, {OpPong, "p"}, {OpText, "a𝄞b"}, {OpText, ""}, {OpText, string(big)}, {OpBinary, string(huge)}}
	for _, x := range want {
		op, p := w.read()
		if op != x.op || string(p) != x.p {
			t.Fatalf("op %d, %d bytes; want op %d, %d bytes", op, len(p), x.op, len(x.p))
		}
	}
}

// A client may send its first frame as soon as it has the 101, before
// serveUpgrade attached the Conn: the frame check waits for it.
func TestFirstFrameRightAfterTheUpgrade(t *testing.T) {
	testHookUpgraded = func() { time.Sleep(100 * time.Millisecond) }
	t.Cleanup(func() { testHookUpgraded = nil })
	s, _ := startEcho(t)
	w := handshake(t, s) // the 101 came before the hook's sleep ended
	w.frame(true, 0, OpText, []byte("early"), true)
	if op, p := w.read(); op != OpText || string(p) != "early" {
		t.Fatalf("op %d %q", op, p)
	}
}

func TestBinaryEchoKeepsOpcode(t *testing.T) {
	s, _ := startEcho(t)
	w := handshake(t, s)
	w.frame(true, 0, OpBinary, []byte{0, 0xff, 0xfe}, true)
	if op, p := w.read(); op != OpBinary || string(p) != "\x00\xff\xfe" {
		t.Fatalf("op %d %q", op, p)
	}
}

func TestPendingAccounting(t *testing.T) {
	s, h := startEcho(t)
	w := handshake(t, s)
	big := []byte(strings.Repeat("z", 60000))
	w.frame(true, 0, OpText, big, true)
	w.read()
	h.mu.Lock()
	c := h.last
	h.mu.Unlock()
	// The peer can read the echo before the event loop has counted its
	// write (the callback runs after the syscall returns): wait for it.
	for deadline := time.Now().Add(3 * time.Second); c.Pending() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pending %d after the peer read everything", c.Pending())
		}
	}
	// Stop reading: what the kernel cannot take shows up as pending.
	for i := 0; i < 200; i++ {
		_ = c.Write(AppendFrame(nil, OpText, big))
	}
	if c.Pending() == 0 {
		t.Fatal("12 MB written to a peer that does not read, pending is 0")
	}
	// A peer that says goodbye is owed nothing more: not a slow consumer.
	w.frame(true, 0, OpClose, []byte{0x03, 0xe8}, true)
	deadline := time.Now().Add(3 * time.Second)
	for c.Pending() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pending %d after the peer's close frame", c.Pending())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

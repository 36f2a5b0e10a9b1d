package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"time"

	"github.com/lesismal/nbio"
)

// Loop is an event loop (epoll, through nbio) that carries the connections
// of many Clients without a goroutine each: a delivery costs one read per
// ready socket and no goroutine wake-up. The load generator uses it.
type Loop struct {
	e  *nbio.Engine
	mu sync.Mutex // orders adding a connection before its first read (see race.go)
}

// NewLoop starts an event loop with the given number of poller goroutines
// (0: one per CPU).
func NewLoop(pollers int) (*Loop, error) {
	if pollers <= 0 {
		pollers = runtime.NumCPU() // nbio's own default is a quarter of that
	}
	l := &Loop{e: nbio.NewEngine(nbio.Config{NPoller: pollers, ReadBufferSize: 64 << 10})}
	l.e.OnData(func(c *nbio.Conn, data []byte) {
		if lc, ok := c.Session().(*loopConn); ok {
			lc.onData(data)
		}
	})
	l.e.OnClose(func(c *nbio.Conn, err error) {
		if lc, ok := c.Session().(*loopConn); ok {
			lc.onClose(err)
		}
	})
	if raceHooks != nil {
		raceHooks(l)
	}
	if err := l.e.Start(); err != nil {
		return nil, fmt.Errorf("start event loop: %w", err)
	}
	return l, nil
}

// Stop closes every connection on the loop and stops it.
func (l *Loop) Stop() { l.e.Stop() }

// loopConn is the event-loop carrier: it parses server frames (never
// masked) from the byte stream and writes masked client frames.
type loopConn struct {
	c   *Client
	nc  socket // the *nbio.Conn
	buf []byte // an incomplete frame carried over to the next read
	msg []byte // a fragmented message being assembled
	bye *DisconnectError
}

// socket is what loopConn needs of an nbio connection.
type socket interface {
	Write(b []byte) (int, error)
	Close() error
}

// dial connects, upgrades with a blocking handshake, then hands the socket
// to the loop.
func (l *Loop) dial(ctx context.Context, c *Client) (*loopConn, error) {
	u, err := url.Parse(c.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	nc, err := netDialer(&c.cfg).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	_ = nc.SetDeadline(deadline)
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{
		"Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-WebSocket-Key": {key}, "Sec-WebSocket-Version": {"13"},
	}}
	for k, v := range c.cfg.Header {
		req.Header[k] = v
	}
	if c.cfg.Protobuf {
		req.Header["Sec-WebSocket-Protocol"] = []string{protobufSubprotocol}
	}
	br := bufio.NewReaderSize(nc, 1024)
	if err := req.Write(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, &HandshakeError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")})
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		nc.Close()
		return nil, fmt.Errorf("dial %s: bad handshake: wrong Sec-WebSocket-Accept", c.cfg.URL)
	}
	if err := checkSubprotocol(&c.cfg, resp.Header.Get("Sec-WebSocket-Protocol")); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	lc := &loopConn{c: c}
	if n := br.Buffered(); n > 0 { // the server spoke first: keep what it said
		lc.buf, _ = br.Peek(n)
		lc.buf = append([]byte(nil), lc.buf...)
	}
	conn, err := nbio.NBConn(nc)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	conn.SetSession(lc)
	lc.nc = conn
	l.mu.Lock()
	_, err = l.e.AddConn(conn)
	l.mu.Unlock()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	return lc, nil
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
)

// onData runs on the connection's poller goroutine.
func (lc *loopConn) onData(data []byte) {
	if len(lc.buf) > 0 {
		lc.buf = append(lc.buf, data...)
		data = lc.buf
	}
	for {
		n, ok := lc.frame(data)
		if !ok {
			break
		}
		data = data[n:]
	}
	// Keep an incomplete frame; data may be the loop's read buffer.
	lc.buf = append(lc.buf[:0], data...)
}

// frame handles the first complete frame in b and returns its length.
func (lc *loopConn) frame(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	fin, op := b[0]&0x80 != 0, b[0]&0x0f
	n, hdr := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return 0, false
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0, false
		}
		n, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	if b[1]&0x80 != 0 || n > 64<<20 {
		_ = lc.nc.Close() // servers never mask; absurd sizes are not ours to buffer
		return 0, false
	}
	if uint64(len(b)-hdr) < n {
		return 0, false
	}
	payload := b[hdr : hdr+int(n)]
	switch op {
	case opText, opBinary:
		if fin {
			// Replies reach other goroutines: give them their own bytes.
			lc.c.frame(append([]byte(nil), payload...))
		} else {
			lc.msg = append(lc.msg[:0], payload...)
		}
	case opContinuation:
		lc.msg = append(lc.msg, payload...)
		if fin {
			lc.c.frame(lc.msg)
			lc.msg = nil
		}
	case opPing:
		_, _ = lc.nc.Write(appendMasked(nil, 0xA, payload))
	case opClose:
		bye := &DisconnectError{Code: 1005}
		if len(payload) >= 2 {
			bye.Code, bye.Reason = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
		}
		lc.bye = bye
		_, _ = lc.nc.Write(appendMasked(nil, opClose, payload[:min(2, len(payload))]))
		_ = lc.nc.Close()
	}
	return hdr + int(n), true
}

func (lc *loopConn) onClose(err error) {
	if lc.bye != nil {
		err = lc.bye
	} else if err == nil {
		err = io.ErrUnexpectedEOF
	}
	lc.c.ended(err)
}

func (lc *loopConn) writeMessage(binary bool, payload []byte) error {
	op := byte(opText)
	if binary {
		op = opBinary
	}
	if _, err := lc.nc.Write(appendMasked(nil, op, payload)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (lc *loopConn) closeNormal() {
	_, _ = lc.nc.Write(appendMasked(nil, opClose, []byte{0x03, 0xe8})) // 1000
	_ = lc.nc.Close()
}

// appendMasked appends a final client frame; clients must mask (RFC 6455 5.3).
func appendMasked(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range b[start:] {
		b[start+i] ^= key[i&3]
	}
	return b
}

// raceHooks is set in race builds only, see race.go.
var raceHooks func(*Loop)

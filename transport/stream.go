package transport

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// Streams: HTTP responses that stay open as sessions, Centrifugo's
// Server-Sent Events and HTTP streaming, unidirectional (Config.UniSSEPath,
// UniHTTPStreamPath) or the server half of the bidirectional emulation
// (SSEPath, HTTPStreamPath). The front door hands a request
// at a stream path to the event loop as it does an upgrade; serveStream
// writes the response head and keeps the connection as a Conn whose Write
// hands already framed body bytes to the loop, counted like a WebSocket's.
// No goroutine waits on an idle stream: the loop reads, and drops, what
// the client sends after its request, and reports the close. A stream's
// request that reaches net/http (on a connection kept alive after an API
// request) is moved to the event loop the same way once it is read.

// Stream is the kind of HTTP stream a Conn is; StreamNone for a WebSocket.
type Stream uint8

const (
	StreamNone Stream = iota // a WebSocket connection
	StreamSSE                // text/event-stream; the body ends with the connection
	StreamHTTP               // chunked; the body ends with the last chunk
)

// StreamEnder is optional: a Handler that implements it gives the last
// bytes of a stream, or of a unidirectional WebSocket, closed with code and
// reason (already framed, e.g. a disconnect message), written before the
// end of the response or the close frame; nil for none. The bytes are the
// caller's: a fresh slice each call.
type StreamEnder interface {
	StreamEnd(c *Conn, code int, reason string) []byte
}

// AppendEvent appends one Server-Sent Event carrying data to dst: a
// "data:" line per line of data, then the empty line that ends the event.
func AppendEvent(dst, data []byte) []byte {
	for {
		dst = append(dst, "data: "...)
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, data...)
			return append(dst, '\n', '\n')
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// AppendChunk appends payload as one chunk of a chunked HTTP body to dst;
// an empty payload appends nothing (an empty chunk would end the body).
func AppendChunk(dst, payload []byte) []byte {
	if len(payload) == 0 {
		return dst
	}
	dst = strconv.AppendInt(dst, int64(len(payload)), 16)
	dst = append(dst, '\r', '\n')
	dst = append(dst, payload...)
	return append(dst, '\r', '\n')
}

// Stream reports which kind of HTTP stream the connection is; StreamNone
// for a WebSocket.
func (c *Conn) Stream() Stream { return c.stream }

// streamAt is the kind of stream served at path, StreamNone when none, and
// whether it is unidirectional.
func (s *Server) streamAt(path []byte) (kind Stream, uni bool) {
	switch {
	case len(path) == 0:
		return StreamNone, false
	case string(path) == s.cfg.UniSSEPath:
		return StreamSSE, true
	case string(path) == s.cfg.UniHTTPStreamPath:
		return StreamHTTP, true
	case string(path) == s.cfg.SSEPath:
		return StreamSSE, false
	case string(path) == s.cfg.HTTPStreamPath:
		return StreamHTTP, false
	}
	return StreamNone, false
}

// streamMethod reports whether a stream of kind k is opened by method. (A
// CORS preflight, OPTIONS, is answered on net/http: its connection is kept
// alive for the next request, which may be any.)
func streamMethod(k Stream, method []byte) bool {
	switch string(method) {
	case http.MethodPost:
		return true
	case http.MethodGet:
		return k == StreamSSE
	}
	return false
}

// serveStream opens a stream whose request the event loop parsed. A
// request refused closes its connection: the event loop serves nothing but
// sessions, so a keep-alive client's next request must go through the
// front door again.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	r.Close = true // read by nbhttp after the answer; a hijacked connection is the stream's
	s.openStream(w, r, s.takeFromLoop)
}

// serveStreamAPI opens a stream whose request came to net/http instead, on
// a keep-alive connection an API request (the emulation's) opened: the
// connection moves to the event loop once the request is read.
func (s *Server) serveStreamAPI(w http.ResponseWriter, r *http.Request) {
	s.openStream(w, r, s.takeFromAPI)
}

// streamsFirst serves requests at a stream path with serveStreamAPI and
// the rest with next.
func (s *Server) streamsFirst(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k, _ := s.streamAt([]byte(r.URL.Path)); k != StreamNone {
			s.serveStreamAPI(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// take hands over the connection of w: the net.Conn the stream writes to,
// and attach, which makes ss the event loop's session of it.
type take func(w http.ResponseWriter) (conn net.Conn, attach func(ss *streamSession) error, err error)

// openStream opens a stream: it checks the request, reads its body, admits
// it, takes the connection and writes the response head; then the Handler
// has OnOpen and, at once, the request body (empty for a GET) as the
// connection's one message.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, takeConn take) {
	kind, uni := s.streamAt([]byte(r.URL.Path))
	origin := r.Header.Get("Origin")
	if r.Method == http.MethodOptions {
		allowOrigin(w.Header(), origin)
		w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if h := r.Header.Get("Access-Control-Request-Headers"); h != "" {
			w.Header().Set("Access-Control-Allow-Headers", h)
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !streamMethod(kind, []byte(r.Method)) {
		w.Header().Set("Allow", "POST, OPTIONS")
		if kind == StreamSSE {
			w.Header().Set("Allow", "GET, POST, OPTIONS")
		}
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if s.cfg.CheckOrigin != nil && !s.cfg.CheckOrigin(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(s.cfg.MaxMessageSize)+1))
	if err != nil {
		s.log.Debug("read stream request body", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "request body unreadable", http.StatusBadRequest)
		return
	}
	if len(body) > s.cfg.MaxMessageSize {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	release := func() {}
	if s.cfg.Admit != nil {
		if release, err = s.cfg.Admit(r); err != nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	conn, attach, err := takeConn(w)
	if err != nil {
		release()
		s.log.Warn("open a stream", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := &Conn{nc: conn, srv: s, stream: kind, uni: uni, req: s.keep(r, true)}
	c.progress.Store(Mono())
	if err := attach(&streamSession{c: c}); err != nil {
		release()
		s.log.Warn("open a stream", "remote", r.RemoteAddr, "err", err)
		return
	}
	if err := c.Write(streamHead(kind, origin)); err != nil {
		s.log.Debug("write stream head", "remote", r.RemoteAddr, "err", err)
	}
	if s.door != nil {
		s.door.gate.settle(r.RemoteAddr) // a session now: the gateway's limit holds it
	}
	s.h.OnOpen(c)
	s.deliverStreamRequest(c, body)
}

// deliverStreamRequest hands the request body to the Handler as the
// stream's one message.
func (s *Server) deliverStreamRequest(c *Conn, body []byte) {
	if s.oh != nil {
		s.oh.OnMessageOp(c, OpText, body)
		return
	}
	s.h.OnMessage(c, body)
}

// takeFromLoop takes the request's connection from nbhttp; the event loop
// has it already.
func (s *Server) takeFromLoop(w http.ResponseWriter) (net.Conn, func(*streamSession) error, error) {
	conn, err := hijack(w)
	if err != nil {
		return nil, nil, err
	}
	nc := nbioConn(conn)
	if nc == nil {
		return nil, nil, fmt.Errorf("connection %T is not the event loop's", conn)
	}
	if hc, ok := conn.(*nbhttp.Conn); ok {
		hc.Parser = nil // the request parser is done with this connection
	}
	return conn, func(ss *streamSession) error {
		nc.SetSession(ss)
		// The client sends nothing more: liveness is the gateway's pings
		// and the write progress, as for a WebSocket session.
		_ = nc.SetReadDeadline(time.Time{}) // fails only on a closed connection, which reports its close
		return nil
	}, nil
}

// takeFromAPI takes the request's connection from net/http and gives it to
// the event loop (what the client sent after its request is dropped, as a
// stream drops it).
func (s *Server) takeFromAPI(w http.ResponseWriter) (net.Conn, func(*streamSession) error, error) {
	conn, err := hijack(w)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	nc, err := takeOver(conn)
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("hand a stream to the event loop: %w", err)
	}
	return nc, func(ss *streamSession) error {
		nc.SetSession(ss)
		nc.OnData(s.engine.DataHandler)
		if err := s.addToLoop(nc); err != nil {
			return fmt.Errorf("event loop refused a stream: %w", err)
		}
		return nil
	}, nil
}

// hijack takes the request's connection from its HTTP server.
func hijack(w http.ResponseWriter) (net.Conn, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, fmt.Errorf("response %T can not be hijacked", w)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return nil, fmt.Errorf("hijack: %w", err)
	}
	return conn, nil
}

// streamHead is the response head of a stream of kind; a request with an
// Origin gets it back as the allowed one (CheckOrigin already said yes).
func streamHead(kind Stream, origin string) []byte {
	h := make([]byte, 0, 320)
	h = append(h, "HTTP/1.1 200 OK\r\n"...)
	if kind == StreamSSE {
		h = append(h, "Content-Type: text/event-stream; charset=utf-8\r\n"...)
	} else {
		h = append(h, "Content-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"...)
	}
	h = append(h, "Cache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\nPragma: no-cache\r\nExpires: 0\r\nX-Accel-Buffering: no\r\nConnection: close\r\n"...)
	if origin != "" {
		h = append(h, "Access-Control-Allow-Origin: "...)
		h = append(h, origin...)
		h = append(h, "\r\nAccess-Control-Allow-Credentials: true\r\n"...)
	}
	return append(h, '\r', '\n')
}

func allowOrigin(h http.Header, origin string) {
	if origin != "" {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	}
}

// lastChunk ends a chunked body.
var lastChunk = []byte("0\r\n\r\n")

// streamEnd is what closes a stream with code and reason: the Handler's
// last message (StreamEnder), then the end of the body.
func (s *Server) streamEnd(c *Conn, code int, reason string) []byte {
	var b []byte
	if e, ok := s.h.(StreamEnder); ok {
		b = e.StreamEnd(c, code, reason)
	}
	if c.stream == StreamHTTP {
		b = append(b, lastChunk...)
	}
	return b
}

// streamSession is the event loop's session of a stream connection
// (nbhttp.ParserCloser): it drops what the client sends and reports the
// close. Its fields are set before it is attached, read-only after.
type streamSession struct {
	c *Conn
}

func (ss *streamSession) UnderlayerConn() net.Conn { return ss.c.nc }

// Parse drops bytes the client sends after its request: a stream takes none.
func (ss *streamSession) Parse([]byte) error { return nil }

func (ss *streamSession) CloseAndClean(err error) { ss.c.srv.closed(ss.c, err) }

// connOf is the Conn the event loop's connection carries, a WebSocket's or
// a stream's; nil before the upgrade.
func connOf(nc *nbio.Conn) *Conn {
	switch v := nc.Session().(type) {
	case *websocket.Conn:
		c, _ := v.Session().(*Conn)
		return c
	case *streamSession:
		return v.c
	}
	return nil
}

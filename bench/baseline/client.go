package baseline

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

const (
	// sendBuffer is the length of a client's send channel, as in the chat
	// example; a client whose channel is full is dropped.
	sendBuffer = 256
)

// Error replies of the client protocol (codes as Centrifugo's).
var (
	errInternal          = &protocol.Error{Code: 100, Message: "internal server error"}
	errUnauthorized      = &protocol.Error{Code: 101, Message: "unauthorized"}
	errMethodNotFound    = &protocol.Error{Code: 104, Message: "method not found"}
	errAlreadySubscribed = &protocol.Error{Code: 105, Message: "already subscribed"}
	errBadRequest        = &protocol.Error{Code: 107, Message: "bad request"}
)

// pingFrame is the protocol's server ping, an empty reply; clients answer
// with an empty command.
var pingFrame = []byte("{}")

// client is a middleman between one WebSocket connection and the hub.
type client struct {
	srv  *Server
	conn *websocket.Conn
	id   string

	// send is the buffered channel of outbound frames. Only the hub sends
	// on it and closes it.
	send chan []byte

	// connected is set by the read pump after a successful connect command;
	// only the read pump uses it.
	connected bool

	// closeMsg is the close frame payload the write pump sends after send
	// is closed: empty (no status) unless the read pump unregistered with a
	// disconnect. Only the hub sets it, before it closes send.
	closeMsg []byte
}

// Disconnect close frames of the client protocol, sent when the server ends
// a connection for the client's fault.
var (
	closeInvalidToken = websocket.FormatCloseMessage(3500, "invalid token")
	closeBadRequest   = websocket.FormatCloseMessage(3501, "bad request")
)

// protocolError ends a connection with a disconnect close frame.
type protocolError struct {
	closeMsg []byte
	err      error
}

func (e *protocolError) Error() string { return e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

func badRequest(err error) error { return &protocolError{closeBadRequest, err} }

// serveWS upgrades the request and hands the connection to the hub, which
// starts its read and write pumps.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if max := s.cfg.MaxConnections; max > 0 && s.Stats().Conns >= int64(max) {
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return // Upgrade has replied with an HTTP error
	}
	c := &client{srv: s, conn: conn, id: newClientID(), send: make(chan []byte, sendBuffer)}
	select {
	case s.hub.register <- c:
	case <-s.hub.done:
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutting down"), time.Now().Add(time.Second))
		_ = conn.Close()
	}
}

// startPumps runs on the hub goroutine for each registered client.
func (s *Server) startPumps(c *client) {
	s.pumps.Add(2)
	s.trackConn(c.conn, true)
	go c.writePump()
	go c.readPump()
}

// readPump reads frames from the connection and runs their commands. It is
// the connection's only reader.
func (c *client) readPump() {
	readFailed := true
	var closeMsg []byte
	defer func() {
		select {
		case c.srv.hub.unregister <- leave{c, closeMsg}:
		case <-c.srv.hub.done:
		}
		if readFailed {
			// The connection is broken; a protocol error instead leaves
			// it to the write pump, to flush the error reply and close.
			_ = c.conn.Close()
		}
		c.srv.pumps.Done()
	}()
	cfg := &c.srv.cfg
	readWait := cfg.PingInterval + cfg.PongTimeout
	c.conn.SetReadLimit(cfg.MaxMessageSize)
	_ = c.conn.SetReadDeadline(time.Now().Add(readWait))
	for {
		_, frame, err := c.conn.ReadMessage()
		if err != nil {
			if websocket.IsUnexpectedCloseError(err, websocket.CloseGoingAway, websocket.CloseNormalClosure, websocket.CloseAbnormalClosure) {
				c.srv.log.Debug("client read failed", "client", c.id, "err", err)
			}
			return
		}
		// Any frame, the pong to our ping included, shows the client is alive.
		_ = c.conn.SetReadDeadline(time.Now().Add(readWait))
		if err := c.handleFrame(frame); err != nil {
			c.srv.log.Debug("closing client", "client", c.id, "err", err)
			var pe *protocolError
			if errors.As(err, &pe) {
				readFailed = false
				closeMsg = pe.closeMsg
			}
			return
		}
	}
}

// handleFrame runs every newline-delimited command of one frame. An error
// means the connection must be closed.
func (c *client) handleFrame(frame []byte) error {
	dec := json.NewDecoder(bytes.NewReader(frame))
	for {
		var cmd protocol.Command
		err := dec.Decode(&cmd)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return badRequest(fmt.Errorf("decode command: %w", err))
		}
		if err := c.handleCommand(&cmd); err != nil {
			return err
		}
	}
}

// handleCommand runs one command and queues its reply.
func (c *client) handleCommand(cmd *protocol.Command) error {
	switch {
	case cmd.Connect != nil:
		return c.handleConnect(cmd.Id, cmd.Connect)
	case cmd.Id == 0 && cmd.Send == nil:
		return nil // a pong, or a command with nothing to answer
	case !c.connected:
		c.queue(&protocol.Reply{Id: cmd.Id, Error: errUnauthorized})
		return badRequest(errors.New("command before connect"))
	case cmd.Subscribe != nil:
		if cmd.Subscribe.Channel == "" {
			return c.queue(&protocol.Reply{Id: cmd.Id, Error: errBadRequest})
		}
		return c.toHub(c.srv.hub.subscribe, subscription{c: c, channel: cmd.Subscribe.Channel, id: cmd.Id})
	case cmd.Unsubscribe != nil:
		return c.toHub(c.srv.hub.unsubscribe, subscription{c: c, channel: cmd.Unsubscribe.Channel, id: cmd.Id})
	case cmd.Publish != nil:
		if cmd.Publish.Channel == "" || len(cmd.Publish.Data) == 0 {
			return c.queue(&protocol.Reply{Id: cmd.Id, Error: errBadRequest})
		}
		return toHub(c.srv.hub, c.srv.hub.broadcast, publication{
			channel: cmd.Publish.Channel, data: cmd.Publish.Data, from: c, fromID: cmd.Id,
		})
	case cmd.Ping != nil:
		return c.queue(&protocol.Reply{Id: cmd.Id, Ping: &protocol.PingResult{}})
	case cmd.Send != nil:
		return nil // asynchronous messages have no handler here
	default:
		return c.queue(&protocol.Reply{Id: cmd.Id, Error: errMethodNotFound})
	}
}

func (c *client) handleConnect(id uint32, req *protocol.ConnectRequest) error {
	if c.connected {
		c.queue(&protocol.Reply{Id: id, Error: errBadRequest})
		return badRequest(errors.New("second connect command"))
	}
	if secret := c.srv.cfg.TokenHMACSecret; secret != "" {
		if err := verifyToken(req.Token, secret); err != nil {
			c.queue(&protocol.Reply{Id: id, Error: errUnauthorized})
			return &protocolError{closeInvalidToken, err}
		}
	}
	c.connected = true
	return c.queue(&protocol.Reply{Id: id, Connect: &protocol.ConnectResult{
		Client:  c.id,
		Version: "baseline",
		Ping:    uint32(max(c.srv.cfg.PingInterval/time.Second, 1)), // whole seconds, as Spindle
		Pong:    true,
	}})
}

// verifyToken checks an HS256 connection JWT; expiry is checked when the
// token carries exp.
func verifyToken(token, secret string) error {
	_, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		return fmt.Errorf("verify connection token: %w", err)
	}
	return nil
}

// queue encodes rep and hands it to the hub for this client's send channel.
func (c *client) queue(rep *protocol.Reply) error {
	frame, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode reply: %w", err)
	}
	return toHub(c.srv.hub, c.srv.hub.reply, reply{c: c, frame: frame})
}

func (c *client) toHub(ch chan subscription, s subscription) error {
	return toHub(c.srv.hub, ch, s)
}

// errHubStopped is returned when the hub has shut down.
var errHubStopped = errors.New("hub stopped")

// toHub sends v to one of the hub's channels unless the hub has stopped.
func toHub[T any](h *hub, ch chan T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-h.done:
		return errHubStopped
	}
}

// writePump writes the frames queued on send, and the pings, to the
// connection. It is the connection's only writer.
func (c *client) writePump() {
	ticker := time.NewTicker(c.srv.cfg.PingInterval)
	defer func() {
		ticker.Stop()
		_ = c.conn.Close()
		c.srv.trackConn(c.conn, false)
		c.srv.pumps.Done()
	}()
	writeWait := c.srv.cfg.WriteTimeout
	for {
		select {
		case frame, ok := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				// The hub closed the channel.
				_ = c.conn.WriteMessage(websocket.CloseMessage, c.closeMsg)
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			_, _ = w.Write(frame)
			// Add queued frames to the current WebSocket message: the
			// protocol allows newline-delimited replies in one frame.
			n := len(c.send)
			for range n {
				next, ok := <-c.send
				if !ok {
					break
				}
				_, _ = w.Write([]byte{'\n'})
				_, _ = w.Write(next)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.TextMessage, pingFrame); err != nil {
				return
			}
		}
	}
}

// newClientID returns a random UUID (version 4).
func newClientID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// logger returns l, or a logger that discards everything.
func logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

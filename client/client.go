// Package client is a Go client for the Centrifugo client protocol v2 with
// JSON frames, or Protobuf frames (the centrifuge-protobuf subprotocol).
// The load generator and the tests use it against Spindle, the baseline
// hub, or any server speaking that protocol.
//
// A Client owns one reader goroutine that answers server pings, completes
// replies and hands pushes to the callbacks in Config; callbacks run on that
// goroutine, so they must not block.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"
)

// Config says where to connect and what to do with pushes.
type Config struct {
	URL   string // ws://host:port/connection/websocket
	Token string // connection JWT; empty for anonymous
	Name  string // client name sent in connect

	// LocalAddr, if set, is the source IP to dial from (127.0.0.x spreads
	// connections over more than one address's port range).
	LocalAddr net.IP
	Header    http.Header

	// OnPublication is called for every pub push, in arrival order.
	OnPublication func(channel string, pub *protocol.Publication)
	// OnPush is called for every other push (join, leave, unsubscribe …).
	OnPush func(p *protocol.Push)
	// OnClose is called once, from the reader, when the connection has
	// ended; err is what Err returns.
	OnClose func(err error)

	// BufferSize sets the WebSocket read and write buffers (default 1024).
	BufferSize int

	// Loop, if set, carries the connection on an event loop instead of a
	// reader goroutine: much cheaper for thousands of connections.
	Loop *Loop

	// Protobuf speaks the Protobuf encoding: the upgrade offers the
	// centrifuge-protobuf subprotocol (the server must name it) and
	// commands and replies are length-delimited Protobuf in binary frames.
	// A URL with ?format=protobuf or ?cf_protocol=protobuf sets it too.
	Protobuf bool
}

// protobufSubprotocol is the WebSocket subprotocol of the Protobuf encoding.
const protobufSubprotocol = "centrifuge-protobuf"

// wantsProtobuf reports whether cfg asks for the Protobuf encoding.
func wantsProtobuf(cfg *Config) bool {
	if cfg.Protobuf {
		return true
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return false
	}
	q := u.Query()
	return q.Get("format") == "protobuf" || q.Get("cf_protocol") == "protobuf"
}

// checkSubprotocol refuses an upgrade that did not settle the encoding asked for.
func checkSubprotocol(cfg *Config, got string) error {
	if cfg.Protobuf && got != protobufSubprotocol {
		return fmt.Errorf("dial %s: the server did not accept subprotocol %s (it answered %q)", cfg.URL, protobufSubprotocol, got)
	}
	return nil
}

// Error is an error reply from the server.
type Error struct {
	Code    uint32
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("server error %d: %s", e.Code, e.Message) }

// DisconnectError tells why the server closed the connection.
type DisconnectError struct {
	Code   int
	Reason string
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("disconnected: %d %s", e.Code, e.Reason)
}

// HandshakeError is an upgrade the server answered with another HTTP
// status than 101, e.g. 503 when it is full or shedding load.
type HandshakeError struct {
	Status     int
	RetryAfter string // the Retry-After header, if any
}

func (e *HandshakeError) Error() string {
	if e.RetryAfter != "" {
		return fmt.Sprintf("bad handshake (HTTP %d, Retry-After %s)", e.Status, e.RetryAfter)
	}
	return fmt.Sprintf("bad handshake (HTTP %d)", e.Status)
}

// ErrClosed is returned by calls on a Client that Close has closed.
var ErrClosed = errors.New("client closed")

// Client is one connected session. Its methods are safe for concurrent use.
type Client struct {
	cfg    Config
	conn   carrier
	result *protocol.ConnectResult

	mu      sync.Mutex
	nextID  uint32
	waiting map[uint32]chan *protocol.Reply
	err     error // why the connection ended
	done    chan struct{}
	exited  chan struct{} // closed when no callback runs or will run
}

// carrier moves frames for a Client: a reader goroutine (gorilla) or an
// event loop (Loop). Either calls Client.frame for each message and
// Client.ended once at the end.
type carrier interface {
	writeMessage(binary bool, payload []byte) error
	closeNormal() // best-effort close frame, then the socket
}

// Dial opens the WebSocket, sends connect and waits for its reply.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg.Protobuf = wantsProtobuf(&cfg)
	c := &Client{cfg: cfg, waiting: make(map[uint32]chan *protocol.Reply), done: make(chan struct{}), exited: make(chan struct{})}
	var err error
	if cfg.Loop != nil {
		c.conn, err = cfg.Loop.dial(ctx, c)
	} else {
		c.conn, err = dialGorilla(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	rep, err := c.call(ctx, &protocol.Command{Connect: &protocol.ConnectRequest{Token: cfg.Token, Name: cfg.Name}})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	c.result = rep.Connect
	return c, nil
}

// netDialer dials TCP from cfg.LocalAddr when it is set.
func netDialer(cfg *Config) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if cfg.LocalAddr != nil {
		d.LocalAddr = &net.TCPAddr{IP: cfg.LocalAddr}
		d.Control = bindNoPort
	}
	return d
}

// gorillaConn is the goroutine carrier.
type gorillaConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

func dialGorilla(ctx context.Context, c *Client) (*gorillaConn, error) {
	size := c.cfg.BufferSize
	if size == 0 {
		size = 1024
	}
	d := websocket.Dialer{ReadBufferSize: size, WriteBufferSize: size, HandshakeTimeout: 10 * time.Second,
		NetDialContext: netDialer(&c.cfg).DialContext}
	if c.cfg.Protobuf {
		d.Subprotocols = []string{protobufSubprotocol}
	}
	ws, resp, err := d.DialContext(ctx, c.cfg.URL, c.cfg.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w: %w", c.cfg.URL, err, &HandshakeError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")})
		}
		return nil, fmt.Errorf("dial %s: %w", c.cfg.URL, err)
	}
	if err := checkSubprotocol(&c.cfg, ws.Subprotocol()); err != nil {
		_ = ws.Close()
		return nil, err
	}
	g := &gorillaConn{ws: ws}
	go g.read(c)
	return g, nil
}

func (g *gorillaConn) writeMessage(binary bool, payload []byte) error {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	_ = g.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	typ := websocket.TextMessage
	if binary {
		typ = websocket.BinaryMessage
	}
	if err := g.ws.WriteMessage(typ, payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (g *gorillaConn) closeNormal() {
	g.wmu.Lock()
	_ = g.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = g.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	g.wmu.Unlock()
	_ = g.ws.Close()
}

// read is the connection's only reader; it ends when the connection does.
func (g *gorillaConn) read(c *Client) {
	for {
		_, data, err := g.ws.ReadMessage()
		if err != nil {
			_ = g.ws.Close() // the server closed first (its FIN follows the close frame): close this side
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				err = &DisconnectError{Code: ce.Code, Reason: ce.Text}
			}
			c.ended(err)
			return
		}
		c.frame(data)
	}
}

// ID is the client id the server assigned.
func (c *Client) ID() string { return c.result.Client }

// Connected is the server's connect result.
func (c *Client) Connected() *protocol.ConnectResult { return c.result }

// Done is closed when the connection has ended; Err then tells why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while connected; afterwards a *DisconnectError, ErrClosed or the
// read error that ended the connection.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close sends a normal close frame, releases the connection and returns
// once no callback is running or will run.
func (c *Client) Close() error {
	c.finish(ErrClosed)
	c.conn.closeNormal()
	<-c.exited
	return nil
}

// SubscribeOptions are the optional fields of a subscribe command.
type SubscribeOptions struct {
	Token   string
	Recover bool
	Offset  uint64
	Epoch   string
}

// Subscribe subscribes to channel and returns the server's result, which
// holds recovered publications when opts.Recover was set.
func (c *Client) Subscribe(ctx context.Context, channel string, opts SubscribeOptions) (*protocol.SubscribeResult, error) {
	rep, err := c.call(ctx, &protocol.Command{Subscribe: &protocol.SubscribeRequest{
		Channel: channel, Token: opts.Token, Recover: opts.Recover, Offset: opts.Offset, Epoch: opts.Epoch,
	}})
	if err != nil {
		return nil, fmt.Errorf("subscribe %q: %w", channel, err)
	}
	return rep.Subscribe, nil
}

// Unsubscribe leaves channel.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	if _, err := c.call(ctx, &protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: channel}}); err != nil {
		return fmt.Errorf("unsubscribe %q: %w", channel, err)
	}
	return nil
}

// Publish publishes JSON data to channel from this client.
func (c *Client) Publish(ctx context.Context, channel string, data []byte) error {
	if _, err := c.call(ctx, &protocol.Command{Publish: &protocol.PublishRequest{Channel: channel, Data: data}}); err != nil {
		return fmt.Errorf("publish %q: %w", channel, err)
	}
	return nil
}

// Presence returns the clients subscribed to channel.
func (c *Client) Presence(ctx context.Context, channel string) (*protocol.PresenceResult, error) {
	rep, err := c.call(ctx, &protocol.Command{Presence: &protocol.PresenceRequest{Channel: channel}})
	if err != nil {
		return nil, fmt.Errorf("presence %q: %w", channel, err)
	}
	return rep.Presence, nil
}

// History returns up to limit publications of channel since the given
// position (nil for the latest).
func (c *Client) History(ctx context.Context, channel string, limit int32, since *protocol.StreamPosition) (*protocol.HistoryResult, error) {
	rep, err := c.call(ctx, &protocol.Command{History: &protocol.HistoryRequest{Channel: channel, Limit: limit, Since: since}})
	if err != nil {
		return nil, fmt.Errorf("history %q: %w", channel, err)
	}
	return rep.History, nil
}

// call sends cmd with a fresh id and waits for the matching reply.
func (c *Client) call(ctx context.Context, cmd *protocol.Command) (*protocol.Reply, error) {
	ch := make(chan *protocol.Reply, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	cmd.Id = c.nextID
	c.waiting[cmd.Id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, cmd.Id)
		c.mu.Unlock()
	}()
	var frame []byte
	var err error
	if c.cfg.Protobuf {
		frame, err = protocol.NewProtobufCommandEncoder().Encode(cmd)
	} else {
		frame, err = protocol.NewJSONCommandEncoder().Encode(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	if err := c.write(frame); err != nil {
		return nil, err
	}
	select {
	case rep := <-ch:
		if rep.Error != nil {
			return nil, &Error{Code: rep.Error.Code, Message: rep.Error.Message}
		}
		return rep, nil
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) write(frame []byte) error { return c.conn.writeMessage(c.cfg.Protobuf, frame) }

// frame handles one WebSocket message: one or more replies, newline-separated
// in JSON, length-delimited in Protobuf.
func (c *Client) frame(data []byte) {
	var dec protocol.ReplyDecoder
	if c.cfg.Protobuf {
		dec = protocol.NewProtobufReplyDecoder(data)
	} else {
		dec = protocol.NewJSONReplyDecoder(data)
	}
	for {
		rep, err := dec.Decode()
		if err != nil {
			return // io.EOF at the end of the frame; a bad frame is dropped
		}
		c.handle(rep)
	}
}

// ended is called by the carrier once, after its last frame.
func (c *Client) ended(err error) {
	c.finish(err)
	if c.cfg.OnClose != nil {
		c.cfg.OnClose(c.Err())
	}
	close(c.exited)
}

func (c *Client) handle(rep *protocol.Reply) {
	switch {
	case rep.Id != 0:
		c.mu.Lock()
		ch := c.waiting[rep.Id]
		c.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	case rep.Push != nil:
		p := rep.Push
		if p.Pub != nil {
			if c.cfg.OnPublication != nil {
				c.cfg.OnPublication(p.Channel, p.Pub)
			}
			return
		}
		if p.Disconnect != nil {
			c.finish(&DisconnectError{Code: int(p.Disconnect.Code), Reason: p.Disconnect.Reason})
		}
		if c.cfg.OnPush != nil {
			c.cfg.OnPush(p)
		}
	default:
		// An empty reply is the server's ping; an empty command answers it.
		if c.cfg.Protobuf {
			_ = c.write([]byte{0}) // length 0
		} else {
			_ = c.write([]byte("{}"))
		}
	}
}

// finish records why the connection ended, once, and wakes every waiter.
func (c *Client) finish(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
}

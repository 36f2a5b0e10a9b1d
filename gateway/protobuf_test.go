package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/transport"
)

// pbClient is a wire-level client of the Protobuf encoding: it sends
// varint-length-delimited protocol.Command messages in binary frames and
// reads length-delimited protocol.Reply messages from binary frames. It
// reads in the test's goroutine; pushes that arrive while it waits for a
// reply are kept, in order, for push.
type pbClient struct {
	t       *testing.T
	ws      *websocket.Conn
	id      string // the client id the server gave
	next    uint32
	replies []*protocol.Reply // read, not yet taken
}

// dialProtobuf connects to url offering the centrifuge-protobuf subprotocol.
func dialProtobuf(t *testing.T, url string) *pbClient {
	t.Helper()
	return dialOffering(t, url, []string{ProtobufSubprotocol})
}

// dialOffering connects to url offering protocols (none when empty).
func dialOffering(t *testing.T, url string, protocols []string) *pbClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	return &pbClient{t: t, ws: ws}
}

// frame encodes cmds, length-delimited, as one frame's payload.
func pbFrame(t *testing.T, cmds ...*protocol.Command) []byte {
	t.Helper()
	var out []byte
	for _, c := range cmds {
		b, err := c.MarshalCF()
		if err != nil {
			t.Fatal(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// send writes cmds in one binary frame, numbering those without an id.
func (c *pbClient) send(cmds ...*protocol.Command) {
	c.t.Helper()
	for _, cmd := range cmds {
		if cmd.Id == 0 {
			c.next++
			cmd.Id = c.next
		}
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, pbFrame(c.t, cmds...)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next reply or push that is not a server ping.
func (c *pbClient) read() *protocol.Reply {
	c.t.Helper()
	for len(c.replies) == 0 {
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if typ != websocket.BinaryMessage {
			c.t.Fatalf("a %d frame on a Protobuf session: %q", typ, data)
		}
		dec := protocol.NewProtobufReplyDecoder(data)
		for {
			r, err := dec.Decode()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				c.t.Fatalf("decode reply %x: %v", data, err)
			}
			if r.Id == 0 && r.Push == nil && r.Error == nil {
				continue // a ping
			}
			c.replies = append(c.replies, r)
		}
	}
	r := c.replies[0]
	c.replies = c.replies[1:]
	return r
}

// call sends cmd and returns its reply, keeping pushes read meanwhile.
func (c *pbClient) call(cmd *protocol.Command) *protocol.Reply {
	c.t.Helper()
	c.send(cmd)
	return c.replyTo(cmd.Id)
}

// replyTo reads until the reply to id; pushes before it stay for push.
func (c *pbClient) replyTo(id uint32) *protocol.Reply {
	c.t.Helper()
	var pushes []*protocol.Reply
	defer func() { c.replies = append(pushes, c.replies...) }()
	for {
		r := c.read()
		if r.Id == id {
			return r
		}
		if r.Push == nil {
			c.t.Fatalf("reply %d while waiting for %d", r.Id, id)
		}
		pushes = append(pushes, r)
	}
}

// push returns the next push.
func (c *pbClient) push() *protocol.Push {
	c.t.Helper()
	r := c.read()
	if r.Push == nil {
		c.t.Fatalf("want a push, got reply %d", r.Id)
	}
	return r.Push
}

func (c *pbClient) connect(tok string) *protocol.ConnectResult {
	c.t.Helper()
	r := c.call(&protocol.Command{Connect: &protocol.ConnectRequest{Token: tok, Name: "pb-test"}})
	if r.Error != nil || r.Connect == nil || r.Connect.Client == "" {
		c.t.Fatalf("connect: %+v", r)
	}
	c.id = r.Connect.Client
	return r.Connect
}

// closeCode reads until the connection ends and returns the server's close
// code, or -1 when it ended without a close frame.
func (c *pbClient) closeCode() int {
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return -1
	}
}

func publishJSON(t *testing.T, tn *testNode, ch, data string) uint64 {
	t.Helper()
	sp, err := tn.Publish(context.Background(), ch, json.RawMessage(data), PublishOptions{})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return sp.Offset
}

// The subprotocol is named in the 101 response and makes the session speak
// Protobuf; Centrifugo's query form does too; without either the session
// speaks JSON, as before.
func TestProtobufNegotiation(t *testing.T) {
	tn := startTestNode(t, nil)
	t.Run("subprotocol", func(t *testing.T) {
		c := dialOffering(t, tn.url, []string{"centrifuge-json", ProtobufSubprotocol})
		if got := c.ws.Subprotocol(); got != ProtobufSubprotocol {
			t.Fatalf("negotiated %q", got)
		}
		c.connect(connectToken(t, "1"))
	})
	for _, q := range []string{"?format=protobuf", "?cf_protocol=protobuf"} {
		t.Run(q, func(t *testing.T) {
			c := dialOffering(t, tn.url+q, nil)
			if got := c.ws.Subprotocol(); got != "" {
				t.Fatalf("negotiated %q without an offer", got)
			}
			c.connect(connectToken(t, "1"))
		})
	}
	t.Run("json", func(t *testing.T) {
		ws, resp, err := websocket.DefaultDialer.Dial(tn.url+"?format=json", http.Header{"Sec-WebSocket-Protocol": {"something-else"}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "" {
			t.Fatalf("response names %q for an offer the server does not speak", got)
		}
		r := &wireReader{t: t, ws: ws}
		r.send(t, `{"id":1,"connect":{"token":"`+connectToken(t, "1")+`"}}`)
		if m := r.next(); m["connect"] == nil {
			t.Fatalf("JSON connect reply %v", m)
		}
	})
}

// A Protobuf session does what a JSON one does: connect with the token's
// channels and a subscribe batched in the same frame, publications,
// history, presence, recovery after a reconnect, and errors as replies.
func TestProtobufSession(t *testing.T) {
	tn := startTestNode(t, nil)
	c := dialProtobuf(t, tn.url)
	// Batched: connect and two subscribes in one frame, replies in order.
	c.send(
		&protocol.Command{Connect: &protocol.ConnectRequest{Token: connectToken(t, "7", "news")}},
		&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "room", Recoverable: true}},
		&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "room"}},
	)
	r := c.replyTo(1)
	if r.Connect == nil || r.Connect.Client == "" || r.Connect.Subs["news"] == nil {
		t.Fatalf("connect reply %+v", r)
	}
	c.id = r.Connect.Client
	r = c.replyTo(2)
	if r.Error != nil || r.Subscribe == nil || r.Subscribe.Epoch == "" || !r.Subscribe.Recoverable {
		t.Fatalf("subscribe reply %+v", r)
	}
	epoch := r.Subscribe.Epoch
	if r = c.replyTo(3); r.Error == nil || r.Error.Code != ErrAlreadySubscribed.Code {
		t.Fatalf("second subscribe: %+v", r.Error)
	}

	// Publications arrive as pushes carrying the JSON data as bytes.
	for i, data := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		off := publishJSON(t, tn, "room", data)
		p := c.push()
		if p.Channel != "room" || p.Pub == nil || string(p.Pub.Data) != data || p.Pub.Offset != off || off != uint64(i+1) {
			t.Fatalf("publication %d: %+v", i, p)
		}
	}

	// Client publish: the data stays JSON for every subscriber.
	r = c.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "room", Data: protocol.Raw(`{"from":"client"}`)}})
	if r.Error == nil || r.Error.Code != ErrPermissionDenied.Code {
		t.Fatalf("publish without permission: %+v", r)
	}

	// Data that is not JSON is refused with 107 and changes nothing.
	r = c.call(&protocol.Command{Rpc: &protocol.RPCRequest{Method: "m", Data: protocol.Raw{0xff, 0x00}}})
	if r.Error == nil || r.Error.Code != ErrBadRequest.Code {
		t.Fatalf("rpc with binary data: %+v", r)
	}
	r = c.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "room", Data: protocol.Raw("not json")}})
	if r.Error == nil || r.Error.Code != ErrBadRequest.Code {
		t.Fatalf("publish with binary data: %+v", r)
	}

	r = c.call(&protocol.Command{History: &protocol.HistoryRequest{Channel: "room", Limit: -1}})
	if r.Error != nil || r.History == nil || len(r.History.Publications) != 3 || string(r.History.Publications[2].Data) != `{"n":3}` || r.History.Epoch != epoch {
		t.Fatalf("history %+v", r)
	}
	r = c.call(&protocol.Command{Presence: &protocol.PresenceRequest{Channel: "room"}})
	if r.Error != nil || r.Presence == nil || r.Presence.Presence[c.id] == nil || r.Presence.Presence[c.id].User != "7" {
		t.Fatalf("presence %+v", r)
	}
	r = c.call(&protocol.Command{PresenceStats: &protocol.PresenceStatsRequest{Channel: "room"}})
	if r.Error != nil || r.PresenceStats == nil || r.PresenceStats.NumClients != 1 || r.PresenceStats.NumUsers != 1 {
		t.Fatalf("presence stats %+v", r)
	}
	r = c.call(&protocol.Command{Rpc: &protocol.RPCRequest{Method: "m"}})
	if r.Error == nil || r.Error.Code != ErrMethodNotFound.Code {
		t.Fatalf("rpc: %+v", r)
	}
	if r = c.call(&protocol.Command{Ping: &protocol.PingRequest{}}); r.Error != nil || r.Ping == nil {
		t.Fatalf("ping %+v", r)
	}
	r = c.call(&protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: "room"}})
	if r.Error != nil || r.Unsubscribe == nil {
		t.Fatalf("unsubscribe %+v", r)
	}

	// Recovery: what was published while away comes with the subscribe reply.
	publishJSON(t, tn, "room", `{"n":4}`)
	publishJSON(t, tn, "room", `{"n":5}`)
	r = c.call(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "room", Recover: true, Offset: 3, Epoch: epoch}})
	if r.Error != nil || !r.Subscribe.Recovered || len(r.Subscribe.Publications) != 2 ||
		string(r.Subscribe.Publications[0].Data) != `{"n":4}` || r.Subscribe.Publications[1].Offset != 5 {
		t.Fatalf("recovering subscribe %+v", r.Subscribe)
	}
	r = c.call(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "other", Recover: true, Offset: 9, Epoch: "gone"}})
	if r.Error != nil || r.Subscribe.Recovered || !r.Subscribe.WasRecovering {
		t.Fatalf("subscribe from an unknown epoch %+v", r.Subscribe)
	}

	// The server API's unsubscribe reaches it as a Protobuf push.
	if n := tn.Unsubscribe(context.Background(), "7", "", "room"); n != 1 {
		t.Fatalf("server unsubscribe: %d sessions", n)
	}
	if p := c.push(); p.Channel != "room" || p.Unsubscribe == nil || p.Unsubscribe.Code != unsubscribeServer {
		t.Fatalf("unsubscribe push %+v", p)
	}
}

// A frame that is no valid Protobuf command closes that session with 3501,
// as a bad JSON frame does, and nothing else: another session on the same
// channel keeps its subscription and its publications.
func TestProtobufMalformedFrame(t *testing.T) {
	tn := startTestNode(t, nil)
	other := dialProtobuf(t, tn.url)
	other.connect(connectToken(t, "2", "room"))
	bad := map[string][]byte{
		"length past the frame": {0x20, 0x08, 0x01},
		"truncated varint":      {0xff},
		"bad field":             append(pbFrame(t, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{}}), 0x03, 0xff, 0xff, 0xff),
		"trailing garbage":      append(pbFrame(t, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{Token: connectToken(t, "3")}}), 0x80),
		"json on protobuf":      []byte(`{"id":1,"connect":{}}`),
	}
	for name, frame := range bad {
		t.Run(name, func(t *testing.T) {
			c := dialProtobuf(t, tn.url)
			if err := c.ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				t.Fatal(err)
			}
			if code := c.closeCode(); code != int(DisconnectBadRequest.Code) {
				t.Fatalf("closed with %d, want %d", code, DisconnectBadRequest.Code)
			}
		})
	}
	waitFor(t, "only the good session left", func() bool { return tn.sessions.count() == 1 })
	if got := tn.hub.numSubs(); got != 1 {
		t.Fatalf("%d subscriptions, want the good session's 1", got)
	}
	publishJSON(t, tn, "room", `"still here"`)
	if p := other.push(); p.Pub == nil || string(p.Pub.Data) != `"still here"` {
		t.Fatalf("the good session's push %+v", p)
	}
}

// JSON and Protobuf subscribers of one channel both receive every
// publication, each in its own encoding, with the same offsets and data.
func TestJSONAndProtobufSubscribersShareAChannel(t *testing.T) {
	tn := startTestNode(t, nil)
	pb := dialProtobuf(t, tn.url)
	pb.connect(connectToken(t, "1", "mixed"))
	js := dialClient(t, tn.url)
	js.connect(connectToken(t, "2"))
	if r := js.cmd("subscribe", map[string]any{"channel": "mixed"}); r == nil || r["error"] != nil {
		t.Fatalf("JSON subscribe %v", r)
	}
	const n = 50
	for i := range n {
		data := `{"i":` + string(rune('0'+i%10)) + `}`
		off := publishJSON(t, tn, "mixed", data)
		p := pb.push()
		if p.Pub == nil || p.Pub.Offset != off || string(p.Pub.Data) != data {
			t.Fatalf("Protobuf publication %d: %+v", i, p)
		}
	}
	js.sync()
	if _, pubs, v := js.state("mixed"); pubs != n || len(v) > 0 {
		t.Fatalf("JSON subscriber got %d of %d publications, violations %v", pubs, n, v)
	}
}

// A shared push is framed once per encoding asked for, and never for an
// encoding nobody asks for; asking again costs nothing.
func TestSharedPushFramesOncePerEncoding(t *testing.T) {
	p := newSharedPush(&protocol.Push{Channel: "c", Pub: &protocol.Publication{Data: protocol.Raw(`{"a":1}`), Offset: 7}})
	j := p.frame(encJSON)
	if p.frames[encProtobuf] != nil {
		t.Fatal("Protobuf framed though only JSON was asked for")
	}
	if j[0] != 0x80|transport.OpText || !bytes.Contains(j, []byte(`"data":{"a":1}`)) {
		t.Fatalf("JSON frame %q", j)
	}
	b := p.frame(encProtobuf)
	if b[0] != 0x80|transport.OpBinary {
		t.Fatalf("Protobuf frame opcode %x", b[0])
	}
	payload := b[2:]
	if int(b[1]) != len(payload) {
		t.Fatalf("frame length %d, payload %d", b[1], len(payload))
	}
	dec := protocol.NewProtobufReplyDecoder(payload)
	r, err := dec.Decode()
	if err != nil || r.Push == nil || r.Push.Pub.Offset != 7 || string(r.Push.Pub.Data) != `{"a":1}` {
		t.Fatalf("decoded %+v, %v", r, err)
	}
	if r, err := dec.Decode(); r != nil || !errors.Is(err, io.EOF) {
		t.Fatalf("more than one reply in the frame: %+v %v", r, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if &p.frame(encJSON)[0] != &j[0] || &p.frame(encProtobuf)[0] != &b[0] {
			t.Fatal("framed again")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per delivery lookup", allocs)
	}
}

// Pings on a Protobuf session are an empty length-delimited reply.
func TestProtobufPingFrame(t *testing.T) {
	f := pingFrames[encProtobuf]
	if !bytes.Equal(f, []byte{0x80 | transport.OpBinary, 1, 0}) {
		t.Fatalf("ping frame %x", f)
	}
	r, err := protocol.NewProtobufReplyDecoder(f[2:]).Decode()
	if err != nil || r.Id != 0 || r.Push != nil {
		t.Fatalf("ping decodes to %+v, %v", r, err)
	}
}

func BenchmarkEncodePublication(b *testing.B) {
	data := protocol.Raw(`{"price":123.45,"symbol":"ABC","ts":1733097600000,"text":"a small publication of the kind a fan-out carries"}`)
	for _, enc := range []encoding{encJSON, encProtobuf} {
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			var size int
			for b.Loop() {
				p := newSharedPush(&protocol.Push{Channel: "news", Pub: &protocol.Publication{Data: data, Offset: 12345}})
				size = len(p.frame(enc))
			}
			b.ReportMetric(float64(size), "frame-bytes")
		})
	}
}

// A Protobuf session is pinged with an empty length-delimited reply and
// stays while it answers with an empty command; when it stops answering
// it is closed with 3012, as a JSON session is.
func TestProtobufPingPong(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 300 * time.Millisecond
	})
	c := dialProtobuf(t, tn.url)
	c.connect(connectToken(t, "1"))
	for range 3 {
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ != websocket.BinaryMessage || !bytes.Equal(data, []byte{0}) {
			t.Fatalf("want a ping, got type %d %x", typ, data)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, pbFrame(t, &protocol.Command{})); err != nil {
			t.Fatal(err)
		}
	}
	if r := c.call(&protocol.Command{Ping: &protocol.PingRequest{}}); r.Ping == nil {
		t.Fatalf("after three pongs: %+v", r)
	}
	if code := c.closeCode(); code != int(DisconnectNoPong.Code) {
		t.Fatalf("closed with %d, want %d", code, DisconnectNoPong.Code)
	}
}

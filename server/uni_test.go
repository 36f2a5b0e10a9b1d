package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/auth"
)

// The server serves the unidirectional WebSocket beside the bidirectional
// one: a publication through the server API reaches both, as a bare push
// with its offset on the unidirectional endpoint and as a reply-wrapped
// push on the other.
func TestUniWebSocketEndpoint(t *testing.T) {
	srv := startServer(t, nil)
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: "7", Channels: []string{"news"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	uniURL := strings.Replace(srv.WebSocketURL(), "/connection/websocket", "/connection/uni_websocket", 1)
	u, _, err := websocket.DefaultDialer.Dial(uniURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", uniURL, err)
	}
	defer u.Close()
	read := func() map[string]json.RawMessage {
		t.Helper()
		_ = u.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := u.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return field[map[string]json.RawMessage](t, data)
	}
	if err := u.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"token":%q}`, tok)); err != nil {
		t.Fatal(err)
	}
	if m := read(); m["connect"] == nil || m["id"] != nil {
		t.Fatalf("first message %v, want a bare connect push", m)
	}

	c := dial(t, srv, nil)
	c.connect(token(t, "8", time.Hour))
	c.cmd("subscribe", map[string]any{"channel": "news"})

	publish(t, srv, "news", `{"n":1}`)
	m := read()
	pub := field[struct {
		Data   json.RawMessage `json:"data"`
		Offset uint64          `json:"offset"`
	}](t, m["pub"])
	if string(m["channel"]) != `"news"` || string(pub.Data) != `{"n":1}` || pub.Offset != 1 {
		t.Fatalf("unidirectional push %v", m)
	}
	p, ok := c.nextPush(3 * time.Second)
	if !ok || p.Pub == nil || p.Channel != "news" || p.Pub.Offset != 1 {
		t.Fatalf("bidirectional push = %+v", p)
	}
}

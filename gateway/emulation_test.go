package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// emulate posts a frame of commands to the emulation endpoint for the
// session sid and returns the HTTP status.
func emulate(t *testing.T, base, sid, frame string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"session": sid, "node": "", "data": frame})
	resp, err := http.Post(base+EmulationPath, "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// emulatedConnect reads the connect reply of an emulated stream and
// returns the emulation session id it gives.
func emulatedConnect(t *testing.T, c *streamClient) string {
	t.Helper()
	m := c.next()
	if string(m["id"]) != "1" || m["connect"] == nil {
		t.Fatalf("want the connect reply, got %v", m)
	}
	res := field[struct {
		Client  string `json:"client"`
		Session string `json:"session"`
		Pong    bool   `json:"pong"`
	}](t, m["connect"])
	if res.Client == "" || res.Session == "" || res.Session == res.Client || !res.Pong {
		t.Fatalf("connect result %s: want a client, a session id of its own, and pong", m["connect"])
	}
	return res.Session
}

// Both emulation streams carry the JSON protocol's replies: the connect by
// the stream's request, later commands by the emulation endpoint, their
// replies and the publications on the stream; an unknown session is 404.
func TestEmulation(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	connect := func(user string) string {
		return fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, connectToken(t, user))
	}
	for name, open := range map[string]func() *streamClient{
		"http_stream": func() *streamClient { return streamPost(t, base, HTTPStreamPath, connect("u1")) },
		"sse":         func() *streamClient { return sseGet2(t, base+SSEPath, connect("u2")) },
	} {
		t.Run(name, func(t *testing.T) {
			ch := "chat:emu-" + name
			c := open()
			sid := emulatedConnect(t, c)
			if st := emulate(t, base, sid, fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch)); st != http.StatusNoContent {
				t.Fatalf("emulation request: %d, want 204", st)
			}
			m := c.next()
			if string(m["id"]) != "2" || m["subscribe"] == nil || m["error"] != nil {
				t.Fatalf("want the subscribe reply, got %v", m)
			}
			publishUni(t, tn, ch, `{"n":1}`)
			m = c.next()
			p := field[struct {
				Channel string `json:"channel"`
				Pub     struct {
					Data json.RawMessage `json:"data"`
				} `json:"pub"`
			}](t, m["push"])
			if p.Channel != ch || string(p.Pub.Data) != `{"n":1}` {
				t.Fatalf("want the publication push, got %v", m)
			}
			// Several commands in one frame, as the SDK batches them.
			emulate(t, base, sid, fmt.Sprintf(`{"id":3,"presence_stats":{"channel":%q}}`+"\n"+`{"id":4,"unsubscribe":{"channel":%q}}`, ch, ch))
			for _, id := range []string{"3", "4"} {
				if m := c.next(); string(m["id"]) != id {
					t.Fatalf("want reply %s, got %v", id, m)
				}
			}
		})
	}
	if st := emulate(t, base, "nope", `{}`); st != http.StatusNotFound {
		t.Fatalf("unknown session: %d, want 404", st)
	}
}

// An emulated session must answer pings through the emulation endpoint:
// with pongs it outlives several pong timeouts, without them it is
// disconnected with 3012 on its stream.
func TestEmulationPong(t *testing.T) {
	tn, base := startStreamNode(t, func(c *Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 300 * time.Millisecond
	})
	c := streamPost(t, base, HTTPStreamPath, fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, connectToken(t, "u1")))
	sid := emulatedConnect(t, c)
	for pings := 0; pings < 6; pings++ {
		select {
		case data := <-c.msgs:
			if string(data) != "{}" {
				t.Fatalf("ping %d is %q, want {}", pings+1, data)
			}
			if st := emulate(t, base, sid, "{}"); st != http.StatusNoContent {
				t.Fatalf("pong: %d", st)
			}
		case err := <-c.done:
			t.Fatalf("stream ended after %d pings: %v", pings, err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ping")
		}
	}
	if got := c.disconnected(); got != uint32(DisconnectNoPong.Code) {
		t.Fatalf("without pongs: disconnect code %d, want %d", got, DisconnectNoPong.Code)
	}
	waitFor(t, "the session to be gone", func() bool { return tn.NumClients() == 0 })
	if st := emulate(t, base, sid, "{}"); st != http.StatusNotFound {
		t.Fatalf("emulation request after the close: %d, want 404", st)
	}
}

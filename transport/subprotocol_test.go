package transport

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// opened records what each connection's upgrade settled.
type opened struct {
	echo
	got chan [2]string
}

func (o *opened) OnOpen(c *Conn) { o.got <- [2]string{c.Subprotocol(), fmt.Sprint(c.Binary())} }

// The subprotocol the server prefers among those the client offers is
// named in the 101 response and on the Conn; Config.Binary sees it and the
// request, and its answer is the Conn's.
func TestSubprotocolAndBinary(t *testing.T) {
	h := &opened{got: make(chan [2]string, 1)}
	s := serve(t, Config{
		Subprotocols: []string{"p2", "p1"},
		Binary:       func(r *http.Request, sp string) bool { return sp == "p1" || r.URL.Query().Get("b") == "1" },
	}, h)
	for _, tc := range []struct {
		query, offer, want string
		binary             bool
	}{
		{"", "x, p1", "p1", true},
		{"", "p1, p2", "p2", false}, // the server's preference
		{"?b=1", "", "", true},
		{"", "x", "", false},
		{"", "", "", false},
	} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		hdr := ""
		if tc.offer != "" {
			hdr = "Sec-WebSocket-Protocol: " + tc.offer + "\r\n"
		}
		fmt.Fprintf(c, "GET /connection/websocket%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", tc.query, hdr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%+v: upgrade %v %v", tc, resp, err)
		}
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tc.want {
			t.Errorf("%+v: response names %q", tc, got)
		}
		select {
		case got := <-h.got:
			if got != [2]string{tc.want, fmt.Sprint(tc.binary)} {
				t.Errorf("%+v: Conn has subprotocol %q, binary %s", tc, got[0], got[1])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%+v: OnOpen not called", tc)
		}
		_ = c.Close()
	}
}

package floor_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/bench/floor"
	loadclient "github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/internal/leakcheck"
)

// Every test of the package ends with no goroutine of its own left.
func TestMain(m *testing.M) { leakcheck.Main(m) }

const testKey = "test-api-key"

// testServer is a floor behind a real listener on 127.0.0.1.
type testServer struct {
	*floor.Server
	hs   *http.Server
	addr string
	http *http.Client
	once sync.Once
}

func start(t *testing.T, cfg floor.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{Server: floor.New(cfg), addr: ln.Addr().String()}
	s.hs = &http.Server{Handler: s.Server, ReadHeaderTimeout: 5 * time.Second}
	s.http = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	served := make(chan struct{})
	go func() { defer close(served); _ = s.hs.Serve(ln) }()
	t.Cleanup(func() { s.stop(t); <-served })
	return s
}

// stop shuts the floor and then the HTTP server down, as the command does.
func (s *testServer) stop(t *testing.T) {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("floor shutdown: %v", err)
		}
		if err := s.hs.Shutdown(ctx); err != nil {
			t.Errorf("http shutdown: %v", err)
		}
		s.http.CloseIdleConnections()
	})
}

func (s *testServer) wsURL() string { return "ws://" + s.addr + floor.WebSocketPath }

// api posts body to /api/<method> with key (none when empty).
func (s *testServer) api(method, key, body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/"+method, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

func (s *testServer) publish(t *testing.T, channel, data string) {
	t.Helper()
	code, body, err := s.api("publish", testKey, fmt.Sprintf(`{"channel":%q,"data":%s}`, channel, data))
	if err != nil || code != http.StatusOK || body != `{"result":{}}` {
		t.Fatalf("publish: HTTP %d %s %v", code, body, err)
	}
}

// waitFor polls cond until it holds or 10 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// wsConn is a raw gorilla client reading newline-delimited replies.
type wsConn struct {
	*websocket.Conn
	pending []string
}

func dial(t *testing.T, url string) *wsConn {
	t.Helper()
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &wsConn{Conn: c}
}

func (c *wsConn) send(t *testing.T, lines ...string) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(strings.Join(lines, "\n"))); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (c *wsConn) next(t *testing.T) string {
	t.Helper()
	for len(c.pending) == 0 {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		c.pending = strings.Split(string(msg), "\n")
	}
	line := c.pending[0]
	c.pending = c.pending[1:]
	return line
}

func (c *wsConn) expect(t *testing.T, want string) {
	t.Helper()
	if got := c.next(t); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// expectClose reads until the connection ends and wants close code.
func (c *wsConn) expectClose(t *testing.T, code int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, msg, err := c.ReadMessage()
		if err == nil {
			t.Logf("before the close: %s", msg)
			continue
		}
		if !websocket.IsCloseError(err, code) {
			t.Fatalf("connection ended with %v, want close %d", err, code)
		}
		return
	}
}

var connectReply = regexp.MustCompile(`^\{"id":1,"connect":\{"client":"floor-[0-9]+","version":"floor"\}\}$`)

func connectAndSubscribe(t *testing.T, c *wsConn, channel string) {
	t.Helper()
	c.send(t, `{"id":1,"connect":{"token":"any"}}`, fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, channel))
	if got := c.next(t); !connectReply.MatchString(got) {
		t.Fatalf("connect reply %s does not match %s", got, connectReply)
	}
	c.expect(t, `{"id":2,"subscribe":{}}`)
}

// The wire: fixed connect and subscribe replies, then one push per
// publication with the channel's offsets 1, 2, 3 … and the data compacted;
// publications of other channels do not arrive.
func TestWire(t *testing.T) {
	s := start(t, floor.Config{APIKey: testKey})
	c := dial(t, s.wsURL())
	connectAndSubscribe(t, c, "news")
	s.publish(t, "news", `{ "text": "hi there",`+"\n"+` "n": [1, 2] }`)
	s.publish(t, "other", `{"not":"for us"}`)
	s.publish(t, "news", `"second"`)
	c.expect(t, `{"push":{"channel":"news","pub":{"data":{"text":"hi there","n":[1,2]},"offset":1}}}`)
	c.expect(t, `{"push":{"channel":"news","pub":{"data":"second","offset":2}}}`)

	// Several commands in one frame, pongs among them.
	c.send(t, `{}`, `{"id":3,"subscribe":{"channel":"other"}}`, `{"id":4,"subscribe":{"channel":"news"}}`, `{"id":5,"presence":{"channel":"news"}}`)
	c.expect(t, `{"id":3,"subscribe":{}}`)
	c.expect(t, `{"id":4,"error":{"code":105,"message":"already subscribed"}}`)
	c.expect(t, `{"id":5,"error":{"code":104,"message":"method not found"}}`)
	s.publish(t, "other", `2`)
	c.expect(t, `{"push":{"channel":"other","pub":{"data":2,"offset":2}}}`)

	// A WebSocket ping gets its pong, before the reply to the command
	// that followed it.
	pong := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.send(t, `{"id":6,"ping":{}}`)
	c.expect(t, `{"id":6,"error":{"code":104,"message":"method not found"}}`)
	select {
	case got := <-pong:
		if got != "are you there" {
			t.Errorf("pong %q", got)
		}
	default:
		t.Error("no pong before the next reply")
	}
	if st := s.Stats(); st.Conns != 1 || st.Subscriptions != 2 || st.Publications != 4 || st.WriteErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The repository's client connects, subscribes and gets every publication
// in order, through a reader goroutine and through an event loop.
func TestClientGetsEveryPublicationInOrder(t *testing.T) {
	s := start(t, floor.Config{APIKey: testKey})
	loop, err := loadclient.NewLoop(1)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Stop()
	const n = 300
	type got struct {
		name string
		pubs chan *protocol.Publication
	}
	var clients []got
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range []*loadclient.Loop{nil, loop} {
		g := got{name: fmt.Sprintf("loop=%v", l != nil), pubs: make(chan *protocol.Publication, n)}
		c, err := loadclient.Dial(ctx, loadclient.Config{URL: s.wsURL(), Token: "not checked", Loop: l,
			OnPublication: func(ch string, pub *protocol.Publication) {
				if ch == "feed" {
					g.pubs <- pub
				}
			}})
		if err != nil {
			t.Fatalf("%s: dial: %v", g.name, err)
		}
		defer c.Close()
		if r := c.Connected(); r.Version != "floor" || r.Client == "" {
			t.Fatalf("%s: connect result %+v", g.name, r)
		}
		if _, err := c.Subscribe(ctx, "feed", loadclient.SubscribeOptions{}); err != nil {
			t.Fatalf("%s: subscribe: %v", g.name, err)
		}
		clients = append(clients, g)
	}
	for i := 1; i <= n; i++ {
		s.publish(t, "feed", fmt.Sprintf(`{"i":%d}`, i))
	}
	for _, g := range clients {
		for i := 1; i <= n; i++ {
			select {
			case pub := <-g.pubs:
				if want := fmt.Sprintf(`{"i":%d}`, i); string(pub.Data) != want || pub.Offset != uint64(i) {
					t.Fatalf("%s: publication %d: data %s offset %d", g.name, i, pub.Data, pub.Offset)
				}
			case <-ctx.Done():
				t.Fatalf("%s: publication %d never arrived", g.name, i)
			}
		}
	}
}

// Many subscribers on several channels, each channel published to by
// several requests at once: every subscriber gets exactly its channel's
// publications, in offset order, while every publication is split over
// several writer goroutines.
func TestManySubscribers(t *testing.T) {
	s := start(t, floor.Config{APIKey: testKey, Writers: 4})
	loop, err := loadclient.NewLoop(2)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Stop()
	const subscribers, channels, pubs = 600, 3, 100
	type sub struct {
		mu      sync.Mutex // the loop's pollers call back; the test reads
		channel string
		next    uint64 // the offset expected next
		bad     string
	}
	subs := make([]*sub, subscribers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range subs {
		sb := &sub{channel: fmt.Sprintf("ch%d", i%channels), next: 1}
		subs[i] = sb
		c, err := loadclient.Dial(ctx, loadclient.Config{URL: s.wsURL(), Loop: loop,
			OnPublication: func(ch string, pub *protocol.Publication) {
				sb.mu.Lock()
				defer sb.mu.Unlock()
				want := fmt.Sprintf(`{"c":%q}`, sb.channel)
				if sb.bad == "" && (ch != sb.channel || pub.Offset != sb.next || string(pub.Data) != want) {
					sb.bad = fmt.Sprintf("got %s offset %d %s, want %s offset %d", ch, pub.Offset, pub.Data, sb.channel, sb.next)
				}
				sb.next++
			}})
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
		defer c.Close()
		if _, err := c.Subscribe(ctx, sb.channel, loadclient.SubscribeOptions{}); err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
	}
	if st := s.Stats(); st.Conns != subscribers || st.Subscriptions != subscribers {
		t.Fatalf("stats %+v, want %d connections and subscriptions", st, subscribers)
	}
	// Each channel gets its publications from several requests at once:
	// the offsets say in which order the floor took them.
	const publishers = 4
	var wg sync.WaitGroup
	for i := range channels * publishers {
		wg.Go(func() {
			name := fmt.Sprintf("ch%d", i%channels)
			for range pubs / publishers {
				code, body, err := s.api("publish", testKey, fmt.Sprintf(`{"channel":%q,"data":{"c":%q}}`, name, name))
				if err != nil || body != `{"result":{}}` {
					t.Errorf("publish to %s: HTTP %d %s %v", name, code, body, err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "every delivery", func() bool {
		for _, sb := range subs {
			sb.mu.Lock()
			done := sb.next > pubs || sb.bad != ""
			sb.mu.Unlock()
			if !done {
				return false
			}
		}
		return true
	})
	for i, sb := range subs {
		sb.mu.Lock()
		if sb.bad != "" || sb.next != pubs+1 {
			t.Errorf("subscriber %d: %s (next %d)", i, sb.bad, sb.next)
		}
		sb.mu.Unlock()
	}
}

// Bad input gets a clear error and leaves the rest working.
func TestBadInput(t *testing.T) {
	s := start(t, floor.Config{APIKey: testKey, MaxMessageSize: 1024})

	resp, err := s.http.Get("http://" + s.addr + floor.WebSocketPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET of the WebSocket path: HTTP %d, want 400", resp.StatusCode)
	}

	c := dial(t, s.wsURL())
	c.send(t, `{"id":1,"subscribe":{"channel":"ch"}}`)
	c.expect(t, `{"id":1,"error":{"code":101,"message":"unauthorized"}}`)
	c.expectClose(t, 3501)

	c = dial(t, s.wsURL())
	c.send(t, `{"id":1,`)
	c.expectClose(t, 3501)

	c = dial(t, s.wsURL())
	connectAndSubscribe(t, c, "ch")
	c.send(t, `{"id":3,"subscribe":{"channel":"a\"b"}}`, `{"id":4,"subscribe":{"channel":""}}`)
	c.expect(t, `{"id":3,"error":{"code":107,"message":"bad request"}}`)
	c.expect(t, `{"id":4,"error":{"code":107,"message":"bad request"}}`)
	s.publish(t, "ch", `"still served"`)
	c.expect(t, `{"push":{"channel":"ch","pub":{"data":"still served","offset":1}}}`)
	c.send(t, `{"id":5,"connect":{}}`)
	c.expect(t, `{"id":5,"error":{"code":107,"message":"bad request"}}`)
	c.expectClose(t, 3501)

	c = dial(t, s.wsURL())
	c.send(t, `{"id":1,"connect":{"name":"`+strings.Repeat("x", 2000)+`"}}`)
	c.expectClose(t, websocket.CloseMessageTooBig)

	for _, tt := range []struct {
		key, body string
		code      int
		reply     string
	}{
		{"", `{"channel":"ch","data":1}`, http.StatusUnauthorized, ""},
		{"wrong", `{"channel":"ch","data":1}`, http.StatusUnauthorized, ""},
		{testKey, `{"channel":"ch","data":`, http.StatusOK, `{"error":{"code":107,"message":"bad request"}}`},
		{testKey, `{"channel":"","data":1}`, http.StatusOK, `{"error":{"code":107,"message":"bad request"}}`},
		{testKey, `{"channel":"ch"}`, http.StatusOK, `{"error":{"code":107,"message":"bad request"}}`},
	} {
		code, body, err := s.api("publish", tt.key, tt.body)
		if err != nil || code != tt.code || body != tt.reply {
			t.Errorf("publish %s with key %q: HTTP %d %q %v, want %d %q", tt.body, tt.key, code, body, err, tt.code, tt.reply)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/api/publish", nil)
	req.Header.Set("X-API-Key", testKey)
	resp, err = s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/publish: HTTP %d, want 405", resp.StatusCode)
	}
	if st := s.Stats(); st.Publications != 1 {
		t.Errorf("stats %+v, want the one good publication", st)
	}
}

// A subscriber that does not read blocks the writer of its channel: there
// is no queue. Shutdown still ends it, closes every connection with 1001
// and leaves no goroutine.
func TestShutdownEndsABlockedWriter(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s := start(t, floor.Config{APIKey: testKey})
	good := dial(t, s.wsURL())
	connectAndSubscribe(t, good, "ch")
	stuck := dial(t, s.wsURL()) // never read after this
	connectAndSubscribe(t, stuck, "ch")

	// One publication larger than any socket buffer: its write to the
	// stuck subscriber cannot finish, and the second is not framed.
	data := `"` + strings.Repeat("x", 8<<20) + `"`
	published := make(chan error, 1)
	go func() {
		for range 2 {
			if code, body, err := s.api("publish", testKey, `{"channel":"ch","data":`+data+`}`); err != nil || body != `{"result":{}}` {
				published <- fmt.Errorf("HTTP %d %.64s %v", code, body, err)
				return
			}
		}
		published <- nil
	}()
	if got := good.next(t); !strings.HasPrefix(got, `{"push":{"channel":"ch","pub":{"data":"xxx`) || !strings.HasSuffix(got, `","offset":1}}}`) {
		t.Fatalf("good subscriber got %.80s…", got)
	}
	if st := s.Stats(); st.Publications != 1 || st.InFlight != 1 {
		t.Fatalf("stats %+v, want the first publication still being written", st)
	}
	select {
	case err := <-published:
		t.Fatalf("both publications done with a subscriber that does not read (%v)", err)
	default:
	}

	s.stop(t)
	if err := <-published; err != nil {
		t.Logf("second publication after shutdown: %v", err)
	}
	good.expectClose(t, websocket.CloseGoingAway)
	if st := s.Stats(); st.Conns != 0 || st.Subscriptions != 0 || st.InFlight != 0 {
		t.Errorf("stats after shutdown %+v", st)
	}
	_ = good.Close()
	_ = stuck.Close()
	s.http.CloseIdleConnections()
	goleak.VerifyNone(t, before, leakcheck.NbioPool)
}

package baseline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/auth"
	loadclient "github.com/spindlehq/spindle/client"
)

const (
	testKey    = "test-api-key"
	testSecret = "test-secret"
)

// testServer is a Server behind a real listener on 127.0.0.1.
type testServer struct {
	*Server
	hs   *http.Server
	addr string
	http *http.Client
	once sync.Once
}

func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{Server: New(cfg), addr: ln.Addr().String()}
	s.hs = &http.Server{Handler: s.Server, ReadHeaderTimeout: 5 * time.Second}
	s.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	go func() { _ = s.hs.Serve(ln) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop shuts the HTTP server and the hub down, as the command does.
func (s *testServer) stop(t *testing.T) {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.hs.Shutdown(ctx); err != nil {
			t.Errorf("http shutdown: %v", err)
		}
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		s.http.CloseIdleConnections()
	})
}

func (s *testServer) wsURL() string { return "ws://" + s.addr + WebSocketPath }

// api posts body to /api/<method> with key (none when empty).
func (s *testServer) api(t *testing.T, method, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/"+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("api %s: %v", method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("api %s: read: %v", method, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (s *testServer) publish(t *testing.T, channel, data string) {
	t.Helper()
	code, body := s.api(t, "publish", testKey, fmt.Sprintf(`{"channel":%q,"data":%s}`, channel, data))
	if code != http.StatusOK || body != `{"result":{}}` {
		t.Fatalf("publish: HTTP %d %s", code, body)
	}
}

func token(t *testing.T, secret string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "42", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wsConn is a raw gorilla client that reads newline-delimited replies.
type wsConn struct {
	*websocket.Conn
	pending []string
}

func dial(t *testing.T, url string, d *websocket.Dialer) *wsConn {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	}
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

// next returns the next reply line, whatever WebSocket message it came in.
func (c *wsConn) next(t *testing.T) string {
	t.Helper()
	for len(c.pending) == 0 {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
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

var connectReply = regexp.MustCompile(`^\{"id":1,"connect":\{"client":"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}","version":"baseline","ping":25,"pong":true\}\}$`)

var anyConnectReply = regexp.MustCompile(`^\{"id":1,"connect":\{"client":"[0-9a-f-]{36}","version":"baseline","ping":[1-9][0-9]*,"pong":true\}\}$`)

func TestConnectSubscribeReceivesAPIPublish(t *testing.T) {
	s := start(t, Config{APIKey: testKey, TokenHMACSecret: testSecret})
	c := dial(t, s.wsURL(), nil)

	c.send(t, fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, testSecret)))
	if got := c.next(t); !connectReply.MatchString(got) {
		t.Fatalf("connect reply %s does not match %s", got, connectReply)
	}
	c.send(t, `{"id":2,"subscribe":{"channel":"news"}}`)
	c.expect(t, `{"id":2,"subscribe":{}}`)

	s.publish(t, "news", `{"text":"hi","n":[1,2]}`)
	s.publish(t, "other", `{"text":"not for us"}`)
	s.publish(t, "news", `"second"`)
	c.expect(t, `{"push":{"channel":"news","pub":{"data":{"text":"hi","n":[1,2]},"offset":1}}}`)
	c.expect(t, `{"push":{"channel":"news","pub":{"data":"second","offset":2}}}`)

	// broadcast reaches each channel and answers per channel.
	code, body := s.api(t, "broadcast", testKey, `{"channels":["other","news"],"data":{"b":true}}`)
	if code != http.StatusOK || body != `{"result":{"responses":[{"result":{}},{"result":{}}]}}` {
		t.Fatalf("broadcast: HTTP %d %s", code, body)
	}
	c.expect(t, `{"push":{"channel":"news","pub":{"data":{"b":true},"offset":3}}}`)

	// A bad publish is refused with the API's error envelope.
	if code, body := s.api(t, "publish", testKey, `{"channel":"","data":{}}`); code != http.StatusOK || body != `{"error":{"code":107,"message":"bad request"}}` {
		t.Fatalf("empty channel: HTTP %d %s", code, body)
	}
}

// The repository's load client drives the baseline like it drives Spindle.
func TestLoadClientInterop(t *testing.T) {
	s := start(t, Config{APIKey: testKey, TokenHMACSecret: testSecret})
	got := make(chan *protocol.Publication, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := loadclient.Dial(ctx, loadclient.Config{
		URL: s.wsURL(), Token: token(t, testSecret),
		OnPublication: func(ch string, pub *protocol.Publication) {
			if ch == "feed" {
				got <- pub
			}
		},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if r := c.Connected(); r.Version != "baseline" || r.Ping != 25 || !r.Pong || r.Client == "" {
		t.Fatalf("connect result %+v", r)
	}
	if _, err := c.Subscribe(ctx, "feed", loadclient.SubscribeOptions{}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := c.Publish(ctx, "feed", []byte(`{"from":"client"}`)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s.publish(t, "feed", `{"from":"api"}`)
	for i, want := range []string{`{"from":"client"}`, `{"from":"api"}`} {
		select {
		case pub := <-got:
			if string(pub.Data) != want || pub.Offset != uint64(i+1) {
				t.Fatalf("publication %d: data %s offset %d, want %s offset %d", i, pub.Data, pub.Offset, want, i+1)
			}
		case <-ctx.Done():
			t.Fatalf("publication %d never arrived", i)
		}
	}

	// A forged token is refused.
	if _, err := loadclient.Dial(ctx, loadclient.Config{URL: s.wsURL(), Token: token(t, "wrong secret")}); err == nil {
		t.Fatal("connect with a token signed by another secret succeeded")
	}
}

func TestSeveralCommandsInOneFrame(t *testing.T) {
	s := start(t, Config{}) // no secret: any token is accepted
	c := dial(t, s.wsURL(), nil)
	c.send(t,
		`{"id":1,"connect":{"token":"anything"}}`,
		`{"id":2,"subscribe":{"channel":"ch"}}`,
		`{}`, // a pong: no reply
		`{"id":3,"publish":{"channel":"ch","data":{"x":1}}}`,
		`{"id":4,"presence":{"channel":"ch"}}`,
		`{"id":5,"subscribe":{"channel":"ch"}}`,
		`{"id":6,"ping":{}}`,
	)
	if got := c.next(t); !connectReply.MatchString(got) {
		t.Fatalf("connect reply %s", got)
	}
	for _, want := range []string{
		`{"id":2,"subscribe":{}}`,
		`{"id":3,"publish":{}}`,
		`{"push":{"channel":"ch","pub":{"data":{"x":1},"offset":1}}}`,
		`{"id":4,"error":{"code":104,"message":"method not found"}}`,
		`{"id":5,"error":{"code":105,"message":"already subscribed"}}`,
		`{"id":6,"ping":{}}`,
	} {
		c.expect(t, want)
	}
	// Unsubscribed, the client gets nothing more from the channel.
	c.send(t, `{"id":7,"unsubscribe":{"channel":"ch"}}`+"\n"+`{"id":8,"subscribe":{"channel":"ch2"}}`)
	c.expect(t, `{"id":7,"unsubscribe":{}}`)
	c.expect(t, `{"id":8,"subscribe":{}}`)
	s.publish(t, "ch", `1`)
	s.publish(t, "ch2", `2`)
	c.expect(t, `{"push":{"channel":"ch2","pub":{"data":2,"offset":1}}}`)
}

func TestCommandBeforeConnectCloses(t *testing.T) {
	s := start(t, Config{})
	c := dial(t, s.wsURL(), nil)
	c.send(t, `{"id":1,"subscribe":{"channel":"ch"}}`)
	c.expect(t, `{"id":1,"error":{"code":101,"message":"unauthorized"}}`)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 3501) {
		t.Fatalf("after the error: %v, want close 3501 (bad request)", err)
	}

	// A forged token gets its error reply, then close 3500.
	s2 := start(t, Config{TokenHMACSecret: testSecret})
	c = dial(t, s2.wsURL(), nil)
	c.send(t, fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, "other")), `{"id":2,"subscribe":{"channel":"ch"}}`)
	c.expect(t, `{"id":1,"error":{"code":101,"message":"unauthorized"}}`)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 3500) {
		t.Fatalf("after a forged token: %v, want close 3500 (invalid token)", err)
	}
	// Garbage is a bad request.
	c = dial(t, s2.wsURL(), nil)
	c.send(t, `{"id":1,`)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 3501) {
		t.Fatalf("after a malformed frame: %v, want close 3501", err)
	}
}

func TestAPIKey(t *testing.T) {
	s := start(t, Config{APIKey: testKey})
	body := `{"channel":"ch","data":{}}`
	for _, key := range []string{"", "wrong", testKey + "x"} {
		if code, _ := s.api(t, "publish", key, body); code != http.StatusUnauthorized {
			t.Errorf("publish with key %q: HTTP %d, want 401", key, code)
		}
		if code, _ := s.api(t, "broadcast", key, `{"channels":["ch"],"data":{}}`); code != http.StatusUnauthorized {
			t.Errorf("broadcast with key %q: HTTP %d, want 401", key, code)
		}
	}
	if code, got := s.api(t, "publish", testKey, body); code != http.StatusOK || got != `{"result":{}}` {
		t.Errorf("publish with the key: HTTP %d %s", code, got)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "apikey "+testKey)
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("publish with Authorization: apikey: HTTP %d", resp.StatusCode)
	}
	resp, err = s.http.Get("http://" + s.addr + "/api/publish")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without key: HTTP %d, want 401", resp.StatusCode)
	}

	// Without a configured key the API is open.
	open := start(t, Config{})
	if code, got := open.api(t, "publish", "", body); code != http.StatusOK || got != `{"result":{}}` {
		t.Errorf("open API: HTTP %d %s", code, got)
	}
}

// connectAndSubscribe runs connect and subscribe on a raw connection.
func connectAndSubscribe(t *testing.T, c *wsConn, channel string) {
	t.Helper()
	c.send(t, `{"id":1,"connect":{}}`, fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, channel))
	if got := c.next(t); !anyConnectReply.MatchString(got) {
		t.Fatalf("connect reply %s", got)
	}
	c.expect(t, `{"id":2,"subscribe":{}}`)
}

// A client that stops reading is dropped once its send channel is full,
// while a client that keeps reading gets every publication.
func TestStuckClientIsDropped(t *testing.T) {
	// The default 10s write timeout: the client must be dropped for its full
	// send channel, not for a write timing out.
	s := start(t, Config{APIKey: testKey})

	good := dial(t, s.wsURL(), nil)
	connectAndSubscribe(t, good, "ch")
	// A socket nobody reads keeps its initial receive buffer (no autotuning),
	// so the stuck client's TCP window fills after a few hundred KiB.
	stuck := dial(t, s.wsURL(), nil)
	connectAndSubscribe(t, stuck, "ch")

	// The good client counts pushes without decoding them.
	var received atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		for {
			_ = good.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, msg, err := good.ReadMessage()
			if err != nil {
				readerDone <- err
				return
			}
			received.Add(int64(bytes.Count(msg, []byte(`{"push":`))))
		}
	}()
	waitReceived := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for received.Load() < n {
			select {
			case err := <-readerDone:
				t.Fatalf("good client: %v after %d of %d pushes", err, received.Load(), n)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("good client got %d of %d pushes", received.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	data := `"` + strings.Repeat("x", 32<<10) + `"`
	published := 0
	for s.Stats().Dropped == 0 {
		if published == 5000 {
			t.Fatalf("stuck client not dropped after %d publications of 32 KiB", published)
		}
		s.publish(t, "ch", data)
		published++
		// Keep the good client well within its 256-frame queue.
		waitReceived(int64(published - 200))
	}
	t.Logf("stuck client dropped after %d publications", published)
	if st := s.Stats(); st.Dropped != 1 || st.Clients != 1 {
		t.Fatalf("stats %+v, want 1 dropped and 1 left", st)
	}
	for range 10 {
		s.publish(t, "ch", `"after"`)
		published++
	}
	waitReceived(int64(published))

	// The stuck client's write pump gives up within the write timeout and
	// closes the connection.
	deadline := time.Now().Add(15 * time.Second)
	for s.Stats().Conns != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stuck client's connection still open: stats %+v", s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := 0
	for {
		_, msg, err := stuck.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("stuck client: read timed out after %d pushes, want the connection closed", got)
			}
			break
		}
		got += bytes.Count(msg, []byte(`{"push":`))
	}
	if got >= published {
		t.Fatalf("stuck client read %d of %d pushes, want fewer", got, published)
	}
}

// Shutdown closes every connection and ends every goroutine the server
// started: hub, pumps, HTTP.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := start(t, Config{APIKey: testKey})
	var conns []*wsConn
	for i := range 5 {
		c := dial(t, s.wsURL(), nil)
		connectAndSubscribe(t, c, fmt.Sprintf("ch%d", i%2))
		conns = append(conns, c)
	}
	s.publish(t, "ch0", `{"bye":true}`)
	for i, c := range conns {
		if i%2 == 0 {
			c.expect(t, `{"push":{"channel":"ch0","pub":{"data":{"bye":true},"offset":1}}}`)
		}
	}
	if st := s.Stats(); st.Clients != 5 {
		t.Fatalf("stats %+v, want 5 clients", st)
	}

	s.stop(t)
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Errorf("client %d after shutdown: %v, want a close frame", i, err)
		}
		_ = c.Close()
	}
	if st := s.Stats(); st.Clients != 0 {
		t.Errorf("stats after shutdown %+v, want no clients", st)
	}
	// New connections are refused once the hub has stopped.
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// After Shutdown, an upgrade that slips in is closed instead of leaking.
func TestUpgradeAfterShutdownIsClosed(t *testing.T) {
	srv := New(Config{})
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	c := dial(t, "ws://"+ln.Addr().String()+WebSocketPath, nil)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("read: %v, want close 1001", err)
	}
}

func TestClientIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newClientID()
		if seen[id] {
			t.Fatalf("duplicate client id %s", id)
		}
		seen[id] = true
	}
}

// encoding/json keeps the raw data as published (compacted).
func TestPushEncoding(t *testing.T) {
	h := newHub()
	c := &client{send: make(chan []byte, 1)}
	h.clients[c] = map[string]struct{}{"ch": {}}
	h.channels["ch"] = map[*client]struct{}{c: {}}
	h.doPublish(publication{channel: "ch", data: json.RawMessage("{\n  \"a\": \"<b>\"\n}")})
	got := string(<-c.send)
	var rep protocol.Reply
	if err := json.Unmarshal([]byte(got), &rep); err != nil {
		t.Fatalf("push %s: %v", got, err)
	}
	if rep.Push == nil || rep.Push.Channel != "ch" || rep.Push.Pub.Offset != 1 || strings.Contains(got, "\n") {
		t.Fatalf("push %s", got)
	}
	var data struct{ A string }
	if err := json.Unmarshal(rep.Push.Pub.Data, &data); err != nil || data.A != "<b>" {
		t.Fatalf("data %s: %v", rep.Push.Pub.Data, err)
	}
}

// Tokens minted by `spindle token` (auth.MintConnect) are accepted; expired
// ones and ones signed with "none" or another secret are not.
func TestVerifyToken(t *testing.T) {
	good, err := auth.MintConnect(testSecret, auth.ConnectClaims{UserID: "7"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyToken(good, testSecret); err != nil {
		t.Errorf("spindle token refused: %v", err)
	}
	if err := verifyToken(good, "other"); err == nil {
		t.Error("token accepted with another secret")
	}
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyToken(expired, testSecret); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("expired token: %v, want ErrTokenExpired", err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "1"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyToken(none, testSecret); err == nil {
		t.Error(`alg "none" token accepted`)
	}
	if err := verifyToken("", testSecret); err == nil {
		t.Error("empty token accepted")
	}
}

// The server pings with {} every PingInterval; a client that answers stays,
// one that does not is closed after PingInterval+PongTimeout.
func TestPingPong(t *testing.T) {
	s := start(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: 200 * time.Millisecond})
	live := dial(t, s.wsURL(), nil)
	connectAndSubscribe(t, live, "ch")
	silent := dial(t, s.wsURL(), nil)
	connectAndSubscribe(t, silent, "ch")

	// silent reads the pings but never answers; it must be closed.
	silentErr := make(chan error, 1)
	go func() {
		_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, msg, err := silent.ReadMessage()
			if err != nil {
				silentErr <- err
				return
			}
			if string(msg) != "{}" {
				silentErr <- fmt.Errorf("unexpected message %s", msg)
				return
			}
		}
	}()
	pings := 0
	end := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(end) {
		live.expect(t, `{}`)
		pings++
		live.send(t, `{}`)
	}
	if pings < 3 {
		t.Errorf("%d pings in 700ms at a 100ms interval", pings)
	}
	select {
	case err := <-silentErr:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("silent client: %v, want the server to close it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("silent client still connected")
	}
	// The live client is still served.
	s.publish(t, "ch", `"still here"`)
	for {
		if got := live.next(t); got != "{}" {
			if want := `{"push":{"channel":"ch","pub":{"data":"still here","offset":1}}}`; got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
			break
		}
	}
	if st := s.Stats(); st.Clients != 1 {
		t.Errorf("stats %+v, want 1 client", st)
	}
}

// With MaxConnections, an upgrade past the limit gets 503 and one is
// accepted again once a connection closed.
func TestMaxConnections(t *testing.T) {
	s := start(t, Config{MaxConnections: 2})
	a, b := dial(t, s.wsURL(), nil), dial(t, s.wsURL(), nil)
	waitUntil := func(cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("condition not met; stats %+v", s.Stats())
			}
		}
	}
	waitUntil(func() bool { return s.Stats().Conns == 2 })
	_, resp, err := websocket.DefaultDialer.Dial(s.wsURL(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third upgrade: %v (response %v), want 503", err, resp)
	}
	_ = a.Close()
	waitUntil(func() bool { return s.Stats().Conns == 1 })
	dial(t, s.wsURL(), nil)
	_ = b
}

package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/config"
)

// startStreamNode is startTestNode with a namespace with history; it
// returns the node and the server's http:// base address, where the
// streams and the emulation endpoint are served.
func startStreamNode(t *testing.T, mod func(*Config)) (*testNode, string) {
	t.Helper()
	tn := startTestNode(t, func(c *Config) {
		c.Namespaces = map[string]config.ChannelOptions{"chat": {HistorySize: 10, HistoryTTL: config.Duration(time.Minute), AllowRecovery: true}}
		if mod != nil {
			mod(c)
		}
	})
	return tn, tn.base
}

// streamClient reads a unidirectional stream's messages (SSE events'
// data, or HTTP stream lines) in a goroutine of its own.
type streamClient struct {
	t     *testing.T
	resp  *http.Response
	msgs  chan []byte
	done  chan error // the stream's end: io.EOF when the server ended it cleanly
	pings int
}

func openStream(t *testing.T, req *http.Request) *streamClient {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		t.Fatalf("%s %s: %s %s", req.Method, req.URL.Path, resp.Status, b)
	}
	c := &streamClient{t: t, resp: resp, msgs: make(chan []byte, 1024), done: make(chan error, 1)}
	t.Cleanup(func() { _ = resp.Body.Close() })
	sse := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	go func() {
		r := bufio.NewReader(resp.Body)
		var event []byte // an SSE event's data lines so far
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				c.done <- err
				return
			}
			line = bytes.TrimRight(line, "\r\n")
			switch {
			case !sse:
				c.msgs <- line
			case len(line) == 0:
				if event != nil {
					c.msgs <- event
				}
				event = nil
			case bytes.HasPrefix(line, []byte("data:")):
				d := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
				if event != nil {
					event = append(event, '\n')
				}
				event = append(append([]byte{}, event...), d...)
			}
		}
	}()
	return c
}

func sseGet(t *testing.T, base, connect string) *streamClient {
	t.Helper()
	return sseGet2(t, base+UniSSEPath, connect)
}

// sseGet2 opens the SSE stream at u with connect as cf_connect.
func sseGet2(t *testing.T, u, connect string) *streamClient {
	t.Helper()
	if connect != "" {
		u += "?cf_connect=" + url.QueryEscape(connect)
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	return openStream(t, req)
}

func streamPost(t *testing.T, base, path, body string) *streamClient {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return openStream(t, req)
}

// next returns the next message that is not a ping, as a JSON object.
func (c *streamClient) next() map[string]json.RawMessage {
	c.t.Helper()
	for {
		select {
		case data := <-c.msgs:
			if m := uniPush(c.t, data); m != nil {
				return m
			}
			c.pings++
		case err := <-c.done:
			c.t.Fatalf("stream ended: %v", err)
		case <-time.After(10 * time.Second):
			c.t.Fatal("no message in 10 s")
		}
	}
}

// disconnected reads until the stream ends and returns the code of the
// disconnect push before the end (bare, or in a reply on an emulated
// stream); the end must be clean (io.EOF).
func (c *streamClient) disconnected() uint32 {
	c.t.Helper()
	var code uint32
	note := func(data []byte) {
		type disconnect struct {
			Disconnect *struct{ Code uint32 } `json:"disconnect"`
		}
		var p struct {
			disconnect
			Push *disconnect `json:"push"`
		}
		if json.Unmarshal(data, &p) != nil {
			return
		}
		if p.Push != nil {
			p.disconnect = *p.Push
		}
		if p.Disconnect != nil {
			code = p.Disconnect.Code
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case data := <-c.msgs:
			note(data)
		case err := <-c.done:
			if !errors.Is(err, io.EOF) {
				c.t.Fatalf("stream ended with %v, want a clean end", err)
			}
			for len(c.msgs) > 0 { // what the reader passed on before the end
				note(<-c.msgs)
			}
			return code
		case <-deadline:
			c.t.Fatal("stream still open after 10 s")
		}
	}
}

// connected checks the first message is a bare connect push with a
// server-side subscription to ch.
func (c *streamClient) connected(ch string) {
	c.t.Helper()
	m := c.next()
	if m["id"] != nil || m["push"] != nil || m["connect"] == nil {
		c.t.Fatalf("want a bare connect push, got %v", m)
	}
	res := field[struct {
		Client string                     `json:"client"`
		Pong   bool                       `json:"pong"`
		Subs   map[string]json.RawMessage `json:"subs"`
	}](c.t, m["connect"])
	if res.Client == "" || res.Pong || res.Subs[ch] == nil {
		c.t.Fatalf("connect push %s: want a client id, no pong, and %s in subs", m["connect"], ch)
	}
}

func (c *streamClient) pub() uniPub {
	c.t.Helper()
	raw, _ := json.Marshal(c.next())
	var p uniPub
	if err := json.Unmarshal(raw, &p); err != nil || p.Pub == nil {
		c.t.Fatalf("want a publication push, got %s", raw)
	}
	return p
}

// A GET at the SSE endpoint connects by cf_connect with a token whose
// channels claim subscribes it server-side; the response is an event
// stream that is not cached, and publications arrive as data events with
// their offsets, indented JSON data intact.
func TestUniSSEConnectAndPublish(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	const ch = "chat:room"
	c := sseGet(t, base, fmt.Sprintf(`{"token":%q,"name":"curl"}`, connectToken(t, "u1", ch)))
	if ct := c.resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := c.resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-cache") {
		t.Fatalf("Cache-Control %q, want no-cache", cc)
	}
	c.connected(ch)
	publishUni(t, tn, ch, `{"n":1}`)
	if p := c.pub(); p.Channel != ch || string(p.Pub.Data) != `{"n":1}` || p.Pub.Offset != 1 {
		t.Fatalf("publication: %+v", p)
	}
	publishUni(t, tn, ch, "{\n  \"n\": 2\n}")
	if p := c.pub(); p.Pub.Offset != 2 || string(p.Pub.Data) != `{"n":2}` {
		t.Fatalf("indented publication: %+v %s", p, p.Pub.Data)
	}
	if tn.NumClients() != 1 {
		t.Fatalf("%d sessions, want 1", tn.NumClients())
	}
}

// A POST at the SSE endpoint connects by its JSON body.
func TestUniSSEPost(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	const ch = "chat:post"
	c := streamPost(t, base, UniSSEPath, fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch)))
	c.connected(ch)
	publishUni(t, tn, ch, `"hi"`)
	if p := c.pub(); string(p.Pub.Data) != `"hi"` {
		t.Fatalf("publication: %+v", p)
	}
}

// The HTTP stream is a chunked response of newline-ended JSON pushes,
// connected by the POST body.
func TestUniHTTPStream(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	const ch = "chat:stream"
	c := streamPost(t, base, UniHTTPStreamPath, fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch)))
	if te := c.resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
		t.Fatalf("Transfer-Encoding %v, want chunked", te)
	}
	c.connected(ch)
	for i := 1; i <= 3; i++ {
		publishUni(t, tn, ch, fmt.Sprintf(`{"n":%d}`, i))
		if p := c.pub(); p.Pub.Offset != uint64(i) {
			t.Fatalf("publication %d: %+v", i, p)
		}
	}
}

// Pings are {} messages on both streams and need no pong: the session
// outlives several pong timeouts and still gets its publications.
func TestUniStreamPings(t *testing.T) {
	tn, base := startStreamNode(t, func(c *Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 200 * time.Millisecond
	})
	const ch = "chat:ping"
	tok := fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch))
	for name, c := range map[string]*streamClient{
		"sse":         sseGet(t, base, tok),
		"http_stream": streamPost(t, base, UniHTTPStreamPath, tok),
	} {
		c.connected(ch)
		for pings := 0; pings < 5; pings++ {
			select {
			case data := <-c.msgs:
				if string(data) != "{}" {
					t.Fatalf("%s: ping %d is %q, want {}", name, pings+1, data)
				}
			case err := <-c.done:
				t.Fatalf("%s: stream ended: %v", name, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no ping", name)
			}
		}
	}
	publishUni(t, tn, ch, `{"n":1}`)
}

// A malformed or refused connect request ends the stream cleanly with a
// disconnect push carrying the protocol's code, and leaves no session.
func TestUniStreamBadConnect(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	for _, tc := range []struct {
		name string
		open func() *streamClient
		code int
	}{
		{"sse not json", func() *streamClient { return sseGet(t, base, "not json") }, DisconnectBadRequest.Code},
		{"sse no token", func() *streamClient { return sseGet(t, base, "") }, DisconnectBadRequest.Code},
		{"sse bad token", func() *streamClient { return sseGet(t, base, `{"token":"nope"}`) }, DisconnectInvalidToken.Code},
		{"http_stream not json", func() *streamClient { return streamPost(t, base, UniHTTPStreamPath, "{") }, DisconnectBadRequest.Code},
		{"http_stream bad token", func() *streamClient {
			return streamPost(t, base, UniHTTPStreamPath, `{"token":"nope"}`)
		}, DisconnectInvalidToken.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.open()
			if got := c.disconnected(); got != uint32(tc.code) {
				t.Fatalf("disconnect code %d, want %d", got, tc.code)
			}
			waitFor(t, "the session to be gone", func() bool { return tn.NumClients() == 0 })
		})
	}
}

// On the wire: the HTTP stream's head, its chunks, and after a disconnect
// the last chunk and then the end of the connection.
func TestUniHTTPStreamWire(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	addr := strings.TrimPrefix(base, "http://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	body := fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", "chat:wire"))
	fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", UniHTTPStreamPath, len(body), body)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("%s %v", resp.Status, resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	if first, err := br.ReadBytes('\n'); err != nil || !bytes.HasPrefix(first, []byte(`{"connect":`)) {
		t.Fatalf("first line %q, %v; want the connect push", first, err)
	}
	if n := tn.Disconnect("u1", "", DisconnectForce); n != 1 {
		t.Fatalf("disconnected %d sessions, want 1", n)
	}
	raw, err := io.ReadAll(br) // the chunked reader: io.EOF only after the last chunk
	if err != nil {
		t.Fatalf("body: %v (read %q)", err, raw)
	}
	if !bytes.HasSuffix(raw, []byte(`{"disconnect":{"code":3503,"reason":"force disconnect"}}`+"\n")) {
		t.Fatalf("body %q: want the disconnect push last", raw)
	}
	if n, err := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after the last chunk: %d bytes, %v; want the connection's end", n, err)
	}
}

// A stream client that reads nothing is a slow consumer like any other:
// its queue passes the bound and the session is disconnected.
func TestUniStreamSlowReader(t *testing.T) {
	tn, base := startStreamNode(t, func(c *Config) { c.ClientQueueMaxSize = 64 << 10 })
	const ch = "chat:slow"
	addr := strings.TrimPrefix(base, "http://")
	d := net.Dialer{Control: nil}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	q := url.QueryEscape(fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch)))
	fmt.Fprintf(nc, "GET %s?cf_connect=%s HTTP/1.1\r\nHost: x\r\n\r\n", UniSSEPath, q)
	waitFor(t, "the subscription", func() bool { return tn.NumClients() == 1 && tn.Channels(ch)[ch] == 1 })
	big := `"` + strings.Repeat("x", 16<<10) + `"`
	waitFor(t, "the slow consumer's disconnect", func() bool {
		if tn.Load().SlowDisconnects > 0 {
			return true
		}
		publishUni(t, tn, ch, big)
		return false
	})
	waitFor(t, "the session to be gone", func() bool { return tn.NumClients() == 0 })
}

// The streams are admitted like WebSocket sessions: past max_connections
// the request is refused with 503 and Retry-After.
func TestUniStreamAdmission(t *testing.T) {
	_, base := startStreamNode(t, func(c *Config) { c.MaxConnections = 1 })
	const ch = "chat:full"
	tok := fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch))
	sseGet(t, base, tok).connected(ch)
	resp, err := http.Get(base + UniSSEPath + "?cf_connect=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream: %s, Retry-After %q; want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
}

// No goroutine waits on an idle stream: 200 open SSE sessions (read by the
// test's own goroutine, so the client side adds none) leave the process's
// goroutine count where it was, give or take the pools' few.
func TestUniStreamNoGoroutinePerSession(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	addr := strings.TrimPrefix(base, "http://")
	before := runtime.NumGoroutine()
	const n = 200
	for i := range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		q := url.QueryEscape(fmt.Sprintf(`{"token":%q}`, connectToken(t, fmt.Sprint("u", i), "chat:idle")))
		fmt.Fprintf(nc, "GET %s?cf_connect=%s HTTP/1.1\r\nHost: x\r\n\r\n", UniSSEPath, q)
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(nc)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
			if strings.HasPrefix(line, `data: {"connect":`) {
				break
			}
		}
	}
	waitFor(t, "the sessions", func() bool { return tn.Channels("chat:idle")["chat:idle"] == n })
	if d := runtime.NumGoroutine() - before; d > n/10 {
		t.Fatalf("%d more goroutines with %d idle streams", d, n)
	}
}

// A stream's request on a connection kept alive after an API request (the
// SDK's /emulation POST, then a reconnect) reaches net/http, not the event
// loop: it is moved to the event loop and works like any stream.
func TestUniStreamOnKeptAliveConnection(t *testing.T) {
	tn, base := startStreamNode(t, nil)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(base+EmulationPath, "application/json", strings.NewReader(`{"session":"none","data":"{}"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("emulation request for no session: %s", resp.Status)
	}
	const ch = "chat:alive"
	req, _ := http.NewRequest(http.MethodGet, base+UniSSEPath+"?cf_connect="+url.QueryEscape(fmt.Sprintf(`{"token":%q}`, connectToken(t, "u1", ch))), nil)
	reused := false
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if !reused {
		t.Fatal("the stream's request did not reuse the API connection: the test proves nothing")
	}
	r := bufio.NewReader(resp.Body)
	want := func(prefix string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading for %q: %v", prefix, err)
			}
			if strings.HasPrefix(line, prefix) {
				return
			}
		}
	}
	want(`data: {"connect":`)
	publishUni(t, tn, ch, `{"n":1}`)
	want(`data: {"channel":"chat:alive","pub":{"data":{"n":1}`)
	tn.Disconnect("u1", "", DisconnectForce)
	want(`data: {"disconnect":{"code":3503`)
	if l, err := r.ReadString('\n'); l != "\n" || err != nil {
		t.Fatalf("after the disconnect push: %q, %v; want the empty line ending the event", l, err)
	}
	if l, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("after the disconnect event: %q, %v; want the end of the stream", l, err)
	}
}

package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
)

// squat opens n bare TCP connections from source address src that never
// send a byte. It returns those the server kept open, how many it refused
// (with 503 and Retry-After, or closed at once when too many refusals were
// being written) and how many of those got the 503; the test's cleanup
// closes them.
func squat(t *testing.T, addr, src string, n int) (held []net.Conn, refused, with503 int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	var conns []net.Conn
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("squat from %s: %v", src, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	// Refusals come at once; whatever has no answer within 300 ms is held.
	status := make([]int, len(conns)) // 503, 0 when held
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			var ne net.Error
			switch {
			case err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
				status[i] = resp.StatusCode
			case err == nil:
				t.Errorf("squatter got %s", resp.Status)
			case errors.As(err, &ne) && ne.Timeout():
				_ = c.SetReadDeadline(time.Time{})
			default:
				status[i] = -1 // closed at once: refused when refusals could not be written fast enough
			}
		})
	}
	wg.Wait()
	for i, c := range conns {
		switch status[i] {
		case 0:
			held = append(held, c)
		case http.StatusServiceUnavailable:
			with503++
			refused++
		default:
			refused++
		}
	}
	return held, refused, with503
}

// Bare TCP connections that never upgrade cannot lock real clients and the
// API out: past the per-address bound they are refused with 503 at once,
// the rest are closed after the handshake timeout, and meanwhile clients
// from elsewhere connect and API calls pass.
func TestSquattersDoNotLockOut(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.MaxConnections = 100
		c.MaxPendingConnections = 300
		c.MaxPendingConnectionsPerIP = 50
		c.HandshakeTimeout = config.Duration(time.Second)
	})
	held, refused, with503 := squat(t, srv.Addr(), "127.0.0.2", 400)
	if len(held) != 50 || refused != 350 || with503 < 100 {
		t.Fatalf("from one address: %d held, %d refused (%d with 503); want 50 and 350, most with 503", len(held), refused, with503)
	}
	t.Logf("from one address: %d held, %d refused, %d of them with 503", len(held), refused, with503)
	for i := range 20 {
		c := dial(t, srv, nil)
		c.connect(token(t, fmt.Sprint(i), time.Hour))
	}
	for range 5 {
		publish(t, srv, "news", `{"ok":true}`)
	}
	if code := adminStatus(t, srv, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz %d while squatted but not full", code)
	}
	// The held squatters go when the handshake timeout passes.
	start := time.Now()
	held = held[:min(len(held), 10)]
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
			t.Fatalf("squatter still open and sent %d bytes: %v", n, err)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("squatters closed after %v, handshake timeout 1s", took)
	}
	if v := metricValue(t, srv, "spindle_connections_refused_total"); v < 350 {
		t.Fatalf("refusals counted: %v", v)
	}
}

// Squatters from many addresses fill the bound in all; a real client is
// refused with 503 only until the handshake timeout frees their places.
func TestSquattersInAllFreedByTimeout(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.MaxPendingConnections = 60
		c.MaxPendingConnectionsPerIP = 20
		c.HandshakeTimeout = config.Duration(time.Second)
	})
	total := 0
	for i := 2; i <= 4; i++ {
		held, _, _ := squat(t, srv.Addr(), fmt.Sprintf("127.0.0.%d", i), 20)
		total += len(held)
	}
	if total != 60 {
		t.Fatalf("%d squatters held, want 60", total)
	}
	_, resp, err := websocketDial(srv, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a client while the door is full: %v %v", err, resp)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, _, err := websocketDial(srv, nil)
		if err == nil {
			ws.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused 5 s after a 1 s handshake timeout: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// /readyz says 503 when the node admits no more sessions.
func TestReadyWhenFull(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.MaxConnections = 3 })
	var conns []*websocket.Conn
	for range 3 {
		ws, _, err := websocketDial(srv, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, ws)
	}
	if code := adminStatus(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d at max_connections, want 503", code)
	}
	// Our client says why it was refused, on a goroutine and on an event loop.
	loop, err := client.NewLoop(1)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Stop()
	for _, l := range []*client.Loop{nil, loop} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Loop: l})
		cancel()
		var he *client.HandshakeError
		if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.RetryAfter == "" {
			t.Fatalf("dial when full (loop %v): %v, want a HandshakeError with 503 and Retry-After", l != nil, err)
		}
	}
	// Refused at the door, before the event loop took them, and counted.
	if n := metricValue(t, srv, "spindle_connections_refused_total"); n != 2 {
		t.Fatalf("%v refusals counted, want the 2 upgrades past max_connections", n)
	}
	conns[0].Close()
	waitFor(t, func() bool { return adminStatus(t, srv, "/readyz") == http.StatusOK })
	for _, c := range conns[1:] {
		c.Close()
	}
}

// A body is refused on its headers: no or a wrong key gets 401, an
// oversized Content-Length 413, before a byte of the body is sent; a
// chunked body is cut at the limit. Large unauthenticated bodies cost the
// server no memory.
func TestBodiesRefusedOnHeaders(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.APIMaxBodySize = 1 << 20 })
	head := func(key string, length int) string {
		h := "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
		if key != "" {
			h += "X-API-Key: " + key + "\r\n"
		}
		return h + "Content-Length: " + strconv.Itoa(length) + "\r\n\r\n"
	}
	answer := func(c net.Conn) int {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer before the body: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	before := rssKiB(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			key := []string{"", "wrong"}[i%2]
			if _, err := io.WriteString(c, head(key, 50<<20)); err != nil {
				t.Error(err)
				return
			}
			if code := answer(c); code != http.StatusUnauthorized {
				t.Errorf("50 MB body without the key: %d, want 401 before the body", code)
			}
		})
	}
	wg.Wait()
	// 400 MB were announced; the server read none of it. (The race
	// detector's shadow memory makes any growth look larger, hence the margin.)
	if grew := rssKiB(t) - before; grew > 16<<10 {
		t.Fatalf("RSS grew %d KiB for 8 refused 50 MB bodies", grew)
	} else {
		t.Logf("RSS grew %d KiB for 8 refused 50 MB bodies", grew)
	}
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, head("key", 2<<20))
	if code := answer(c); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("Content-Length over the limit: %d, want 413 at once", code)
	}
	// Chunked, with the key: cut at the limit while it streams.
	c2, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = io.WriteString(c2, "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: key\r\nTransfer-Encoding: chunked\r\n\r\n")
	got := make(chan int, 1)
	go func() { got <- answer(c2) }()
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("x", 64<<10))
	for sent := 0; sent < 4<<20; sent += 64 << 10 {
		if _, err := io.WriteString(c2, chunk); err != nil {
			break // the server answered and closed
		}
	}
	if code := <-got; code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d, want 413", code)
	}
}

func rssKiB(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func adminStatus(t *testing.T, srv interface{ AdminAddr() string }, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

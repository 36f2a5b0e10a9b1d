package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/auth"
)

// TestIdleStreamMemory measures what an idle stream session costs a fresh
// `spindle serve` process (SPINDLE_BIN, run only when set): N (SPINDLE_MEM_N,
// 2000) sessions of one kind (SPINDLE_MEM_KIND: uni_sse, uni_http_stream,
// uni_websocket or websocket), each with its own token subscribing it to one
// of 100 channels, opened one after another; (RSS held − RSS before) / N,
// RSS from /proc/PID/status, as docs/benchmarks.md measures WebSocket
// sessions. It records, it asserts nothing about the figure.
func TestIdleStreamMemory(t *testing.T) {
	bin := os.Getenv("SPINDLE_BIN")
	if bin == "" {
		t.Skip("SPINDLE_BIN not set")
	}
	n := 2000
	if v := os.Getenv("SPINDLE_MEM_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	kind := os.Getenv("SPINDLE_MEM_KIND")
	if kind == "" {
		kind = "uni_sse"
	}
	const addr = "127.0.0.1:18700"
	cmd := exec.Command(bin, "serve", "--listen", addr, "--admin-listen", "127.0.0.1:18701", "--api-key", "key",
		"--token-hmac-secret", "secret", "--log-level", "warn", "--max-connections", strconv.Itoa(n+100))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not listening: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for the port, with a deadline
	}
	time.Sleep(time.Second) // let start-up settle before the baseline reading; not synchronisation
	before := rss(t, cmd.Process.Pid)
	var keep []any
	for i := range n {
		tok, err := auth.MintConnect("secret", auth.ConnectClaims{UserID: strconv.Itoa(i), Channels: []string{fmt.Sprintf("idle%d", i%100)}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, openIdle(t, kind, addr, tok))
	}
	time.Sleep(2 * time.Second) // let the last sessions' work finish before reading; not synchronisation
	held := rss(t, cmd.Process.Pid)
	t.Logf("%s: %d sessions, RSS before %d KiB, held %d KiB: %d B per session",
		kind, n, before>>10, held>>10, (held-before)/int64(n))
	_ = keep
}

// openIdle opens one session of kind and reads its connect push.
func openIdle(t *testing.T, kind, addr, tok string) any {
	t.Helper()
	req := fmt.Sprintf(`{"token":%q}`, tok)
	switch kind {
	case "uni_websocket", "websocket":
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/connection/"+kind, nil)
		if err != nil {
			t.Fatal(err)
		}
		msg := req
		if kind == "websocket" {
			msg = fmt.Sprintf(`{"id":1,"connect":%s}`, req)
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, data, err := ws.ReadMessage(); err != nil || !bytes.Contains(data, []byte(`"client"`)) {
			t.Fatalf("connect: %q %v", data, err)
		}
		return ws
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if kind == "uni_sse" {
		fmt.Fprintf(c, "GET /connection/uni_sse?cf_connect=%s HTTP/1.1\r\nHost: x\r\n\r\n", url.QueryEscape(req))
	} else {
		fmt.Fprintf(c, "POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(req), req)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if strings.Contains(line, `{"connect":`) {
			return c
		}
	}
}

func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

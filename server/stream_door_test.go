package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spindlehq/spindle/guard/signals"
)

// While admission sheds, a stream's request is refused at the front door
// like an upgrade: 503 with Retry-After and the door's reason, for a GET
// (SSE) and for a POST whose body the door never reads.
func TestAdmissionRefusesStreamsAtTheDoor(t *testing.T) {
	srv := startServer(t, nil)
	srv.Admission().Observe(signals.Reading{At: time.Now(), SchedP99: 300 * time.Millisecond, Fanouts: 1})
	base := "http://" + srv.Addr()
	body := `{"token":"` + strings.Repeat("x", 8<<10) + `"}`
	for range 20 {
		for _, req := range []func() (*http.Response, error){
			func() (*http.Response, error) { return http.Get(base + "/connection/uni_sse?cf_connect=%7B%7D") },
			func() (*http.Response, error) {
				return http.Post(base+"/connection/uni_http_stream", "application/json", bytes.NewReader([]byte(body)))
			},
		} {
			resp, err := req()
			if err != nil {
				t.Fatalf("refused stream: %v, want a 503", err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.HasPrefix(string(b), "refused: overloaded") {
				t.Fatalf("stream while shedding: %s %q", resp.Status, b)
			}
		}
	}
}

// A stream's POST refused at the door is read to the end of the body it
// declared before the door closes: a client that sends its body after the
// answer came (or while it comes) gets no reset, which would cost it the
// answer's read or its body's write.
func TestRefusedStreamPostIsNoReset(t *testing.T) {
	srv := startServer(t, nil)
	srv.Admission().Observe(signals.Reading{At: time.Now(), SchedP99: 300 * time.Millisecond, Fanouts: 1})
	body := `{"token":"` + strings.Repeat("x", 8<<10) + `"}`
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("refused stream POST: %v, want a 503", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("refused stream POST: %s, want 503", resp.Status)
	}
	if _, err := io.WriteString(c, body); err != nil {
		t.Fatalf("the body after the answer: %v", err)
	}
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the body: %d bytes, %v; want the door's close (EOF)", n, err)
	}
	// A body that reached a closed socket is answered with a reset, which
	// ends the client's socket (TCP_CLOSE) within moments on loopback; a
	// door that read it leaves the socket waiting for the client's close.
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var state uint8
		_ = raw.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				state = info.State
			}
		})
		if state == unix.BPF_TCP_CLOSE {
			t.Fatal("the door reset the connection: it closed with the body unread")
		}
	}
}

package transport

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
)

// An event's data keeps its line breaks: each line is a data line, which
// an EventSource joins back with "\n".
func TestAppendEvent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a":1}`, "data: {\"a\":1}\n\n"},
		{"", "data: \n\n"},
		{"a\nb", "data: a\ndata: b\n\n"},
		{"a\r\nb\rc\n", "data: a\ndata: b\ndata: c\ndata: \n\n"},
	} {
		if got := string(AppendEvent([]byte("x"), []byte(tc.in))); got != "x"+tc.want {
			t.Errorf("AppendEvent(%q) = %q, want %q", tc.in, got, "x"+tc.want)
		}
	}
}

// Chunks read back with the standard chunked reader; an empty payload
// adds nothing, since an empty chunk would end the body.
func TestAppendChunk(t *testing.T) {
	var body []byte
	body = AppendChunk(body, []byte("hello\n"))
	body = AppendChunk(body, nil)
	body = AppendChunk(body, bytes.Repeat([]byte("x"), 300))
	body = append(body, lastChunk...)
	got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello\n" + strings.Repeat("x", 300); string(got) != want {
		t.Fatalf("read back %q", got)
	}
}

// The front door sends a stream's GET (SSE) or POST to the event loop,
// and a preflight or any other method to net/http.
func TestFrontDoorRoutesStreams(t *testing.T) {
	s := &Server{cfg: Config{Path: "/connection/websocket", UniSSEPath: "/connection/uni_sse", UniHTTPStreamPath: "/connection/uni_http_stream",
		SSEPath: "/connection/sse", HTTPStreamPath: "/connection/http_stream"}}
	f := &frontDoor{s: s}
	for _, tc := range []struct {
		method, target string
		loop           bool
	}{
		{"GET", "/connection/uni_sse?cf_connect=%7B%7D", true},
		{"POST", "/connection/uni_sse", true},
		{"POST", "/connection/uni_http_stream", true},
		{"GET", "/connection/uni_http_stream", false},
		{"OPTIONS", "/connection/uni_http_stream", false},
		{"GET", "/connection/sse?cf_connect=x", true},
		{"POST", "/connection/http_stream", true},
		{"PUT", "/connection/sse", false},
		{"GET", "/connection/uni_sse/more", false},
		{"POST", "/emulation", false},
		{"GET", "/connection/websocket", false}, // no Upgrade header
	} {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.target, nil)
		var head bytes.Buffer
		w := bufio.NewWriter(&head)
		if err := req.Write(w); err != nil {
			t.Fatal(err)
		}
		_ = w.Flush()
		if got := f.isUpgrade(head.Bytes()); got != tc.loop {
			t.Errorf("%s %s: to the event loop %v, want %v", tc.method, tc.target, got, tc.loop)
		}
	}
}

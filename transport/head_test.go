package transport

import "testing"

// The body a refused request's head declares is what the door reads
// before it closes: Content-Length (at most maxHeard), a chunked
// body up to that bound, nothing otherwise.
func TestDeclaredBody(t *testing.T) {
	for head, want := range map[string]int64{
		"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 8203\r\n\r\n":      8203,
		"POST /s HTTP/1.1\r\ncontent-length:  12 \r\n\r\n":                 12,
		"POST /s HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n":             maxHeard,
		"POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n":           maxHeard,
		"POST /s HTTP/1.1\r\nContent-Length: -1\r\n\r\n":                   0,
		"POST /s HTTP/1.1\r\nContent-Length: lots\r\n\r\n":                 0,
		"GET /connection/websocket HTTP/1.1\r\nUpgrade: websocket\r\n\r\n": 0,
		"GET /Content-Length:5 HTTP/1.1\r\nHost: x\r\n\r\n":                0,
	} {
		if got := declaredBody([]byte(head)); got != want {
			t.Errorf("%q: %d, want %d", head, got, want)
		}
	}
}

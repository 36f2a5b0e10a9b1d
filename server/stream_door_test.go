package server_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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

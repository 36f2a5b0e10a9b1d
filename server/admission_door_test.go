package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/guard/signals"
)

// While admission sheds, an upgrade is refused at the front door, before
// the event loop takes it (the door's answer, "refused: overloaded"), with
// 503 and Retry-After; admission is asked once per upgrade, and each
// refusal is counted once under its reason.
func TestAdmissionRefusesAtTheDoor(t *testing.T) {
	srv := startServer(t, nil)
	srv.Admission().Observe(signals.Reading{At: time.Now(), SchedP99: 300 * time.Millisecond, Fanouts: 1})
	const n = 5
	for range n {
		ws, resp, err := websocketDial(srv, nil)
		if err == nil {
			ws.Close()
			t.Fatal("an upgrade admitted while shedding")
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("upgrade while shedding: %v %v", err, resp)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.HasPrefix(string(body), "refused: overloaded") {
			t.Fatalf("refusal %q, want the door's \"refused: overloaded\"", body)
		}
	}
	if v := metricValue(t, srv, "spindle_admission_shed_total"); v != n {
		t.Fatalf("admission asked %v times for %d upgrades", v, n)
	}
	if v := metricValue(t, srv, "spindle_connections_refused_total"); v != n {
		t.Fatalf("%v refusals counted for %d upgrades", v, n)
	}
}

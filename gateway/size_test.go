package gateway

import (
	"testing"
	"unsafe"

	"github.com/spindlehq/spindle/broker"
)

// An idle node holds a session, a subscription and a client info per client: each byte
// over a malloc size class costs the whole next class, times every client.
func TestSessionSize(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"session", unsafe.Sizeof(session{}), 240},
		{"subscription", unsafe.Sizeof(subscription{}), 80},
		{"client info", unsafe.Sizeof(broker.ClientInfo{}), 64},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes, over the %d-byte size class an idle connection was measured with (docs/benchmarks.md)", c.name, c.size, c.max)
		}
	}
}

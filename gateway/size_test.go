package gateway

import (
	"testing"
	"unsafe"
)

// An idle node holds a session and a subscription per client: each byte
// over a malloc size class costs the whole next class, times every client.
func TestSessionSize(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"session", unsafe.Sizeof(session{}), 256},
		{"subscription", unsafe.Sizeof(subscription{}), 80},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes, over the %d-byte size class an idle connection was measured with (docs/benchmarks.md)", c.name, c.size, c.max)
		}
	}
}

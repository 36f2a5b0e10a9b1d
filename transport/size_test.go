package transport

import (
	"testing"
	"unsafe"
)

// An idle node holds a Conn per client: each byte over a malloc size class
// costs the whole next class, times every client.
func TestConnSize(t *testing.T) {
	if size := unsafe.Sizeof(Conn{}); size > 144 {
		t.Errorf("Conn is %d bytes, over the 144-byte size class an idle connection was measured with (docs/benchmarks.md)", size)
	}
}

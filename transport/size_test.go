package transport

import (
	"testing"
	"unsafe"
)

// An idle node holds a Conn per client: each byte over a malloc size class
// costs the whole next class, times every client.
func TestConnSize(t *testing.T) {
	if size := unsafe.Sizeof(Conn{}); size > 128 {
		t.Errorf("Conn is %d bytes, over the 128-byte malloc size class: every idle client holds one Conn, so the next class (144 B) costs another 16 B per client, 160 KB per 10,000 (docs/benchmarks.md)", size)
	}
}

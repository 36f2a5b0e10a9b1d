package client

import (
	"testing"

	"github.com/centrifugal/protocol"
)

// discard is a socket that takes every write.
type discard struct{ closed bool }

func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) Close() error                { d.closed = true; return nil }

// serverFrame frames payload as a server would (unmasked, final).
func serverFrame(op byte, payload []byte) []byte {
	b := appendMasked(nil, op, payload)
	// Drop the mask: clear the bit and remove the key, unmasking the bytes.
	hdr := 2
	switch b[1] & 0x7f {
	case 126:
		hdr = 4
	case 127:
		hdr = 10
	}
	key := b[hdr : hdr+4]
	out := append([]byte{b[0], b[1] &^ 0x80}, b[2:hdr]...)
	for i, x := range b[hdr+4:] {
		out = append(out, x^key[i&3])
	}
	return out
}

// The event-loop carrier parses whatever a server sends, split anywhere
// across reads: it never panics, and well-formed frames are delivered whole.
func FuzzLoopFrames(f *testing.F) {
	pub := []byte(`{"push":{"channel":"c","pub":{"data":{"x":1},"offset":3}}}`)
	f.Add(serverFrame(opText, pub), 1)
	f.Add(append(serverFrame(opText, pub), serverFrame(opPing, []byte("hi"))...), 5)
	f.Add(serverFrame(opClose, []byte{0x0b, 0xb8, 'b', 'y', 'e'}), 2)
	f.Add(append([]byte{0x01, 0x03, 'a', 'b', 'c'}, serverFrame(opContinuation, []byte("{}"))...), 3)
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, 4)
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 5}, 1)
	f.Fuzz(func(t *testing.T, stream []byte, split int) {
		got := 0
		c := &Client{waiting: map[uint32]chan *protocol.Reply{}, done: make(chan struct{}), exited: make(chan struct{}),
			cfg: Config{OnPublication: func(string, *protocol.Publication) { got++ }}}
		lc := &loopConn{c: c, nc: &discard{}}
		c.conn = lc
		if split <= 0 || split > len(stream) {
			split = len(stream)
		}
		for len(stream) > 0 {
			n := min(split, len(stream))
			lc.onData(stream[:n])
			stream = stream[n:]
		}
		lc.onClose(nil)
		if c.Err() == nil {
			t.Fatal("no error after the connection ended")
		}
	})
}

func TestLoopFramesSplitAnywhere(t *testing.T) {
	pub := []byte(`{"push":{"channel":"c","pub":{"data":{"x":1},"offset":3}}}`)
	stream := append(serverFrame(opText, pub), serverFrame(opText, pub)...)
	for split := 1; split <= len(stream); split++ {
		got := 0
		c := &Client{waiting: map[uint32]chan *protocol.Reply{}, done: make(chan struct{}), exited: make(chan struct{}),
			cfg: Config{OnPublication: func(ch string, p *protocol.Publication) {
				if ch == "c" && p.Offset == 3 {
					got++
				}
			}}}
		lc := &loopConn{c: c, nc: &discard{}}
		c.conn = lc
		for s := stream; len(s) > 0; {
			n := min(split, len(s))
			lc.onData(s[:n])
			s = s[n:]
		}
		if got != 2 {
			t.Fatalf("split every %d bytes: %d publications, want 2", split, got)
		}
	}
}

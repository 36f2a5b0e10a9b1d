package transport

import (
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// scanAll runs utf8Scan over p masked with key, cut into pieces at cuts.
func scanAll(p []byte, key [4]byte, cuts []int) uint8 {
	masked := make([]byte, len(p))
	for i := range p {
		masked[i] = p[i] ^ key[i&3]
	}
	st, kpos, at := uint8(utf8Accept), uint8(0), 0
	for _, c := range append(cuts, len(p)) {
		if c < at || c > len(p) {
			continue
		}
		if st = utf8Scan(st, masked[at:c], &key, &kpos); st == utf8Reject {
			return st
		}
		at = c
	}
	return st
}

// The state machine agrees with unicode/utf8 on every sequence of up to
// three bytes, and on every four-byte sequence from F0..F4 with sampled
// continuations.
func TestUTF8StateMachineExhaustive(t *testing.T) {
	valid := func(p []byte) bool {
		st := uint8(utf8Accept)
		for _, b := range p {
			if st = utf8Next(st, b); st == utf8Reject {
				return false
			}
		}
		return st == utf8Accept
	}
	var b [4]byte
	for n := 1; n <= 3; n++ {
		for x := 0; x < 1<<(8*n); x++ {
			for i := 0; i < n; i++ {
				b[i] = byte(x >> (8 * i))
			}
			if got, want := valid(b[:n]), utf8.Valid(b[:n]); got != want {
				t.Fatalf("% x: state machine %v, utf8.Valid %v", b[:n], got, want)
			}
		}
	}
	for b0 := 0xF0; b0 <= 0xF7; b0++ {
		for b1 := 0; b1 < 256; b1++ {
			for _, b2 := range []byte{0x00, 0x7F, 0x80, 0xA5, 0xBF, 0xC0} {
				for _, b3 := range []byte{0x00, 0x80, 0xBF, 0xC0, 0xFF} {
					p := []byte{byte(b0), byte(b1), b2, b3}
					if got, want := valid(p), utf8.Valid(p); got != want {
						t.Fatalf("% x: state machine %v, utf8.Valid %v", p, got, want)
					}
				}
			}
		}
	}
}

// utf8Scan, masked and cut anywhere, agrees with utf8.Valid on random text.
func TestUTF8ScanMaskedPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := [][]byte{[]byte("a"), []byte("abcdefgh"), []byte("é"), []byte("€"), []byte("𝄞"),
		{0xff}, {0xc0, 0xaf}, {0xed, 0xa0, 0x80}, {0xf4, 0x90, 0x80, 0x80}, {0xe2}, {0x82}, {0xf0, 0x9d}}
	for range 20000 {
		var p []byte
		for range r.IntN(12) {
			p = append(p, alphabet[r.IntN(len(alphabet))]...)
		}
		key := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
		var cuts []int
		for range r.IntN(4) {
			cuts = append(cuts, r.IntN(len(p)+1))
		}
		// sorted cuts
		for i := range cuts {
			for j := i + 1; j < len(cuts); j++ {
				if cuts[j] < cuts[i] {
					cuts[i], cuts[j] = cuts[j], cuts[i]
				}
			}
		}
		st := scanAll(p, key, cuts)
		if got, want := st == utf8Accept, utf8.Valid(p); got != want {
			t.Fatalf("% x key % x cuts %v: state %d, utf8.Valid %v", p, key, cuts, st, want)
		}
	}
}

// The state machine refuses at the first byte no valid text can follow.
func TestUTF8FailsAtTheFirstBadByte(t *testing.T) {
	for _, p := range [][]byte{
		{0xf4, 0x90}, // above U+10FFFF
		{0xed, 0xa0}, // a surrogate
		{0xe0, 0x80}, // overlong
		{0xf0, 0x80}, // overlong
		{0xc0},       // overlong
		{0xc1},
		{0xf5},
		{0x80}, // a lone continuation byte
		{0xe2, 0x82, 0x41},
	} {
		st := uint8(utf8Accept)
		for i, b := range p {
			st = utf8Next(st, b)
			if (st == utf8Reject) != (i == len(p)-1) {
				t.Fatalf("% x: state %d after byte %d", p, st, i)
			}
		}
	}
}

func TestValidCloseCode(t *testing.T) {
	for code := 0; code < 6000; code++ {
		want := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
		if validCloseCode(uint16(code)) != want {
			t.Fatalf("validCloseCode(%d) = %v", code, !want)
		}
	}
}

func BenchmarkUTF8Scan(b *testing.B) {
	p := []byte(`{"id":1,"subscribe":{"channel":"news:général","data":{"text":"hello, world — κόσμε"}}}`)
	for len(p) < 4096 {
		p = append(p, p...)
	}
	key := [4]byte{0x81, 0x02, 0x93, 0x04}
	for i := range p {
		p[i] ^= key[i&3]
	}
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		var kpos uint8
		if utf8Scan(utf8Accept, p, &key, &kpos) == utf8Reject {
			b.Fatal("reject")
		}
	}
}

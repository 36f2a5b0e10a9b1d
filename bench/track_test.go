package bench

import "testing"

func TestSeqTracker(t *testing.T) {
	cases := []struct {
		name                string
		seqs                []uint64
		from, to            uint64
		received, dup, late uint64
		missing             uint64
	}{
		{"in order", []uint64{1, 2, 3, 4}, 1, 4, 4, 0, 0, 0},
		{"gap", []uint64{1, 2, 5}, 1, 5, 3, 0, 0, 2},
		{"gap filled late", []uint64{1, 3, 2, 4}, 1, 4, 4, 0, 1, 0},
		{"duplicate", []uint64{1, 2, 2, 3}, 1, 3, 3, 1, 0, 0},
		{"duplicate of filled hole", []uint64{1, 3, 2, 2}, 1, 3, 3, 1, 1, 0},
		{"middle of a hole", []uint64{1, 6, 3}, 1, 6, 3, 0, 1, 3},
		{"tail missing", []uint64{1, 2}, 1, 5, 2, 0, 0, 3},
		{"head missing", []uint64{3, 4}, 1, 4, 2, 0, 0, 2},
		{"late before first", []uint64{3, 4, 1}, 1, 4, 3, 0, 1, 1},
		{"nothing", nil, 1, 3, 0, 0, 0, 3},
		{"hole split then filled", []uint64{1, 9, 5, 3, 7, 2, 4, 6, 8}, 1, 9, 9, 0, 7, 0},
		{"late front then middle", []uint64{5, 6, 9, 1, 3, 7}, 1, 9, 6, 0, 3, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tr seqTracker
			for _, s := range c.seqs {
				tr.add(s)
			}
			if tr.received != c.received || tr.duplicates != c.dup || tr.outOfOrder != c.late {
				t.Errorf("received/dup/late = %d/%d/%d, want %d/%d/%d", tr.received, tr.duplicates, tr.outOfOrder, c.received, c.dup, c.late)
			}
			if m := tr.missingWithin(c.from, c.to); m != c.missing {
				t.Errorf("missing = %d, want %d", m, c.missing)
			}
		})
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{minPayload, 100, 4096} {
		b := appendPayload(nil, 12345, 1732540000123456789, size)
		if len(b) != size {
			t.Fatalf("size %d: got %d bytes", size, len(b))
		}
		seq, ts, err := parsePayload(b)
		if err != nil || seq != 12345 || ts != 1732540000123456789 {
			t.Fatalf("parse %s: %d %d %v", b, seq, ts, err)
		}
	}
	if _, _, err := parsePayload([]byte(`{"hello":1}`)); err == nil {
		t.Fatal("foreign payload parsed")
	}
}

// Many holes (every other publication refused) are all kept, and asking
// about one sequence answers for it alone.
func TestSeqTrackerManyHoles(t *testing.T) {
	var tr seqTracker
	for s := uint64(1); s <= 20001; s += 2 {
		tr.add(s)
	}
	if len(tr.holes) != 10000 || tr.missingWithin(1, 20001) != 10000 {
		t.Fatalf("%d holes, %d missing; want 10,000 of each", len(tr.holes), tr.missingWithin(1, 20001))
	}
	if !tr.missing(10000) || tr.missing(10001) || !tr.missing(20002) {
		t.Fatal("missing() is wrong about single sequences")
	}
	tr.add(10000)
	if tr.missing(10000) || tr.missingWithin(9999, 10001) != 0 || tr.outOfOrder != 1 {
		t.Fatalf("after filling 10,000: missing %v, within %d", tr.missing(10000), tr.missingWithin(9999, 10001))
	}
}

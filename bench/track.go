package bench

import (
	"slices"
	"sort"
)

// seqTracker follows one subscription's sequence numbers to count
// deliveries, duplicates, late (out-of-order) arrivals and holes, with
// memory bounded by the number of open holes, not by the message count.
// Holes are kept sorted, so asking whether one sequence is missing is a
// binary search: the accounting asks it once per refused publication.
type seqTracker struct {
	first, last uint64 // first and highest sequence seen (0: none yet)
	received    uint64 // distinct sequences received
	duplicates  uint64
	outOfOrder  uint64
	holes       []span // sequences skipped over and not (yet) received, sorted, disjoint
}

type span struct{ from, to uint64 } // inclusive

func (t *seqTracker) add(seq uint64) {
	switch {
	case t.last == 0:
		t.first, t.last = seq, seq
		t.received++
	case seq == t.last+1:
		t.last = seq
		t.received++
	case seq > t.last+1:
		t.holes = append(t.holes, span{t.last + 1, seq - 1}) // above every hole: stays sorted
		t.last = seq
		t.received++
	case seq < t.first:
		// Arrived late, before anything seen so far: a hole at the front.
		if seq+1 < t.first {
			t.holes = slices.Insert(t.holes, 0, span{seq + 1, t.first - 1})
		}
		t.first = seq
		t.received++
		t.outOfOrder++
	default:
		if t.fill(seq) {
			t.received++
			t.outOfOrder++
		} else {
			t.duplicates++
		}
	}
}

// hole is the index of the hole holding seq, or -1.
func (t *seqTracker) hole(seq uint64) int {
	i := sort.Search(len(t.holes), func(i int) bool { return t.holes[i].to >= seq })
	if i < len(t.holes) && t.holes[i].from <= seq {
		return i
	}
	return -1
}

// fill removes seq from the holes; false means it was not missing.
func (t *seqTracker) fill(seq uint64) bool {
	i := t.hole(seq)
	if i < 0 {
		return false
	}
	switch h := t.holes[i]; {
	case h.from == h.to:
		t.holes = slices.Delete(t.holes, i, i+1)
	case seq == h.from:
		t.holes[i].from++
	case seq == h.to:
		t.holes[i].to--
	default:
		t.holes[i].to = seq - 1
		t.holes = slices.Insert(t.holes, i+1, span{seq + 1, h.to})
	}
	return true
}

// missing reports whether seq, within [first, last], was not received.
func (t *seqTracker) missing(seq uint64) bool {
	if t.last == 0 || seq < t.first || seq > t.last {
		return true
	}
	return t.hole(seq) >= 0
}

// missingWithin counts the sequences of [from, to] not received.
func (t *seqTracker) missingWithin(from, to uint64) uint64 {
	if to < from {
		return 0
	}
	if t.last == 0 {
		return to - from + 1
	}
	var m uint64
	if from < t.first {
		m += min(t.first-1, to) - from + 1
	}
	if to > t.last {
		m += to - max(t.last+1, from) + 1
	}
	for i := sort.Search(len(t.holes), func(i int) bool { return t.holes[i].to >= from }); i < len(t.holes) && t.holes[i].from <= to; i++ {
		h := t.holes[i]
		m += min(h.to, to) - max(h.from, from) + 1
	}
	return m
}

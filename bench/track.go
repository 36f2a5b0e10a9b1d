package bench

// seqTracker follows one subscription's sequence numbers to count
// deliveries, duplicates, late (out-of-order) arrivals and holes, with
// memory bounded by the number of open holes, not by the message count.
type seqTracker struct {
	first, last uint64 // first and highest sequence seen (0: none yet)
	received    uint64 // distinct sequences received
	duplicates  uint64
	outOfOrder  uint64
	holes       []span // sequences skipped over and not (yet) received
	lostHoles   uint64 // holes forgotten when the list was full
}

type span struct{ from, to uint64 } // inclusive

const maxHoles = 64

func (t *seqTracker) add(seq uint64) {
	switch {
	case t.last == 0:
		t.first, t.last = seq, seq
		t.received++
	case seq == t.last+1:
		t.last = seq
		t.received++
	case seq > t.last+1:
		if len(t.holes) < maxHoles {
			t.holes = append(t.holes, span{t.last + 1, seq - 1})
		} else {
			t.lostHoles += seq - 1 - t.last
		}
		t.last = seq
		t.received++
	case seq < t.first:
		// Arrived late, before anything seen so far: a hole at the front.
		if seq+1 < t.first {
			t.holes = append(t.holes, span{seq + 1, t.first - 1})
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

// fill removes seq from the holes; false means it was not missing.
func (t *seqTracker) fill(seq uint64) bool {
	for i, h := range t.holes {
		if seq < h.from || seq > h.to {
			continue
		}
		switch {
		case h.from == h.to:
			t.holes = append(t.holes[:i], t.holes[i+1:]...)
		case seq == h.from:
			t.holes[i].from++
		case seq == h.to:
			t.holes[i].to--
		default:
			t.holes[i].to = seq - 1
			t.holes = append(t.holes, span{seq + 1, h.to})
		}
		return true
	}
	return false
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
	for _, h := range t.holes {
		lo, hi := max(h.from, from), min(h.to, to)
		if lo <= hi {
			m += hi - lo + 1
		}
	}
	return m + t.lostHoles
}

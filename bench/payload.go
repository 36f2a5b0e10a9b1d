package bench

import (
	"bytes"
	"errors"
	"strconv"
)

// A publication's payload is JSON carrying its channel-local sequence number
// and its intended send time, padded to the scenario's message size:
//
//	{"s":17,"t":1732540000123456789,"p":"xxxx…"}
const minPayload = 64

// appendPayload appends a payload of exactly size bytes (size ≥ minPayload).
func appendPayload(b []byte, seq uint64, intendedNanos int64, size int) []byte {
	start := len(b)
	b = append(b, `{"s":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, intendedNanos, 10)
	b = append(b, `,"p":"`...)
	for len(b)-start < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

var errPayload = errors.New("not a bench payload")

// parsePayload reads the sequence and intended time from a payload without
// decoding the JSON in general: it is on the hot path of every delivery.
func parsePayload(b []byte) (seq uint64, intendedNanos int64, err error) {
	s, ok := field(b, `"s":`)
	if !ok {
		return 0, 0, errPayload
	}
	t, ok := field(b, `"t":`)
	if !ok {
		return 0, 0, errPayload
	}
	seq, err = strconv.ParseUint(string(s), 10, 64)
	if err != nil {
		return 0, 0, errPayload
	}
	intendedNanos, err = strconv.ParseInt(string(t), 10, 64)
	if err != nil {
		return 0, 0, errPayload
	}
	return seq, intendedNanos, nil
}

// field returns the digits after key.
func field(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	b = b[i+len(key):]
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	return b[:n], n > 0
}

package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Faults is the set of faults a Proxy injects. The zero value forwards
// everything untouched.
type Faults struct {
	// Latency delays every chunk of bytes, in each direction, by this much.
	Latency time.Duration
	// Jitter varies each chunk's delay uniformly within ±Jitter around
	// Latency (never below zero). Bytes are never reordered: a chunk is
	// never delivered before the one read ahead of it.
	Jitter time.Duration
	// Bandwidth caps throughput in bytes per second, per direction, per
	// connection; 0 means unlimited.
	Bandwidth int64
	// Drop is the share (0 to 1) of new connections that are reset as soon
	// as they are accepted, before any byte reaches the upstream. It has no
	// effect on connections already open.
	Drop float64
	// ResetAfter resets (RST, SO_LINGER 0) both sides of each connection
	// once it is this old; 0 disables it.
	ResetAfter time.Duration
	// StallReads stops reading from the upstream, so the upstream sees this
	// client as a slow consumer: its writes block once socket buffers fill.
	// Client to upstream bytes still flow.
	StallReads bool
	// Blackhole forwards nothing in either direction and closes nothing,
	// like a network partition: new connections are accepted but not
	// dialed upstream, and bytes wait (unread) until the blackhole lifts.
	// ResetAfter still applies.
	Blackhole bool
}

// Validate reports the first value that is out of range.
func (f Faults) Validate() error {
	switch {
	case f.Latency < 0:
		return fmt.Errorf("latency %v is negative", f.Latency)
	case f.Jitter < 0:
		return fmt.Errorf("jitter %v is negative", f.Jitter)
	case f.Bandwidth < 0:
		return fmt.Errorf("bandwidth %d is negative", f.Bandwidth)
	case math.IsNaN(f.Drop) || f.Drop < 0 || f.Drop > 1:
		return fmt.Errorf("drop %v is not between 0 and 1", f.Drop)
	case f.ResetAfter < 0:
		return fmt.Errorf("reset-after %v is negative", f.ResetAfter)
	}
	return nil
}

// String renders the active faults as key=value pairs, or "none".
func (f Faults) String() string {
	var parts []string
	if f.Latency > 0 {
		parts = append(parts, "latency="+f.Latency.String())
	}
	if f.Jitter > 0 {
		parts = append(parts, "jitter="+f.Jitter.String())
	}
	if f.Bandwidth > 0 {
		parts = append(parts, "bandwidth="+FormatSize(f.Bandwidth)+"/s")
	}
	if f.Drop > 0 {
		parts = append(parts, "drop="+strconv.FormatFloat(f.Drop, 'g', -1, 64))
	}
	if f.ResetAfter > 0 {
		parts = append(parts, "reset-after="+f.ResetAfter.String())
	}
	if f.StallReads {
		parts = append(parts, "stall-reads")
	}
	if f.Blackhole {
		parts = append(parts, "blackhole")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// delay draws one chunk's delay: Latency ± a uniform share of Jitter.
func (f Faults) delay() time.Duration {
	d := f.Latency
	if f.Jitter > 0 {
		d += time.Duration(rand.Int64N(2*int64(f.Jitter)+1)) - f.Jitter
	}
	return max(d, 0)
}

// faultsJSON is the wire form of Faults: durations as Go duration strings,
// bandwidth as bytes per second (a number, or a size string on input).
type faultsJSON struct {
	Latency    *string         `json:"latency,omitempty"`
	Jitter     *string         `json:"jitter,omitempty"`
	Bandwidth  json.RawMessage `json:"bandwidth,omitempty"`
	Drop       *float64        `json:"drop,omitempty"`
	ResetAfter *string         `json:"reset_after,omitempty"`
	StallReads *bool           `json:"stall_reads,omitempty"`
	Blackhole  *bool           `json:"blackhole,omitempty"`
}

// MarshalJSON writes every field, durations as strings such as "50ms".
func (f Faults) MarshalJSON() ([]byte, error) {
	s := func(d time.Duration) *string { v := d.String(); return &v }
	return json.Marshal(faultsJSON{
		Latency:    s(f.Latency),
		Jitter:     s(f.Jitter),
		Bandwidth:  json.RawMessage(strconv.FormatInt(f.Bandwidth, 10)),
		Drop:       &f.Drop,
		ResetAfter: s(f.ResetAfter),
		StallReads: &f.StallReads,
		Blackhole:  &f.Blackhole,
	})
}

// UnmarshalJSON sets only the fields present in the object, so decoding
// onto existing Faults patches them. Unknown fields are an error, and so
// are values out of range.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var w faultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	out := *f
	dur := func(name string, p *string, dst *time.Duration) error {
		if p == nil {
			return nil
		}
		d, err := time.ParseDuration(*p)
		if err != nil {
			return fmt.Errorf("faults: %s: %w", name, err)
		}
		*dst = d
		return nil
	}
	if err := errors.Join(
		dur("latency", w.Latency, &out.Latency),
		dur("jitter", w.Jitter, &out.Jitter),
		dur("reset_after", w.ResetAfter, &out.ResetAfter),
	); err != nil {
		return err
	}
	if len(w.Bandwidth) > 0 && string(w.Bandwidth) != "null" {
		var s string
		if err := json.Unmarshal(w.Bandwidth, &s); err != nil {
			s = string(w.Bandwidth) // a bare number
		}
		n, err := ParseSize(s)
		if err != nil {
			return fmt.Errorf("faults: bandwidth: %w", err)
		}
		out.Bandwidth = n
	}
	if w.Drop != nil {
		out.Drop = *w.Drop
	}
	if w.StallReads != nil {
		out.StallReads = *w.StallReads
	}
	if w.Blackhole != nil {
		out.Blackhole = *w.Blackhole
	}
	if err := out.Validate(); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	*f = out
	return nil
}

// Set changes one field by its command-line name (latency, jitter,
// bandwidth, drop, reset-after, stall-reads, blackhole), parsing value the
// way the flag of that name does. An empty value for a boolean means true.
func (f *Faults) Set(key, value string) error {
	out := *f
	var err error
	switch key {
	case "latency":
		out.Latency, err = time.ParseDuration(value)
	case "jitter":
		out.Jitter, err = time.ParseDuration(value)
	case "reset-after":
		out.ResetAfter, err = time.ParseDuration(value)
	case "bandwidth":
		out.Bandwidth, err = ParseSize(value)
	case "drop":
		out.Drop, err = strconv.ParseFloat(value, 64)
	case "stall-reads", "blackhole":
		b := true
		if value != "" {
			b, err = strconv.ParseBool(value)
		}
		if key == "blackhole" {
			out.Blackhole = b
		} else {
			out.StallReads = b
		}
	default:
		return fmt.Errorf("unknown fault %q (want latency, jitter, bandwidth, drop, reset-after, stall-reads or blackhole)", key)
	}
	if err != nil {
		return fmt.Errorf("%s=%s: %w", key, value, err)
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*f = out
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first so "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

// ParseSize parses a byte count such as "512", "64KiB", "1MiB", "1.5MB" or
// "64KiB/s". KiB/MiB/GiB (and bare K/M/G) are powers of 1024, KB/MB/GB
// powers of 1000; case does not matter.
func ParseSize(s string) (int64, error) {
	in := s
	s = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), "/s")
	mult := 1.0
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || s == "" || strings.ContainsAny(s, "xXpPnN") {
		return 0, fmt.Errorf("size %q: want a byte count like 512, 64KiB or 1MiB", in)
	}
	v *= mult
	if v < 0 || v > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is out of range", in)
	}
	return int64(v), nil
}

// FormatSize renders n bytes with the largest binary unit that divides it
// exactly, e.g. 65536 as "64KiB"; the inverse of ParseSize.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

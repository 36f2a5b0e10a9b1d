package watchdog

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/spindlehq/spindle/guard/signals"
)

// Signal is what a rule watches.
type Signal string

// The signals a rule can watch, with how their values are written.
const (
	Goroutines    Signal = "goroutines"     // a count: goroutines > 10000
	Heap          Signal = "heap"           // bytes in use by heap objects: heap > 2GiB
	SchedP99      Signal = "sched_p99"      // scheduler latency p99: sched_p99 > 50ms
	SlowConsumers Signal = "slow_consumers" // slow-consumer disconnects per second: slow_consumers > 5/s
)

// of reads the signal from a reading, in its rule's unit (seconds for
// sched_p99, bytes for heap).
func (s Signal) of(r signals.Reading) float64 {
	switch s {
	case Heap:
		return float64(r.HeapBytes)
	case SchedP99:
		return r.SchedP99.Seconds()
	case SlowConsumers:
		return r.SlowPerSecond
	}
	return float64(r.Goroutines)
}

// parse reads a threshold of the signal as written in a rule.
func (s Signal) parse(v string) (float64, error) {
	switch s {
	case Heap:
		n, err := humanize.ParseBytes(v)
		return float64(n), err
	case SchedP99:
		d, err := time.ParseDuration(v)
		return d.Seconds(), err
	case SlowConsumers:
		num, ok := strings.CutSuffix(v, "/s")
		if !ok {
			return 0, fmt.Errorf("%q is not a rate per second (e.g. 5/s)", v)
		}
		return strconv.ParseFloat(strings.TrimSpace(num), 64)
	case Goroutines:
		n, err := strconv.Atoi(v)
		return float64(n), err
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// Rule is a condition that triggers a capture: the signal above Above held
// for For, or growing faster than PerSecond over Window (goroutines and
// heap only).
type Rule struct {
	Text      string // as written in the config
	Signal    Signal
	Above     float64       // threshold rule: signal > Above ...
	For       time.Duration // ... for this long
	PerSecond float64       // growth rule: signal grows > PerSecond/s ...
	Window    time.Duration // ... over this window
}

var (
	thresholdRule = regexp.MustCompile(`^\s*(\w+)\s*>\s*(.+?)\s+for\s+(\S+)\s*$`)
	growthRule    = regexp.MustCompile(`^\s*(\w+)\s+grow\s*>\s*(.+?)\s*/s\s+over\s+(\S+)\s*$`)
)

const ruleForms = `want "SIGNAL > VALUE for D" or "SIGNAL grow > R/s over D" with SIGNAL one of goroutines, heap, sched_p99, slow_consumers`

// ParseRule reads a rule: "goroutines > 10000 for 2m", "heap > 2GiB for 1m",
// "sched_p99 > 50ms for 30s", "slow_consumers > 5/s for 1m",
// "goroutines grow > 50/s over 5m" or "heap grow > 1MiB/s over 10m".
func ParseRule(s string) (Rule, error) {
	bad := func(format string, a ...any) (Rule, error) {
		return Rule{}, fmt.Errorf("watchdog rule %q: %s", s, fmt.Sprintf(format, a...))
	}
	if m := growthRule.FindStringSubmatch(s); m != nil {
		sig := Signal(m[1])
		if sig != Goroutines && sig != Heap {
			return bad("only goroutines and heap have a growth rule")
		}
		r, err := sig.parse(m[2])
		if sig == Goroutines {
			r, err = strconv.ParseFloat(m[2], 64)
		}
		if err != nil || r <= 0 {
			return bad("bad rate %q", m[2])
		}
		d, err := time.ParseDuration(m[3])
		if err != nil || d <= 0 {
			return bad("bad window %q", m[3])
		}
		return Rule{Text: s, Signal: sig, PerSecond: r, Window: d}, nil
	}
	if m := thresholdRule.FindStringSubmatch(s); m != nil {
		sig := Signal(m[1])
		v, err := sig.parse(m[2])
		if err != nil {
			return bad("bad %s threshold %q: %v", sig, m[2], err)
		}
		d, err := time.ParseDuration(m[3])
		if err != nil || d <= 0 {
			return bad("bad duration %q", m[3])
		}
		return Rule{Text: s, Signal: sig, Above: v, For: d}, nil
	}
	return bad(ruleForms)
}

// sample is one reading of the signals.
type sample struct {
	at time.Time
	r  signals.Reading
}

// holds reports whether the rule holds over samples, oldest first, ending now.
func (r Rule) holds(samples []sample) bool {
	if len(samples) < 2 {
		return false
	}
	last := samples[len(samples)-1]
	if r.For > 0 {
		// Every sample within the last For is above, and the samples reach back that far.
		if last.at.Sub(samples[0].at) < r.For {
			return false
		}
		for i := len(samples) - 1; i >= 0 && last.at.Sub(samples[i].at) <= r.For; i-- {
			if r.Signal.of(samples[i].r) <= r.Above {
				return false
			}
		}
		return true
	}
	// Growth: from the newest sample at least nine tenths of the window old
	// to now. (Taking the oldest sample within the window instead missed
	// every window when the ticker ran a little late: the sample a whole
	// window back then fell just outside, and the next one was a second short.)
	for i := len(samples) - 2; i >= 0; i-- {
		if span := last.at.Sub(samples[i].at); span >= r.Window*9/10 {
			return (r.Signal.of(last.r)-r.Signal.of(samples[i].r))/span.Seconds() > r.PerSecond
		}
	}
	return false // not a whole window of readings yet
}

// span is how far back the rule looks.
func (r Rule) span() time.Duration { return max(r.For, r.Window) }

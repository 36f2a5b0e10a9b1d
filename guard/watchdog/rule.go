package watchdog

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Rule is a condition on the goroutine count that triggers a capture:
// more than Above goroutines held for For, or growth faster than PerSecond
// over Window.
type Rule struct {
	Text      string        // as written in the config
	Above     int           // threshold rule: goroutines > Above ...
	For       time.Duration // ... for this long
	PerSecond float64       // growth rule: goroutines grow > PerSecond/s ...
	Window    time.Duration // ... over this window
}

var (
	thresholdRule = regexp.MustCompile(`^\s*goroutines\s*>\s*(\d+)\s+for\s+(\S+)\s*$`)
	growthRule    = regexp.MustCompile(`^\s*goroutines\s+grow\s*>\s*([0-9.]+)\s*/s\s+over\s+(\S+)\s*$`)
)

// ParseRule reads "goroutines > 10000 for 2m" or "goroutines grow > 50/s over 5m".
func ParseRule(s string) (Rule, error) {
	if m := thresholdRule.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return Rule{}, fmt.Errorf("watchdog rule %q: %w", s, err)
		}
		d, err := time.ParseDuration(m[2])
		if err != nil || d <= 0 {
			return Rule{}, fmt.Errorf("watchdog rule %q: bad duration %q", s, m[2])
		}
		return Rule{Text: s, Above: n, For: d}, nil
	}
	if m := growthRule.FindStringSubmatch(s); m != nil {
		r, err := strconv.ParseFloat(m[1], 64)
		if err != nil || r <= 0 {
			return Rule{}, fmt.Errorf("watchdog rule %q: bad rate %q", s, m[1])
		}
		d, err := time.ParseDuration(m[2])
		if err != nil || d <= 0 {
			return Rule{}, fmt.Errorf("watchdog rule %q: bad window %q", s, m[2])
		}
		return Rule{Text: s, PerSecond: r, Window: d}, nil
	}
	return Rule{}, fmt.Errorf(`watchdog rule %q: want "goroutines > N for D" or "goroutines grow > R/s over D"`, s)
}

// sample is one reading of the goroutine count.
type sample struct {
	at time.Time
	n  int
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
			if samples[i].n <= r.Above {
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
			return float64(last.n-samples[i].n)/span.Seconds() > r.PerSecond
		}
	}
	return false // not a whole window of readings yet
}

// span is how far back the rule looks.
func (r Rule) span() time.Duration { return max(r.For, r.Window) }

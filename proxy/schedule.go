package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Schedule changes a proxy's faults over time. Its text form has one step
// per line; '#' starts a comment:
//
//	# at TIME [clear] [key=value ...]   TIME is counted from when the schedule starts
//	at 0s   latency=50ms jitter=10ms
//	at 5s   bandwidth=64KiB             # adds to the faults already in force
//	at 10s  stall-reads                 # a bare boolean key means =true
//	at 15s  stall-reads=false drop=0.5
//	at 20s  clear                       # back to no faults at all
//	at 25s  clear reset-after=2s        # clear, then set
//
// Keys are the flag names: latency, jitter, bandwidth, drop, reset-after,
// stall-reads, blackhole. Times must not decrease.
type Schedule []Step

// Step is one line of a Schedule: at At, optionally clear all faults, then
// apply each setting in order.
type Step struct {
	// At is the time since the schedule started.
	At time.Duration
	// Clear resets the faults to none before Set is applied.
	Clear bool
	// Set lists key/value settings, as accepted by Faults.Set.
	Set [][2]string
}

// Apply returns f changed by the step.
func (s Step) Apply(f Faults) (Faults, error) {
	if s.Clear {
		f = Faults{}
	}
	for _, kv := range s.Set {
		if err := f.Set(kv[0], kv[1]); err != nil {
			return f, err
		}
	}
	return f, nil
}

// ParseSchedule reads the text form described at Schedule, checking every
// key and value.
func ParseSchedule(r io.Reader) (Schedule, error) {
	var s Schedule
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if fields[0] != "at" || len(fields) < 2 {
			return nil, fmt.Errorf("schedule line %d: want \"at TIME key=value ...\", got %q", n, strings.TrimSpace(line))
		}
		at, err := time.ParseDuration(fields[1])
		if err != nil || at < 0 {
			return nil, fmt.Errorf("schedule line %d: time %q: want a duration like 5s", n, fields[1])
		}
		if len(s) > 0 && at < s[len(s)-1].At {
			return nil, fmt.Errorf("schedule line %d: time %v is before the previous step's %v", n, at, s[len(s)-1].At)
		}
		st := Step{At: at}
		rest := fields[2:]
		if len(rest) > 0 && rest[0] == "clear" {
			st.Clear, rest = true, rest[1:]
		}
		for _, kv := range rest {
			k, v, _ := strings.Cut(kv, "=")
			st.Set = append(st.Set, [2]string{k, v})
		}
		if !st.Clear && len(st.Set) == 0 {
			return nil, fmt.Errorf("schedule line %d: step at %v changes nothing", n, at)
		}
		if _, err := st.Apply(Faults{}); err != nil {
			return nil, fmt.Errorf("schedule line %d: %w", n, err)
		}
		s = append(s, st)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("schedule: %w", err)
	}
	return s, nil
}

// Run applies each step to p's faults at its time, counted from the call,
// and returns once the last step is applied or ctx is done.
func (s Schedule) Run(ctx context.Context, p *Proxy) error {
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i, st := range s {
		timer.Reset(time.Until(start.Add(st.At)))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		var applyErr error
		if err := p.UpdateFaults(func(f Faults) Faults {
			nf, err := st.Apply(f)
			if err != nil {
				applyErr = err
				return f
			}
			return nf
		}); err != nil || applyErr != nil {
			return fmt.Errorf("schedule step %d (at %v): %w", i+1, st.At, errors.Join(err, applyErr))
		}
		p.log.Info("proxy schedule step", "step", i+1, "at", st.At, "faults", p.Faults().String())
	}
	return nil
}

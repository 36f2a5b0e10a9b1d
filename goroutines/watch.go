package goroutines

import (
	"sort"
	"time"
)

// Growth is a group whose count grew between consecutive observations.
type Growth struct {
	Signature   string   `json:"signature"`
	TopFunction string   `json:"top_function"`
	TopFile     string   `json:"top_file"`
	TopLine     int      `json:"top_line"`
	State       string   `json:"state"`
	Count       int      `json:"count"`
	Delta       int      `json:"delta"`  // since the previous observation
	Streak      int      `json:"streak"` // consecutive observations in which it grew
	First       int      `json:"first"`  // count at the first observation (0 if absent)
	PerSecond   *float64 `json:"per_second,omitempty"`
}

// WatchStep is what one observation of a live process showed.
type WatchStep struct {
	Poll    int       `json:"poll"`
	Time    time.Time `json:"time"`
	Total   int       `json:"total"`
	Delta   int       `json:"delta"`
	Growing []Growth  `json:"growing"`
}

// Watcher follows group counts across successive reports of one process and
// says which groups keep growing. Memory grows with the number of distinct groups.
type Watcher struct {
	// MinStreak is how many consecutive growths make a group "growing"
	// (capped by the observations so far); 0 means 2.
	MinStreak int

	polls     int
	start     time.Time
	lastTotal int
	state     map[string]*watchState
}

type watchState struct {
	first, last, streak int
	seen                bool
}

// Observe records a report taken at t and returns the groups that keep growing.
func (w *Watcher) Observe(r *Report, t time.Time) WatchStep {
	if w.state == nil {
		w.state = map[string]*watchState{}
		w.start = t
	}
	w.polls++
	step := WatchStep{Poll: w.polls, Time: t, Total: r.Total, Growing: []Growth{}}
	if w.polls > 1 {
		step.Delta = r.Total - w.lastTotal
	}
	w.lastTotal = r.Total
	counts := map[string]int{}
	rep := map[string]*Group{}
	for i := range r.Groups {
		g := &r.Groups[i]
		counts[g.Signature] += g.Count
		if rep[g.Signature] == nil {
			rep[g.Signature] = g
		}
	}
	for _, s := range w.state {
		s.seen = false
	}
	need := w.MinStreak
	if need <= 0 {
		need = 2
	}
	need = min(need, w.polls-1)
	for sig, n := range counts {
		s := w.state[sig]
		if s == nil {
			s = &watchState{first: 0, last: 0}
			if w.polls == 1 {
				s.first, s.last = n, n
			}
			w.state[sig] = s
		}
		s.seen = true
		delta := n - s.last
		if w.polls > 1 && delta > 0 {
			s.streak++
		} else if w.polls > 1 {
			s.streak = 0
		}
		s.last = n
		if w.polls > 1 && delta > 0 && s.streak >= need {
			g := rep[sig]
			gr := Growth{Signature: sig, TopFunction: g.TopFunction, TopFile: g.TopFile, TopLine: g.TopLine,
				State: g.State, Count: n, Delta: delta, Streak: s.streak, First: s.first}
			if el := t.Sub(w.start).Seconds(); el > 0 {
				ps := float64(int64(float64(n-s.first)/el*1000)) / 1000
				gr.PerSecond = &ps
			}
			step.Growing = append(step.Growing, gr)
		}
	}
	for _, s := range w.state {
		if !s.seen {
			s.last, s.streak = 0, 0
		}
	}
	sort.Slice(step.Growing, func(i, j int) bool {
		x, y := step.Growing[i], step.Growing[j]
		if x.Streak != y.Streak {
			return x.Streak > y.Streak
		}
		if x.Delta != y.Delta {
			return x.Delta > y.Delta
		}
		return x.Signature < y.Signature
	})
	return step
}

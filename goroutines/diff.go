package goroutines

import (
	"sort"
	"time"
)

// DiffGroup is one group matched across two dumps.
type DiffGroup struct {
	Before      int      `json:"before"`
	After       int      `json:"after"`
	Delta       int      `json:"delta"`
	ShareBefore float64  `json:"share_before"` // fraction of all goroutines, 0..1
	ShareAfter  float64  `json:"share_after"`
	PerSecond   *float64 `json:"per_second,omitempty"` // delta / interval, when the interval is known
	Status      string   `json:"status"`               // appeared, disappeared, grew, shrank or unchanged
	TopFunction string   `json:"top_function"`
	TopFile     string   `json:"top_file"`
	TopLine     int      `json:"top_line"`
	State       string   `json:"state"`
	CreatedBy   string   `json:"created_by"`
	Signature   string   `json:"signature"`
	Stack       []Frame  `json:"stack"`
}

// DiffReport compares two reports. Its JSON form is the documented
// `spindle goroutines diff --json` schema.
type DiffReport struct {
	Grouping        string      `json:"grouping"`
	BeforeTotal     int         `json:"before_total"`
	AfterTotal      int         `json:"after_total"`
	Delta           int         `json:"delta"`
	IntervalSeconds float64     `json:"interval_seconds,omitempty"`
	Groups          []DiffGroup `json:"groups"`
	// Truncated and Partial repeat the inputs' own marks ("before: …",
	// "after: …"): counts from a cut or partly read dump are lower bounds.
	Truncated []string `json:"truncated,omitempty"`
	Partial   []string `json:"partial,omitempty"`
}

// Diff matches groups of two reports by [Signature] (functions, files and
// lines outside the runtime), so goroutine ids, argument values and the dump
// format do not matter, and sorts them by delta, largest growth first. interval is the
// time between the dumps; when 0 it is taken from the reports' timestamps.
func Diff(before, after *Report, interval time.Duration) *DiffReport {
	if interval <= 0 && before.Time != nil && after.Time != nil {
		interval = after.Time.Sub(*before.Time)
	}
	d := &DiffReport{Grouping: "signature (functions, files and lines outside package runtime and wrappers)",
		BeforeTotal: before.Total, AfterTotal: after.Total, Delta: after.Total - before.Total}
	if interval > 0 {
		d.IntervalSeconds = interval.Seconds()
	}
	for _, in := range []struct {
		name string
		r    *Report
	}{{"before", before}, {"after", after}} {
		if in.r.Truncated != nil {
			d.Truncated = append(d.Truncated, in.name+": "+in.r.Truncated.Reason)
		}
		if in.r.Partial {
			d.Partial = append(d.Partial, in.name+": "+in.r.PartialReason)
		}
	}
	idx := map[string]int{}
	add := func(g *Group, after bool) {
		i, ok := idx[g.Signature]
		if !ok {
			i = len(d.Groups)
			idx[g.Signature] = i
			d.Groups = append(d.Groups, DiffGroup{
				TopFunction: g.TopFunction, TopFile: g.TopFile, TopLine: g.TopLine,
				State: g.State, CreatedBy: g.CreatedBy, Signature: g.Signature, Stack: g.Stack,
			})
		}
		if after {
			d.Groups[i].After += g.Count
			if st := d.Groups[i].State; st == "unknown" || st == StateChanOrSelect { // debug=1 before, a traceback after
				d.Groups[i].State = g.State
			}
		} else {
			d.Groups[i].Before += g.Count
		}
	}
	for i := range before.Groups {
		add(&before.Groups[i], false)
	}
	for i := range after.Groups {
		add(&after.Groups[i], true)
	}
	for i := range d.Groups {
		g := &d.Groups[i]
		g.Delta = g.After - g.Before
		g.ShareBefore = share(g.Before, before.Total)
		g.ShareAfter = share(g.After, after.Total)
		if d.IntervalSeconds > 0 {
			ps := float64(g.Delta) / d.IntervalSeconds
			g.PerSecond = &ps
		}
		switch {
		case g.Before == 0:
			g.Status = "appeared"
		case g.After == 0:
			g.Status = "disappeared"
		case g.Delta > 0:
			g.Status = "grew"
		case g.Delta < 0:
			g.Status = "shrank"
		default:
			g.Status = "unchanged"
		}
	}
	sort.SliceStable(d.Groups, func(i, j int) bool {
		x, y := d.Groups[i], d.Groups[j]
		if x.Delta != y.Delta {
			return x.Delta > y.Delta
		}
		if x.After != y.After {
			return x.After > y.After
		}
		return x.Signature < y.Signature
	})
	if d.Groups == nil {
		d.Groups = []DiffGroup{}
	}
	return d
}

func share(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return float64(int64(float64(n)/float64(total)*10000)) / 10000
}

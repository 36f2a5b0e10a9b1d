// Package report renders goroutine-dump analyses as terminal text and as a
// self-contained HTML page.
package report

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spindlehq/spindle/goroutines"
)

// TextOptions control text output.
type TextOptions struct {
	Color  bool // ANSI colours (use only for terminals)
	Groups int  // groups to print; 0 means 20, negative means all
	Frames int  // stack frames printed per group; 0 means 10, negative means all
}

func (o TextOptions) groups(n int) int {
	switch {
	case o.Groups < 0:
		return n
	case o.Groups == 0:
		return min(n, 20)
	}
	return min(n, o.Groups)
}

type painter struct {
	on bool
}

func (p painter) c(code, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}
func (p painter) bold(s string) string   { return p.c("1", s) }
func (p painter) red(s string) string    { return p.c("31", s) }
func (p painter) yellow(s string) string { return p.c("33", s) }
func (p painter) cyan(s string) string   { return p.c("36", s) }
func (p painter) dim(s string) string    { return p.c("2", s) }

// WriteText writes a readable summary of r: states, leak suspects, blocking
// patterns and the largest groups with their stacks.
func WriteText(w io.Writer, r *goroutines.Report, o TextOptions) error {
	bw := bufio.NewWriter(w)
	p := painter{o.Color}
	src := r.Source
	if src == "" {
		src = "-"
	}
	fmt.Fprintf(bw, "%s %s  format %s  lines %d  skipped %d\n", p.bold("dump"), src, r.Format, r.Lines, r.SkippedLines)
	for _, l := range r.Reason {
		fmt.Fprintf(bw, "%s %s\n", p.red("reason"), l)
	}
	fmt.Fprintf(bw, "%s goroutines in %d groups (grouping %s)\n", p.bold(fmt.Sprint(r.Total)), len(r.Groups), r.GroupingNote)
	if r.DeclaredTotal > 0 && r.DeclaredTotal != r.Total {
		fmt.Fprintf(bw, "%s profile header says total %d\n", p.yellow("note"), r.DeclaredTotal)
	}
	if r.Truncated != nil {
		fmt.Fprintf(bw, "%s %s\n", p.red("TRUNCATED"), truncationText(r))
	}
	if r.Partial {
		fmt.Fprintf(bw, "%s input read only in part, the counts cover what was read: %s\n", p.red("PARTIAL"), r.PartialReason)
	}
	if len(r.RunningTests) > 0 {
		fmt.Fprintf(bw, "%s %s\n", p.bold("running tests"), strings.Join(r.RunningTests, ", "))
	}

	fmt.Fprintf(bw, "\n%s\n", p.bold("STATES"))
	type kv struct {
		k string
		v int
	}
	var states []kv
	width := 0
	for k, v := range r.States {
		states = append(states, kv{k, v})
		width = max(width, len(k))
	}
	sort.Slice(states, func(i, j int) bool {
		if states[i].v != states[j].v {
			return states[i].v > states[j].v
		}
		return states[i].k < states[j].k
	})
	for _, s := range states {
		bar := 0
		if r.Total > 0 {
			bar = (s.v*40 + r.Total - 1) / r.Total
		}
		fmt.Fprintf(bw, "  %-*s %8d  %s\n", width, s.k, s.v, p.cyan(strings.Repeat("█", bar)))
	}

	if len(r.Suspects) > 0 {
		fmt.Fprintf(bw, "\n%s\n", p.bold("LEAK SUSPECTS (most likely first)"))
		for i, s := range r.Suspects {
			fmt.Fprintf(bw, "  %d. %s %s\n", i+1, p.red(fmt.Sprintf("group #%d", s.Group)), s.Reason)
		}
	}
	if len(r.PerConnection) > 0 {
		fmt.Fprintf(bw, "\n%s\n", p.bold("PER CONNECTION (not leak suspects)"))
		for _, pc := range r.PerConnection {
			fmt.Fprintf(bw, "  - %s %s\n", pc.Text, p.dim(groupList([]int{pc.Group})))
		}
	}
	if len(r.Patterns) > 0 {
		fmt.Fprintf(bw, "\n%s\n", p.bold("BLOCKING PATTERNS"))
		for _, pt := range r.Patterns {
			fmt.Fprintf(bw, "  - %s %s\n", pt.Text, p.dim(groupList(pt.Groups)))
		}
	}
	if r.SkippedLines > 0 {
		fmt.Fprintf(bw, "\n%s %d lines could not be parsed; first ones:\n", p.yellow("SKIPPED"), r.SkippedLines)
		for i, s := range r.Skipped {
			if i == 5 {
				break
			}
			fmt.Fprintf(bw, "  line %d: %q\n", s.Line, s.Text)
		}
	}

	n := o.groups(len(r.Groups))
	fmt.Fprintf(bw, "\n%s\n", p.bold(fmt.Sprintf("GROUPS (largest first; %d of %d)", n, len(r.Groups))))
	for _, g := range r.Groups[:n] {
		writeGroup(bw, p, &g, o.Frames)
	}
	return bw.Flush()
}

// truncationText says why r's dump is cut and, when known, how many
// goroutines the cut left out.
func truncationText(r *goroutines.Report) string {
	t := r.Truncated
	s := t.Reason
	if t.TrueTotal > 0 {
		s += fmt.Sprintf("; the debug=1 profile of the same URL counts %d goroutines, %d missing here", t.TrueTotal, t.Missing)
	} else {
		s += "; the counts below are lower bounds"
	}
	return s
}

func groupList(ids []int) string {
	var s []string
	for _, id := range ids {
		s = append(s, fmt.Sprintf("#%d", id))
	}
	return "(" + strings.Join(s, " ") + ")"
}

func writeGroup(w io.Writer, p painter, g *goroutines.Group, frames int) {
	state := g.State
	if g.StateInferred {
		state += " (inferred)"
	}
	if g.Leaked > 0 {
		state += fmt.Sprintf(", %d leaked", g.Leaked)
	}
	wait := ""
	if g.WaitMinutesMax > 0 {
		wait = fmt.Sprintf("  waiting %d-%d min", g.WaitMinutesMin, g.WaitMinutesMax)
	}
	fmt.Fprintf(w, "\n%s %s %s%s  %s %s\n", p.bold(fmt.Sprintf("#%d", g.ID)), p.bold(fmt.Sprintf("%d ×", g.Count)),
		p.yellow("["+state+"]"), wait, p.cyan(g.TopFunction), p.dim(short(g.TopFile, g.TopLine)))
	if g.CreatedBy != "" {
		cg := ""
		if len(g.CreatorGroups) > 0 {
			cg = " " + groupList(g.CreatorGroups)
		}
		fmt.Fprintf(w, "    created by %s %s%s\n", g.CreatedBy, p.dim(short(g.CreatedByFile, g.CreatedByLine)), cg)
	}
	if len(g.Wait) > 1 || g.WaitMinutesMax > 0 {
		var parts []string
		for _, b := range g.Wait {
			parts = append(parts, fmt.Sprintf("%s:%d", b.Bucket, b.Count))
		}
		fmt.Fprintf(w, "    waited   %s\n", strings.Join(parts, "  "))
	}
	for i, l := range g.Labels {
		if i == 5 {
			fmt.Fprintf(w, "    labels   … %d more sets\n", len(g.Labels)-5)
			break
		}
		fmt.Fprintf(w, "    labels   %s × %d\n", l.Labels, l.Count)
	}
	limit := frames
	if limit == 0 {
		limit = 10
	}
	if limit < 0 {
		limit = len(g.Stack)
	}
	for i, f := range g.Stack {
		if i == limit {
			fmt.Fprintf(w, "      %s\n", p.dim(fmt.Sprintf("… %d more frames", len(g.Stack)-limit)))
			break
		}
		name := f.Function
		if !goroutines.IsStdlib(f) {
			name = p.cyan(name)
		}
		fmt.Fprintf(w, "      %s\n          %s\n", name, p.dim(fmt.Sprintf("%s:%d", f.File, f.Line)))
	}
	if g.ElidedFrames > 0 {
		fmt.Fprintf(w, "      %s\n", p.dim(fmt.Sprintf("… %d frames elided by the runtime", g.ElidedFrames)))
	}
}

func short(file string, line int) string {
	if file == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", filepath.Base(file), line)
}

// WriteDiffText writes which groups appeared, disappeared, grew or shrank.
func WriteDiffText(w io.Writer, d *goroutines.DiffReport, o TextOptions) error {
	bw := bufio.NewWriter(w)
	p := painter{o.Color}
	fmt.Fprintf(bw, "%s %d → %d goroutines (%+d)", p.bold("diff"), d.BeforeTotal, d.AfterTotal, d.Delta)
	if d.IntervalSeconds > 0 {
		fmt.Fprintf(bw, " over %.0fs (%+.2f/s)", d.IntervalSeconds, float64(d.Delta)/d.IntervalSeconds)
	}
	fmt.Fprintf(bw, "\n%s\n", p.dim("groups matched by "+d.Grouping))
	for _, t := range d.Truncated {
		fmt.Fprintf(bw, "%s %s\n", p.red("TRUNCATED"), t)
	}
	for _, t := range d.Partial {
		fmt.Fprintf(bw, "%s %s\n", p.red("PARTIAL"), t)
	}
	fmt.Fprintln(bw)
	n := o.groups(len(d.Groups))
	fmt.Fprintf(bw, "%8s %8s %8s  %-11s %s\n", "BEFORE", "AFTER", "DELTA", "STATUS", "GROUP")
	for _, g := range d.Groups[:n] {
		delta := fmt.Sprintf("%+d", g.Delta)
		switch {
		case g.Delta > 0:
			delta = p.red(fmt.Sprintf("%8s", delta))
		case g.Delta < 0:
			delta = p.cyan(fmt.Sprintf("%8s", delta))
		default:
			delta = fmt.Sprintf("%8s", delta)
		}
		rate := ""
		if g.PerSecond != nil && g.Delta != 0 {
			rate = fmt.Sprintf("  %+.2f/s", *g.PerSecond)
		}
		fmt.Fprintf(bw, "%8d %8d %s  %-11s [%s] %s %s%s\n", g.Before, g.After, delta, g.Status, g.State,
			g.TopFunction, p.dim(short(g.TopFile, g.TopLine)), rate)
	}
	if n < len(d.Groups) {
		fmt.Fprintf(bw, "… %d more groups\n", len(d.Groups)-n)
	}
	return bw.Flush()
}

// WriteWatchText writes one watch observation: totals and the groups that keep growing.
func WriteWatchText(w io.Writer, s goroutines.WatchStep, o TextOptions) error {
	bw := bufio.NewWriter(w)
	p := painter{o.Color}
	fmt.Fprintf(bw, "%s poll %d: %d goroutines", s.Time.Format("15:04:05"), s.Poll, s.Total)
	if s.Poll > 1 {
		fmt.Fprintf(bw, " (%+d)", s.Delta)
	}
	fmt.Fprintln(bw)
	for i, g := range s.Growing {
		if n := o.groups(len(s.Growing)); i == n {
			fmt.Fprintf(bw, "  … %d more growing groups\n", len(s.Growing)-n)
			break
		}
		rate := ""
		if g.PerSecond != nil {
			rate = fmt.Sprintf(", %.2f/s since start", *g.PerSecond)
		}
		fmt.Fprintf(bw, "  %s %d (%+d, growing %d polls%s) [%s] %s %s\n", p.red("growing"), g.Count, g.Delta,
			g.Streak, rate, g.State, g.TopFunction, p.dim(short(g.TopFile, g.TopLine)))
	}
	return bw.Flush()
}

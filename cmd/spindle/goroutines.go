package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spindlehq/spindle/goroutines"
	"github.com/spindlehq/spindle/goroutines/report"
)

const goroutinesUsage = `usage: spindle goroutines <command> [flags] ...

  analyze [--json] [--html FILE] [--group loose|exact] [--timeout 60s] [--allow-partial] DUMP
        group a goroutine dump and explain what is stuck, on what, since when
  diff [--json] [--html FILE] [--interval DUR] [--timeout 60s] [--allow-partial] BEFORE AFTER
        show which groups appeared, disappeared, grew or shrank
  watch [--every 10s] [--count N] [--streak 2] [--timeout 60s] [--json] URL
        poll a live /debug/pprof/goroutine endpoint and print growing groups

DUMP is a file (gzip accepted), - for stdin, or an http(s) pprof URL. Input
read only in part (corrupt gzip, broken or stalled HTTP body) exits 1 unless
--allow-partial; a dump the runtime cut at 64 MiB is reported as truncated.
Run "spindle goroutines <command> -h" for the flags of a command.
`

// runGoroutines dispatches "spindle goroutines analyze|diff|watch".
func runGoroutines(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, goroutinesUsage)
		return 2
	}
	switch args[0] {
	case "analyze":
		return goroutinesAnalyze(ctx, args[1:], stdout, stderr)
	case "diff":
		return goroutinesDiff(ctx, args[1:], stdout, stderr)
	case "watch":
		return goroutinesWatch(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, goroutinesUsage)
		return 0
	}
	fmt.Fprintf(stderr, "spindle goroutines: unknown command %q\n\n%s", args[0], goroutinesUsage)
	return 2
}

type outputFlags struct {
	json   *bool
	html   *string
	color  *string
	groups *int
	frames *int
}

func addOutputFlags(fs *flag.FlagSet, html bool) outputFlags {
	o := outputFlags{
		json:   fs.Bool("json", false, "print JSON (schema in docs/goroutines.md) instead of text"),
		color:  fs.String("color", "auto", "colour text output: auto (when stdout is a terminal), always or never"),
		groups: fs.Int("top", 20, "groups to print in text output; -1 for all"),
		frames: fs.Int("frames", 10, "stack frames per group in text output; -1 for all"),
	}
	if html {
		o.html = fs.String("html", "", "also write a self-contained HTML report to this file")
	}
	return o
}

func (o outputFlags) text(stdout io.Writer) (report.TextOptions, error) {
	t := report.TextOptions{Groups: *o.groups, Frames: *o.frames}
	if t.Groups == 0 {
		t.Groups = -1 // --top 0 would print nothing useful; treat as all
	}
	switch *o.color {
	case "always":
		t.Color = true
	case "never":
	case "auto":
		t.Color = isTerminal(stdout) && os.Getenv("NO_COLOR") == ""
	default:
		return t, fmt.Errorf("--color must be auto, always or never, not %q", *o.color)
	}
	return t, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// inputFlags are the flags about reading dumps.
type inputFlags struct {
	timeout      *time.Duration
	allowPartial *bool
}

func addInputFlags(fs *flag.FlagSet, partial bool) inputFlags {
	in := inputFlags{timeout: fs.Duration("timeout", 60*time.Second, "HTTP timeout for fetching a dump from a URL, including reading the body")}
	if partial {
		in.allowPartial = fs.Bool("allow-partial", false, "exit 0 even when the input could only be read in part (corrupt gzip, broken HTTP body); the report says \"partial\": true either way")
	}
	return in
}

// check rejects a timeout that would never let a fetch finish or never end one.
func (in inputFlags) check() error {
	if *in.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %s", *in.timeout)
	}
	return nil
}

func (in inputFlags) client() *http.Client { return &http.Client{Timeout: *in.timeout} }

// errPartial is returned (with the report) when the input was read in part.
var errPartial = errors.New("partial input")

// loadReport opens and analyzes one dump. A read error after some input
// marks the report partial and is returned as errPartial with it.
func loadReport(ctx context.Context, name string, mode goroutines.GroupMode, client *http.Client, stderr io.Writer) (*goroutines.Report, error) {
	src, err := goroutines.Open(ctx, name, client)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	r, err := goroutines.Analyze(src, goroutines.Options{Mode: mode})
	if err != nil { // r is marked partial
		if r.Total == 0 {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(stderr, "spindle goroutines: warning: %s: partial input: %v (analyzed what was read)\n", name, err)
	}
	if r.Truncated != nil {
		if isURL(name) {
			if err := trueTotal(ctx, name, client, r); err != nil {
				fmt.Fprintf(stderr, "spindle goroutines: warning: %s: %v\n", name, err)
			}
		}
		fmt.Fprintf(stderr, "spindle goroutines: warning: %s: dump is truncated: %s\n", name, r.Truncated.Reason)
	}
	r.Source = src.Name
	if r.Time == nil && !src.Time.IsZero() {
		t := src.Time
		r.Time = &t
	}
	if r.Total == 0 {
		fmt.Fprintf(stderr, "spindle goroutines: warning: %s: no goroutines found (%d lines skipped)\n", name, r.SkippedLines)
	}
	if r.Partial {
		return r, errPartial
	}
	return r, nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// trueTotal fetches the debug=1 profile of a live URL whose debug=2 dump was
// cut, for the real goroutine count.
func trueTotal(ctx context.Context, name string, client *http.Client, r *goroutines.Report) error {
	u, err := url.Parse(name)
	if err != nil {
		return fmt.Errorf("counting the goroutines of the cut dump: %w", err)
	}
	q := u.Query()
	q.Set("debug", "1")
	u.RawQuery = q.Encode()
	src, err := goroutines.Open(ctx, u.String(), client)
	if err != nil {
		return fmt.Errorf("counting the goroutines of the cut dump: %w", err)
	}
	defer src.Close()
	d1, err := goroutines.Analyze(src, goroutines.Options{})
	if err != nil {
		return fmt.Errorf("counting the goroutines of the cut dump from %s: %w", u, err)
	}
	if d1.Total == 0 {
		return fmt.Errorf("counting the goroutines of the cut dump: %s has no goroutine profile", u)
	}
	r.Truncated.TrueTotal = max(d1.DeclaredTotal, d1.Total)
	r.Truncated.Missing = max(0, r.Truncated.TrueTotal-r.Total)
	return nil
}

// partialOK turns a loadReport result into an error unless partial input
// is allowed.
func partialOK(err error, in inputFlags) error {
	if errors.Is(err, errPartial) && in.allowPartial != nil && *in.allowPartial {
		return nil
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeHTMLFile(path string, r *goroutines.Report, d *goroutines.DiffReport, after *goroutines.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating HTML report: %w", err)
	}
	err = report.WriteHTML(f, report.HTMLInput{Report: r, Diff: d, After: after})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing HTML report: %w", cerr)
	}
	return err
}

func goroutinesAnalyze(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("goroutines analyze", "[flags] DUMP", `Groups the goroutines of a dump and explains what is stuck, on what, since when.
DUMP is a file (gzip accepted), - for stdin, or an http(s) pprof URL.`)
	out := addOutputFlags(fs, true)
	in := addInputFlags(fs, true)
	group := fs.String("group", "loose", "grouping: loose (ignore argument values and offsets) or exact")
	pos, code, ok := parseFlags(fs, args, true, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "spindle goroutines analyze: want exactly one dump (file, - or URL)")
		return 2
	}
	mode, err := goroutines.ParseGroupMode(*group)
	if err == nil {
		err = in.check()
	}
	if err != nil {
		fmt.Fprintln(stderr, "spindle goroutines analyze:", err)
		return 2
	}
	topts, err := out.text(stdout)
	if err != nil {
		fmt.Fprintln(stderr, "spindle goroutines analyze:", err)
		return 2
	}
	r, loadErr := loadReport(ctx, pos[0], mode, in.client(), stderr)
	if r == nil {
		fmt.Fprintln(stderr, "spindle goroutines analyze:", loadErr)
		return 1
	}
	if *out.html != "" {
		if err := writeHTMLFile(*out.html, r, nil, nil); err != nil {
			fmt.Fprintln(stderr, "spindle goroutines analyze:", err)
			return 1
		}
	}
	if *out.json {
		err = writeJSON(stdout, r)
	} else {
		err = report.WriteText(stdout, r, topts)
	}
	if err != nil {
		fmt.Fprintln(stderr, "spindle goroutines analyze:", err)
		return 1
	}
	if err := partialOK(loadErr, in); err != nil {
		fmt.Fprintln(stderr, "spindle goroutines analyze: input was read only in part (the report says \"partial\": true); pass --allow-partial to exit 0")
		return 1
	}
	return 0
}

func goroutinesDiff(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("goroutines diff", "[flags] BEFORE AFTER", `Shows which groups of goroutines appeared, disappeared, grew or shrank between
two dumps (files, gzip accepted, - for stdin, or http(s) pprof URLs).`)
	out := addOutputFlags(fs, true)
	in := addInputFlags(fs, true)
	interval := fs.Duration("interval", 0, "time between the dumps, for growth per second (default: from timestamps in the dumps or fetch times of URLs)")
	pos, code, ok := parseFlags(fs, args, true, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "spindle goroutines diff: want two dumps: BEFORE AFTER")
		return 2
	}
	if *interval < 0 {
		fmt.Fprintln(stderr, "spindle goroutines diff: --interval must not be negative")
		return 2
	}
	if err := in.check(); err != nil {
		fmt.Fprintln(stderr, "spindle goroutines diff:", err)
		return 2
	}
	topts, err := out.text(stdout)
	if err != nil {
		fmt.Fprintln(stderr, "spindle goroutines diff:", err)
		return 2
	}
	before, err := loadReport(ctx, pos[0], goroutines.Loose, in.client(), stderr)
	if err = partialOK(err, in); err != nil {
		fmt.Fprintln(stderr, "spindle goroutines diff:", err)
		return 1
	}
	after, err := loadReport(ctx, pos[1], goroutines.Loose, in.client(), stderr)
	if err = partialOK(err, in); err != nil {
		fmt.Fprintln(stderr, "spindle goroutines diff:", err)
		return 1
	}
	d := goroutines.Diff(before, after, *interval)
	if *out.html != "" {
		if err := writeHTMLFile(*out.html, before, d, after); err != nil {
			fmt.Fprintln(stderr, "spindle goroutines diff:", err)
			return 1
		}
	}
	if *out.json {
		err = writeJSON(stdout, d)
	} else {
		err = report.WriteDiffText(stdout, d, topts)
	}
	if err != nil {
		fmt.Fprintln(stderr, "spindle goroutines diff:", err)
		return 1
	}
	return 0
}

func goroutinesWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("goroutines watch", "[flags] URL", `Polls a live /debug/pprof/goroutine endpoint and prints the groups that keep growing.`)
	out := addOutputFlags(fs, false)
	in := addInputFlags(fs, false)
	every := fs.Duration("every", 10*time.Second, "polling interval")
	count := fs.Int("count", 0, "stop after this many polls; 0 polls until interrupted")
	streak := fs.Int("streak", 2, "consecutive growths before a group is reported as growing")
	pos, code, ok := parseFlags(fs, args, true, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "spindle goroutines watch: want one http(s) URL of /debug/pprof/goroutine")
		return 2
	}
	if *every <= 0 || *count < 0 || *streak < 1 || *in.timeout <= 0 {
		fmt.Fprintln(stderr, "spindle goroutines watch: --every and --timeout must be positive, --count ≥ 0, --streak ≥ 1")
		return 2
	}
	url := pos[0]
	if len(url) < 7 || (url[:7] != "http://" && (len(url) < 8 || url[:8] != "https://")) {
		fmt.Fprintln(stderr, "spindle goroutines watch: the dump must be an http(s) URL")
		return 2
	}
	topts, err := out.text(stdout)
	if err != nil {
		fmt.Fprintln(stderr, "spindle goroutines watch:", err)
		return 2
	}
	w := &goroutines.Watcher{MinStreak: *streak}
	tick := time.NewTicker(*every)
	defer tick.Stop()
	failures := 0
	for poll := 1; *count == 0 || poll <= *count; poll++ {
		if poll > 1 {
			select {
			case <-ctx.Done():
				return 0
			case <-tick.C:
			}
		}
		r, err := loadReport(ctx, url, goroutines.Loose, in.client(), io.Discard)
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return 0
			}
			failures++
			fmt.Fprintln(stderr, "spindle goroutines watch:", err)
			if failures >= 3 {
				return 1
			}
			continue
		}
		failures = 0
		step := w.Observe(r, time.Now())
		if *out.json {
			err = json.NewEncoder(stdout).Encode(step)
		} else {
			err = report.WriteWatchText(stdout, step, topts)
		}
		if err != nil {
			fmt.Fprintln(stderr, "spindle goroutines watch:", err)
			return 1
		}
	}
	return 0
}

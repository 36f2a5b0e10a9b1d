// Package watchdog captures the evidence when the gateway goes wrong: a
// goroutine dump, a heap profile and a short CPU profile, kept in a
// rotating archive and diffed against the previous capture so the log
// names the code that grew. Captures come from rules on the goroutine
// count, the heap, scheduler latency and the slow-consumer rate (sampled
// every second), from SIGUSR2, from POST /debug/capture and from an
// Alertmanager webhook.
package watchdog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/goroutines"
	"github.com/spindlehq/spindle/guard/signals"
	"github.com/spindlehq/spindle/guard/task"
)

// Config sets up a Watchdog.
type Config struct {
	Dir         string        // the archive; one folder per capture
	MaxCaptures int           // captures kept; 0: 10
	MaxBytes    int64         // bytes kept in all; 0: 256 MiB
	CPUProfile  time.Duration // length of the CPU profile of a capture; 0: 2 s, <0: none
	Cooldown    time.Duration // least time between two captures a rule triggers; 0: 1 m
	Rules       []Rule
	Gateway     func() signals.Gateway // the gateway's load, for slow_consumers rules; nil: none
	Webhook     string                 // POSTed a capture's JSON when set
	Logger      *slog.Logger
	Registry    prometheus.Registerer // nil: metrics kept but not exported
}

// Capture is one entry of the archive.
type Capture struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Reason    string    `json:"reason"`
	Files     []string  `json:"files"`
	Total     int       `json:"goroutines"`
	TopGrowth []Growth  `json:"top_growth"`
}

// Growth is a goroutine group that grew since the previous capture.
type Growth struct {
	Function  string   `json:"function"`
	State     string   `json:"state"`
	Delta     int      `json:"delta"`
	After     int      `json:"after"`
	PerSecond *float64 `json:"per_second,omitempty"`
}

// Watchdog is built with New, run with Start and stopped with Stop.
type Watchdog struct {
	cfg      Config
	log      *slog.Logger
	tasks    *task.Group
	captures *prometheus.CounterVec
	hooks    chan Capture // to the webhook sender; full: dropped with a log line

	mu        sync.Mutex // guards the fields below and serializes captures
	seq       int
	last      *goroutines.Report // of the previous capture (or of Start)
	lastAt    time.Time
	lastRule  time.Time // when a rule last captured
	samples   []sample
	cpuActive bool

	sampler signals.Sampler // owned by the run goroutine
}

// New prepares a watchdog; it makes the archive folder.
func New(cfg Config) (*Watchdog, error) {
	if cfg.Dir == "" {
		return nil, errors.New("watchdog: no capture dir")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("watchdog: capture dir: %w", err)
	}
	if cfg.MaxCaptures <= 0 {
		cfg.MaxCaptures = 10
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.CPUProfile == 0 {
		cfg.CPUProfile = 2 * time.Second
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watchdog{
		cfg: cfg, log: cfg.Logger, tasks: task.NewGroup(context.Background()), hooks: make(chan Capture, 8),
		sampler: signals.Sampler{Gateway: cfg.Gateway},
		captures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_watchdog_captures_total", Help: "Captures taken by the watchdog, by trigger.",
		}, []string{"trigger"}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(w.captures)
	}
	return w, nil
}

// Start takes the baseline the first capture is diffed against and starts
// sampling the goroutine count (and the webhook sender).
func (w *Watchdog) Start() {
	if rep, err := dumpReport(); err == nil {
		w.mu.Lock()
		w.last, w.lastAt = rep, time.Now()
		w.mu.Unlock()
	}
	w.tasks.Every("guard.watchdog", time.Second, w.tick)
	if w.cfg.Webhook != "" {
		w.tasks.Go("guard.watchdog.webhook", w.sendHooks)
	}
}

// Stop ends the watchdog's goroutines, waiting for a CPU profile in progress.
func (w *Watchdog) Stop() { w.tasks.Stop() }

// Dir is where the captures are kept.
func (w *Watchdog) Dir() string { return w.cfg.Dir }

// tick samples the signals once a second and captures when a rule holds.
func (w *Watchdog) tick(_ context.Context, now time.Time) {
	if r, ok := w.observe(now, w.sampler.Read(now)); ok {
		if _, err := w.Capture("rule: " + r.Text); err != nil {
			w.log.Error("watchdog capture", "rule", r.Text, "err", err)
		}
	}
}

// observe records a sample and returns the first rule that holds, unless a
// rule captured within the cooldown.
func (w *Watchdog) observe(now time.Time, r signals.Reading) (Rule, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, sample{now, r})
	keep := time.Duration(0)
	for _, r := range w.cfg.Rules {
		keep = max(keep, r.span())
	}
	i := 0
	for i < len(w.samples)-2 && now.Sub(w.samples[i+1].at) > keep {
		i++
	}
	w.samples = w.samples[i:]
	if now.Sub(w.lastRule) < w.cfg.Cooldown {
		return Rule{}, false
	}
	for _, r := range w.cfg.Rules {
		if r.holds(w.samples) {
			w.lastRule = now
			return r, true
		}
	}
	return Rule{}, false
}

// Capture writes a goroutine dump and a heap profile now, and a CPU
// profile in the background; it diffs the dump against the previous
// capture, announces it, and returns it.
func (w *Watchdog) Capture(reason string) (Capture, error) {
	trigger, _, _ := strings.Cut(reason, ":")
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	now := time.Now()
	c := Capture{ID: fmt.Sprintf("%s-%03d", now.UTC().Format("20060102T150405Z"), w.seq), Time: now, Reason: reason, TopGrowth: []Growth{}}
	dir := filepath.Join(w.cfg.Dir, c.ID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return c, fmt.Errorf("watchdog: %w", err)
	}
	var dump bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&dump, 2); err != nil {
		return c, fmt.Errorf("watchdog: goroutine dump: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "goroutine.txt"), dump.Bytes(), 0o640); err != nil {
		return c, fmt.Errorf("watchdog: %w", err)
	}
	c.Files = append(c.Files, "goroutine.txt")
	var heap bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&heap, 0); err == nil && os.WriteFile(filepath.Join(dir, "heap.pprof"), heap.Bytes(), 0o640) == nil {
		c.Files = append(c.Files, "heap.pprof")
	}
	rep, err := goroutines.Analyze(&dump, goroutines.Options{})
	if err == nil {
		c.Total = rep.Total
		if w.last != nil {
			d := goroutines.Diff(w.last, rep, now.Sub(w.lastAt))
			for _, g := range d.Groups {
				if g.Delta <= 0 || len(c.TopGrowth) == 3 {
					break
				}
				c.TopGrowth = append(c.TopGrowth, Growth{Function: g.TopFunction, State: g.State, Delta: g.Delta, After: g.After, PerSecond: g.PerSecond})
			}
		}
		w.last, w.lastAt = rep, now
		if js, err := json.MarshalIndent(rep, "", "  "); err == nil && os.WriteFile(filepath.Join(dir, "goroutine-report.json"), js, 0o640) == nil {
			c.Files = append(c.Files, "goroutine-report.json")
		}
	}
	if w.cfg.CPUProfile > 0 && !w.cpuActive {
		w.cpuActive = true
		c.Files = append(c.Files, "cpu.pprof")
		w.tasks.Go("guard.watchdog.cpu", func(ctx context.Context) { w.cpuProfile(ctx, dir) })
	}
	if err := writeMeta(dir, c); err != nil {
		return c, err
	}
	w.rotate()
	w.captures.WithLabelValues(trigger).Inc()
	w.log.Warn("watchdog capture", "id", c.ID, "reason", reason, "goroutines", c.Total, "top_growth", growthText(c.TopGrowth), "dir", dir)
	if w.cfg.Webhook != "" {
		select {
		case w.hooks <- c:
		default:
			w.log.Warn("watchdog webhook queue full; capture not announced", "id", c.ID)
		}
	}
	return c, nil
}

func growthText(gs []Growth) string {
	var parts []string
	for _, g := range gs {
		s := fmt.Sprintf("%s +%d", g.Function, g.Delta)
		if g.PerSecond != nil {
			s += fmt.Sprintf(" (%.1f/s)", *g.PerSecond)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func (w *Watchdog) cpuProfile(ctx context.Context, dir string) {
	defer func() { w.mu.Lock(); w.cpuActive = false; w.mu.Unlock() }()
	f, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		w.log.Error("watchdog cpu profile", "err", err)
		return
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		w.log.Warn("watchdog cpu profile", "err", err) // another profile runs (e.g. /debug/pprof/profile)
		return
	}
	select {
	case <-time.After(w.cfg.CPUProfile):
	case <-ctx.Done():
	}
	pprof.StopCPUProfile()
}

func writeMeta(dir string, c Capture) error {
	js, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "capture.json"), js, 0o640); err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	return nil
}

// rotate drops the oldest captures past the count and byte bounds; the
// caller holds mu.
func (w *Watchdog) rotate() {
	list := w.listLocked()
	var total int64
	for i := len(list) - 1; i >= 0; i-- { // newest first
		dir := filepath.Join(w.cfg.Dir, list[i].ID)
		total += dirSize(dir)
		if len(list)-i > w.cfg.MaxCaptures || (total > w.cfg.MaxBytes && i < len(list)-1) {
			if err := os.RemoveAll(dir); err != nil {
				w.log.Warn("watchdog rotate", "dir", dir, "err", err)
			}
		}
	}
}

func dirSize(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// List returns the captures in the archive, oldest first.
func (w *Watchdog) List() []Capture {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.listLocked()
}

func (w *Watchdog) listLocked() []Capture {
	entries, _ := os.ReadDir(w.cfg.Dir)
	out := []Capture{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(w.cfg.Dir, e.Name(), "capture.json"))
		if err != nil {
			continue
		}
		var c Capture
		if json.Unmarshal(data, &c) == nil {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Capture) int { return a.Time.Compare(b.Time) })
	return out
}

func dumpReport() (*goroutines.Report, error) {
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		return nil, err
	}
	return goroutines.Analyze(&b, goroutines.Options{})
}

// sendHooks posts each capture to the webhook, with retries and a timeout;
// it never holds up a capture (the queue in front of it drops when full).
func (w *Watchdog) sendHooks(ctx context.Context) {
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-w.hooks:
			body, _ := json.Marshal(c)
			for attempt := range 3 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.Webhook, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode < 300 {
						break
					}
					err = fmt.Errorf("status %s", resp.Status)
				}
				w.log.Warn("watchdog webhook", "id", c.ID, "attempt", attempt+1, "err", err)
				select {
				case <-time.After(time.Duration(attempt+1) * time.Second):
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// Package task starts the gateway's long-lived goroutines under a name and
// an owner: each runs with the pprof label spindle.task=<name>, so that a
// goroutine dump names it, and is listed while it runs (List, served at
// /debug/tasks). A Group refuses to start tasks once it is stopping, as
// nats-server's startGoRoutine does, and Stop waits for the ones it began.
package task

import (
	"context"
	"runtime/pprof"
	"slices"
	"sync"
	"time"
)

// Label is the pprof label key that carries a task's name.
const Label = "spindle.task"

// Group owns the tasks started through it: Stop cancels their context and
// waits for them. The zero value is not usable; use NewGroup.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards stopped
	stopped bool

	labels sync.Map // task name → ctx with its pprof label, made once per name
}

// NewGroup returns a group whose tasks run until Stop or until parent ends.
func NewGroup(parent context.Context) *Group {
	g := &Group{}
	g.ctx, g.cancel = context.WithCancel(parent)
	return g
}

// Context is the context every task of the group gets; Stop cancels it.
func (g *Group) Context() context.Context { return g.ctx }

// Go starts f as a task named name. It reports false, and starts nothing,
// once Stop has begun.
func (g *Group) Go(name string, f func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.wg.Add(1)
	id := register(name)
	ctx := g.labelled(name)
	go func() {
		defer g.wg.Done()
		defer unregister(id)
		pprof.SetGoroutineLabels(ctx)
		f(ctx)
	}()
	return true
}

// labelled is the group's context with the pprof label of name, made once
// per name: some tasks (the command runner's) start many times a second.
func (g *Group) labelled(name string) context.Context {
	if ctx, ok := g.labels.Load(name); ok {
		return ctx.(context.Context)
	}
	ctx, _ := g.labels.LoadOrStore(name, pprof.WithLabels(g.ctx, pprof.Labels(Label, name)))
	return ctx.(context.Context)
}

// Every starts a task named name that calls f with the tick's time every
// d until the group stops. It reports false, and starts nothing, once Stop
// has begun.
func (g *Group) Every(name string, d time.Duration, f func(ctx context.Context, now time.Time)) bool {
	return g.Go(name, func(ctx context.Context) {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				f(ctx, now)
			}
		}
	})
}

// Stop refuses new tasks, cancels the group's context and waits for its
// tasks to return. It may be called more than once.
func (g *Group) Stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
}

// Info describes the live tasks of one name.
type Info struct {
	Name        string    `json:"name"`
	Count       int       `json:"count"`
	OldestStart time.Time `json:"oldest_start"`
	OldestAge   float64   `json:"oldest_age_seconds"`
}

// The registry of live tasks; mu guards it.
var (
	mu     sync.Mutex
	nextID uint64
	live   = map[uint64]entry{}
)

type entry struct {
	name    string
	started time.Time
}

func register(name string) uint64 {
	mu.Lock()
	defer mu.Unlock()
	nextID++
	live[nextID] = entry{name: name, started: time.Now()}
	return nextID
}

func unregister(id uint64) {
	mu.Lock()
	delete(live, id)
	mu.Unlock()
}

// List returns the live tasks grouped by name, most numerous first.
func List() []Info {
	mu.Lock()
	by := map[string]*Info{}
	for _, e := range live {
		i := by[e.name]
		if i == nil {
			i = &Info{Name: e.name, OldestStart: e.started}
			by[e.name] = i
		}
		i.Count++
		if e.started.Before(i.OldestStart) {
			i.OldestStart = e.started
		}
	}
	mu.Unlock()
	out := make([]Info, 0, len(by))
	now := time.Now()
	for _, i := range by {
		i.OldestAge = now.Sub(i.OldestStart).Seconds()
		out = append(out, *i)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

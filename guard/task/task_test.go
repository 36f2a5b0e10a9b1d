package task

import (
	"context"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Tasks are listed by name while they run, carry their name as a pprof
// label, and are gone from the list when they return.
func TestGroupListsAndLabels(t *testing.T) {
	g := NewGroup(context.Background())
	started := make(chan string, 3)
	for range 3 {
		g.Go("test.worker", func(ctx context.Context) {
			v, _ := pprof.Label(ctx, Label)
			started <- v
			<-ctx.Done()
		})
	}
	for range 3 {
		if v := <-started; v != "test.worker" {
			t.Fatalf("label %q", v)
		}
	}
	list := List()
	if len(list) != 1 || list[0].Name != "test.worker" || list[0].Count != 3 || list[0].OldestStart.IsZero() {
		t.Fatalf("list %+v", list)
	}
	// A goroutine dump names them.
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	if !strings.Contains(b.String(), `"spindle.task":"test.worker"`) {
		t.Fatalf("goroutine profile without the task label:\n%.2000s", b.String())
	}
	g.Stop()
	if list := List(); len(list) != 0 {
		t.Fatalf("after Stop: %+v", list)
	}
}

// A stopping group starts nothing more; Stop waits for what it began and
// may be repeated.
func TestGroupRefusesAfterStop(t *testing.T) {
	g := NewGroup(context.Background())
	done := make(chan struct{})
	g.Go("test.long", func(ctx context.Context) { <-ctx.Done(); close(done) })
	g.Stop()
	select {
	case <-done:
	default:
		t.Fatal("Stop returned before its task")
	}
	if g.Go("test.late", func(context.Context) { t.Error("ran after Stop") }) {
		t.Fatal("Go after Stop reported true")
	}
	g.Stop()
	runtime.Gosched()
}

// Every calls its function on each tick until the group stops; a stopped
// group starts nothing.
func TestEvery(t *testing.T) {
	g := NewGroup(context.Background())
	ticks := make(chan time.Time, 100)
	if !g.Every("test.every", time.Millisecond, func(_ context.Context, now time.Time) { ticks <- now }) {
		t.Fatal("Every refused on a running group")
	}
	first, second := <-ticks, <-ticks
	if !second.After(first) {
		t.Fatalf("ticks %v then %v", first, second)
	}
	g.Stop() // returns once the ticking task has
	if g.Every("test.every", time.Millisecond, func(context.Context, time.Time) {}) {
		t.Fatal("Every started a task on a stopped group")
	}
}

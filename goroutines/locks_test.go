package goroutines

import (
	"reflect"
	"strings"
	"testing"
)

// TestManyMutexes: 40 goroutines wait for 10 distinct mutexes, each held by
// a goroutine in the same function, blocked past its Lock. The report counts
// the mutexes from the receivers (never "one") and points the waiters to the
// holders.
func TestManyMutexes(t *testing.T) {
	for _, out := range []string{"debug2", "debug1"} {
		r := analyzeBytes(t, runDump(t, "mutexes", out), Loose)
		w := groupBy(t, r, "main.(*shard).apply", "sync.Mutex.Lock")
		holdState := "chan receive"
		if out == "debug1" {
			holdState = StateChanOrSelect
		}
		h := groupBy(t, r, "main.(*shard).apply", holdState)
		if w.Count != 40 || h.Count != 10 {
			t.Fatalf("%s: %d waiters, %d holders; want 40, 10", out, w.Count, h.Count)
		}
		if !reflect.DeepEqual(w.LikelyHolders, []int{h.ID}) || !strings.Contains(w.Description, "likely held by group #"+itoa(h.ID)) {
			t.Errorf("%s: likely holders %v, description %q; want group %d", out, w.LikelyHolders, w.Description, h.ID)
		}
		wantText := "40 goroutines waiting to lock 10 distinct sync.Mutexes in main.(*shard).apply"
		if out == "debug1" { // no receivers printed: how many is unknown
			wantText = "40 goroutines waiting to lock a sync.Mutex in main.(*shard).apply"
			if w.Locks != 0 {
				t.Errorf("debug1: %d locks claimed", w.Locks)
			}
		} else if w.Locks != 10 || len(w.LockReceivers) != 10 {
			t.Errorf("locks %d receivers %v, want 10", w.Locks, w.LockReceivers)
		}
		if !strings.HasPrefix(w.Description, wantText) {
			t.Errorf("%s: description %q, want %q", out, w.Description, wantText)
		}
		found := false
		for _, p := range r.Patterns {
			if strings.Contains(p.Text, "one sync.Mutex") {
				t.Errorf("%s: pattern claims one mutex: %q", out, p.Text)
			}
			found = found || (p.Kind == "mutex" && strings.HasPrefix(p.Text, wantText))
		}
		if !found {
			t.Errorf("%s: no mutex pattern %q in %+v", out, wantText, r.Patterns)
		}
	}
}

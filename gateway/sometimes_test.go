package gateway

import (
	"testing"
	"time"
)

// The first event goes through, the next ones within the period are held
// back and counted, and the first after the period says how many.
func TestSometimes(t *testing.T) {
	s := sometimes{period: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	if ok, held := s.allow(t0); !ok || held != 0 {
		t.Fatalf("first: %v %d", ok, held)
	}
	for _, d := range []time.Duration{time.Second, 9 * time.Second} {
		if ok, _ := s.allow(t0.Add(d)); ok {
			t.Fatalf("let through %v after the first", d)
		}
	}
	if ok, held := s.allow(t0.Add(10 * time.Second)); !ok || held != 2 {
		t.Fatalf("after the period: %v, held %d, want 2", ok, held)
	}
}

package gateway

import (
	"sync"
	"time"
)

// sometimes lets a repeated event through at most once per period and
// counts the ones it held back, for log lines that a storm would otherwise
// repeat thousands of times a second.
type sometimes struct {
	period time.Duration

	mu   sync.Mutex // guards last and held
	last time.Time
	held int
}

// allow reports whether the event at now goes through, and how many were
// held back since the last one that did.
func (s *sometimes) allow(now time.Time) (ok bool, held int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() && now.Sub(s.last) < s.period {
		s.held++
		return false, 0
	}
	s.last, held, s.held = now, s.held, 0
	return true, held
}

package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// inflight counts the calls being served so that shutdown can wait for
// them without a goroutine: after shutdown begins, enter refuses, and the
// last leave closes idle. mu guards every field.
type inflight struct {
	mu       sync.Mutex
	n        int
	shutting bool
	idle     chan struct{} // made by shutdown, closed when n reaches 0
}

// enter counts a call in; it reports false once shutdown has begun.
func (f *inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutting {
		return false
	}
	f.n++
	return true
}

// count is the number of calls in.
func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// leave counts a call out.
func (f *inflight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.shutting {
		close(f.idle)
	}
}

// shutdown refuses new calls and waits until none is in flight or ctx ends.
func (f *inflight) shutdown(ctx context.Context) error {
	f.mu.Lock()
	if f.shutting {
		f.mu.Unlock()
		return errors.New("shutdown already began")
	}
	f.shutting = true
	f.idle = make(chan struct{})
	if f.n == 0 {
		close(f.idle)
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		f.mu.Lock()
		n := f.n
		f.mu.Unlock()
		return fmt.Errorf("%d calls still running: %w", n, ctx.Err())
	}
}

package broker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
)

// Lifecycle is the state every broker keeps to be started at most once and
// never after Close. The zero value is neither started nor closed.
type Lifecycle struct {
	mu      sync.Mutex // guards started and closed, and orders Start against Close
	started bool
	closed  bool
}

// Start runs start, with Close held off until it returns, unless the
// broker named name was started or closed before: then it returns an
// error and runs nothing.
func (l *Lifecycle) Start(name string, start func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return fmt.Errorf("%s broker: start after close", name)
	case l.started:
		return fmt.Errorf("%s broker: already started", name)
	}
	l.started = true
	start()
	return nil
}

// Close marks the broker closed. first says whether this is the first
// Close, started whether Start ran before it.
func (l *Lifecycle) Close() (first, started bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first = !l.closed
	l.closed = true
	return first, l.started
}

// NewEpoch returns a random epoch for a new channel stream.
func NewEpoch() string {
	var x [4]byte
	_, _ = rand.Read(x[:]) // never fails (crypto/rand)
	return hex.EncodeToString(x[:])
}

//go:build race

package client

import "github.com/lesismal/nbio"

// Under the race detector only: a connection is added to a poller through
// epoll, an ordering the detector cannot see. Taking the mutex that guarded
// AddConn before every read makes it visible.
func init() {
	raceHooks = func(l *Loop) {
		l.e.OnReadBufferAlloc(func(c *nbio.Conn) *[]byte {
			l.mu.Lock()
			l.mu.Unlock() //nolint:staticcheck // an empty critical section is the point
			return l.e.PollerBufferPtr(c)
		})
	}
}

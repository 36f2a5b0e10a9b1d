//go:build race

package transport

import (
	"net"
	"sync"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// Under the race detector only: nbio hands an accepted connection from its
// accept goroutine to a poller through epoll, an ordering the detector
// cannot see, so it reports races inside nbio on every connection. A mutex
// released after the hand-off (OnOpen, in the accept goroutine) and taken
// before every read (in the poller) makes that ordering visible. Normal
// builds do not have this file.
func init() {
	raceHooks = func(e *nbhttp.Engine) {
		var mu sync.Mutex
		e.OnOpen(func(net.Conn) { mu.Lock(); mu.Unlock() }) //nolint:staticcheck // an empty critical section is the point
		e.Engine.OnReadBufferAlloc(func(c *nbio.Conn) *[]byte {
			mu.Lock()
			mu.Unlock() //nolint:staticcheck
			return e.Engine.PollerBufferPtr(c)
		})
	}
}

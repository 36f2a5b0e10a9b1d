//go:build race

package transport

import (
	"sync"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// Under the race detector only: the front door hands a connection to a
// poller through epoll, an ordering the detector cannot see, so it reports
// races inside nbio on every connection. A mutex released before the
// hand-off (the returned func, called by the front door) and taken before
// every read (in the poller) makes that ordering visible. Normal builds do
// not have this file.
func init() {
	raceHooks = func(e *nbhttp.Engine) func() {
		var mu sync.Mutex
		e.Engine.OnReadBufferAlloc(func(c *nbio.Conn) *[]byte {
			mu.Lock()
			mu.Unlock() //nolint:staticcheck // an empty critical section is the point
			return e.Engine.PollerBufferPtr(c)
		})
		return func() { mu.Lock(); mu.Unlock() } //nolint:staticcheck
	}
}

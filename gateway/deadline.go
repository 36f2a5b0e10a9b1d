package gateway

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlineStep is how much later than asked a shared command deadline may end.
const deadlineStep = 100 * time.Millisecond

// deadlines hands out the contexts that bound a command's broker and
// backend calls: each ends between timeout and timeout+deadlineStep after
// it was asked for. Commands asked for within the same step share one
// context and its one timer, where a context per command cost a timer and
// three allocations on every connect and subscribe. A shared context is
// never cancelled early: it ends at its deadline or with its parent.
type deadlines struct {
	parent  context.Context
	timeout time.Duration
	cur     atomic.Pointer[sharedDeadline] // the newest; replaced when a command needs a later end
}

type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc // released by the deadline's own timer; kept for vet
	end    time.Time
}

// context is a context that ends no sooner than timeout from now.
func (d *deadlines) context() context.Context {
	want := time.Now().Add(d.timeout)
	if c := d.cur.Load(); c != nil && !c.end.Before(want) {
		return c.ctx
	}
	end := want.Add(deadlineStep)
	ctx, cancel := context.WithDeadline(d.parent, end)
	d.cur.Store(&sharedDeadline{ctx: ctx, cancel: cancel, end: end})
	return ctx
}

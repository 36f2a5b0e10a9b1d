package gateway

import (
	"context"
	"sync"
	"sync/atomic"
)

// writers is the pool of goroutines that perform all socket writes. A
// session is pinned to one shard by its hash, so its writes stay in order.
type writers struct {
	shards []*writerShard
}

type writerShard struct {
	mu     sync.Mutex // guards ready
	ready  []*session
	wake   chan struct{}
	queued atomic.Int64 // bytes in the queues of this shard's sessions
}

func newWriters(n int) *writers {
	w := &writers{shards: make([]*writerShard, n)}
	for i := range w.shards {
		w.shards[i] = &writerShard{wake: make(chan struct{}, 1)}
	}
	return w
}

// of is the shard s is pinned to.
func (w *writers) of(s *session) *writerShard { return w.shards[s.shard%uint32(len(w.shards))] }

// queued is the bytes waiting in every session's queue.
func (w *writers) queued() int64 {
	var n int64
	for _, sh := range w.shards {
		n += sh.queued.Load()
	}
	return n
}

func (w *writers) schedule(s *session) {
	sh := w.of(s)
	sh.mu.Lock()
	sh.ready = append(sh.ready, s)
	sh.mu.Unlock()
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

// flushScratch is what a writer shard's goroutine reuses from one flush to
// the next: the buffer that joins a session's frames into one write, and
// the copy of the frames taken from its queue.
type flushScratch struct {
	buf    []byte
	frames [][]byte
}

// run drains one shard's ready sessions whenever woken, until ctx ends.
// What is still queued then is never written: the node is closing.
func (sh *writerShard) run(ctx context.Context) {
	var sc flushScratch
	var batch []*session
	for {
		select {
		case <-sh.wake:
		case <-ctx.Done():
			return
		}
		for {
			sh.mu.Lock()
			batch, sh.ready = sh.ready, batch[:0]
			sh.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, s := range batch {
				s.flush(&sc)
				batch[i] = nil
			}
		}
	}
}

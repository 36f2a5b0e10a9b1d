package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// The outbound path. Every byte for a client — replies, pushes, pings and
// the final close — goes through its session's bounded queue. Enqueueing
// never blocks; a writer goroutine per shard drains queues, coalescing all
// frames a session has waiting into one write. A session is pinned to one
// shard, so its writes stay in order.

// enqueue adds an already framed message. It returns false when the session
// is closing or when the message would take the queue past its bound; then
// the session is disconnected as a slow consumer.
//
// The bound counts what is queued plus what the kernel has not taken yet.
// A frame larger than the bound is taken when the backlog is within the
// bound, and while it is being written the bound grows by its size: a
// message is never "too slow" before a byte of it was sent, and a client
// reading it at its own pace is not cut off for what queues behind it.
func (s *session) enqueue(frame []byte) bool {
	s.qmu.Lock()
	if s.closing != nil {
		s.qmu.Unlock()
		return false
	}
	bound := int64(s.node.cfg.ClientQueueMaxSize)
	limit := bound
	if s.big != nil {
		if s.conn.Written() < s.big.end {
			limit += s.big.size
		} else {
			s.big = nil
		}
	}
	pending := s.conn.Pending()
	backlog := int64(s.qbytes) + pending
	size := int64(len(frame))
	if (size > bound && backlog > limit) || (size <= bound && backlog+size > limit) {
		queued := s.qbytes
		s.qmu.Unlock()
		s.node.metrics.queueDrops.Inc()
		s.node.log.Warn("slow consumer: its queue would pass the bound", "client", s.id, "user", s.identity(),
			"remote", s.conn.RemoteAddr(), "queued_bytes", queued, "pending_bytes", pending, "frame_bytes", size, "bound", limit)
		s.close(DisconnectSlow, true)
		return false
	}
	if size > bound {
		s.big = &bigFrame{end: s.conn.Handed() + int64(s.qbytes) + size, size: size}
	}
	s.q = append(s.q, frame)
	s.qbytes += len(frame)
	s.node.writers.of(s).queued.Add(size)
	schedule := !s.scheduled
	s.scheduled = true
	s.qmu.Unlock()
	if schedule {
		s.node.writers.schedule(s)
	}
	return true
}

// close asks the writer to disconnect the session with d. With discard the
// frames still queued are dropped (a slow consumer would not read them);
// otherwise they are written before the close frame.
func (s *session) close(d Disconnect, discard bool) {
	s.qmu.Lock()
	if s.closing != nil {
		s.qmu.Unlock()
		return
	}
	s.closing = &d
	if discard {
		s.dropQueue()
	}
	schedule := !s.scheduled || s.unpark() // a parked session waits for no drain to close
	s.scheduled = true
	s.qmu.Unlock()
	if schedule {
		s.node.writers.schedule(s)
	}
}

// dropQueue forgets what is queued; s.qmu is held.
func (s *session) dropQueue() {
	s.node.writers.of(s).queued.Add(-int64(s.qbytes))
	clear(s.q)
	s.q, s.qbytes = nil, 0
	if s.cq != nil {
		s.cq.taken()
	}
}

// flush writes what the session has queued in one write, then closes the
// connection if a disconnect was asked for. Only the session's writer shard
// calls it, with that shard's scratch. A session that conflates keeps its
// queue while its socket is backed up (park, conflate.go) and is flushed
// again when the socket drains.
func (s *session) flush(sc *flushScratch) {
	s.qmu.Lock()
	replaced := 0
	if s.cq != nil {
		if s.closing == nil && s.park() {
			s.qmu.Unlock()
			return
		}
		replaced = s.cq.taken()
	}
	frames := s.q
	n := s.qbytes
	closing := s.closing
	if cap(frames) <= 8 {
		// The session keeps its small backing array, emptied, for the next
		// frames (an idle session's ping would allocate one each time); the
		// writer works from its own copy of the frames.
		sc.frames = append(sc.frames[:0], frames...)
		clear(frames)
		s.q = frames[:0]
		frames = sc.frames
	} else {
		s.q = nil
	}
	s.qbytes = 0
	s.scheduled = false
	s.qmu.Unlock()
	s.node.writers.of(s).queued.Add(-int64(n))

	if len(frames) > replaced { // a replaced frame is nil: appending it adds nothing
		var out []byte
		if len(frames) == 1 {
			out = frames[0]
		} else {
			sc.buf = sc.buf[:0]
			for _, f := range frames {
				sc.buf = append(sc.buf, f...)
			}
			out = sc.buf
		}
		if err := s.conn.Write(out); err != nil {
			closing = &DisconnectWriteError
		}
		s.node.metrics.bytesOut.Add(float64(n))
		s.node.metrics.framesOut.Add(float64(len(frames) - replaced))
	}
	clear(frames)
	if closing != nil {
		s.finish(*closing)
	}
	if cap(sc.buf) > 256<<10 {
		sc.buf = nil // do not keep a burst-sized buffer forever
	}
}

// finish closes the socket with d; the transport's OnClose then calls cleanup.
func (s *session) finish(d Disconnect) {
	s.node.metrics.disconnects.WithLabelValues(fmt.Sprint(d.Code)).Inc()
	if d == DisconnectSlow {
		s.node.metrics.slowDisconnects.Inc() // the reason was logged where it was decided
		s.node.slowTotal.Add(1)
	}
	s.conn.Close(d.Code, d.Reason)
}

// cleanup forgets the session after its connection closed: its queue, its
// subscriptions (with presence and leave pushes) and its registration.
func (s *session) cleanup() {
	s.qmu.Lock()
	if s.closing == nil {
		d := DisconnectConnectionClosed
		s.closing = &d
	}
	s.dropQueue()
	s.qmu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.leaveAll(ctx)
	s.node.forget(s)
	s.node.log.Debug("client gone", slog.String("client", s.id), slog.String("user", s.identity()))
}

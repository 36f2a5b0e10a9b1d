package gateway

import (
	"context"
	"slices"
	"sync"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/guard/task"
)

// Commands that wait on the broker (connect, subscribe, unsubscribe,
// publish, presence, presence_stats, history) do not run on the event
// loop's workers: with Redis answering late, a worker held for each such
// command left none for anyone else (600 publishers against a Redis 200 ms
// late held 509 of the loop's 512 workers, and other clients' pings waited
// a second for one). A frame carrying one of them goes to the session's
// command queue, which the command runner drains on goroutines of its own,
// at most commandWorkers at once; other frames (ping, refresh, rpc, send)
// still run at once on the loop, unless the session has commands queued,
// so that a session's commands always run in the order it sent them.

// commandWorkers bounds the goroutines running queued commands; sessions
// with commands beyond that wait their turn in the runner's ready list.
const commandWorkers = 256

// maxQueuedCommands bounds one session's queue; commands past it are
// answered 111 "too many requests".
const maxQueuedCommands = 2 * maxFrameCommands

// commandRunner runs sessions' queued commands. A goroutine exists only
// while some session has commands: idle sessions cost none.
type commandRunner struct {
	tasks   *task.Group // the node's: its commands' goroutines
	mu      sync.Mutex  // guards ready and running
	ready   []*session  // sessions with commands, waiting for a goroutine
	running int
}

// schedule runs s's queued commands on a goroutine of the runner, now or
// when one is free. The caller set s.rrun.
func (r *commandRunner) schedule(s *session) {
	r.mu.Lock()
	if r.running >= commandWorkers {
		r.ready = append(r.ready, s)
		r.mu.Unlock()
		return
	}
	r.running++
	r.mu.Unlock()
	if !r.tasks.Go("gateway.command", func(context.Context) { r.work(s) }) {
		r.mu.Lock()
		r.running--
		r.mu.Unlock()
		s.dropQueuedCommands() // the node is closing
	}
}

// work runs s's commands, then those of the sessions waiting, until none waits.
func (r *commandRunner) work(s *session) {
	for {
		s.runQueuedCommands()
		r.mu.Lock()
		if len(r.ready) == 0 {
			r.running--
			r.mu.Unlock()
			return
		}
		s = r.ready[0]
		r.ready[0] = nil
		r.ready = r.ready[1:]
		r.mu.Unlock()
	}
}

// waitsOnBroker reports whether a command's handler may wait on the
// broker or presence.
func waitsOnBroker(cmd *protocol.Command) bool {
	switch commandMethod(cmd) {
	case "connect", "subscribe", "unsubscribe", "publish", "presence", "presence_stats", "history":
		return true
	}
	return false
}

// queueCommands puts cmds on the session's command queue if any of them
// waits on the broker, or commands are queued already; it reports whether
// it did (else the caller runs them at once).
func (s *session) queueCommands(cmds []*protocol.Command) bool {
	s.rmu.Lock()
	if !s.rrun && !slices.ContainsFunc(cmds, waitsOnBroker) {
		s.rmu.Unlock()
		return false
	}
	// A pong is taken at once: a queue behind a slow broker must not make
	// the heartbeat think the client went silent.
	cmds = slices.DeleteFunc(slices.Clone(cmds), func(c *protocol.Command) bool {
		if commandMethod(c) == "pong" {
			s.hb.pong()
			return true
		}
		return false
	})
	var over []*protocol.Command
	if s.rq == nil {
		s.rq = new([]*protocol.Command)
	}
	if room := maxQueuedCommands - len(*s.rq); len(cmds) > room {
		cmds, over = cmds[:max(room, 0)], cmds[max(room, 0):]
	}
	*s.rq = append(*s.rq, cmds...)
	start := !s.rrun
	s.rrun = true
	s.rmu.Unlock()
	for _, c := range over {
		s.node.metrics.commandErrors.WithLabelValues("rate").Inc()
		if !s.reply(c.Id, &protocol.Reply{Error: protoError(ErrTooManyRequests)}) {
			break
		}
	}
	if start {
		s.node.commands.schedule(s)
	}
	return true
}

// runQueuedCommands runs the session's queue until it is empty, in order.
func (s *session) runQueuedCommands() {
	for {
		s.rmu.Lock()
		var cmds []*protocol.Command
		if s.rq != nil {
			cmds = *s.rq
		}
		s.rq = nil
		if len(cmds) == 0 {
			s.rrun = false
			s.rmu.Unlock()
			return
		}
		s.rmu.Unlock()
		if !s.runCommands(cmds) {
			s.dropQueuedCommands()
			return
		}
	}
}

// dropQueuedCommands forgets the queue: the connection is closing.
func (s *session) dropQueuedCommands() {
	s.rmu.Lock()
	s.rq, s.rrun = nil, false
	s.rmu.Unlock()
}

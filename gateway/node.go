// Package gateway is the heart of spindle serve: client sessions speaking
// the Centrifugo client protocol, the hub that fans publications out to
// them, heartbeats, limits and graceful drain. I/O comes from package
// transport, storage and cross-node delivery from package broker.
//
// The files follow a Node's roles: node.go (lifecycle), connections.go
// (the transport's callbacks and admission), registry.go (who is
// connected), serverapi.go (what the server API asks of a node), events.go
// (what the broker delivers), drain.go; and a session's concerns:
// session.go, dispatch.go, connect.go, subscribe.go, commands.go, queue.go,
// heartbeat.go, and backend.go (what the application backend decides,
// through gateway/proxy). docs/gateway.md follows one publication through them.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/gateway/proxy"
	"github.com/spindlehq/spindle/guard/task"
)

// Options are a Node's collaborators.
type Options struct {
	Broker   broker.Broker
	Presence broker.PresenceManager
	Verifier *auth.Verifier        // nil: only anonymous connections (when allowed)
	Logger   *slog.Logger          // nil: slog.Default()
	Registry prometheus.Registerer // nil: metrics are kept but not exported
	// Admission, when set, is asked before each new session; an error
	// refuses it with 503 (see guard/admission).
	Admission func() error
	Version   string
	// Proxy, when set, asks the application backend about connect,
	// refresh, subscribe, publish and rpc (see gateway/proxy); the node
	// starts and closes it.
	Proxy *proxy.Proxy
}

// Node is one gateway node: it owns every client session it serves, the
// hub, the writer goroutines and the heartbeat loop, and it starts and
// closes its broker. Build it with New, run it with Start, stop it with
// Shutdown (graceful) or Close (at once).
type Node struct {
	// Set by New, read-only after.
	cfg      Config
	rules    rules
	log      *slog.Logger
	broker   broker.Broker
	presence broker.PresenceManager
	verifier *auth.Verifier
	proxy    *proxy.Proxy // nil: no event is proxied
	admit    func() error // nil: no admission control
	version  string
	started  time.Time
	metrics  *metrics

	hub      *hub           // channel → local subscribers; its shards lock themselves
	writers  *writers       // the goroutines that write to sockets
	commands *commandRunner // runs the commands that wait on the broker, off the event loop
	sessions *registry      // open sessions by id and by user

	// tasks owns the goroutines Start begins; its context is the parent of
	// every broker call and command deadline (ctx). Close stops both.
	tasks     *task.Group
	ctx       context.Context
	deadlines deadlines // command deadlines under ctx

	mu        sync.Mutex // guards running, closeErr and closeOnce's outcome
	running   bool
	closeOnce sync.Once
	closeErr  error

	admitted  atomic.Int64  // places reserved by Admit: sessions plus upgrades in progress
	draining  atomic.Bool   // set once by Shutdown; read by Admit on every upgrade
	slowTotal atomic.Uint64 // slow consumers disconnected, for Load
	delivered atomic.Uint64 // publications queued for subscribers, for Delivered
	fanouts   atomic.Uint64 // observations of the fan-out histogram, for Load
	fanoutAt  fanoutReading // the histogram as Load last read it
	fullLog   sometimes     // the "connection limit reached" line
	allGone   chan struct{} // closed when the last session is gone after draining began
	goneOnce  sync.Once

	emu emulations // emulated sessions by emulation id (emulation.go)
}

// New builds a node from cfg; nothing runs until Start.
func New(cfg Config, o Options) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if o.Broker == nil || o.Presence == nil {
		return nil, errors.New("gateway: a broker and a presence manager are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	n := &Node{
		cfg:      cfg,
		log:      o.Logger,
		broker:   o.Broker,
		presence: o.Presence,
		verifier: o.Verifier,
		proxy:    o.Proxy,
		admit:    o.Admission,
		version:  o.Version,
		started:  time.Now(),
		hub:      newHub(),
		writers:  newWriters(runtime.GOMAXPROCS(0)),
		sessions: newRegistry(),
		allGone:  make(chan struct{}),
		fullLog:  sometimes{period: 10 * time.Second},
	}
	n.rules = newRules(&n.cfg)
	n.tasks = task.NewGroup(context.Background())
	n.ctx = n.tasks.Context()
	n.deadlines = deadlines{parent: n.ctx, timeout: commandTimeout}
	n.commands = &commandRunner{tasks: n.tasks}
	n.metrics = newMetrics(o.Registry, n)
	return n, nil
}

// Start starts the broker's delivery to this node, the writer goroutines
// and the heartbeat loop (tasks gateway.writer and gateway.heartbeat). A
// node starts once.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running || n.ctx.Err() != nil {
		return errors.New("gateway: node already started or closed")
	}
	if err := n.broker.Start(n); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	n.running = true
	for _, sh := range n.writers.shards {
		n.tasks.Go("gateway.writer", sh.run)
	}
	n.tasks.Every("gateway.heartbeat", n.heartbeatTick(), func(ctx context.Context, _ time.Time) { n.scan(ctx) })
	if n.proxy != nil {
		n.proxy.Start()
	}
	return nil
}

// Shutdown drains the node: it stops admitting sessions, disconnects every
// client with 3001 "shutdown" (reconnect advised) spread over the drain
// window, waits until they are gone, then closes the node. ctx bounds only
// the waiting: when it ends, the rest are disconnected at once and the node
// closes anyway.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.drain(ctx)
	return errors.Join(err, n.Close())
}

// Close stops the node at once: its goroutines end and the broker closes.
// Sessions still open get nothing more written; their sockets are the
// transport's to close. Close is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.proxy != nil {
			n.proxy.Close() // its workers' last callbacks still find the node running
		}
		n.tasks.Stop()
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.running {
			if err := n.broker.Close(); err != nil {
				n.closeErr = fmt.Errorf("close broker: %w", err)
			}
			n.running = false
		}
	})
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closeErr
}

// MaxConnections is the number of sessions the node admits at once.
func (n *Node) MaxConnections() int { return n.cfg.MaxConnections }

// NumClients is the number of open client sessions.
func (n *Node) NumClients() int { return n.sessions.count() }

package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series, all prefixed spindle_.
type metrics struct {
	own             *prometheus.Registry // every series below, for Node.Metrics
	connections     prometheus.GaugeFunc
	subscriptions   prometheus.GaugeFunc
	connectsTotal   prometheus.Counter
	refused         *prometheus.CounterVec
	commandsIn      *prometheus.CounterVec
	commandErrors   *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	framesOut       prometheus.Counter
	bytesOut        prometheus.Counter
	bytesIn         prometheus.Counter
	published       prometheus.Counter
	delivered       prometheus.Counter
	queueDrops      prometheus.Counter
	slowDisconnects prometheus.Counter
	disconnects     *prometheus.CounterVec
	authFailures    *prometheus.CounterVec
	recoveries      *prometheus.CounterVec
	fanout          prometheus.Histogram
	resyncs         prometheus.Counter
	conflated       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spindle_connections", Help: "Client connections currently open.",
		}, func() float64 { return float64(n.sessions.count()) }),
		subscriptions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spindle_subscriptions", Help: "Channel subscriptions currently held by clients of this node.",
		}, func() float64 { return float64(n.hub.numSubs()) }),
		connectsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_connections_total", Help: "WebSocket connections accepted.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_connections_refused_total", Help: "Upgrades refused, by reason.",
		}, []string{"reason"}),
		commandsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_commands_total", Help: "Client commands received, by method.",
		}, []string{"method"}),
		commandErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_command_errors_total", Help: "Client commands answered with an error, by method.",
		}, []string{"method"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spindle_command_duration_seconds", Help: "Time to handle a client command, by method.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"method"}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_messages_out_total", Help: "WebSocket messages written to clients (replies, pushes, pings).",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_bytes_out_total", Help: "Bytes written to clients.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_bytes_in_total", Help: "Bytes of client messages received.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_publications_total", Help: "Publications received from the broker for local subscribers.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_deliveries_total", Help: "Publications handed to client queues.",
		}),
		queueDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_queue_drops_total", Help: "Messages dropped because a client queue was full.",
		}),
		slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_slow_consumer_disconnects_total", Help: "Clients disconnected because they did not read fast enough.",
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_disconnects_total", Help: "Server-initiated disconnects, by close code.",
		}, []string{"code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_auth_failures_total", Help: "Connect attempts refused, by reason.",
		}, []string{"reason"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spindle_recoveries_total", Help: "Subscribe requests asking to recover, by outcome.",
		}, []string{"outcome"}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "spindle_fanout_seconds", Help: "Time from a publication reaching this node to its last enqueue for a local subscriber.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_resyncs_total", Help: "Times a channel's stream position jumped (publications this node missed) and its subscribers were told to recover (unsubscribe 2500).",
		}),
		conflated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spindle_conflated_total", Help: "Publications of conflated channels taken out of a client queue because a newer one of the channel came.",
		}),
	}
	all := []prometheus.Collector{m.connections, m.subscriptions, m.connectsTotal, m.refused, m.commandsIn, m.commandErrors,
		m.commandDuration, m.framesOut, m.bytesOut, m.bytesIn, m.published, m.delivered, m.queueDrops,
		m.slowDisconnects, m.disconnects, m.authFailures, m.recoveries, m.fanout, m.resyncs, m.conflated}
	m.own = prometheus.NewRegistry()
	m.own.MustRegister(all...)
	if reg != nil {
		reg.MustRegister(all...)
	}
	return m
}

// Metrics returns the node's own counters and gauges by series name
// (labelled series summed), for the info API.
func (n *Node) Metrics() map[string]float64 {
	out := make(map[string]float64)
	mfs, err := n.metrics.own.Gather()
	if err != nil {
		n.log.Error("gather the node's metrics", "err", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

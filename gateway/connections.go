package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/spindlehq/spindle/transport"
)

// The transport's side of a Node: which upgrades are admitted, and the
// callbacks of transport.Handler that open, feed and close sessions.

// Admit reserves a session's place before its upgrade, so that concurrent
// upgrades cannot pass the connection limit between the check and the
// count. The place is freed by release when the upgrade fails, or when the
// session is forgotten. Admission control is not asked here but in
// Turnaway, once per upgrade.
func (n *Node) Admit(r *http.Request) (release func(), err error) {
	if n.draining.Load() {
		n.metrics.refused.WithLabelValues("draining").Inc()
		return nil, errors.New("node is shutting down")
	}
	if n.admitted.Add(1) > int64(n.cfg.MaxConnections) {
		n.admitted.Add(-1)
		n.metrics.refused.WithLabelValues("max_connections").Inc()
		n.refusedFull(r.RemoteAddr)
		return nil, fmt.Errorf("connection limit %d reached", n.cfg.MaxConnections)
	}
	return n.unadmit, nil
}

// Turnaway says why the transport should refuse an upgrade at its door,
// before the event loop takes it: "draining", "max_connections", or
// "overloaded" when admission control refuses it; "" when the upgrade may
// go on to Admit (which checks the limit again, and reserves). Admission
// is asked here, at the door, because a storm that admission throttles
// would otherwise cost an event-loop upgrade per refusal; it is asked
// after the limit, so that a full node spends none of its rate.
func (n *Node) Turnaway() string {
	switch {
	case n.draining.Load():
		return "draining"
	case n.atLimit():
		n.refusedFull("")
		return "max_connections"
	}
	if n.admit != nil && n.admit() != nil {
		return "overloaded"
	}
	return ""
}

// refusedFull logs that the connection limit refused an upgrade, at most
// once per 10 s with the count since: a storm against a full node must not
// become a log line per connection.
func (n *Node) refusedFull(remote string) {
	if ok, held := n.fullLog.allow(time.Now()); ok {
		n.log.Warn("connection limit reached", "limit", n.cfg.MaxConnections, "remote", remote, "refused_since_last_line", held)
	}
}

// unadmit frees a place Admit reserved.
func (n *Node) unadmit() { n.admitted.Add(-1) }

// Full says, as an error, when the node admits no more sessions; nil otherwise.
func (n *Node) Full() error {
	if n.atLimit() {
		return fmt.Errorf("full: %d of %d connections", n.admitted.Load(), n.cfg.MaxConnections)
	}
	return nil
}

// atLimit reports whether the sessions and upgrades in progress fill max_connections.
func (n *Node) atLimit() bool { return n.admitted.Load() >= int64(n.cfg.MaxConnections) }

// RefusedAtDoor counts a connection the transport refused before its
// upgrade: too many connections not upgraded, in all or from one address,
// or Turnaway's reason.
func (n *Node) RefusedAtDoor(reason string) {
	switch reason {
	case "pending_per_ip":
		n.metrics.refused.WithLabelValues("pending_per_ip").Inc()
	case "max_connections":
		n.metrics.refused.WithLabelValues("max_connections").Inc()
	case "draining":
		n.metrics.refused.WithLabelValues("draining").Inc()
	case "overloaded":
		n.metrics.refused.WithLabelValues("overloaded").Inc()
	default:
		n.metrics.refused.WithLabelValues("pending").Inc()
	}
}

// CheckOrigin applies the allowed origins. With none configured, requests
// without an Origin header and same-origin requests pass.
func (n *Node) CheckOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(n.cfg.AllowedOrigins) == 0 {
		o := strings.TrimPrefix(strings.TrimPrefix(origin, "https://"), "http://")
		if strings.EqualFold(o, r.Host) {
			return true
		}
		n.metrics.refused.WithLabelValues("origin").Inc()
		n.log.Info("origin refused", "origin", origin, "host", r.Host)
		return false
	}
	for _, pat := range n.cfg.AllowedOrigins {
		if pat == "*" || strings.EqualFold(pat, origin) {
			return true
		}
		if ok, _ := path.Match(strings.ToLower(pat), strings.ToLower(origin)); ok {
			return true
		}
	}
	n.metrics.refused.WithLabelValues("origin").Inc()
	n.log.Info("origin refused", "origin", origin)
	return false
}

// OnOpen implements transport.Handler: a session begins, not yet
// authenticated.
func (n *Node) OnOpen(c *transport.Conn) {
	s := &session{node: n, conn: c, id: newClientID()}
	s.since = transport.Mono()
	c.Session = s
	n.sessions.add(s)
	n.metrics.connectsTotal.Inc()
	if c.Uni() {
		s.uniOpen()
	} else if emulated(c) {
		n.emu.add(s)
	}
}

// OnMessage implements transport.Handler. A session not yet connected
// lets runnable work go first (runtime.Gosched): when a storm of new
// sessions arrives, their connects wait behind the established sessions'
// deliveries, not the other way round.
func (n *Node) OnMessage(c *transport.Conn, data []byte) {
	if s, ok := c.Session.(*session); ok {
		if !s.authed() {
			runtime.Gosched()
		}
		if c.Uni() {
			s.uniMessage(data)
			return
		}
		if emulated(c) {
			s.emuFrame(s.emuRequest(data))
			return
		}
		s.handleFrame(data)
	}
}

// OnClose implements transport.Handler: the session is forgotten. Like a
// connect, the cleanup lets runnable work go first: a thousand sessions
// closing at once must not hold up the deliveries to those that stay.
func (n *Node) OnClose(c *transport.Conn, _ error) {
	if s, ok := c.Session.(*session); ok {
		runtime.Gosched()
		n.emu.remove(s)
		s.cleanup()
	}
}

// forget removes a closed session from the registry.
func (n *Node) forget(s *session) {
	removed, left := n.sessions.remove(s)
	if !removed {
		return
	}
	n.unadmit()
	if left == 0 && n.draining.Load() {
		n.goneOnce.Do(func() { close(n.allGone) })
	}
}

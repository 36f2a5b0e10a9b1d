package transport

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// gate bounds the connections that are not WebSocket sessions (yet):
// handshakes being read, server API connections, and upgrades handed to
// the event loop but not finished. They are bounded in all and per source
// address, apart from sessions, so that connections that never upgrade
// cannot lock real clients and the API out. mu guards every field.
type gate struct {
	mu       sync.Mutex
	max      int
	maxPerIP int
	n        int
	perIP    map[netip.Addr]int
	onLoop   map[string]handedConn // handed to the event loop, by remote address, until upgraded or closed
}

// handedConn is a connection on the event loop that has not upgraded yet;
// its timer closes it when the handshake timeout passes first.
type handedConn struct {
	ip    netip.Addr
	timer *time.Timer
}

func newGate(max, maxPerIP int) *gate {
	return &gate{max: max, maxPerIP: maxPerIP, perIP: map[netip.Addr]int{}, onLoop: map[string]handedConn{}}
}

// refusal says why enter refused a connection.
type refusal string

const (
	refusedPending      refusal = "pending"        // the bound in all
	refusedPendingPerIP refusal = "pending_per_ip" // the bound for one source address
)

// enter takes a place for a connection from ip, or says why not.
func (g *gate) enter(ip netip.Addr) (refusal, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.n >= g.max:
		return refusedPending, false
	case g.perIP[ip] >= g.maxPerIP:
		return refusedPendingPerIP, false
	}
	g.n++
	g.perIP[ip]++
	return "", true
}

// leave gives back a place entered for ip.
func (g *gate) leave(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leaveLocked(ip)
}

func (g *gate) leaveLocked(ip netip.Addr) {
	g.n--
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// handed notes that the connection from remote now waits on the event loop
// for its upgrade; expire runs when it has not settled by the deadline.
// Its place is given back by settle.
func (g *gate) handed(remote string, ip netip.Addr, deadline time.Duration, expire func()) {
	g.mu.Lock()
	g.onLoop[remote] = handedConn{ip: ip, timer: time.AfterFunc(deadline, expire)}
	g.mu.Unlock()
}

// settle gives back the place of a connection handed to the event loop,
// once: when it upgraded, or when it closed first.
func (g *gate) settle(remote string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if h, ok := g.onLoop[remote]; ok {
		h.timer.Stop()
		delete(g.onLoop, remote)
		g.leaveLocked(h.ip)
	}
}

// pending is the number of places taken.
func (g *gate) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// addrIP is the source address of a connection's remote address.
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

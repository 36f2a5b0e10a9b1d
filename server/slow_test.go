package server_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spindlehq/spindle/config"
)

// A client that stops reading must not hold up the others: they keep
// receiving every publication at full rate while the stuck one is
// disconnected as a slow consumer and forgotten.
func TestSlowConsumer(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.ClientQueueMaxSize = 2 << 20
		// The queue bound, not the stall timer, must act: on a slow run the
		// stuck client's backlog grows by less than the bound in a second.
		c.ClientStallTimeout = config.Duration(time.Minute)
		// The test clients answer no pings, and a slow run of this test
		// outlasts a ping (12.5–25 s after connect) and its pong timeout.
		c.PingInterval = config.Duration(time.Hour)
	})
	const fast = 5
	var clients []*wsc
	for i := 0; i < fast; i++ {
		c := dial(t, srv, nil)
		c.connect(token(t, fmt.Sprint(i), time.Hour))
		c.cmd("subscribe", map[string]any{"channel": "firehose"})
		clients = append(clients, c)
	}
	stuck := dial(t, srv, nil)
	stuck.connect(token(t, "stuck", time.Hour))
	stuck.cmd("subscribe", map[string]any{"channel": "firehose"})
	// Stop reading at the TCP level: the kernel buffers fill, then the
	// server's queue for this client.
	tcp := stuck.c.UnderlyingConn().(*net.TCPConn)
	_ = tcp.SetReadBuffer(4096)
	stuck.c.SetReadDeadline(time.Now()) // the read loop stops
	<-stuck.done

	const n = 2000
	payload := strings.Repeat("x", 8000) // 16 MB in all: more than loopback socket buffers hold
	var wg sync.WaitGroup
	counts := make([]atomic.Int64, fast)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := uint64(1)
			for counts[i].Load() < n {
				p, ok := c.nextPush(10 * time.Second)
				if !ok {
					return
				}
				if p.Pub != nil {
					if p.Pub.Offset != want {
						t.Errorf("client %d: offset %d, want %d", i, p.Pub.Offset, want)
						return
					}
					want++
					counts[i].Add(1)
				}
			}
		}()
	}
	start := time.Now()
	var mostQueued int64 // what admission control saw queued for clients
	for i := 0; i < n; i++ {
		publish(t, srv, "firehose", fmt.Sprintf(`{"i":%d,"p":%q}`, i, payload))
		mostQueued = max(mostQueued, srv.Load().QueuedBytes)
		// Keep the fast clients within a window (800 KB each) of the
		// publisher, however slow this machine is; the stuck one falls
		// behind by everything.
		for j := range counts {
			for int64(i)-counts[j].Load() > 100 && !t.Failed() {
				time.Sleep(time.Millisecond)
			}
		}
	}
	wg.Wait()
	for i := range counts {
		if got := counts[i].Load(); got != n {
			select {
			case <-clients[i].done:
				t.Errorf("fast client %d: connection ended: %v", i, clients[i].err)
			default:
				t.Errorf("fast client %d: still connected, nothing for 10s", i)
			}
			t.Fatalf("fast client %d received %d of %d (server: %d clients, %v slow-consumer disconnects, %v server disconnects in all)",
				i, got, n, srv.Node.NumClients(), metricValue(t, srv, "spindle_slow_consumer_disconnects_total"),
				metricValue(t, srv, "spindle_disconnects_total"))
		}
	}
	t.Logf("%d publications to %d fast clients in %v while one client was stuck", n, fast, time.Since(start))
	waitFor(t, func() bool { return srv.Node.NumClients() == fast })
	if got := metricValue(t, srv, "spindle_slow_consumer_disconnects_total"); got != 1 {
		t.Fatalf("slow consumer disconnects = %v, want 1", got)
	}
	// The load admission control reads saw the stuck client's backlog, counts
	// the disconnect, and returns to nothing queued once everyone has read.
	if mostQueued < 1<<20 {
		t.Errorf("at most %d bytes seen queued while a client was stuck behind a 2 MiB bound", mostQueued)
	}
	if got := srv.Load().SlowDisconnects; got != 1 {
		t.Errorf("load reports %d slow consumers disconnected, want 1", got)
	}
	waitFor(t, func() bool { return srv.Load().QueuedBytes == 0 })
}

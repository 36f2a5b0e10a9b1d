package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/broker/redis/redistest"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

// Two gateways on one Redis are one cluster: a client on node A gets what
// the server API of node B publishes, with the offsets B's API returned;
// presence and history are the same from both.
func TestTwoNodesOnRedis(t *testing.T) {
	rs := redistest.Start(t)
	onRedis := func(c *config.Config) {
		c.Broker = "redis"
		c.RedisAddress = rs.Addr()
		c.RedisPrefix = "e2e"
	}
	a, b := startServer(t, onRedis), startServer(t, onRedis)
	if code := adminStatus(t, a, "/readyz"); code != 200 {
		t.Fatalf("node A /readyz = %d with Redis up", code)
	}
	ca := dial(t, a, nil)
	ca.connect(token(t, "1", time.Hour))
	cb := dial(t, b, nil)
	cb.connect(token(t, "2", time.Hour))
	for _, w := range []*wsc{ca, cb} {
		sr := field[subResult](t, w.cmd("subscribe", map[string]any{"channel": "room", "recoverable": true})["subscribe"])
		if !sr.Recoverable || sr.Epoch == "" {
			t.Fatalf("subscribe result = %+v", sr)
		}
	}
	for i := 1; i <= 3; i++ {
		code, out := api(t, b, "key", "publish", map[string]any{"channel": "room", "data": map[string]int{"n": i}})
		if code != 200 || out["error"] != nil {
			t.Fatalf("publish on B: HTTP %d %s", code, out["error"])
		}
		res := field[struct{ Offset uint64 }](t, out["result"])
		if res.Offset != uint64(i) {
			t.Fatalf("publish %d on B: offset %d (%s)", i, res.Offset, out["result"])
		}
	}
	for name, w := range map[string]*wsc{"A": ca, "B": cb} {
		for i := 1; i <= 3; i++ {
			p, ok := w.nextPush(5 * time.Second)
			if !ok || p.Pub == nil {
				t.Fatalf("client on %s: publication %d not received", name, i)
			}
			if p.Channel != "room" || p.Pub.Offset != uint64(i) || string(p.Pub.Data) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("client on %s: publication %d = %q offset %d %s", name, i, p.Channel, p.Pub.Offset, p.Pub.Data)
			}
		}
	}
	// Presence shows the clients of both nodes, seen from either.
	for name, w := range map[string]*wsc{"A": ca, "B": cb} {
		st := field[struct {
			NumClients int `json:"num_clients"`
			NumUsers   int `json:"num_users"`
		}](t, w.cmd("presence_stats", map[string]any{"channel": "room"})["presence_stats"])
		if st.NumClients != 2 || st.NumUsers != 2 {
			t.Fatalf("presence stats from %s = %+v", name, st)
		}
	}
	h := field[struct {
		Publications []struct{ Offset uint64 }
		Offset       uint64
	}](t, ca.cmd("history", map[string]any{"channel": "room", "limit": 10})["history"])
	if len(h.Publications) != 3 || h.Offset != 3 {
		t.Fatalf("history from A = %+v", h)
	}
	// Redis gone: not ready, and spindle_broker_up says why.
	if up := metricValue(t, a, "spindle_broker_up"); up != 1 {
		t.Fatalf("spindle_broker_up = %v with Redis up", up)
	}
	rs.Stop()
	waitFor(t, func() bool { return adminStatus(t, a, "/readyz") == 503 })
	if up := metricValue(t, a, "spindle_broker_up"); up != 0 {
		t.Fatalf("spindle_broker_up = %v with Redis stopped", up)
	}
	rs.Restart()
	waitFor(t, func() bool { return adminStatus(t, a, "/readyz") == 200 })
	waitFor(t, func() bool { return metricValue(t, a, "spindle_broker_up") == 1 })
}

// redis_tls with redis_tls_ca_file: the node reaches a TLS-only Redis,
// is ready, and delivers; a CA file that is missing or holds no
// certificate refuses to start with a clear error.
func TestRedisOverTLS(t *testing.T) {
	rs := redistest.StartTLS(t)
	srv := startServer(t, func(c *config.Config) {
		c.Broker, c.RedisAddress, c.RedisPrefix = "redis", rs.Addr(), "tls"
		c.RedisTLS, c.RedisTLSCAFile = true, rs.CAFile
	})
	waitFor(t, func() bool { return adminStatus(t, srv, "/readyz") == 200 })
	c := dial(t, srv, nil)
	c.connect(token(t, "1", time.Hour))
	c.cmd("subscribe", map[string]any{"channel": "room"})
	if code, out := api(t, srv, "key", "publish", map[string]any{"channel": "room", "data": map[string]int{"n": 1}}); code != 200 || out["error"] != nil {
		t.Fatalf("publish over TLS: HTTP %d %s", code, out["error"])
	}
	if p, ok := c.nextPush(5 * time.Second); !ok || p.Pub == nil || p.Pub.Offset != 1 {
		t.Fatalf("publication over TLS: %+v", p)
	}
	for _, ca := range []string{filepath.Join(t.TempDir(), "missing.pem"), writeFile(t, "not a certificate")} {
		cfg := config.Default()
		cfg.Listen, cfg.AdminListen = "127.0.0.1:0", ""
		cfg.Broker, cfg.RedisAddress, cfg.RedisTLS, cfg.RedisTLSCAFile = "redis", rs.Addr(), true, ca
		if _, err := server.New(cfg, server.Options{}); err == nil || !strings.Contains(err.Error(), "redis_tls_ca_file") {
			t.Fatalf("CA file %s: %v, want an error naming redis_tls_ca_file", ca, err)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/broker/redis/redistest"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

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

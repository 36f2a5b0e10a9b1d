package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
)

// serveProc is a running `spindle serve` whose stdout is read line by line.
type serveProc struct {
	cmd   *exec.Cmd
	lines chan string
	seen  []string
}

// startServeProc starts name (the built binary unless set) with args; env
// is added to the environment, from which SPINDLE_* variables are removed.
func startServeProc(t *testing.T, env []string, name string, args ...string) *serveProc {
	t.Helper()
	if name == "" {
		name = spindleBinary(t)
	}
	cmd := exec.Command(name, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPINDLE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	// Its own process group, so that the cleanup also ends what `go run`
	// started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	p := &serveProc{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// waitLine returns the submatches of the first banner line matching re.
func (p *serveProc) waitLine(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	for _, l := range p.seen {
		if m := rx.FindStringSubmatch(l); m != nil {
			return m
		}
	}
	deadline := time.After(90 * time.Second) // `go run` may have to link first
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("spindle serve ended without printing %q; printed %q", re, p.seen)
			}
			p.seen = append(p.seen, l)
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			t.Fatalf("spindle serve did not print %q; printed %q", re, p.seen)
		}
	}
}

func (p *serveProc) wsURL(t *testing.T) string { return p.waitLine(t, `clients: (ws://\S+)`)[1] }
func (p *serveProc) adminURL(t *testing.T) string {
	return p.waitLine(t, `admin: +(http://\S+/)`)[1]
}

// scalarKeys lists the YAML keys of config.Config's top-level scalar
// fields, the ones flags and environment variables can set.
func scalarKeys() map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	t := reflect.TypeOf(config.Config{})
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch f.Type.Kind() {
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
		case reflect.Slice:
			if f.Type.Elem().Kind() != reflect.String {
				continue
			}
		default:
			continue
		}
		keys[key] = f.Type
	}
	return keys
}

// serveFlagValues is a valid, non-default value for every scalar key.
var serveFlagValues = map[string]string{
	"listen":                         "127.0.0.1:0",
	"admin_listen":                   "127.0.0.1:0",
	"api_key":                        "flag-key",
	"admin_token":                    "flag-admin-token",
	"log_level":                      "warn",
	"demo":                           "true",
	"token_hmac_secret":              "flag-secret",
	"token_rsa_public_key":           "",
	"token_ecdsa_public_key":         "",
	"token_audience":                 "aud",
	"token_issuer":                   "iss",
	"allow_anonymous_connect":        "true",
	"allowed_origins":                "https://a.example, https://*.b.example",
	"ping_interval":                  "20s",
	"pong_timeout":                   "5s",
	"connect_timeout":                "4s",
	"max_connections":                "100",
	"max_message_size":               "128KiB",
	"client_queue_max_size":          "2MiB",
	"capture_dir":                    "/tmp/spindle-flag-captures",
	"watchdog_rules":                 "goroutines > 100000 for 1m",
	"capture_cooldown":               "2m",
	"memory_limit":                   "1GiB",
	"heap_trim_after":                "10s",
	"heap_grow_gc_percent":           "40",
	"capture_webhook":                "",
	"max_publication_size":           "3MiB",
	"api_batch_max_commands":         "500",
	"api_max_body_size":              "8MiB",
	"api_idle_timeout":               "20s",
	"handshake_timeout":              "3s",
	"max_pending_connections":        "500",
	"max_pending_connections_per_ip": "50",
	"client_stall_timeout":           "6s",
	"command_rate":                   "50.5",
	"command_burst":                  "10",
	"max_subscriptions":              "12",
	"max_channel_length":             "100",
	"presence_ttl":                   "30s",
	"shutdown_grace_period":          "40s",
	"shutdown_reconnect_window":      "100ms",
	"broker":                         "memory", // redis would need a running Redis
	"redis_address":                  "127.0.0.1:6390",
	"redis_prefix":                   "flagprefix",
	"redis_username":                 "flaguser",
	"redis_password":                 "flagpass",
	"redis_db":                       "2",
	"redis_timeout":                  "3s",
	"redis_tls":                      "true",
	"redis_tls_ca_file":              "",
	"nats_url":                       "nats://127.0.0.1:4299",
	"nats_prefix":                    "flagprefix",
	"proxy_connect_endpoint":         "", // a backend at it would answer the anonymous connect below
	"proxy_connect_timeout":          "2s",
	"proxy_refresh_endpoint":         "http://127.0.0.1:1/refresh",
	"proxy_refresh_timeout":          "3s",
	"proxy_subscribe_endpoint":       "http://127.0.0.1:1/subscribe",
	"proxy_subscribe_timeout":        "4s",
	"proxy_publish_endpoint":         "http://127.0.0.1:1/publish",
	"proxy_publish_timeout":          "5s",
	"proxy_rpc_endpoint":             "http://127.0.0.1:1/rpc",
	"proxy_rpc_timeout":              "6s",
	"proxy_http_headers":             "Cookie,X-Request-Id",
	"proxy_sub_refresh_endpoint":     "http://127.0.0.1:1/sub_refresh",
	"proxy_sub_refresh_timeout":      "7s",
}

func dashed(key string) string { return strings.ReplaceAll(key, "_", "-") }

// originStatus is the HTTP status of a WebSocket upgrade from origin.
func originStatus(t *testing.T, ws, origin string) int {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(ws, http.Header{"Origin": {origin}})
	if c != nil {
		c.Close()
	}
	if resp == nil {
		t.Fatalf("dial %s from %s: %v", ws, origin, err)
	}
	return resp.StatusCode
}

// getInfo reads /info, sending serveFlagValues' admin token (a listener
// without a token ignores it).
func getInfo(t *testing.T, admin string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, admin+"info", nil)
	req.Header.Set("Authorization", "Bearer "+serveFlagValues["admin_token"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatalf("/info: %v", err)
	}
	return info
}

// Every top-level scalar key is a serve flag (YAML key with dashes) and an
// environment variable, both listed by --help; a real server started with
// all of them at once runs with them.
func TestServeFlagForEveryScalarKey(t *testing.T) {
	keys := scalarKeys()
	for key := range keys {
		if _, ok := serveFlagValues[key]; !ok {
			t.Fatalf("config key %q has no value in serveFlagValues: add one", key)
		}
	}
	help, stderr, code := runBinary(t, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d: %s", code, stderr)
	}
	var args []string
	for key, typ := range keys {
		flagName, env := "--"+dashed(key), "SPINDLE_"+strings.ToUpper(key)
		if !regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(flagName)+`\b`).MatchString(help) || !strings.Contains(help, env) {
			t.Errorf("serve --help does not list %s and %s", flagName, env)
		}
		if typ.Kind() == reflect.Bool {
			args = append(args, flagName) // a bool flag takes no value
		} else {
			args = append(args, flagName, serveFlagValues[key])
		}
	}
	p := startServeProc(t, nil, "", append([]string{"serve"}, args...)...)
	ws, admin := p.wsURL(t), p.adminURL(t)
	if got := getInfo(t, admin)["max_clients"]; got != float64(100) {
		t.Errorf("--max-connections 100: /info max_clients = %v", got)
	}
	if resp, err := http.Get(admin + "info"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("--admin-token: /info without the token answered %d, want 401", resp.StatusCode)
	}
	for origin, want := range map[string]int{"https://a.example": 101, "https://x.b.example": 101, "https://evil.example": 403} {
		if got := originStatus(t, ws, origin); got != want {
			t.Errorf("--allowed-origins: upgrade from %s got HTTP %d, want %d", origin, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{URL: ws, Header: http.Header{"Origin": {"https://a.example"}}})
	if err != nil {
		t.Fatalf("--allow-anonymous-connect: connect without a token: %v", err)
	}
	c.Close()
	req, _ := http.NewRequest(http.MethodPost, strings.Replace(strings.TrimSuffix(ws, "/connection/websocket"), "ws://", "http://", 1)+"/api/info", strings.NewReader("{}"))
	req.Header.Set("X-API-Key", "flag-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("--api-key flag-key: /api/info answered %d", resp.StatusCode)
	}
}

// A flag overrides SPINDLE_<KEY>, which overrides the file; the file may
// give allowed_origins as one string.
func TestServePrecedenceFileEnvFlag(t *testing.T) {
	file := filepath.Join(t.TempDir(), "spindle.yaml")
	if err := os.WriteFile(file, []byte("allowed_origins: \"https://file.example\"\nmax_connections: 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"SPINDLE_ALLOWED_ORIGINS=https://env.example", "SPINDLE_MAX_CONNECTIONS=20"}
	flags := []string{"--allowed-origins", "https://flag.example", "--max-connections", "30"}
	base := []string{"serve", "--config", file, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "warn"}
	for _, tt := range []struct {
		name  string
		env   []string
		flags []string
		want  string
		max   float64
	}{
		{"file", nil, nil, "file", 10},
		{"env over file", env, nil, "env", 20},
		{"flag over env", env, flags, "flag", 30},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startServeProc(t, tt.env, "", append(append([]string{}, base...), tt.flags...)...)
			ws, admin := p.wsURL(t), p.adminURL(t)
			for _, src := range []string{"file", "env", "flag"} {
				want := 403
				if src == tt.want {
					want = 101
				}
				if got := originStatus(t, ws, "https://"+src+".example"); got != want {
					t.Errorf("origin of the %s: HTTP %d, want %d", src, got, want)
				}
			}
			if got := getInfo(t, admin)["max_clients"]; got != tt.max {
				t.Errorf("max_clients = %v, want %v", got, tt.max)
			}
		})
	}
}

// The banner's admin URL answers, and its token command runs as printed
// and mints a token the server accepts.
func TestServeBannerCommandsWork(t *testing.T) {
	p := startServeProc(t, nil, "", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--token-hmac-secret", "banner-secret", "--log-level", "warn")
	ws, admin := p.wsURL(t), p.adminURL(t)
	resp, err := http.Get(admin)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "/healthz") || !strings.Contains(string(body), "/metrics") {
		t.Errorf("GET %s: HTTP %d %q; want 200 and an index of the admin endpoints", admin, resp.StatusCode, body)
	}
	line := p.waitLine(t, `a token: (.+)$`)[1]
	if !strings.HasPrefix(line, spindleBinary(t)+" token ") {
		t.Errorf("token command %q does not start with the binary that was run, %s", line, spindleBinary(t))
	}
	f := strings.Fields(line)
	out, err := exec.Command(f[0], f[1:]...).Output()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{URL: ws, Token: strings.TrimSpace(string(out))})
	if err != nil {
		t.Fatalf("connect with the banner's token: %v", err)
	}
	defer c.Close()
	if u := c.Connected(); u == nil || u.Client == "" {
		t.Errorf("connect result %+v", u)
	}
}

// Under `go run` the binary lives in a temporary go-build directory: the
// banner says how to run the token command from the module root instead.
func TestServeBannerUnderGoRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with go run")
	}
	p := startServeProc(t, nil, "go", "run", ".", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "",
		"--token-hmac-secret", "s", "--log-level", "warn")
	if line := p.waitLine(t, `a token: (.+)$`)[1]; line != "go run ./cmd/spindle token --user 42 --secret s" {
		t.Errorf("under go run the banner says %q", line)
	}
}

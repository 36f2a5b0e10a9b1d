// Package interop_test runs the official Centrifugo JS SDK (npm "centrifuge")
// against a real gateway: sdk.test.mjs holds the cases, this test starts the
// server and runs them with `node --test`.
package interop_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

const (
	apiKey = "interop-key"
	secret = "interop-secret"
)

// requireTools reports whether a missing node or SDK fails the test instead
// of skipping it (set in CI, where `make deps` has run).
func requireTools() bool { return os.Getenv("SPINDLE_REQUIRE_TOOLS") == "1" }

func skipOrFatal(t *testing.T, msg string) {
	t.Helper()
	msg += "; install with `make deps` (scripts/deps.sh: Node and `npm ci` in interop/)"
	if requireTools() {
		t.Fatal(msg)
	}
	t.Skip(msg + " — set SPINDLE_REQUIRE_TOOLS=1 to fail instead")
}

func TestCentrifugeJSSDK(t *testing.T) {
	node := nodeWithSDK(t)
	cfg := gatewayConfig()
	// "readonly:" channels: anyone may subscribe and read history, nobody
	// may publish from a client (case 7 expects error 103).
	ro := cfg.Channel
	ro.AllowPublishForClient = false
	ro.AllowPublishForSubscriber = false
	ro.HistorySize = 10
	cfg.Namespaces = append(cfg.Namespaces, config.Namespace{Name: "readonly", ChannelOptions: ro})

	srv := startGateway(t, cfg)
	runNodeTest(t, node, "sdk.test.mjs",
		"SPINDLE_WS_URL="+srv.WebSocketURL(),
		"SPINDLE_API_URL="+srv.APIURL(),
		"SPINDLE_API_KEY="+apiKey,
		"SPINDLE_SECRET="+secret,
	)
}

// nodeWithSDK returns the node binary, or skips (fails under
// SPINDLE_REQUIRE_TOOLS) when node or the SDK is missing.
func nodeWithSDK(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFatal(t, "node not found in PATH")
	}
	for _, m := range []string{"centrifuge", "ws"} {
		if _, err := os.Stat(filepath.Join("node_modules", m, "package.json")); err != nil {
			skipOrFatal(t, "interop/node_modules/"+m+" missing")
		}
	}
	return node
}

// gatewayConfig is the defaults on a loopback port, with the test's API
// key and token secret and a short shutdown.
func gatewayConfig() config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = ""
	cfg.APIKey = apiKey
	cfg.TokenHMACSecret = secret
	cfg.ShutdownGracePeriod = config.Duration(5 * time.Second)
	cfg.ShutdownReconnect = config.Duration(500 * time.Millisecond)
	return cfg
}

// startGateway runs a whole gateway from cfg, its log in the test's; the
// test's cleanup closes it.
func startGateway(t *testing.T, cfg config.Config) *server.Server {
	t.Helper()
	lvl := slog.LevelWarn
	if os.Getenv("SPINDLE_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	serverLog := &testWriter{t: t, prefix: "server: "}
	t.Cleanup(serverLog.stop) // runs last: after srv.Close nothing may call t.Log
	log := slog.New(slog.NewTextHandler(serverLog, &slog.HandlerOptions{Level: lvl}))
	srv, err := server.Run(cfg, server.Options{Logger: log, Version: "interop"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

// runNodeTest runs `node --test script` with env added, its output in the
// test's log, and fails the test when a case fails or it takes 2 minutes.
func runNodeTest(t *testing.T, node, script string, env ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", script)
	cmd.Env = append(append(os.Environ(), env...), "NO_COLOR=1")
	cmd.WaitDelay = 5 * time.Second
	out := &testWriter{t: t, prefix: "node: "}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	if ctx.Err() != nil {
		t.Fatalf("node --test did not finish within the deadline: %v", err)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("node --test failed (exit %d): see the node: lines above", exit.ExitCode())
	}
	if err != nil {
		t.Fatalf("run node: %v", err)
	}
}

// testWriter passes output to t.Log line by line as it arrives, so a hang
// still shows how far the SDK got. Logging after the test ended is dropped.
type testWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
	done   bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.logLocked(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *testWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.logLocked(string(w.buf))
		w.buf = nil
	}
}

func (w *testWriter) stop() {
	w.flush()
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func (w *testWriter) logLocked(line string) {
	if w.done {
		return
	}
	w.t.Log(w.prefix + strings.TrimRight(line, "\r"))
}

// The SDK's Protobuf build (centrifuge/build/protobuf) against the same
// gateway, beside its JSON build: sdk-protobuf.test.mjs.
func TestCentrifugeJSSDKProtobuf(t *testing.T) {
	node := nodeWithSDK(t)
	if _, err := os.Stat(filepath.Join("node_modules", "protobufjs", "package.json")); err != nil {
		skipOrFatal(t, "interop/node_modules/protobufjs (the SDK's Protobuf build needs it) missing")
	}
	cfg := gatewayConfig()
	cfg.Channel.AllowPublishForSubscriber = true // case P2 publishes from both builds
	srv := startGateway(t, cfg)
	runNodeTest(t, node, "sdk-protobuf.test.mjs",
		"SPINDLE_WS_URL="+srv.WebSocketURL(),
		"SPINDLE_API_URL="+srv.APIURL(),
		"SPINDLE_API_KEY="+apiKey,
		"SPINDLE_SECRET="+secret,
	)
}

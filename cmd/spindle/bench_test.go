package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// spindleBinary builds the spindle binary once per test run.
func spindleBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spindle-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "spindle")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startServe runs `spindle serve` on free ports and returns its WebSocket
// URL, API URL and process.
func startServe(t *testing.T) (ws, api string, cmd *exec.Cmd) {
	t.Helper()
	cmd = exec.Command(spindleBinary(t), "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--api-key", "key", "--token-hmac-secret", "secret", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`clients: (ws://\S+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case ws = <-found:
	case <-time.After(20 * time.Second):
		t.Fatal("spindle serve did not print its address")
	}
	api = strings.Replace(strings.TrimSuffix(ws, "/connection/websocket"), "ws://", "http://", 1) + "/api"
	return ws, api, cmd
}

// A short scenario against a real server process, run by real worker
// processes: every publication reaches every subscriber once, in order, and
// the result file keeps the documented names.
func TestBenchRunAgainstServe(t *testing.T) {
	ws, api, srv := startServe(t)
	dir := t.TempDir()
	scenario := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(scenario, []byte(`
name: cli-smoke
channels: 2
workers: 2
source_addresses: [127.0.0.1, 127.0.0.3]
stages:
  - duration: 1s
    connections: {shape: ramp, from: 0, to: 40}
  - duration: 2s
    connections: {to: 40}
    publish_rate: {shape: spike, from: 20, to: 80, at: 500ms, hold: 1s}
drain: 1s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, html := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	cmd := exec.Command(spindleBinary(t), "bench", "run", scenario, "--url", ws, "--api", api, "--api-key", "key",
		"--hmac-secret", "secret", "--out", out, "--html", html, "--server-pid", fmt.Sprint(srv.Process.Pid))
	text, err := cmd.CombinedOutput()
	t.Logf("%s", text)
	if err != nil {
		t.Fatalf("bench run: %v", err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	num := func(path ...string) float64 {
		var v any = res
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("result has no %v", path)
			}
			v, ok = m[p]
			if !ok {
				t.Fatalf("result has no %v", path)
			}
		}
		f, ok := v.(float64)
		if !ok {
			t.Fatalf("%v is %T, not a number", path, v)
		}
		return f
	}
	if num("connections", "target") != 40 || num("connections", "established") != 40 || num("connections", "failed") != 0 {
		t.Errorf("connections: %v", res["connections"])
	}
	if pub := num("published"); pub < 60 {
		t.Errorf("published %v, want ≥ 60", pub)
	}
	if exp, got := num("expected_deliveries"), num("delivered"); exp == 0 || exp != got {
		t.Errorf("delivered %v of %v", got, exp)
	}
	for _, k := range []string{"missing", "duplicates", "out_of_order"} {
		if num(k) != 0 {
			t.Errorf("%s = %v", k, num(k))
		}
	}
	for _, h := range []string{"latency_ms", "connect_ms"} {
		for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
			if num(h, k) <= 0 {
				t.Errorf("%s.%s = %v", h, k, num(h, k))
			}
		}
	}
	if num("deliveries_per_s") <= 0 || num("client_cpu_share") <= 0 {
		t.Errorf("deliveries_per_s %v, client_cpu_share %v", num("deliveries_per_s"), num("client_cpu_share"))
	}
	if _, ok := res["errors"].(map[string]any); !ok {
		t.Errorf("errors is %T", res["errors"])
	}

	cmp, err := exec.Command(spindleBinary(t), "bench", "compare", out, out).CombinedOutput()
	if err != nil || !strings.Contains(string(cmp), "deliveries/s") || !strings.Contains(string(cmp), "1.00") {
		t.Errorf("compare: %v\n%s", err, cmp)
	}

	dom := renderHeadless(t, html)
	delivered := fmt.Sprintf("%.0f / %.0f", num("delivered"), num("expected_deliveries"))
	for _, want := range []string{"spindle bench: cli-smoke", delivered, `data-series="p99"`, `data-series="connections"`, "Server RSS"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered report lacks %q", want)
		}
	}
}

// renderHeadless loads a file in headless Chromium and returns the DOM.
func renderHeadless(t *testing.T, path string) string {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("SPINDLE_REQUIRE_TOOLS") == "1" {
			t.Fatal("chromium is missing: run make deps")
		}
		t.Skip("chromium is missing")
	}
	out, err := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--no-first-run", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--dump-dom", "file://"+path).Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return string(out)
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"run"},
		{"run", "/does/not/exist.yaml"},
		{"compare", "only-one.json"},
	} {
		var out, errb strings.Builder
		if code := runBench(t.Context(), args, &out, &errb); code == 0 {
			t.Errorf("bench %q: exit 0", args)
		} else if errb.Len() == 0 {
			t.Errorf("bench %q: no message", args)
		}
	}
}

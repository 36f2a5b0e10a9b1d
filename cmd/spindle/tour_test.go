package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/spindlehq/spindle/client"
)

// tourBlocks are the README's code blocks whose info string is "sh NAME",
// in order, each as its text.
func tourBlocks(t *testing.T, readme, name string) []string {
	t.Helper()
	var out []string
	for _, m := range regexp.MustCompile("(?ms)^```sh "+regexp.QuoteMeta(name)+"\n(.*?)^```$").FindAllStringSubmatch(readme, -1) {
		out = append(out, m[1])
	}
	return out
}

// runTourBlock runs one block of a doc in bash (-e: every command must
// succeed) in dir, with the doc's addresses and commands replaced by the
// test's.
func runTourBlock(t *testing.T, dir, block string, subst *strings.Replacer) string {
	t.Helper()
	script := subst.Replace(block)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("doc block failed: %v\n%s\nstdout: %s\nstderr: %s", err, script, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// The README's five-minute tour, command by command as written: serve (with
// its addresses moved to free ports), mint a token and print the demo
// page's address, publish with curl, read the metrics and /info. Between
// the blocks the test checks what the README says happens: the page's
// address serves the demo page, the minted token connects and subscribes
// to news, the curl publication reaches that subscriber, the metrics count
// it, and Ctrl-C drains and exits 0.
func TestReadmeTourRunsAsWritten(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	const goRun = "go run ./cmd/spindle"
	serve := tourBlocks(t, readme, "tour-serve")
	if len(serve) != 1 || strings.Count(serve[0], "\n") != 1 || !strings.HasPrefix(serve[0], goRun+" serve ") {
		t.Fatalf("README.md wants one ```sh tour-serve block of one line `%s serve …`; found %q", goRun, serve)
	}
	if strings.ContainsAny(serve[0], `'"$\`) {
		t.Fatalf("the tour's serve line %q has quotes or expansions: the test splits it at spaces", serve[0])
	}
	steps := tourBlocks(t, readme, "tour")
	if len(steps) != 3 {
		t.Fatalf("README.md has %d ```sh tour blocks, the test knows 3 (token, publish, metrics)", len(steps))
	}

	args := strings.Fields(strings.TrimPrefix(serve[0], goRun))
	// SPINDLE_LISTEN and SPINDLE_ADMIN_LISTEN move it to free ports; the
	// line must not set them, or the variables would be overridden.
	for _, a := range args {
		if strings.HasPrefix(a, "--listen") || strings.HasPrefix(a, "--admin-listen") {
			t.Fatalf("the tour's serve line sets %s: the tour uses the default addresses", a)
		}
	}
	p := startServeProc(t, []string{"SPINDLE_LISTEN=127.0.0.1:0", "SPINDLE_ADMIN_LISTEN=127.0.0.1:0",
		"SPINDLE_CAPTURE_DIR=" + t.TempDir()}, "", args...)
	ws := p.wsURL(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(ws, "ws://"), "/connection/websocket")
	admin := strings.TrimSuffix(strings.TrimPrefix(p.adminURL(t), "http://"), "/")
	demoLine := p.waitLine(t, `demo: +(http://\S+/demo/)`)
	if demoLine[1] != "http://"+addr+"/demo/" {
		t.Errorf("the banner's demo address %s is not on the client listener %s", demoLine[1], addr)
	}
	subst := strings.NewReplacer(goRun, spindleBinary(t), "127.0.0.1:8000", addr, "127.0.0.1:9000", admin)

	// 1: a token and the page's address
	out := runTourBlock(t, "../..", steps[0], subst)
	m := regexp.MustCompile(`(?m)^open (http://\S+/demo/)#token=(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the token block printed %q, want `open http://…/demo/#token=TOKEN`", out)
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(page, []byte(`src="/demo/centrifuge.js"`)) {
		t.Fatalf("%s answered %d without the SDK's script: %.200s", m[1], resp.StatusCode, page)
	}
	pubs := make(chan string, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{URL: ws, Token: m[2], OnPublication: func(ch string, p *protocol.Publication) {
		pubs <- ch + " " + string(p.Data)
	}})
	if err != nil {
		t.Fatalf("the tour's token does not connect: %v", err)
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
		t.Fatalf("subscribe news with the tour's token: %v", err)
	}

	// 2: the publication
	out = runTourBlock(t, "../..", steps[1], subst)
	var reply struct {
		Result *struct {
			Offset uint64 `json:"offset"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil || reply.Result == nil || reply.Result.Offset != 1 {
		t.Errorf("the publish block printed %q, want a result with offset 1 (%v)", out, err)
	}
	select {
	case got := <-pubs:
		if got != `news {"text":"hello"}` {
			t.Errorf("the subscriber received %q, want the tour's {\"text\":\"hello\"} on news", got)
		}
	case <-ctx.Done():
		t.Fatal("the tour's publication did not reach a subscriber of news")
	}

	// 3: metrics and /info
	out = runTourBlock(t, "../..", steps[2], subst)
	for _, want := range []string{`(?m)^spindle_connections 1$`, `(?m)^spindle_publications_total 1$`, `(?m)^spindle_deliveries_total 1$`, `"num_clients":\s*1`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("the metrics block's output has no %s:\n%s", want, out)
		}
	}

	// Ctrl-C: drains and exits 0.
	_ = c.Close()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not exit within 40s of Ctrl-C")
	}
}

// The blocks of docs/troubleshooting.md marked `sh check` run as written
// (`spindle` and the default addresses replaced by the test's) against a
// real `serve` and succeed: the metrics they grep for exist, the capture
// is taken and listed, the dumps are fetched, diffed and analyzed.
func TestTroubleshootingCommandsRun(t *testing.T) {
	b, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := tourBlocks(t, string(b), "check")
	if len(blocks) < 5 {
		t.Fatalf("docs/troubleshooting.md has %d ```sh check blocks, want at least 5", len(blocks))
	}
	p := startServeProc(t, []string{"SPINDLE_CAPTURE_DIR=" + t.TempDir()}, "", "serve",
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--api-key", "key", "--token-hmac-secret", "secret")
	addr := strings.TrimSuffix(strings.TrimPrefix(p.wsURL(t), "ws://"), "/connection/websocket")
	admin := strings.TrimSuffix(strings.TrimPrefix(p.adminURL(t), "http://"), "/")
	subst := strings.NewReplacer("spindle goroutines ", spindleBinary(t)+" goroutines ",
		"127.0.0.1:8000", addr, "127.0.0.1:9000", admin)
	dir := t.TempDir()
	var all strings.Builder
	for _, block := range blocks {
		all.WriteString(runTourBlock(t, dir, block, subst))
	}
	out := all.String()
	for _, want := range []string{`(?m)^ready$`, `"num_clients"`, `(?m)^spindle_slow_consumer_disconnects_total 0$`,
		`(?m)^spindle_admission_state\{kind="session"\} [012]$`, `"reason":"api"`, `(?m)^spindle_broker_up 1$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("the troubleshooting commands' output has no %s:\n%s", want, out)
		}
	}
}

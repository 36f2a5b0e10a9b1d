package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/auth"
)

// builds holds the spindle binaries built by this test run, one per set of
// build tags, in one folder that TestMain removes; mu guards it.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string
}

// spindleBinary builds cmd/spindle once per test run.
func spindleBinary(t *testing.T) string { return spindleBinaryTags(t, "") }

// spindleBinaryTags builds cmd/spindle with build tags once per test run.
func spindleBinaryTags(t *testing.T, tags string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[tags]; ok {
		return bin
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "spindle-bin")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.bins = dir, map[string]string{}
	}
	bin := filepath.Join(builds.dir, "spindle"+strings.ReplaceAll(tags, ",", "-"))
	if out, err := exec.Command("go", "build", "-tags", tags, "-o", bin, "../cmd/spindle").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %q: %v\n%s", tags, err, out)
	}
	builds.bins[tags] = bin
	return bin
}

type proc struct {
	cmd   *exec.Cmd
	ws    string
	admin string
	exit  chan error
}

// runServe starts `spindle serve` on free loopback ports and waits until it
// prints its addresses.
func runServe(t *testing.T, args ...string) *proc {
	t.Helper()
	return runServeBinary(t, spindleBinary(t), args...)
}

// runServeBinary is runServe with another build of spindle.
func runServeBinary(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--api-key", "key", "--token-hmac-secret", secret, "--log-level", "warn"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exit: make(chan error, 1)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.exit:
		case <-time.After(5 * time.Second):
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		p.exit <- cmd.Wait()
	}()
	wsRe := regexp.MustCompile(`clients: (ws://\S+)`)
	adminRe := regexp.MustCompile(`admin:\s+http://(\S+)/`)
	timeout := time.After(20 * time.Second)
	for p.ws == "" || p.admin == "" {
		var line string
		select {
		case line = <-lines:
		case <-timeout:
			t.Fatal("spindle serve did not print its addresses")
		}
		if m := wsRe.FindStringSubmatch(line); m != nil {
			p.ws = m[1]
		}
		if m := adminRe.FindStringSubmatch(line); m != nil {
			p.admin = m[1]
		}
	}
	return p
}

func (p *proc) status(path string) int {
	resp, err := http.Get("http://" + p.admin + path)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// SIGTERM drains: readiness goes false, clients get 3001 "shutdown" spread
// over the reconnect window, new connections are refused, the process
// exits 0 within the grace period.
func TestGracefulShutdownSignal(t *testing.T) {
	p := runServe(t, "--shutdown-grace-period", "5s", "--shutdown-reconnect-window", "1s")
	if p.status("/readyz") != 200 {
		t.Fatal("not ready after start")
	}
	tok, _ := auth.MintConnect(secret, auth.ConnectClaims{UserID: "1"}, time.Hour)
	const n = 20
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(p.ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok)))
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	codes := make(chan int, n)
	times := make(chan time.Duration, n)
	for _, c := range conns {
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					_ = c.Close() // as the SDKs do: the server's close frame ends the connection
					if ce, ok := err.(*websocket.CloseError); ok {
						codes <- ce.Code
					} else {
						codes <- -1
					}
					times <- time.Since(start)
					return
				}
			}
		}()
	}
	var first, last time.Duration
	for i := 0; i < n; i++ {
		if code := <-codes; code != 3001 {
			t.Fatalf("client closed with %d, want 3001", code)
		}
		d := <-times
		if i == 0 || d < first {
			first = d
		}
		if d > last {
			last = d
		}
	}
	if last-first < 200*time.Millisecond {
		t.Errorf("disconnects not spread: first %v last %v", first, last)
	}
	if _, _, err := websocket.DefaultDialer.Dial(p.ws, nil); err == nil {
		t.Error("new connection accepted while draining")
	}
	select {
	case err := <-p.exit:
		if err != nil {
			t.Fatalf("exit: %v, want status 0", err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("did not exit within the grace period")
	}
	t.Logf("drained %d clients between %v and %v, exited after %v", n, first, last, time.Since(start))
}

// A second signal ends the process at once, even while clients remain.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	p := runServe(t, "--shutdown-grace-period", "30s", "--shutdown-reconnect-window", "20s")
	tok, _ := auth.MintConnect(secret, auth.ConnectClaims{UserID: "1"}, time.Hour)
	for i := 0; i < 50; i++ {
		c, _, err := websocket.DefaultDialer.Dial(p.ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok)))
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, func() bool { return p.status("/readyz") == http.StatusServiceUnavailable })
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	select {
	case err := <-p.exit:
		if err == nil {
			t.Fatal("exit status 0 after a forced exit, want non-zero")
		}
		t.Logf("exited %v after the second signal: %v", time.Since(start), err)
	case <-ctx.Done():
		t.Fatal("second signal did not end the process")
	}
}

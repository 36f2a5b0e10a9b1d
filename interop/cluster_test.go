package interop_test

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/broker/redis/redistest"
)

// serveNode is one `spindle serve` process.
type serveNode struct {
	cmd *exec.Cmd
	ws  string
}

func (n *serveNode) api() string {
	return "http://" + strings.TrimSuffix(strings.TrimPrefix(n.ws, "ws://"), "/connection/websocket") + "/api"
}

// startNode runs bin as `spindle serve` on free loopback ports with args
// and waits until it prints its client URL; t.Cleanup kills it.
func startNode(t *testing.T, bin string, args ...string) *serveNode {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--api-key", apiKey, "--token-hmac-secret", secret, "--log-level", "warn"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &testWriter{t: t, prefix: "serve: "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	urls := make(chan string, 1)
	go func() {
		defer close(exited)
		re := regexp.MustCompile(`clients: (ws://\S+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case ws := <-urls:
		return &serveNode{cmd: cmd, ws: ws}
	case <-exited:
		t.Fatal("spindle serve exited before printing its address")
	case <-time.After(20 * time.Second):
		t.Fatal("spindle serve did not print its address")
	}
	return nil
}

// The official SDK follows a channel from one node to another of three
// on one Redis: cluster.test.mjs subscribes on node A (or K), loses that
// node (a disconnect, or K killed with SIGKILL), and subscribes on node B
// from the position it held, getting exactly what was published meanwhile.
func TestCentrifugeJSSDKAcrossNodes(t *testing.T) {
	node := nodeWithSDK(t)
	rs := redistest.Start(t)
	bin := filepath.Join(t.TempDir(), "spindle")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/spindle").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	onRedis := []string{"--broker", "redis", "--redis-address", rs.Addr(), "--redis-prefix", "interop"}
	a, b, k := startNode(t, bin, onRedis...), startNode(t, bin, onRedis...), startNode(t, bin, onRedis...)
	runNodeTest(t, node, "cluster.test.mjs",
		"SPINDLE_WS_A="+a.ws, "SPINDLE_WS_B="+b.ws, "SPINDLE_WS_K="+k.ws,
		"SPINDLE_API_A="+a.api(), "SPINDLE_API_B="+b.api(),
		fmt.Sprintf("SPINDLE_PID_K=%d", k.cmd.Process.Pid),
		"SPINDLE_API_KEY="+apiKey, "SPINDLE_SECRET="+secret,
	)
}

package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/gateway"
)

const secret = "deploy-test-secret"

// unshareArgs are the unshare(1) flags that give a command a PID namespace
// of its own, where it is PID 1 as in a container; --map-root-user when
// not root. The test is skipped when the kernel does not permit it here.
func unshareArgs(t *testing.T) (string, []string) {
	t.Helper()
	bin := requireTool(t, "unshare", "Debian package util-linux")
	args := []string{"--pid", "--fork", "--mount-proc", "--kill-child"}
	if os.Geteuid() != 0 {
		args = append([]string{"--map-root-user"}, args...)
	}
	if out, err := exec.Command(bin, append(args, "true")...).CombinedOutput(); err != nil {
		t.Skipf("unshare %s is not permitted on this machine: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return bin, args
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// children lists the pids whose parent is pid (any of its threads).
func children(pid int) ([]int, error) {
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, s := range strings.Fields(string(data)) {
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// The image's binary as PID 1 of its own PID namespace, as the container
// runtime starts it: it serves, and SIGTERM — which the kernel drops for a
// PID 1 that has no handler for it — drains: the connected client gets
// disconnect 3001 "shutdown", the process exits 0, and it leaves no child
// behind (it starts none, so there is nothing to become a zombie).
func TestPID1DrainsOnSIGTERM(t *testing.T) {
	unshare, args := unshareArgs(t)
	bin := imageBinary(t)
	args = append(args, bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--api-key", "key", "--token-hmac-secret", secret, "--log-level", "info",
		"--shutdown-grace-period", "10s", "--shutdown-reconnect-window", "500ms", "--capture-dir", t.TempDir())
	cmd := exec.Command(unshare, args...)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "spindle.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stderr = logFile // the process writes to the file itself
	logText := func() string {
		b, err := os.ReadFile(logFile.Name())
		if err != nil {
			return err.Error()
		}
		return string(b)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		exited <- cmd.Wait()
	}()
	var exitErr error
	done := false
	t.Cleanup(func() {
		if !done {
			_ = cmd.Process.Kill() // --kill-child: the gateway gets SIGKILL too
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Error("unshare did not exit after SIGKILL")
			}
		}
		if t.Failed() {
			t.Logf("spindle's log:\n%s", logText())
		}
	})

	// The banner: addresses, and the pid SIGUSR2 goes to — 1.
	wsRe := regexp.MustCompile(`clients: (ws://\S+)`)
	adminRe := regexp.MustCompile(`admin:\s+http://(\S+)/`)
	pidRe := regexp.MustCompile(`kill -USR2 (\d+)`)
	var ws, admin, nsPid string
	timeout := time.After(30 * time.Second)
	for ws == "" || admin == "" || nsPid == "" {
		select {
		case line := <-lines:
			if m := wsRe.FindStringSubmatch(line); m != nil {
				ws = m[1]
			}
			if m := adminRe.FindStringSubmatch(line); m != nil {
				admin = m[1]
			}
			if m := pidRe.FindStringSubmatch(line); m != nil {
				nsPid = m[1]
			}
		case err := <-exited:
			done = true
			t.Fatalf("spindle exited before serving: %v", err)
		case <-timeout:
			t.Fatal("spindle serve did not print its banner")
		}
	}
	if nsPid != "1" {
		t.Fatalf("spindle says it is pid %s in its namespace; want 1", nsPid)
	}

	// Its pid out here: unshare's only child, pid 1 in the namespace.
	var hostPid int
	waitFor(t, "unshare's child", 5*time.Second, func() bool {
		kids, err := children(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(kids) == 1 {
			hostPid = kids[0]
		}
		return len(kids) == 1
	})
	status, err := os.ReadFile("/proc/" + strconv.Itoa(hostPid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^NSpid:\s+` + strconv.Itoa(hostPid) + `\s+1$`).Match(status) {
		t.Fatalf("pid %d is not pid 1 of a namespace of its own:\n%s", hostPid, status)
	}

	waitFor(t, "/readyz 200", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: "42"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{URL: ws, Token: tok})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}

	if kids, err := children(hostPid); err != nil || len(kids) > 0 {
		t.Fatalf("PID 1 has children %v (%v): spindle starts none, so none can become a zombie", kids, err)
	}
	if err := syscall.Kill(hostPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the client was not disconnected after SIGTERM")
	}
	var de *client.DisconnectError
	if !errors.As(c.Err(), &de) || de.Code != gateway.DisconnectShutdown.Code {
		t.Fatalf("client ended with %v; want disconnect %d (shutdown, reconnect)", c.Err(), gateway.DisconnectShutdown.Code)
	}
	select {
	case exitErr = <-exited:
		done = true
	case <-time.After(15 * time.Second):
		t.Fatal("spindle did not exit within its grace period after SIGTERM")
	}
	// unshare --fork exits with its child's status.
	if exitErr != nil {
		t.Fatalf("spindle as PID 1 exited with %v after SIGTERM; want 0", exitErr)
	}
	if !strings.Contains(logText(), "signal received, draining") {
		t.Error("the log does not say the signal started the drain")
	}
	// Nothing is left: unshare reaped PID 1, and the kernel ended the
	// namespace with it.
	if _, err := os.Stat("/proc/" + strconv.Itoa(hostPid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid %d is still there after exit (a zombie?): %v", hostPid, err)
	}
}

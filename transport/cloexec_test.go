package transport

import (
	"os/exec"
	"strings"
	"testing"
)

// A process the server's process starts inherits none of its sockets: a
// child holding a session's socket would keep it open after the server
// closed it, so its peer would never see the end. (nbio's epoll and
// eventfd descriptors are still inherited; they hold no connection open.)
func TestChildInheritsNoConnection(t *testing.T) {
	s, _ := startEcho(t)
	handshake(t, s)
	out, err := exec.Command("sh", "-c", "ls -l /proc/self/fd").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "socket:") {
			t.Errorf("the child inherited %s", line)
		}
	}
}

package server_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// `spindle serve` on a port already in use exits non-zero at once with the
// reason, every time (its start-up once hung in the event loop's stop).
func TestServeOnBusyPort(t *testing.T) {
	bin := spindleBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, bin, "serve", "--listen", busy.Addr().String(), "--admin-listen", "")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("run %d: still running after 10 s", i+1)
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("run %d: %v, want a non-zero exit", i+1, err)
		}
		if !strings.Contains(stderr.String(), "address already in use") {
			t.Fatalf("run %d: stderr %q does not say the address is in use", i+1, stderr.String())
		}
	}
}

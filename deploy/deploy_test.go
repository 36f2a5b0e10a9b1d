// Package deploy holds what runs Spindle in production: the container image
// (Dockerfile), the Kubernetes manifests, the Prometheus alert rules and the
// Grafana dashboard. Its tests check each of them against the real tools
// (promtool, kubectl, unshare) and a real gateway.
package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/spindlehq/spindle/internal/leakcheck"
)

// TestMain checks that the tests left no goroutine behind (nbio starts a
// process-wide task pool in its init), then removes the binary built from
// the Dockerfile's build line.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := leakcheck.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if image.dir != "" {
		_ = os.RemoveAll(image.dir)
	}
	os.Exit(code)
}

// requireTool returns the path of a command-line tool. Without it the test
// is skipped, or fails when SPINDLE_REQUIRE_TOOLS=1 (scripts/test.sh sets
// it) or CI is set: there a missing tool is a broken machine, not a reason
// to pass.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	toolMissing(t, fmt.Sprintf("%s is not installed (%s): %v", name, install, err))
	return ""
}

// toolMissing skips the test, or fails it where tools are required.
func toolMissing(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("SPINDLE_REQUIRE_TOOLS") == "1" || os.Getenv("CI") != "" {
		t.Fatal(msg + "; SPINDLE_REQUIRE_TOOLS=1 or CI is set")
	}
	t.Skip(msg + " — set SPINDLE_REQUIRE_TOOLS=1 to fail instead")
}

package server_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/spindlehq/spindle/internal/leakcheck"
)

// TestMain checks that the tests left no goroutine behind (nbio starts a
// process-wide task pool in its init), then removes the spindle binary the
// process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := leakcheck.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

package transport

import (
	"testing"

	"github.com/spindlehq/spindle/internal/leakcheck"
)

// Every test of the package ends with no goroutine of its own left (nbio
// starts a process-wide task pool in its init).
func TestMain(m *testing.M) {
	leakcheck.Main(m)
}

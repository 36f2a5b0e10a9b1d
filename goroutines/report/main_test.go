package report

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the tests left no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Package leakcheck is the goroutine-leak check the project's tests end
// with: goleak, leaving out the one goroutine no test starts, the task pool
// nbio starts for the whole process in its init.
package leakcheck

import (
	"testing"

	"go.uber.org/goleak"
)

// NbioPool leaves nbio's process-wide task pool out of a check.
var NbioPool = goleak.IgnoreTopFunction("github.com/lesismal/nbio/taskpool.New.func3")

// Main runs a package's tests and fails when they left a goroutine behind.
func Main(m *testing.M) { goleak.VerifyTestMain(m, NbioPool) }

// Find reports the goroutines left running, apart from nbio's pool and
// those opts leave out.
func Find(opts ...goleak.Option) error { return goleak.Find(append(opts, NbioPool)...) }

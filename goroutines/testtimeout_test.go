package goroutines

import (
	"context"
	"os/exec"
	"reflect"
	"testing"
	"time"
)

// goTestTimeout runs `go test -timeout 2s` on testdata/progs/hangtest, whose
// two parallel tests hang, and returns its output.
func goTestTimeout(t testing.TB) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-timeout", "2s", "./testdata/progs/hangtest")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("go test of hanging tests: %v (ctx %v)\n%s", err, ctx.Err(), out)
	}
	return out
}

// TestGoTestTimeout: the panic of a real `go test -timeout` keeps the names
// of the tests that were running.
func TestGoTestTimeout(t *testing.T) {
	r := analyzeBytes(t, goTestTimeout(t), Loose)
	if want := []string{"TestHangsReading", "TestHangsToo"}; !reflect.DeepEqual(r.RunningTests, want) {
		t.Errorf("running tests %q, want %q", r.RunningTests, want)
	}
	if len(r.Reason) == 0 || r.Reason[0] != "panic: test timed out after 2s" {
		t.Errorf("reason %q", r.Reason)
	}
	const fn = "github.com/spindlehq/spindle/goroutines/testdata/progs/hangtest.waitForever"
	hanging := 0
	for _, g := range r.Groups {
		if g.TopFunction == fn && g.State == "chan receive" {
			hanging += g.Count
		}
	}
	if hanging != 2 {
		t.Errorf("%d goroutines of hanging tests, want 2:\n%s", hanging, summary(r))
	}
}

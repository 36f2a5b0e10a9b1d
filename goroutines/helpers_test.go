package goroutines

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildProg builds testdata/progs/<name> once per test binary.
func buildProg(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "goroutines-progs-")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	bin := filepath.Join(buildDir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/progs/"+name)
	// Without cgo: the net package would otherwise link the cgo resolver,
	// and a cgo program never reports "all goroutines are asleep".
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// TestMain checks that the tests left no goroutine behind, then removes the
// programs they built.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// runDump runs dumpee with a scenario; for out=="wait" it sends SIGQUIT once
// the program says it is ready and returns stderr, otherwise the output.
func runDump(t testing.TB, scenario, out string, env ...string) []byte {
	return runDumpArgs(t, []string{"-scenario", scenario, "-out", out}, env...)
}

func runDumpArgs(t testing.TB, args []string, env ...string) []byte {
	t.Helper()
	scenario, out := args[1], args[3]
	bin := buildProg(t, "dumpee")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out != "wait" {
		cmd.Stdout = &stdout
		err := cmd.Run()
		if scenario == "deadlock" || scenario == "panic" {
			if err == nil {
				t.Fatalf("%s: expected the program to crash", scenario)
			}
			return stderr.Bytes()
		}
		if err != nil {
			t.Fatalf("dumpee %s %s: %v\n%s", scenario, out, err, stderr.Bytes())
		}
		return stdout.Bytes()
	}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := pipe.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("dumpee did not get ready: %q %v", buf, err)
	}
	time.Sleep(200 * time.Millisecond) // let main leave the write syscall and sleep
	if err := cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	return stderr.Bytes()
}

// groupBy finds the group whose top function is fn and state is state.
func groupBy(t testing.TB, r *Report, fn, state string) Group {
	t.Helper()
	for _, g := range r.Groups {
		if g.TopFunction == fn && g.State == state {
			return g
		}
	}
	t.Fatalf("no group %s [%s]; groups:\n%s", fn, state, summary(r))
	return Group{}
}

func summary(r *Report) string {
	var b strings.Builder
	for _, g := range r.Groups {
		fmt.Fprintf(&b, "  %d x [%s] %s created by %s\n", g.Count, g.State, g.TopFunction, g.CreatedBy)
	}
	return b.String()
}

func analyzeBytes(t testing.TB, b []byte, mode GroupMode) *Report {
	t.Helper()
	r, err := Analyze(bytes.NewReader(b), Options{Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantStates(t testing.TB, r *Report, want map[string]int) {
	t.Helper()
	for k, v := range want {
		if r.States[k] != v {
			t.Errorf("states[%q] = %d, want %d (all: %v)", k, r.States[k], v, r.States)
		}
	}
}

// lineOf is the 1-based line of the first line of file containing substr.
func lineOf(t *testing.T, file, substr string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", file, substr)
	return 0
}

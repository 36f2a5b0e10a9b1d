package goroutines

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestDotlessModuleUnderSrc: a module named "mysvc" built under a src/ tree
// is user code, so its leaking workers are the top suspect by name.
func TestDotlessModuleUnderSrc(t *testing.T) {
	root := filepath.Join(t.TempDir(), "src", "mysvc")
	if err := os.CopyFS(root, os.DirFS("testdata/progs/mysvc")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "mysvc")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mysvc: %v\n%s", err, out)
	}
	for _, out := range []string{"debug2", "debug1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		dump, err := exec.CommandContext(ctx, bin, "-out", out).Output()
		cancel()
		if err != nil {
			t.Fatalf("mysvc: %v", err)
		}
		r := analyzeBytes(t, dump, Loose)
		if len(r.Suspects) == 0 {
			t.Fatalf("%s: no suspects:\n%s", out, summary(r))
		}
		s := r.Suspects[0]
		if s.TopFunction != "mysvc/pool.worker" || s.Count != 8 || !strings.HasSuffix(s.File, "/src/mysvc/pool/pool.go") {
			t.Errorf("%s: top suspect %+v, want mysvc/pool.worker × 8 in src/mysvc/pool/pool.go", out, s)
		}
		g := r.Groups[s.Group-1]
		if g.CreatedBy != "mysvc/pool.Start" && out == "debug2" {
			t.Errorf("%s: created by %q", out, g.CreatedBy)
		}
		if IsStdlib(Frame{Function: "mysvc/pool.worker", File: s.File}) || IsStdlib(Frame{Function: "main.main", File: s.File}) {
			t.Errorf("mysvc frames taken for the standard library")
		}
	}
}

// TestStdPackagesList: stdPackages is exactly `go list std` of the installed
// Go without internal/ and vendor/ trees, and every package go list prints
// (those trees included) is recognised as standard library.
func TestStdPackagesList(t *testing.T) {
	out, err := exec.Command("go", "list", "std").Output()
	if err != nil {
		t.Fatalf("go list std: %v", err)
	}
	var want []string
	for _, pkg := range strings.Fields(string(out)) {
		if !isStdPackage(pkg) {
			t.Errorf("%s (go list std) is not recognised as standard library", pkg)
		}
		inTree := false
		for _, elem := range strings.Split(pkg, "/") {
			inTree = inTree || elem == "internal" || elem == "vendor"
		}
		if !inTree {
			want = append(want, pkg)
		}
	}
	var got []string
	for pkg := range stdPackages {
		got = append(got, pkg)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdpkgs.go is not `go list std` of %s; regenerate it from:\n%s", runtimeVersion(t), strings.Join(want, "\n"))
	}
	for _, pkg := range []string{"mysvc", "mysvc/pool", "example.com/x", "github.com/gorilla/websocket", "main"} {
		if isStdPackage(pkg) {
			t.Errorf("%s taken for the standard library", pkg)
		}
	}
}

func runtimeVersion(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runBinary runs the built spindle binary with args (stdin empty) and
// returns its stdout, stderr and exit code.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(spindleBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("spindle %q: %v", args, err)
		}
		return out.String(), errb.String(), cmd.ProcessState.ExitCode()
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("spindle %q did not exit (stdout %q, stderr %q)", args, out.String(), errb.String())
		return "", "", -1
	}
}

// Every command and subcommand answers --help (and -h, and help where it
// takes subcommands) with its usage on stdout and exit status 0.
func TestHelpOfEveryCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // the usage names the command
	}{
		{[]string{"--help"}, "usage: spindle <command>"},
		{[]string{"-h"}, "usage: spindle <command>"},
		{[]string{"help"}, "usage: spindle <command>"},
		{[]string{"help", "serve"}, "usage: spindle serve"},
		{[]string{"serve", "--help"}, "usage: spindle serve"},
		{[]string{"serve", "-h"}, "usage: spindle serve"},
		{[]string{"token", "--help"}, "usage: spindle token"},
		{[]string{"version", "--help"}, "usage: spindle version"},
		{[]string{"goroutines", "--help"}, "usage: spindle goroutines"},
		{[]string{"goroutines", "analyze", "--help"}, "usage: spindle goroutines analyze"},
		{[]string{"goroutines", "diff", "--help"}, "usage: spindle goroutines diff"},
		{[]string{"goroutines", "watch", "--help"}, "usage: spindle goroutines watch"},
		{[]string{"bench", "--help"}, "usage: spindle bench"},
		{[]string{"bench", "help"}, "usage: spindle bench"},
		{[]string{"bench", "run", "--help"}, "usage: spindle bench run"},
		{[]string{"bench", "compare", "--help"}, "usage: spindle bench compare"},
		{[]string{"bench", "worker", "--help"}, "usage: spindle bench worker"},
		{[]string{"proxy", "--help"}, "usage: spindle proxy"},
		{[]string{"baseline-hub", "--help"}, "usage: spindle baseline-hub"},
		{[]string{"floor-hub", "--help"}, "usage: spindle floor-hub"},
	} {
		stdout, stderr, code := runBinary(t, tt.args...)
		if code != 0 || !strings.Contains(stdout, tt.want) {
			t.Errorf("spindle %s: exit %d, stdout %q, stderr %q; want exit 0 and %q on stdout",
				strings.Join(tt.args, " "), code, stdout, stderr, tt.want)
		}
	}
}

// Unknown flags and commands still fail with status 2 and say why on stderr.
func TestUnknownFlagsExit2(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"serve", "--bogus"},
		{"token", "--bogus"},
		{"version", "--bogus"},
		{"goroutines", "analyze", "--bogus"},
		{"goroutines", "frobnicate"},
		{"bench", "--bogus"},
		{"bench", "run", "--bogus"},
		{"bench", "compare", "--bogus"},
		{"bench", "worker", "--bogus"},
		{"proxy", "--bogus"},
		{"baseline-hub", "--bogus"},
		{"floor-hub", "--bogus"},
	} {
		stdout, stderr, code := runBinary(t, args...)
		if code != 2 || stderr == "" {
			t.Errorf("spindle %s: exit %d, stderr %q; want 2 and a message", strings.Join(args, " "), code, stderr)
		}
		if len(args) > 0 && strings.HasPrefix(args[len(args)-1], "--bogus") && !strings.Contains(stderr, "bogus") {
			t.Errorf("spindle %s: stderr %q does not name the flag", strings.Join(args, " "), stderr)
		}
		if stdout != "" {
			t.Errorf("spindle %s: wrote %q to stdout", strings.Join(args, " "), stdout)
		}
	}
}

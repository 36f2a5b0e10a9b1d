package goroutines

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runProg runs a program built from testdata/progs and returns its stdout.
func runProg(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	bin := buildProg(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestHealthyWebSocketServer: the dump of a gorilla/websocket server holding
// 500 idle loopback clients has no leak suspects; its per-connection write
// pumps are explained as such.
func TestHealthyWebSocketServer(t *testing.T) {
	for _, out := range []string{"debug2", "debug1"} {
		r := analyzeBytes(t, runProg(t, "wshub", "-clients", "500", "-out", out), Loose)
		if len(r.Suspects) != 0 {
			t.Errorf("%s: healthy server has leak suspects %+v", out, r.Suspects)
		}
		var wp *PerConnGroup
		for i, p := range r.PerConnection {
			if p.TopFunction == "main.(*client).writePump" {
				wp = &r.PerConnection[i]
			}
		}
		if wp == nil || wp.Count != 500 || wp.Connections != 500 ||
			!strings.HasPrefix(wp.Text, "500 goroutines per open connection (500 connections reading from the network in group #") {
			t.Fatalf("%s: write pumps not per connection: %+v", out, r.PerConnection)
		}
		// Server read pumps and client readers both block reading, 500 each.
		readers := r.Groups[wp.Readers-1]
		if readers.Blocking != "network-io" || readers.Count != 500 {
			t.Errorf("%s: readers group %+v", out, readers)
		}
		if g := r.Groups[wp.Group-1]; g.PerConnection != wp.Readers || g.Description != wp.Text {
			t.Errorf("%s: group %d per_connection_of %d description %q", out, g.ID, g.PerConnection, g.Description)
		}
	}
}

// TestLeakingWebSocketServer: the same server with 4 stuck clients and a hub
// that starts a goroutine per message it cannot queue; those goroutines are
// suspect #1, and the write pumps of the 496 healthy connections are still
// per connection.
func TestLeakingWebSocketServer(t *testing.T) {
	for _, out := range []string{"debug2", "debug1"} {
		r := analyzeBytes(t, runProg(t, "wshub", "-clients", "500", "-leak", "4", "-msgs", "80", "-out", out), Loose)
		if len(r.Suspects) == 0 {
			t.Fatalf("%s: no leak suspects:\n%s", out, summary(r))
		}
		s := r.Suspects[0]
		if s.TopFunction != "main.(*hub).deliverLater" || s.Count != 4*(80-16) {
			t.Errorf("%s: suspect #1 %+v, want main.(*hub).deliverLater × 256", out, s)
		}
		for _, s := range r.Suspects {
			if g := r.Groups[s.Group-1]; g.PerConnection != 0 {
				t.Errorf("%s: per-connection group %d is a suspect", out, g.ID)
			}
		}
		found := false
		for _, p := range r.PerConnection {
			found = found || (p.TopFunction == "main.(*client).writePump" && p.Count == 496)
		}
		if !found {
			t.Errorf("%s: healthy write pumps not per connection: %+v", out, r.PerConnection)
		}
	}
}

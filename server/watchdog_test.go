package server_test

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type captureList struct {
	Captures []struct {
		ID        string   `json:"id"`
		Reason    string   `json:"reason"`
		Files     []string `json:"files"`
		TopGrowth []struct {
			Function  string   `json:"function"`
			Delta     int      `json:"delta"`
			PerSecond *float64 `json:"per_second"`
		} `json:"top_growth"`
	} `json:"captures"`
	Dir string `json:"dir"`
}

func captures(t *testing.T, admin string) captureList {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/debug/captures")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l captureList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// kill -USR2 makes a capture within 2 s that `spindle goroutines analyze`
// reads, and the process keeps serving.
func TestSIGUSR2Captures(t *testing.T) {
	dir := t.TempDir()
	p := runServe(t, "--capture-dir", dir)
	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	var l captureList
	for l = captures(t, p.admin); len(l.Captures) == 0; l = captures(t, p.admin) {
		if time.Now().After(deadline) {
			t.Fatal("no capture within 2 s of SIGUSR2")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := l.Captures[0]
	if c.Reason != "signal: SIGUSR2" || !strings.Contains(strings.Join(c.Files, " "), "goroutine") {
		t.Fatalf("capture %+v", c)
	}
	dump := filepath.Join(dir, c.ID, "goroutine.txt")
	out, err := exec.Command(spindleBinary(t), "goroutines", "analyze", "--json", dump).Output()
	if err != nil {
		t.Fatalf("goroutines analyze %s: %v", dump, err)
	}
	var rep struct {
		Total int `json:"total"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Total == 0 {
		t.Fatalf("analysis of the capture: %v %s", err, out)
	}
	if p.status("/healthz") != 200 || p.status("/readyz") != 200 {
		t.Fatal("not serving after SIGUSR2")
	}
}

// A spindle built with the leak switch (build tag leakinject) leaks at a
// steady rate; the growth rule captures on its own within its window and
// the capture's diff names the leaking function first, with its rate.
func TestWatchdogCatchesAnInjectedLeak(t *testing.T) {
	leakBin := spindleBinaryTags(t, "leakinject")
	t.Setenv("SPINDLE_TEST_LEAK_RATE", "100")
	p := runServeBinary(t, leakBin, "--capture-dir", t.TempDir(),
		"--watchdog-rules", "goroutines grow > 30/s over 3s", "--capture-cooldown", "1m")
	window := 3 * time.Second
	deadline := time.Now().Add(window + 5*time.Second) // the rule's window, plus its samples' start
	for {
		l := captures(t, p.admin)
		if len(l.Captures) > 0 {
			c := l.Captures[0]
			if !strings.HasPrefix(c.Reason, "rule: goroutines grow") {
				t.Fatalf("capture reason %q", c.Reason)
			}
			if len(c.TopGrowth) == 0 || !strings.HasSuffix(c.TopGrowth[0].Function, "leakInjected") || c.TopGrowth[0].PerSecond == nil {
				t.Fatalf("top growth %+v, want main.leakInjected first with its rate", c.TopGrowth)
			}
			t.Logf("captured %s: %s +%d (%.0f/s)", c.ID, c.TopGrowth[0].Function, c.TopGrowth[0].Delta, *c.TopGrowth[0].PerSecond)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the watchdog did not capture the leak within its rule's window")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

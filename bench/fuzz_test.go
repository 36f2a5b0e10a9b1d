package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// Scenario files come from users: any bytes give a scenario that validates
// or an error, never a panic.
func FuzzParseScenario(f *testing.F) {
	files, _ := filepath.Glob("scenarios/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("urls: [ws://x]\nstages: [{duration: 1s, connections: {shape: spike, from: 1, to: 9, at: 2s, hold: 1s}}]"))
	f.Add([]byte("workers: -1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseScenario(data)
		if err != nil {
			return
		}
		if sc.Validate() != nil {
			t.Fatal("ParseScenario returned a scenario that does not validate")
		}
		sc.Truncate(sc.Duration() / 2)
		_, _, _ = sc.at(0)
	})
}

// Payloads arrive from the server under test: a foreign or damaged one is an
// error, and a well-formed one round-trips.
func FuzzParsePayload(f *testing.F) {
	f.Add(appendPayload(nil, 7, 1732540000123456789, 80))
	f.Add([]byte(`{"s":,"t":1}`))
	f.Add([]byte(`{"s":99999999999999999999999,"t":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, ts, err := parsePayload(data)
		if err != nil {
			return
		}
		b := appendPayload(nil, seq, ts, minPayload+40)
		if s2, t2, err := parsePayload(b); err != nil || s2 != seq || t2 != ts {
			t.Fatalf("round trip of %d/%d failed: %d/%d %v", seq, ts, s2, t2, err)
		}
	})
}

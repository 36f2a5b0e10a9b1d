package gateway

import (
	"context"
	"encoding/json"
	"testing"
)

// Load reads the fan-out histogram again after each publication, and an
// idle node's Load allocates nothing: the guards call it several times a
// second.
func TestLoadFanoutHistogram(t *testing.T) {
	tn := startTestNode(t, nil)
	c := dialClient(t, tn.url)
	c.connect(connectToken(t, "reader"))
	c.cmd("subscribe", map[string]any{"channel": "news"})
	count := func() (n uint64) {
		for _, c := range tn.Load().Fanout.Counts {
			n += c
		}
		return n
	}
	if got := count(); got != 0 {
		t.Fatalf("fan-outs before any publication: %d", got)
	}
	for i := range 3 {
		if _, err := tn.Publish(context.Background(), "news", json.RawMessage(`{}`), PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the publication's fan-out in Load", func() bool { return count() == uint64(i+1) })
	}
	if raceEnabled {
		t.Skip("the race detector adds allocations")
	}
	if a := testing.AllocsPerRun(50, func() { _ = tn.Load() }); a != 0 {
		t.Errorf("%v allocations per Load with nothing published, want none", a)
	}
}

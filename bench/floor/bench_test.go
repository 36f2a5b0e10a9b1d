package floor_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/spindlehq/spindle/bench"
	"github.com/spindlehq/spindle/bench/floor"
)

// spindle bench drives the floor like Spindle and the baseline: every
// publication reaches every subscriber once and in order by the bench's own
// accounting, while connections ramp up over two workers and two source
// addresses and publications go to three channels at rising rates.
func TestBenchRunCountsEveryDeliveryOnce(t *testing.T) {
	s := start(t, floor.Config{APIKey: testKey})
	sc, err := bench.ParseScenario([]byte(fmt.Sprintf(`
urls: [%s]
api: http://%s/api
api_key: %s
channels: 3
workers: 2
source_addresses: [127.0.0.1, 127.0.0.2]
connect_rate: 300
stages:
  - duration: 1s
    connections: {shape: ramp, from: 0, to: 90}
    publish_rate: {shape: flat, to: 30}
  - duration: 2s
    connections: {shape: flat, to: 90}
    publish_rate: {shape: ramp, from: 30, to: 150}
drain: 1s
`, s.wsURL(), s.addr, testKey)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := bench.Run(context.Background(), sc, bench.Options{ServerPID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	res.WriteText(os.Stderr)
	if res.Connections.Established != 90 || res.Connections.Failed != 0 {
		t.Errorf("connections %+v, want 90 established", res.Connections)
	}
	if res.Published < 150 || res.PublishFailed != 0 {
		t.Errorf("published %d (failed %d), want ≥ 150", res.Published, res.PublishFailed)
	}
	if res.ExpectedDeliveries < res.Published*90/3/2 || res.Delivered != res.ExpectedDeliveries ||
		res.Missing != 0 || res.Duplicates != 0 || res.OutOfOrder != 0 {
		t.Errorf("delivered %d of %d expected (published %d), missing %d, dup %d, ooo %d",
			res.Delivered, res.ExpectedDeliveries, res.Published, res.Missing, res.Duplicates, res.OutOfOrder)
	}
	if len(res.Errors) != 0 || len(res.Disconnects) != 0 {
		t.Errorf("errors %v disconnects %v", res.Errors, res.Disconnects)
	}
	if st := s.Stats(); st.WriteErrors != 0 {
		t.Errorf("stats %+v, want no failed writes", st)
	}
}

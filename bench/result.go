package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured; its JSON is the contract described in
// bench/scenarios/README.md (fields are added, never renamed).
type Result struct {
	Scenario    string    `json:"scenario"`
	Started     time.Time `json:"started"`
	DurationS   float64   `json:"duration_s"`
	Interrupted bool      `json:"interrupted,omitempty"` // stopped before the stages ended

	Connections ConnStats `json:"connections"`

	Published          uint64 `json:"published"`
	PublishFailed      uint64 `json:"publish_failed"`
	ExpectedDeliveries uint64 `json:"expected_deliveries"`
	Delivered          uint64 `json:"delivered"`
	Missing            uint64 `json:"missing"`
	Duplicates         uint64 `json:"duplicates"`
	OutOfOrder         uint64 `json:"out_of_order"`

	Latency      Percentiles `json:"latency_ms"`   // publish→deliver, from the intended send time
	Connect      Percentiles `json:"connect_ms"`   // TCP + upgrade + connect reply, from the intended start
	SubscribeLat Percentiles `json:"subscribe_ms"` // subscribe command round trip
	Spectrum     []Quantile  `json:"latency_spectrum"`

	DeliveriesPerS float64 `json:"deliveries_per_s"` // delivered / publishing time (first publish to last + drain)
	PublishedPerS  float64 `json:"published_per_s"`

	ClientCPUShare   float64 `json:"client_cpu_share"` // bench CPU seconds / (wall seconds × cores)
	ClientSaturated  bool    `json:"client_saturated"` // latency figures are not to be trusted
	SaturationReason string  `json:"client_saturation_reason,omitempty"`

	Errors      map[string]uint64 `json:"errors"`      // kind → count
	Disconnects map[string]uint64 `json:"disconnects"` // disconnect code → count

	Server   *ServerStats  `json:"server,omitempty"`
	Stages   []StageResult `json:"stages"`
	Timeline []Second      `json:"timeline"`
}

// StageResult sums up the seconds of one scenario stage: the fan-out curve
// is read from these (deliveries/s against p99 at each publish rate).
type StageResult struct {
	Stage          int     `json:"stage"` // 1-based
	FromS          int     `json:"from_s"`
	ToS            int     `json:"to_s"`
	Connections    int     `json:"connections"`  // held at the end of the stage
	PublishRate    float64 `json:"publish_rate"` // the stage's target at its end
	PublishedPerS  float64 `json:"published_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	P50            float64 `json:"p50_ms"`
	P99            float64 `json:"p99_ms"`
	P999           float64 `json:"p999_ms"`
}

// ConnStats counts connections.
type ConnStats struct {
	Target      int     `json:"target"` // the largest connection target of the scenario
	Established uint64  `json:"established"`
	Failed      uint64  `json:"failed"`
	Peak        int     `json:"peak"`       // most connections held at once
	RatePerS    float64 `json:"rate_per_s"` // established / seconds from the first attempt to the last established
}

// Percentiles summarises a histogram in milliseconds.
type Percentiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Quantile is one point of the latency spectrum.
type Quantile struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// ServerStats is the server's memory, read from /proc when --server-pid is given.
type ServerStats struct {
	PID             int     `json:"pid"`
	RSSBeforeBytes  uint64  `json:"rss_before_bytes"`
	RSSAtPeakBytes  uint64  `json:"rss_at_peak_bytes"` // with the most connections held
	RSSPerConnBytes float64 `json:"rss_per_conn_bytes"`
}

// Second is one second of the run.
type Second struct {
	T            int     `json:"t"`
	Connections  int     `json:"connections"`
	Published    uint64  `json:"published"`
	Delivered    uint64  `json:"delivered"`
	P50          float64 `json:"p50_ms"`
	P99          float64 `json:"p99_ms"`
	P999         float64 `json:"p999_ms"`
	Errors       uint64  `json:"errors"`
	ServerRSS    uint64  `json:"server_rss_bytes,omitempty"`
	ClientLagP99 float64 `json:"client_lag_p99_ms"` // how late the bench's own timers fired
}

// newHist records microseconds from 1 µs to 10 minutes with 3 significant digits.
func newHist() *hdr.Histogram { return hdr.New(1, int64(10*time.Minute/time.Microsecond), 3) }

func recordDur(h *hdr.Histogram, d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	if us > h.HighestTrackableValue() {
		us = h.HighestTrackableValue()
	}
	_ = h.RecordValue(us)
}

func encodeHist(h *hdr.Histogram) []byte {
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		panic(fmt.Sprintf("encode histogram: %v", err)) // only fails on a broken writer
	}
	return b
}

func decodeHist(b []byte) (*hdr.Histogram, error) {
	if len(b) == 0 {
		return newHist(), nil
	}
	h, err := hdr.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode histogram: %w", err)
	}
	return h, nil
}

func ms(us int64) float64 { return math.Round(float64(us)/10) / 100 }

func percentiles(h *hdr.Histogram) Percentiles {
	return Percentiles{
		Count: uint64(h.TotalCount()),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

func spectrum(h *hdr.Histogram) []Quantile {
	var out []Quantile
	for _, q := range []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 99.999, 100} {
		out = append(out, Quantile{q, ms(h.ValueAtQuantile(q))})
	}
	return out
}

// WriteJSON writes the result to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// ReadResult reads a result file written by WriteJSON.
func ReadResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("result %s: %w", path, err)
	}
	return &r, nil
}

// WriteText writes a summary with the latency spectrum.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "scenario %s: %.1fs", r.Scenario, r.DurationS)
	if r.Interrupted {
		fmt.Fprint(w, " (interrupted before the stages ended)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "connections: target %d, established %d (%.0f/s), failed %d, peak %d\n",
		r.Connections.Target, r.Connections.Established, r.Connections.RatePerS, r.Connections.Failed, r.Connections.Peak)
	fmt.Fprintf(w, "published %d (failed %d, %.0f/s); delivered %d of %d expected (%.0f/s); missing %d, duplicates %d, out of order %d\n",
		r.Published, r.PublishFailed, r.PublishedPerS, r.Delivered, r.ExpectedDeliveries, r.DeliveriesPerS, r.Missing, r.Duplicates, r.OutOfOrder)
	pl := func(name string, p Percentiles) {
		fmt.Fprintf(w, "%-18s n=%-9d p50 %8.2f  p90 %8.2f  p99 %8.2f  p99.9 %8.2f  max %8.2f ms\n", name, p.Count, p.P50, p.P90, p.P99, p.P999, p.Max)
	}
	pl("publish→deliver", r.Latency)
	pl("connect", r.Connect)
	pl("subscribe", r.SubscribeLat)
	if len(r.Stages) > 1 {
		fmt.Fprintln(w, "stage  seconds   conns  pub/s target  pub/s   deliv/s      p50 ms    p99 ms  p99.9 ms")
		for _, st := range r.Stages {
			fmt.Fprintf(w, "%5d  %3d-%-3d  %6d  %12.0f  %5.0f  %8.0f  %10.2f  %8.2f  %8.2f\n", st.Stage, st.FromS, st.ToS,
				st.Connections, st.PublishRate, st.PublishedPerS, st.DeliveriesPerS, st.P50, st.P99, st.P999)
		}
	}
	if len(r.Spectrum) > 0 {
		fmt.Fprintln(w, "publish→deliver spectrum:")
		for _, q := range r.Spectrum {
			fmt.Fprintf(w, "  %8.3f%%  %9.2f ms\n", q.Percentile, q.Ms)
		}
	}
	fmt.Fprintf(w, "client CPU share %.1f%%", 100*r.ClientCPUShare)
	if r.ClientSaturated {
		fmt.Fprintf(w, "; CLIENT SATURATED, latency not trustworthy: %s", r.SaturationReason)
	}
	fmt.Fprintln(w)
	if r.Server != nil {
		fmt.Fprintf(w, "server pid %d: RSS %s before, %s at peak, %.0f bytes per connection\n",
			r.Server.PID, size(r.Server.RSSBeforeBytes), size(r.Server.RSSAtPeakBytes), r.Server.RSSPerConnBytes)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(w, "errors: %s\n", counts(r.Errors))
	}
	if len(r.Disconnects) > 0 {
		fmt.Fprintf(w, "disconnects by code: %s\n", counts(r.Disconnects))
	}
}

func counts(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func size(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Compare writes a side-by-side table of two results with b/a ratios.
func Compare(w io.Writer, aName string, a *Result, bName string, b *Result) {
	fmt.Fprintf(w, "%-26s %16s %16s %8s\n", "", trim(aName), trim(bName), "b/a")
	row := func(name string, x, y float64) {
		ratio := "-"
		if x != 0 {
			ratio = fmt.Sprintf("%.2f", y/x)
		}
		fmt.Fprintf(w, "%-26s %16.2f %16.2f %8s\n", name, x, y, ratio)
	}
	row("connections established", float64(a.Connections.Established), float64(b.Connections.Established))
	row("connections failed", float64(a.Connections.Failed), float64(b.Connections.Failed))
	row("connections/s", a.Connections.RatePerS, b.Connections.RatePerS)
	row("published", float64(a.Published), float64(b.Published))
	row("delivered", float64(a.Delivered), float64(b.Delivered))
	row("missing", float64(a.Missing), float64(b.Missing))
	row("deliveries/s", a.DeliveriesPerS, b.DeliveriesPerS)
	for _, p := range []struct {
		name string
		x, y Percentiles
	}{{"latency", a.Latency, b.Latency}, {"connect", a.Connect, b.Connect}} {
		row(p.name+" p50 ms", p.x.P50, p.y.P50)
		row(p.name+" p99 ms", p.x.P99, p.y.P99)
		row(p.name+" p99.9 ms", p.x.P999, p.y.P999)
		row(p.name+" max ms", p.x.Max, p.y.Max)
	}
	row("client CPU share", a.ClientCPUShare, b.ClientCPUShare)
	if a.Server != nil && b.Server != nil {
		row("server RSS at peak MiB", float64(a.Server.RSSAtPeakBytes)/(1<<20), float64(b.Server.RSSAtPeakBytes)/(1<<20))
		row("server bytes/connection", a.Server.RSSPerConnBytes, b.Server.RSSPerConnBytes)
	}
}

func trim(s string) string {
	if len(s) > 16 {
		return "…" + s[len(s)-15:]
	}
	return s
}

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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

	Latency      Percentiles  `json:"latency_ms"`       // publish→deliver, from the intended send time
	PublishReply PublishReply `json:"publish_reply_ms"` // publish call round trips, from the actual send
	Connect      Percentiles  `json:"connect_ms"`       // TCP + upgrade + connect reply, from the intended start
	SubscribeLat Percentiles  `json:"subscribe_ms"`     // subscribe command round trip
	Spectrum     []Quantile   `json:"latency_spectrum"`

	// The publishing window runs from the first publication's intended send
	// time to the end of the last one's slot (its intended time + 1/rate),
	// less any stretch at publish rate 0 between them: N publications at a
	// steady R/s span N/R seconds. The drain is the wait after the window
	// for the last deliveries. The headline rates are over the window
	// alone; deliveries that arrive in the drain count.
	PublishingWindowS                  float64 `json:"publishing_window_s"`
	DrainS                             float64 `json:"drain_s"` // end of the window to the end of waiting for deliveries
	DeliveriesPerSOverPublishingWindow float64 `json:"deliveries_per_s_over_publishing_window"`
	PublishedPerSOverPublishingWindow  float64 `json:"published_per_s_over_publishing_window"`

	// Older rates, kept unchanged for readers of earlier results: their
	// spans are actual send times, and DeliveriesPerS adds the scenario's
	// drain, so it reads low (3,576/s for a steady 5,000/s).
	DeliveriesPerS float64 `json:"deliveries_per_s"` // delivered / (first publish sent to last publish's reply + scenario drain)
	PublishedPerS  float64 `json:"published_per_s"`  // published / (first publish sent to last publish's reply)

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

// PublishReply is how long publish calls took to answer, accepted apart
// from refused or failed (a shedding server should say no fast).
type PublishReply struct {
	OK      Percentiles `json:"ok"`
	Refused Percentiles `json:"refused"`
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
	RSSPerConnNote  string  `json:"rss_per_conn_note"` // RSSPerConnNote: how it is measured, and its caveat
	RSSMaxBytes     uint64  `json:"rss_max_bytes"`     // the most RSS seen in any second
	GoroutinesMax   int     `json:"goroutines_max"`    // the most goroutines seen (with --server-metrics)
}

// MarshalJSON writes the stats with their note, also when the stats were
// read from an older result or built by hand.
func (s ServerStats) MarshalJSON() ([]byte, error) {
	type plain ServerStats
	if s.RSSPerConnNote == "" {
		s.RSSPerConnNote = RSSPerConnNote
	}
	return json.Marshal(plain(s))
}

// RSSPerConnNote says what bytes per connection is, wherever it is shown.
const RSSPerConnNote = "RSS growth during the run (RSS with the most connections held minus RSS before the run) " +
	"divided by the connections then held; a server that was already warm (connections made before this run, " +
	"memory not returned to the OS) under-reports: measure against a freshly started server"

// Second is one second of the run.
type Second struct {
	T                int     `json:"t"`
	Connections      int     `json:"connections"`
	Published        uint64  `json:"published"`
	Delivered        uint64  `json:"delivered"`
	P50              float64 `json:"p50_ms"`
	P99              float64 `json:"p99_ms"`
	P999             float64 `json:"p999_ms"`
	Errors           uint64  `json:"errors"`
	ServerRSS        uint64  `json:"server_rss_bytes,omitempty"`
	ServerGoroutines int     `json:"server_goroutines,omitempty"`
	ClientLagP99     float64 `json:"client_lag_p99_ms"` // how late the bench's own timers fired
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
	fmt.Fprintf(w, "connections: target %s, established %s (%s/s), failed %s, peak %s\n",
		group(uint64(r.Connections.Target)), group(r.Connections.Established), rate(r.Connections.RatePerS),
		group(r.Connections.Failed), group(uint64(r.Connections.Peak)))
	switch {
	case r.PublishingWindowS > 0:
		fmt.Fprintf(w, "publishing window %.1f s (first intended send to the end of the last one's slot, less pauses at rate 0), then drain %.1f s\n",
			r.PublishingWindowS, r.DrainS)
		fmt.Fprintf(w, "published %s (failed %s): %s/s over the publishing window\n",
			group(r.Published), group(r.PublishFailed), rate(r.PublishedPerSOverPublishingWindow))
		fmt.Fprintf(w, "delivered %s of %s expected: %s/s over the %.1f s publishing window; missing %s, duplicates %s, out of order %s\n",
			group(r.Delivered), group(r.ExpectedDeliveries), rate(r.DeliveriesPerSOverPublishingWindow), r.PublishingWindowS,
			group(r.Missing), group(r.Duplicates), group(r.OutOfOrder))
	case r.Published > 0: // an older result: only the rates over publishing + drain
		fmt.Fprintf(w, "published %s (failed %s, %s/s); delivered %s of %s expected (%s/s over publishing + drain); missing %s, duplicates %s, out of order %s\n",
			group(r.Published), group(r.PublishFailed), rate(r.PublishedPerS), group(r.Delivered), group(r.ExpectedDeliveries),
			rate(r.DeliveriesPerS), group(r.Missing), group(r.Duplicates), group(r.OutOfOrder))
	default:
		fmt.Fprintf(w, "published 0 (failed %s); delivered %s of %s expected; missing %s, duplicates %s, out of order %s\n",
			group(r.PublishFailed), group(r.Delivered), group(r.ExpectedDeliveries), group(r.Missing), group(r.Duplicates), group(r.OutOfOrder))
	}
	pl := func(name string, p Percentiles) {
		fmt.Fprintf(w, "%-18s n=%-9d p50 %8.2f  p90 %8.2f  p99 %8.2f  p99.9 %8.2f  max %8.2f ms\n", name, p.Count, p.P50, p.P90, p.P99, p.P999, p.Max)
	}
	pl("publish→deliver", r.Latency)
	pl("connect", r.Connect)
	pl("subscribe", r.SubscribeLat)
	if r.PublishReply.Refused.Count > 0 {
		pl("publish reply ok", r.PublishReply.OK)
		pl("publish refused", r.PublishReply.Refused)
	}
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
		fmt.Fprintf(w, "server pid %d: RSS %s before, %s at peak; %s bytes per connection, that is:\n%s\n",
			r.Server.PID, size(r.Server.RSSBeforeBytes), size(r.Server.RSSAtPeakBytes), groupf(r.Server.RSSPerConnBytes, 0),
			wrap(RSSPerConnNote+".", "  ", 100))
		fmt.Fprintf(w, "server peaks: RSS %s", size(r.Server.RSSMaxBytes))
		if r.Server.GoroutinesMax > 0 {
			fmt.Fprintf(w, ", %s goroutines", group(uint64(r.Server.GoroutinesMax)))
		}
		fmt.Fprintln(w)
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

// Compare writes a side-by-side table of two results with b/a ratios. The
// columns are named after the files (base name without .json, with as many
// parent directories as tell them apart).
func Compare(w io.Writer, aPath string, a *Result, bPath string, b *Result) {
	type row struct{ name, x, y, ratio string }
	var rows []row
	add := func(name string, x, y float64, f func(float64) string) {
		ratio := "-"
		if x != 0 {
			ratio = fmt.Sprintf("%.2f", y/x)
		}
		rows = append(rows, row{name, f(x), f(y), ratio})
	}
	count := func(v float64) string { return group(uint64(v)) }
	percent := func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }
	mib := func(v float64) string { return groupf(v, 1) }
	bytes := func(v float64) string { return groupf(v, 0) }
	secs := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	add("connections established", float64(a.Connections.Established), float64(b.Connections.Established), count)
	add("connections failed", float64(a.Connections.Failed), float64(b.Connections.Failed), count)
	add("connections/s", a.Connections.RatePerS, b.Connections.RatePerS, rate)
	add("published", float64(a.Published), float64(b.Published), count)
	add("delivered", float64(a.Delivered), float64(b.Delivered), count)
	add("missing", float64(a.Missing), float64(b.Missing), count)
	add("publishing window s", a.PublishingWindowS, b.PublishingWindowS, secs)
	add("drain s", a.DrainS, b.DrainS, secs)
	add("published/s over publishing window", a.PublishedPerSOverPublishingWindow, b.PublishedPerSOverPublishingWindow, rate)
	add("deliveries/s over publishing window", a.DeliveriesPerSOverPublishingWindow, b.DeliveriesPerSOverPublishingWindow, rate)
	if a.PublishingWindowS == 0 || b.PublishingWindowS == 0 { // an older result has only this one
		add("deliveries/s over publishing + drain", a.DeliveriesPerS, b.DeliveriesPerS, rate)
	}
	for _, p := range []struct {
		name string
		x, y Percentiles
	}{{"latency", a.Latency, b.Latency}, {"connect", a.Connect, b.Connect}} {
		add(p.name+" p50 ms", p.x.P50, p.y.P50, millis)
		add(p.name+" p99 ms", p.x.P99, p.y.P99, millis)
		add(p.name+" p99.9 ms", p.x.P999, p.y.P999, millis)
		add(p.name+" max ms", p.x.Max, p.y.Max, millis)
	}
	add("client CPU share", a.ClientCPUShare, b.ClientCPUShare, percent)
	server := a.Server != nil && b.Server != nil
	if server {
		add("server RSS at peak MiB", float64(a.Server.RSSAtPeakBytes)/(1<<20), float64(b.Server.RSSAtPeakBytes)/(1<<20), mib)
		add("server bytes/connection *", a.Server.RSSPerConnBytes, b.Server.RSSPerConnBytes, bytes)
	}

	aName, bName := compareNames(aPath, bPath)
	nameW, colW := 0, 12
	for _, r := range rows {
		nameW = max(nameW, utf8.RuneCountInString(r.name))
		colW = max(colW, len(r.x), len(r.y))
	}
	colW = max(colW, utf8.RuneCountInString(aName), utf8.RuneCountInString(bName))
	fmt.Fprintf(w, "%-*s  %*s  %*s  %6s\n", nameW, "", colW, aName, colW, bName, "b/a")
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %*s  %*s  %6s\n", nameW, r.name, colW, r.x, colW, r.y, r.ratio)
	}
	if server {
		fmt.Fprintln(w, wrap("* bytes/connection: "+RSSPerConnNote+".", "", 100))
	}
}

// compareNames names two result files by their base names without .json,
// adding parent directories until the names differ; the same path twice
// is marked (a) and (b).
func compareNames(a, b string) (string, string) {
	parts := func(p string) []string {
		var out []string
		for _, s := range strings.Split(filepath.ToSlash(filepath.Clean(p)), "/") {
			if s != "" && s != "." {
				out = append(out, s)
			}
		}
		if n := len(out); n > 0 && strings.EqualFold(path.Ext(out[n-1]), ".json") {
			out[n-1] = strings.TrimSuffix(out[n-1], path.Ext(out[n-1]))
		}
		return out
	}
	last := func(ps []string, n int) string { return strings.Join(ps[max(0, len(ps)-n):], "/") }
	pa, pb := parts(a), parts(b)
	for n := 1; ; n++ {
		na, nb := last(pa, n), last(pb, n)
		if na != nb {
			return na, nb
		}
		if n >= len(pa) && n >= len(pb) {
			return na + " (a)", nb + " (b)"
		}
	}
}

// group prints n with thousands separators: 1,234,567.
func group(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// groupf prints v with the given decimals and thousands separators.
func groupf(v float64, decimals int) string {
	s := strconv.FormatFloat(math.Abs(v), 'f', decimals, 64)
	whole, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseUint(whole, 10, 64)
	if err != nil { // NaN, Inf
		return s
	}
	s = group(n)
	if frac != "" {
		s += "." + frac
	}
	if v < 0 && strings.Trim(s, "0.,") != "" {
		s = "-" + s
	}
	return s
}

// precision is how many decimals a rate or latency needs: about three
// significant digits, and none above 100.
func precision(v float64) int {
	switch v = math.Abs(v); {
	case v >= 100 || v == 0:
		return 0
	case v >= 10:
		return 1
	default:
		return 2
	}
}

// rate prints a per-second rate: 485,351, 50.3, 50, 0.25.
func rate(v float64) string { return trimZeros(groupf(v, precision(v))) }

// millis prints a latency in ms: 543, 12.3, 12, 3.14, 0.
func millis(v float64) string { return trimZeros(groupf(v, precision(v))) }

// trimZeros drops trailing zeros after a decimal point: 50.0 → 50, 2.50 → 2.5.
func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	return strings.TrimRight(strings.TrimRight(s, "0"), ".")
}

// wrap breaks text into lines of at most width bytes, each after indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(text) {
		if n > 0 && n+1+len(word) > width {
			b.WriteString("\n")
			n = 0
		}
		if n == 0 {
			b.WriteString(indent)
			n = len(indent)
		} else {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// roundTo rounds v to the given decimals.
func roundTo(v float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

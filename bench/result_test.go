package bench

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// windowJSON is a run that published for 10 s and drained for 2.25 s.
const windowJSON = `{"publishing_window_s": 10, "drain_s": 2.25,
	"deliveries_per_s_over_publishing_window": 500000, "published_per_s_over_publishing_window": 50}`

// setJSON sets fields of r by their JSON names.
func setJSON(t *testing.T, r *Result, fields string) {
	t.Helper()
	if err := json.Unmarshal([]byte(fields), r); err != nil {
		t.Fatal(err)
	}
}

// compareRow returns the fields of the row of Compare's output named name.
func compareRow(t *testing.T, out, name string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, name+"  "); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no row %q in\n%s", name, out)
	return nil
}

func TestCompare(t *testing.T) {
	a, b := sampleResult(), sampleResult()
	a.Published, b.Published = 200, 200
	a.Connections.Established, b.Connections.Established = 10000, 1234567
	setJSON(t, a, `{"publishing_window_s": 10, "deliveries_per_s_over_publishing_window": 485351.4}`)
	setJSON(t, b, `{"publishing_window_s": 10, "deliveries_per_s_over_publishing_window": 39450.2}`)
	a.Latency.P50, b.Latency.P50 = 3.14159, 130.6
	a.Connections.RatePerS, b.Connections.RatePerS = 2423.4, 1962.7
	a.ClientCPUShare, b.ClientCPUShare = 0.1634, 0.4611
	var buf bytes.Buffer
	Compare(&buf, "/tmp/spindle-fanout-10k-run-3/spindle.json", a, "/tmp/spindle-fanout-10k-run-3/baseline.json", b)
	out := buf.String()
	t.Log("\n" + out)
	if h := strings.Fields(strings.SplitN(out, "\n", 2)[0]); len(h) != 3 || h[0] != "spindle" || h[1] != "baseline" || h[2] != "b/a" {
		t.Errorf("header %q, want [spindle baseline b/a]", h)
	}
	for _, c := range []struct {
		row  string
		want []string
	}{
		{"published", []string{"200", "200", "1.00"}},
		{"connections established", []string{"10,000", "1,234,567", "123.46"}},
		{"connections/s", []string{"2,423", "1,963", "0.81"}},
		{"deliveries/s over publishing window", []string{"485,351", "39,450", "0.08"}},
		{"latency p50 ms", []string{"3.14", "131", "41.57"}},
		{"client CPU share", []string{"16.3%", "46.1%", "2.82"}},
	} {
		if got := compareRow(t, out, c.row); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s: %q, want %q", c.row, got, c.want)
		}
	}
	if !strings.Contains(out, "RSS growth") || !strings.Contains(out, "warm") {
		t.Errorf("bytes/connection shown without its caveat:\n%s", out)
	}
}

func TestCompareNames(t *testing.T) {
	for _, c := range []struct{ a, b, wa, wb string }{
		{"/tmp/x/spindle.json", "baseline.json", "spindle", "baseline"},
		{"/tmp/run1/result.json", "/tmp/run2/result.json", "run1/result", "run2/result"},
		{"/a/same/r.json", "/b/same/r.json", "a/same/r", "b/same/r"},
		{"r.json", "./r.json", "r (a)", "r (b)"},
		{"noext", "other.JSON", "noext", "other"},
	} {
		var buf bytes.Buffer
		r := sampleResult()
		Compare(&buf, c.a, r, c.b, r)
		h := strings.Fields(strings.SplitN(buf.String(), "\n", 2)[0])
		want := strings.Fields(c.wa + " " + c.wb + " b/a")
		if strings.Join(h, "|") != strings.Join(want, "|") {
			t.Errorf("%s vs %s: header %q, want %q", c.a, c.b, h, want)
		}
	}
}

// The bytes-per-connection figure says how it was measured and why a warm
// server under-reports, in the text report and the JSON.
func TestRSSPerConnCaveat(t *testing.T) {
	r := sampleResult()
	var buf bytes.Buffer
	r.WriteText(&buf)
	line := regexp.MustCompile(`(?m)^.*bytes per connection.*$\n?(?:^  .*$\n?)*`).FindString(buf.String())
	for _, want := range []string{"5,243", "RSS growth", "warm", "under-reports"} {
		if !strings.Contains(line, want) {
			t.Errorf("text report's bytes per connection lacks %q:\n%s", want, buf.String())
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Server map[string]any `json:"server"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	note, _ := m.Server["rss_per_conn_note"].(string)
	if !strings.Contains(note, "RSS growth") || !strings.Contains(note, "warm") {
		t.Errorf("JSON server.rss_per_conn_note = %q, want the caveat", note)
	}
}

// The text headline is the rate over the publishing window, with the drain
// given on its own.
func TestTextHeadlineRate(t *testing.T) {
	r := sampleResult()
	setJSON(t, r, windowJSON)
	var buf bytes.Buffer
	r.WriteText(&buf)
	for _, want := range []string{"500,000/s over the 10.0 s publishing window", "50/s over the publishing window", "drain 2.2 s"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(buf.String(), "357600") || strings.Contains(buf.String(), "357,600") {
		t.Errorf("text report shows the rate over publishing + drain as the headline:\n%s", buf.String())
	}
}

package bench

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sampleResult looks like the run the review was about: 10,000 subscribers
// ramping up, then 50 publications/s (500,000 deliveries/s) for ten seconds;
// its older rate over publishing + drain reads 357,600/s.
func sampleResult() *Result {
	r := &Result{Scenario: "fanout-sample", Started: time.Unix(1732540000, 0), DurationS: 14.2,
		Connections: ConnStats{Target: 10000, Established: 10000, Peak: 10000, RatePerS: 2423},
		Published:   500, ExpectedDeliveries: 5000000, Delivered: 5000000,
		Latency:        Percentiles{Count: 5000000, P50: 3.33, P90: 6.2, P99: 6.66, P999: 9.99, Max: 12},
		DeliveriesPerS: 357600, PublishedPerS: 50.1,
		Errors: map[string]uint64{}, Disconnects: map[string]uint64{},
		Server: &ServerStats{PID: 42, RSSBeforeBytes: 17 << 20, RSSAtPeakBytes: 67 << 20, RSSPerConnBytes: 5243},
	}
	for s := 1; s <= 14; s++ {
		sec := Second{T: s, Connections: min(10000, s*2500), ServerRSS: uint64(17+min(50, s*12)) << 20}
		if s > 4 {
			sec.Published, sec.Delivered = 50, 500000
			sec.P50, sec.P99, sec.P999 = 3.33, 6.66, 9.99
		}
		r.Timeline = append(r.Timeline, sec)
	}
	return r
}

func renderHTML(t *testing.T, r *Result) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.html")
	if err := r.WriteHTMLFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// svgText is one <text> of a chart, as drawn.
type svgText struct {
	X, Y      float64
	Anchor    string
	Class     string
	Transform string
	Text      string
}

type svgChart struct {
	Title string
	W, H  float64
	Texts []svgText
}

var svgRe = regexp.MustCompile(`(?s)<svg .*?</svg>`)

// charts parses the inline SVG charts of a report.
func charts(t *testing.T, html string) []svgChart {
	t.Helper()
	var out []svgChart
	for _, src := range svgRe.FindAllString(html, -1) {
		var c svgChart
		d := xml.NewDecoder(strings.NewReader(src))
		for {
			tok, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("chart is not well-formed: %v\n%s", err, src)
			}
			el, ok := tok.(xml.StartElement)
			if !ok {
				continue
			}
			attr := map[string]string{}
			for _, a := range el.Attr {
				attr[a.Name.Local] = a.Value
			}
			switch el.Name.Local {
			case "svg":
				c.Title = attr["aria-label"]
				if _, err := fmt.Sscanf(attr["viewBox"], "0 0 %g %g", &c.W, &c.H); err != nil {
					t.Fatalf("viewBox %q: %v", attr["viewBox"], err)
				}
			case "text":
				var s string
				if err := d.DecodeElement(&s, &el); err != nil {
					t.Fatal(err)
				}
				x, _ := strconv.ParseFloat(attr["x"], 64)
				y, _ := strconv.ParseFloat(attr["y"], 64)
				c.Texts = append(c.Texts, svgText{x, y, attr["text-anchor"], attr["class"], attr["transform"], s})
			}
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no charts in the report")
	}
	return out
}

var tickRe = regexp.MustCompile(`^(-?[0-9][0-9,]*(?:\.[0-9]+)?)(k|M)?(s)?$`)

// tickValue parses a tick label such as "2.5k", "1,250", "0.25" or "10s".
func tickValue(label string) (v float64, ok bool) {
	m := tickRe.FindStringSubmatch(label)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
	if err != nil {
		return 0, false
	}
	switch m[2] {
	case "k":
		v *= 1e3
	case "M":
		v *= 1e6
	}
	return v, true
}

func isNiceStep(step float64) bool {
	if step <= 0 {
		return false
	}
	p := math.Pow(10, math.Floor(math.Log10(step)+1e-9))
	m := step / p
	for _, n := range []float64{1, 2, 2.5, 5} {
		if math.Abs(m-n) < 1e-6 {
			return true
		}
	}
	return false
}

// Axis ticks fall on multiples of 1, 2, 2.5 or 5 × 10^k and print without
// false precision (no "5.0k", "9.99" or "2.50").
func TestChartTicksAreNice(t *testing.T) {
	r := sampleResult()
	// Odd values too: 383,200 msg/s, 0.37 ms.
	r.Timeline[8].Delivered, r.Timeline[8].P50 = 383200, 0.37
	for _, c := range charts(t, renderHTML(t, r)) {
		for _, axis := range []string{"end", "middle"} { // y ticks are right-aligned, x ticks centred
			var vals []float64
			var labels []string
			for _, tx := range c.Texts {
				if tx.Anchor != axis || tx.Transform != "" {
					continue
				}
				v, ok := tickValue(tx.Text)
				if !ok {
					continue // the unit label
				}
				if (axis == "middle") != strings.HasSuffix(tx.Text, "s") {
					continue
				}
				if strings.Contains(tx.Text, ".") && strings.HasSuffix(strings.TrimRight(tx.Text, "kMs"), "0") {
					t.Errorf("%s: tick %q has a trailing zero", c.Title, tx.Text)
				}
				vals, labels = append(vals, v), append(labels, tx.Text)
			}
			if len(vals) < 3 {
				t.Errorf("%s: %d ticks on the %s axis: %q", c.Title, len(vals), axis, labels)
				continue
			}
			if vals[0] != 0 {
				t.Errorf("%s: first tick %q, want 0", c.Title, labels[0])
			}
			step := vals[1] - vals[0]
			if !isNiceStep(step) {
				t.Errorf("%s: ticks %q: step %g is not 1, 2, 2.5 or 5 × 10^k", c.Title, labels, step)
			}
			for i := 1; i < len(vals); i++ {
				if d := vals[i] - vals[i-1]; math.Abs(d-step) > step*1e-6 {
					t.Errorf("%s: ticks %q are not evenly spaced (%g then %g)", c.Title, labels, step, d)
					break
				}
			}
		}
	}
}

func TestTickLabels(t *testing.T) {
	for _, c := range []struct {
		max  float64
		want string
	}{
		{5000, "0 1k 2k 3k 4k 5k"},
		{3832, "0 1k 2k 3k 4k"},
		{9.99, "0 2 4 6 8 10"},
		{10000, "0 2k 4k 6k 8k 10k"},
		{12500, "0 2.5k 5k 7.5k 10k 12.5k"},
		{1100, "0 250 500 750 1,000 1,250"},
		{0.37, "0 0.1 0.2 0.3 0.4"},
		{0.012, "0 0.0025 0.005 0.0075 0.01 0.0125"},
		{67, "0 20 40 60 80"},
		{2.4e6, "0 500k 1M 1.5M 2M 2.5M"},
		{0, "0 0.2 0.4 0.6 0.8 1"},
	} {
		ticks, step := niceTicks(c.max, 5)
		var got []string
		for _, v := range ticks {
			got = append(got, tickLabel(v, step))
		}
		if s := strings.Join(got, " "); s != c.want {
			t.Errorf("ticks up to %g: %s, want %s", c.max, s, c.want)
		}
	}
}

// textBox is where a label's glyphs may reach, estimated generously:
// 0.62 em per character, ascent 1 em, descent 0.3 em.
func textBox(tx svgText) (x0, y0, x1, y1 float64) {
	size := 11.0
	if strings.Contains(tx.Class, "title") {
		size = 13
	}
	w := 0.62 * size * float64(len([]rune(tx.Text)))
	along := func(at float64) (float64, float64) {
		switch tx.Anchor {
		case "end":
			return at - w, at
		case "middle":
			return at - w/2, at + w/2
		default:
			return at, at + w
		}
	}
	if tx.Transform == "" {
		x0, x1 = along(tx.X)
		return x0, tx.Y - size, x1, tx.Y + 0.3*size
	}
	// translate(X,Y) rotate(-90), drawn at the origin: the text runs upwards.
	var tX, tY float64
	if _, err := fmt.Sscanf(tx.Transform, "translate(%g,%g) rotate(-90)", &tX, &tY); err != nil {
		return math.Inf(-1), math.Inf(-1), math.Inf(1), math.Inf(1) // unknown: never inside
	}
	a0, a1 := along(0)
	return tX - size, tY - a1, tX + 0.3*size, tY - a0
}

// No label of a chart is cut by the edge of its SVG, and no two overlap.
func TestChartLabelsFit(t *testing.T) {
	for _, c := range charts(t, renderHTML(t, sampleResult())) {
		for i, tx := range c.Texts {
			x0, y0, x1, y1 := textBox(tx)
			if x0 < 0 || y0 < 0 || x1 > c.W || y1 > c.H {
				t.Errorf("%s: label %q reaches (%.0f,%.0f)-(%.0f,%.0f), outside the %gx%g chart", c.Title, tx.Text, x0, y0, x1, y1, c.W, c.H)
			}
			for _, o := range c.Texts[:i] {
				a0, b0, a1, b1 := textBox(o)
				if x0 < a1 && a0 < x1 && y0 < b1 && b0 < y1 {
					t.Errorf("%s: labels %q and %q overlap", c.Title, tx.Text, o.Text)
				}
			}
		}
	}
}

// The headline rate is over the publishing window and the drain is shown
// on its own; bytes per connection carries its caveat where it is shown.
func TestHTMLSummary(t *testing.T) {
	r := sampleResult()
	setJSON(t, r, windowJSON)
	html := renderHTML(t, r)
	row := regexp.MustCompile(`(?s)<tr id="deliveries-rate">.*?</tr>`).FindString(html)
	for _, want := range []string{"500,000", "publishing window", "10.0 s", "drain", "2.2 s"} {
		if !strings.Contains(row, want) {
			t.Errorf("deliveries/s row lacks %q:\n%s", want, row)
		}
	}
	row = regexp.MustCompile(`(?s)<tr id="rss-per-conn">.*?</tr>`).FindString(html)
	for _, want := range []string{"5,243 B", "RSS growth", "warm", "under-reports"} {
		if !strings.Contains(row, want) {
			t.Errorf("bytes per connection row lacks %q:\n%s", want, row)
		}
	}
}

package bench

import (
	"fmt"
	"html/template"
	"math"
	"os"
	"strings"
)

// WriteHTMLFile writes a self-contained report (inline SVG, no scripts, no
// network) with throughput, latency and connections over time.
func (r *Result) WriteHTMLFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	defer f.Close()
	var ts []float64
	col := func(get func(Second) float64) []float64 {
		out := make([]float64, len(r.Timeline))
		for i, s := range r.Timeline {
			out[i] = get(s)
		}
		return out
	}
	ts = col(func(s Second) float64 { return float64(s.T) })
	charts := []template.HTML{
		chart("Deliveries per second", "msg/s", ts, []series{
			{"delivered", "#1f77b4", col(func(s Second) float64 { return float64(s.Delivered) })},
		}),
		chart("Publications per second", "msg/s", ts, []series{
			{"published", "#ff7f0e", col(func(s Second) float64 { return float64(s.Published) })},
		}),
		chart("Publish→deliver latency", "ms", ts, []series{
			{"p50", "#2ca02c", col(func(s Second) float64 { return s.P50 })},
			{"p99", "#d62728", col(func(s Second) float64 { return s.P99 })},
			{"p99.9", "#9467bd", col(func(s Second) float64 { return s.P999 })},
		}),
		chart("Connections", "connections", ts, []series{
			{"connections", "#17becf", col(func(s Second) float64 { return float64(s.Connections) })},
		}),
	}
	if r.Server != nil {
		charts = append(charts, chart("Server RSS", "MiB", ts, []series{
			{"rss", "#8c564b", col(func(s Second) float64 { return float64(s.ServerRSS) / (1 << 20) })},
		}))
	}
	var summary strings.Builder
	r.WriteText(&summary)
	v := reportView{R: r, Charts: charts, Summary: summary.String(), RSSNote: RSSPerConnNote}
	switch {
	case r.PublishingWindowS > 0:
		v.Deliveries = rate(r.DeliveriesPerSOverPublishingWindow)
		v.Published = rate(r.PublishedPerSOverPublishingWindow)
		v.Over = fmt.Sprintf("over the %.1f s publishing window", r.PublishingWindowS)
		v.Drain = fmt.Sprintf("%.1f s", r.DrainS)
	default: // an older result, or nothing published
		v.Deliveries, v.Published = rate(r.DeliveriesPerS), rate(r.PublishedPerS)
		v.Over, v.Drain = "over publishing + drain (an older result)", "-"
	}
	if r.Server != nil {
		v.RSSPerConn = groupf(r.Server.RSSPerConnBytes, 0) + " B"
	}
	err = reportTmpl.Execute(f, v)
	if err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	return f.Close()
}

type reportView struct {
	R                           *Result
	Charts                      []template.HTML
	Summary                     string
	Deliveries, Published, Over string
	Drain, RSSPerConn, RSSNote  string
}

type series struct {
	name, color string
	ys          []float64
}

// Chart geometry: the plot sits inside margins wide enough for the tick
// labels (right-aligned at left-6), the unit written upwards along the left
// edge, the title above and the legend to the right.
const (
	chartW, chartH                           = 720.0, 240.0
	chartLeft, chartBottom, chartTop, chartR = 70.0, 30.0, 30.0, 110.0
	unitX                                    = 15.0 // baseline of the rotated unit label
)

// chart draws series over xs as an inline SVG line chart.
func chart(title, unit string, xs []float64, ss []series) template.HTML {
	const w, h, left, bottom, top, right = chartW, chartH, chartLeft, chartBottom, chartTop, chartR
	maxX, maxY := 1.0, 0.0
	for _, x := range xs {
		maxX = math.Max(maxX, x)
	}
	for _, s := range ss {
		for _, y := range s.ys {
			maxY = math.Max(maxY, y)
		}
	}
	// The y axis runs to the first nice tick at or above the data; the x
	// axis ends with the data, ticked at nice steps within it.
	yTicks, yStep := niceTicks(maxY, 5)
	topY := yTicks[len(yTicks)-1]
	xTicks, xStep := niceTicks(maxX, 8)
	px := func(x float64) float64 { return left + (w-left-right)*x/maxX }
	py := func(y float64) float64 { return h - bottom - (h-bottom-top)*y/topY }
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><svg role="img" aria-label="%s" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f">`, template.HTMLEscapeString(title), w, h, w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="16" class="title">%s</text>`, left, template.HTMLEscapeString(title))
	for _, y := range yTicks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid"/><text x="%.1f" y="%.1f" class="tick" text-anchor="end">%s</text>`,
			left, w-right, py(y), py(y), left-6, py(y)+4, tickLabel(y, yStep))
	}
	fmt.Fprintf(&b, `<text class="tick unit" text-anchor="middle" transform="translate(%.1f,%.1f) rotate(-90)">%s</text>`,
		unitX, top+(h-bottom-top)/2, template.HTMLEscapeString(unit))
	for _, x := range xTicks {
		if x > maxX*(1+1e-9) {
			break
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="tick" text-anchor="middle">%ss</text>`, px(x), h-10, tickLabel(x, xStep))
	}
	for i, s := range ss {
		var pts []string
		for j, y := range s.ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[j]), py(y)))
		}
		fmt.Fprintf(&b, `<polyline class="series" data-series="%s" fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.name, s.color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f" class="tick">%s</text>`,
			w-right+10, top+float64(i)*18, s.color, w-right+28, top+float64(i)*18+10, s.name)
	}
	b.WriteString(`</svg></figure>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and escaped names
}

// niceTicks returns ticks from 0 to the first multiple of step at or above
// hi, step being the smallest of 1, 2, 2.5 or 5 × 10^k that needs at most
// n intervals.
func niceTicks(hi float64, n int) (ticks []float64, step float64) {
	if !(hi > 0) || math.IsInf(hi, 0) {
		hi = 1
	}
	raw := hi / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)+1e-9))
	step = 10 * p
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*p >= raw*(1-1e-9) {
			step = m * p
			break
		}
	}
	k := max(1, int(math.Ceil(hi/step-1e-9)))
	for i := 0; i <= k; i++ {
		ticks = append(ticks, float64(i)*step)
	}
	return ticks, step
}

// tickLabel prints a tick with just the decimals its axis's step needs:
// "2.5k", "5k", "1,250", "0.25", "1.5M". A tick is written in k (M) when
// it is at least 1,000 (1,000,000) and the step at least half of that.
func tickLabel(v, step float64) string {
	if v == 0 {
		return "0"
	}
	scale, suffix := 1.0, ""
	for _, u := range []struct {
		scale  float64
		suffix string
	}{{1e6, "M"}, {1e3, "k"}} {
		if math.Abs(v) >= u.scale*(1-1e-9) && step >= u.scale/2*(1-1e-9) {
			scale, suffix = u.scale, u.suffix
			break
		}
	}
	return trimZeros(groupf(v/scale, decimalsOf(step/scale))) + suffix
}

// decimalsOf is how many decimals x needs (x from niceTicks: 2.5, 0.0025).
func decimalsOf(x float64) int {
	for d := 0; d < 12; d++ {
		p := math.Pow(10, float64(d))
		if math.Abs(x*p-math.Round(x*p)) < 1e-6*math.Max(1, x*p) {
			return d
		}
	}
	return 12
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{"mul100": func(f float64) float64 { return 100 * f }, "size": size}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spindle bench: {{.R.Scenario}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:20px} table{border-collapse:collapse;margin:8px 0 20px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4} .grid{stroke:#eee} .tick{font-size:11px;fill:#555} .title{font-weight:600;font-size:13px}
.warn{background:#fee;border:1px solid #c00;padding:8px} pre{background:#f8f8f8;padding:8px;overflow:auto;white-space:pre-wrap}
td.note{text-align:left;font-size:12px;color:#555;max-width:34em} .over{font-size:12px;color:#555}
</style></head><body>
<h1>spindle bench: {{.R.Scenario}}</h1>
{{if .R.ClientSaturated}}<p class="warn" id="saturated">The bench client was saturated: {{.R.SaturationReason}}. Its latency figures are not to be trusted.</p>{{end}}
<table id="summary">
<tr><th>connections established</th><td>{{.R.Connections.Established}} / {{.R.Connections.Target}}</td><th>failed</th><td>{{.R.Connections.Failed}}</td></tr>
<tr><th>published</th><td>{{.R.Published}}</td><th>delivered / expected</th><td id="delivered">{{.R.Delivered}} / {{.R.ExpectedDeliveries}}</td></tr>
<tr><th>missing</th><td>{{.R.Missing}}</td><th>duplicates / out of order</th><td>{{.R.Duplicates}} / {{.R.OutOfOrder}}</td></tr>
<tr id="deliveries-rate"><th>deliveries/s</th><td>{{.Deliveries}} <span class="over">{{.Over}}</span></td><th>drain after the window</th><td>{{.Drain}}</td></tr>
<tr><th>published/s</th><td>{{.Published}} <span class="over">{{.Over}}</span></td><th>client CPU share</th><td>{{printf "%.1f%%" (mul100 .R.ClientCPUShare)}}</td></tr>
{{with .R.Server}}<tr><th>server RSS before</th><td>{{size .RSSBeforeBytes}}</td><th>server RSS at peak</th><td>{{size .RSSAtPeakBytes}}</td></tr>
<tr id="rss-per-conn"><th>server bytes per connection</th><td>{{$.RSSPerConn}}</td><td colspan="2" class="note">{{$.RSSNote}}</td></tr>{{end}}
</table>
<table id="latency"><tr><th></th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max (ms)</th></tr>
<tr><th>publish→deliver</th><td>{{.R.Latency.Count}}</td><td>{{.R.Latency.P50}}</td><td>{{.R.Latency.P90}}</td><td>{{.R.Latency.P99}}</td><td>{{.R.Latency.P999}}</td><td>{{.R.Latency.Max}}</td></tr>
<tr><th>connect</th><td>{{.R.Connect.Count}}</td><td>{{.R.Connect.P50}}</td><td>{{.R.Connect.P90}}</td><td>{{.R.Connect.P99}}</td><td>{{.R.Connect.P999}}</td><td>{{.R.Connect.Max}}</td></tr>
<tr><th>subscribe</th><td>{{.R.SubscribeLat.Count}}</td><td>{{.R.SubscribeLat.P50}}</td><td>{{.R.SubscribeLat.P90}}</td><td>{{.R.SubscribeLat.P99}}</td><td>{{.R.SubscribeLat.P999}}</td><td>{{.R.SubscribeLat.Max}}</td></tr>
</table>
{{range .Charts}}{{.}}{{end}}
<h2>Summary</h2><pre>{{.Summary}}</pre>
</body></html>
`))

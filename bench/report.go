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
	err = reportTmpl.Execute(f, struct {
		R       *Result
		Charts  []template.HTML
		Summary string
	}{r, charts, summary.String()})
	if err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	return f.Close()
}

type series struct {
	name, color string
	ys          []float64
}

// chart draws series over xs as an inline SVG line chart.
func chart(title, unit string, xs []float64, ss []series) template.HTML {
	const w, h, left, bottom, top, right = 720.0, 240.0, 70.0, 30.0, 30.0, 110.0
	maxX, maxY := 1.0, 0.0
	for _, x := range xs {
		maxX = math.Max(maxX, x)
	}
	for _, s := range ss {
		for _, y := range s.ys {
			maxY = math.Max(maxY, y)
		}
	}
	if maxY == 0 {
		maxY = 1
	}
	px := func(x float64) float64 { return left + (w-left-right)*x/maxX }
	py := func(y float64) float64 { return h - bottom - (h-bottom-top)*y/maxY }
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><svg role="img" aria-label="%s" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f">`, template.HTMLEscapeString(title), w, h, w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="16" class="title">%s</text>`, left, template.HTMLEscapeString(title))
	for i := 0; i <= 4; i++ {
		y := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid"/><text x="%.1f" y="%.1f" class="tick" text-anchor="end">%s</text>`,
			left, w-right, py(y), py(y), left-6, py(y)+4, human(y))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="tick" text-anchor="end">%s</text>`, left-6, 12.0, template.HTMLEscapeString(unit))
	for i := 0; i <= 5; i++ {
		x := maxX * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="tick" text-anchor="middle">%.0fs</text>`, px(x), h-10, x)
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

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v >= 10 || v == 0:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{"mul100": func(f float64) float64 { return 100 * f }}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spindle bench: {{.R.Scenario}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:20px} table{border-collapse:collapse;margin:8px 0 20px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4} .grid{stroke:#eee} .tick{font-size:11px;fill:#555} .title{font-weight:600;font-size:13px}
.warn{background:#fee;border:1px solid #c00;padding:8px} pre{background:#f8f8f8;padding:8px;overflow:auto}
</style></head><body>
<h1>spindle bench: {{.R.Scenario}}</h1>
{{if .R.ClientSaturated}}<p class="warn" id="saturated">The bench client was saturated: {{.R.SaturationReason}}. Its latency figures are not to be trusted.</p>{{end}}
<table id="summary">
<tr><th>connections established</th><td>{{.R.Connections.Established}} / {{.R.Connections.Target}}</td><th>failed</th><td>{{.R.Connections.Failed}}</td></tr>
<tr><th>published</th><td>{{.R.Published}}</td><th>delivered / expected</th><td id="delivered">{{.R.Delivered}} / {{.R.ExpectedDeliveries}}</td></tr>
<tr><th>missing</th><td>{{.R.Missing}}</td><th>duplicates / out of order</th><td>{{.R.Duplicates}} / {{.R.OutOfOrder}}</td></tr>
<tr><th>deliveries/s</th><td>{{printf "%.0f" .R.DeliveriesPerS}}</td><th>client CPU share</th><td>{{printf "%.1f%%" (mul100 .R.ClientCPUShare)}}</td></tr>
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

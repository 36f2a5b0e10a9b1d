package goroutines

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"time"
)

// Limits that keep memory bounded on hostile or corrupt input.
const (
	maxLineLen      = 64 << 10 // longer lines are skipped
	maxFrames       = 1024     // frames kept per goroutine; the rest count as elided
	maxLabels       = 64       // labels kept per goroutine
	maxSkippedKept  = 100      // skipped lines remembered with their text
	maxReasonLines  = 32       // panic / fatal error lines remembered
	maxInterned     = 1 << 20  // distinct strings interned
	maxSkippedText  = 200      // bytes of a skipped line remembered
	maxReasonLength = 1024     // bytes of a reason line remembered
)

// Format names reported in [Dump.Format].
const (
	FormatTraceback = "traceback"    // panic/SIGQUIT traceback or pprof ?debug=2
	FormatDebug1    = "pprof-debug1" // pprof ?debug=1 counted stacks
	FormatUnknown   = "unknown"      // no goroutine found yet
)

// Frame is one call in a goroutine's stack.
type Frame struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	// Args is the argument text as printed, without parentheses ("..." for
	// inlined calls); empty for pprof debug=1 input or when args are skipped.
	Args string `json:"args,omitempty"`
	// Offset is the +0x… program-counter offset into the function, 0 if absent.
	Offset uint64 `json:"offset,omitempty"`
}

// Label is one pprof label (key and value).
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Goroutine is one goroutine (or, for pprof debug=1, one counted stack).
type Goroutine struct {
	ID            int64   // goroutine id; 0 for pprof debug=1 records
	Count         int     // goroutines this record stands for: 1, or N for debug=1
	State         string  // wait state as printed, without duration and flags, e.g. "chan receive"
	StateInferred bool    // State was inferred from the stack (debug=1 prints none)
	WaitMinutes   int     // minutes blocked, as printed ("2 minutes"); 0 if not printed
	Locked        bool    // "locked to thread"
	Leaked        bool    // "(leaked)" marker or a goroutineleak profile
	Frames        []Frame // innermost first
	Elided        int     // frames the runtime (or the frame limit) left out
	CreatedBy     Frame   // the go statement that started it; zero Function if none
	CreatorID     int64   // "in goroutine N"; 0 if not printed
	Labels        []Label // pprof labels, in printed order
	Line          int     // 1-based input line where the goroutine starts
	NoWaitInfo    bool    // the format carries no wait durations (pprof debug=1)
	LockAddr      uint64  // receiver of the innermost sync.(*Mutex|RWMutex).Lock/RLock frame, 0 if none or unknown
}

// Clone returns a deep copy that stays valid after the parser moves on.
func (g *Goroutine) Clone() *Goroutine {
	c := *g
	c.Frames = append([]Frame(nil), g.Frames...)
	c.Labels = append([]Label(nil), g.Labels...)
	return &c
}

func (g *Goroutine) reset() {
	frames, labels := g.Frames[:0], g.Labels[:0]
	*g = Goroutine{Frames: frames, Labels: labels, Count: 1}
}

// SkippedLine is an input line the parser could not use.
type SkippedLine struct {
	Line int    `json:"line"`
	Text string `json:"text"`
}

// Dump describes the input as a whole, as far as it has been read.
type Dump struct {
	Format        string        // FormatTraceback, FormatDebug1 or FormatUnknown
	Profile       string        // "goroutine" or "goroutineleak" for pprof debug=1 input
	DeclaredTotal int           // "goroutine profile: total N", 0 if absent
	Reason        []string      // panic, fatal error and signal lines, e.g. "panic: boom [recovered]"
	Time          time.Time     // first timestamp seen in log lines around the dump, zero if none
	Lines         int           // lines read
	SkippedLines  int           // lines that could not be used
	Skipped       []SkippedLine // the first skipped lines (at most 100)
	Bytes         int64         // input bytes read (after gzip)
	RunningTests  []string      // "running tests:" of a go test -timeout panic
	// Truncated says why the dump is known to be cut short ("" if not): the
	// last goroutine ends mid-stack, or the size is the runtime's 64 MiB
	// debug=2 limit. Set when the input has been read to its end.
	Truncated string
}

// DebugLimit is the size at which the runtime cuts pprof debug=2 output
// (runtime/pprof.writeGoroutineStacks gives up at 64 MiB).
const DebugLimit = 64 << 20

type section int

const (
	secNone      section = iota // between goroutines
	secGoroutine                // inside a traceback goroutine
	secRecord                   // inside a pprof debug=1 record
	secIgnore                   // frames that belong to no goroutine (ancestors, runtime stack)
)

// Parser reads goroutines from a dump one at a time, like bufio.Scanner.
// It never fails on malformed input: such lines are counted in Dump().
type Parser struct {
	r        *bufio.Reader
	err      error
	eof      bool
	d        Dump
	sec      section
	cur, out *Goroutine
	pendFn   bool // last frame in cur has a function line but no location yet
	creator  bool // next location line belongs to CreatedBy
	intern   map[string]string
	skipArgs bool
	argBuf   []byte     // argument text of the goroutine being built
	argSpans [][2]int32 // per frame: its arguments in argBuf
	noNL     bool       // the last line read had no line ending
	locDone  bool       // the last line handled was a complete location line
	running  bool       // inside the "running tests:" list
	lineAt   int64      // input offset of the last line read
	tbAt     int64      // input offset of the first goroutine header, -1 before it
}

// NewParser returns a parser reading from r. Gzip input must be unwrapped
// first (see [Open] and [Decompress]).
func NewParser(r io.Reader) *Parser {
	return &Parser{
		r:      bufio.NewReaderSize(r, maxLineLen),
		d:      Dump{Format: FormatUnknown},
		cur:    &Goroutine{Count: 1},
		out:    &Goroutine{Count: 1},
		intern: make(map[string]string, 1024),
		tbAt:   -1,
	}
}

// SkipArgs makes the parser drop argument text, which saves time and memory
// when only loose grouping is needed.
func (p *Parser) SkipArgs(skip bool) { p.skipArgs = skip }

// Goroutine returns the goroutine found by the last call to Next. It is
// overwritten by the following call; use Clone to keep it.
func (p *Parser) Goroutine() *Goroutine { return p.out }

// Dump returns what is known about the input so far.
func (p *Parser) Dump() *Dump { return &p.d }

// Err returns the first read error other than io.EOF.
func (p *Parser) Err() error { return p.err }

// Next advances to the next goroutine and reports whether there is one.
func (p *Parser) Next() bool {
	for !p.eof {
		line, err := p.readLine()
		if err != nil {
			p.eof = true
			if !errors.Is(err, io.EOF) {
				p.err = fmt.Errorf("reading dump at line %d: %w", p.d.Lines, err)
			}
			if line == nil {
				p.truncation()
				break
			}
			p.noNL = true
		}
		done := p.line(line)
		if p.eof {
			p.truncation() // the last line is handled: a goroutine it started is the cut one
		}
		if done {
			return true
		}
	}
	return p.finish()
}

// All iterates over the remaining goroutines. Each yielded goroutine is
// overwritten by the next one; use Clone to keep it. Check Err afterwards.
func (p *Parser) All() iter.Seq[*Goroutine] {
	return func(yield func(*Goroutine) bool) {
		for p.Next() {
			if !yield(p.Goroutine()) {
				return
			}
		}
	}
}

// readLine returns the next line without its line ending. Over-long lines
// are consumed, counted as skipped and returned as an empty marker.
func (p *Parser) readLine() ([]byte, error) {
	line, err := p.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		p.d.Lines++
		p.skip(line[:maxSkippedText])
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = p.r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return []byte{}, nil // a blank stand-in: ends the current goroutine
	}
	if len(line) == 0 && err != nil {
		return nil, err
	}
	p.d.Lines++
	p.lineAt = p.d.Bytes
	p.d.Bytes += int64(len(line))
	line = bytes.TrimRight(line, "\r\n")
	return line, err
}

// truncation runs at the end of the input, before the last goroutine is
// finished: a goroutine without its closing location line (or whose last
// line, without a line ending, is not a whole location line), or a dump of
// exactly the runtime's debug=2 size limit, was cut. The size counts from the
// first goroutine header, so a dump saved after lines of log is still seen
// at the limit, wherever the runtime's cut fell.
func (p *Parser) truncation() {
	if p.d.Truncated != "" {
		return
	}
	midStack := p.sec == secGoroutine && (p.pendFn || (p.noNL && !p.locDone) || (p.creator && p.cur.CreatedBy.File == "") || len(p.cur.Frames) == 0)
	size := p.d.Bytes - max(p.tbAt, 0)
	atLimit := p.d.Format == FormatTraceback && size > DebugLimit-(64<<10) && size <= DebugLimit
	switch {
	case atLimit:
		p.d.Truncated = fmt.Sprintf("dump is %d bytes, the runtime's 64 MiB debug=2 limit: goroutines after the cut are missing", size)
	case midStack:
		p.d.Truncated = fmt.Sprintf("the last goroutine (line %d) is cut mid-stack", p.cur.Line)
	}
}

func (p *Parser) skip(line []byte) {
	p.d.SkippedLines++
	if len(p.d.Skipped) < maxSkippedKept {
		if len(line) > maxSkippedText {
			line = line[:maxSkippedText]
		}
		p.d.Skipped = append(p.d.Skipped, SkippedLine{Line: p.d.Lines, Text: string(line)})
	}
}

// finish ends the goroutine being built; it reports whether one was ready.
func (p *Parser) finish() bool {
	sec := p.sec
	p.sec = secNone
	p.pendFn, p.creator = false, false
	if sec != secGoroutine && sec != secRecord {
		return false
	}
	if len(p.argSpans) > 0 {
		all := string(p.argBuf)
		for i, sp := range p.argSpans {
			if sp[0] >= 0 && i < len(p.cur.Frames) {
				p.cur.Frames[i].Args = all[sp[0]:sp[1]]
			}
		}
		p.argBuf, p.argSpans = p.argBuf[:0], p.argSpans[:0]
	}
	p.cur, p.out = p.out, p.cur
	p.cur.reset()
	if sec == secRecord && p.out.State == "" {
		p.out.State, p.out.StateInferred = inferState(p.out.Frames)
	}
	return true
}

// line handles one input line; it reports whether a goroutine is complete.
func (p *Parser) line(b []byte) bool {
	p.locDone = false
	if len(b) == 0 {
		p.running = false
		return p.finish()
	}
	switch b[0] {
	case '\t':
		if p.sec == secNone {
			// Go indents the lines of a multi-line panic value with a tab.
			if bytes.Equal(bytes.TrimSpace(b), []byte("running tests:")) {
				p.running = true
				return false
			}
			if p.running {
				p.runningTest(b[1:])
				return false
			}
		}
		p.location(b[1:])
		return false
	case ' ':
		// Dumps pasted through chat or web pages often have the tab before
		// file:line turned into spaces.
		if p.sec == secGoroutine && (p.pendFn || p.creator) {
			p.location(bytes.TrimLeft(b, " "))
			return false
		}
	case 'g':
		if bytes.HasPrefix(b, []byte("goroutine ")) {
			return p.header(b)
		}
		if bytes.HasPrefix(b, []byte("goroutineleak profile: total ")) {
			return p.profileHeader(b, "goroutineleak")
		}
	case '#':
		if p.sec == secRecord {
			p.recordComment(b)
			return false
		}
	case '[':
		if bytes.HasPrefix(b, []byte("[originating from goroutine ")) {
			if p.sec == secGoroutine {
				// Ancestors (GODEBUG=tracebackancestors) follow the goroutine's own
				// stack: keep it, ignore theirs.
				done := p.finish()
				p.sec = secIgnore
				return done
			}
			p.sec = secIgnore
			return false
		}
	case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if i := bytes.Index(b, []byte(" @")); i > 0 && allDigits(b[:i]) && pcList(b[i+2:]) {
			done := p.finish()
			p.startRecord(b[:i])
			return done
		}
	case '.':
		if bytes.HasPrefix(b, []byte("...")) && bytes.HasSuffix(b, []byte("elided...")) {
			if p.sec == secGoroutine {
				p.pendFn = false
				n, err := strconv.Atoi(string(bytes.TrimSuffix(bytes.TrimPrefix(b, []byte("...")), []byte(" frames elided..."))))
				if err != nil || n < 1 {
					n = 1 // "...additional frames elided..." gives no count
				}
				p.cur.Elided += n
			}
			return false
		}
	}
	p.running = false
	if p.sec == secNone && bytes.Equal(bytes.TrimSpace(b), []byte("running tests:")) {
		p.running = true
		return false
	}
	if bytes.Equal(b, []byte("runtime stack:")) {
		done := p.finish() // system-stack frames follow; they belong to no goroutine
		p.sec = secIgnore
		return done
	}
	if p.sec == secGoroutine || p.sec == secIgnore {
		if bytes.HasPrefix(b, []byte("created by ")) {
			p.createdBy(b[len("created by "):])
			return false
		}
		if p.function(b) {
			return false
		}
	}
	if p.known(b) {
		return false
	}
	p.skip(b)
	return false
}

// known recognises non-goroutine lines Go prints around dumps.
func (p *Parser) known(b []byte) bool {
	switch {
	case bytes.HasPrefix(b, []byte("panic: ")), bytes.HasPrefix(b, []byte("fatal error: ")),
		bytes.HasPrefix(b, []byte("\tpanic: ")), bytes.HasPrefix(b, []byte("[signal ")),
		bytes.HasPrefix(b, []byte("SIG")) && bytes.Contains(b, []byte(": ")),
		bytes.HasPrefix(b, []byte("runtime: ")), bytes.HasPrefix(b, []byte("fatal: ")):
		p.reason(b)
		return true
	case bytes.HasPrefix(b, []byte("goroutine profile: total ")):
		p.profileHeader(b, "goroutine")
		return true
	case bytes.HasPrefix(b, []byte("PC=0x")), bytes.Equal(b, []byte("-----")),
		bytes.HasPrefix(b, []byte("exit status ")), isRegister(b):
		return true
	case bytes.HasPrefix(b, []byte("goroutine running on other thread")):
		return true
	}
	if p.sec == secNone && p.d.Time.IsZero() {
		if t, ok := leadingTime(b); ok {
			p.d.Time = t
		}
	}
	return false
}

// runningTest keeps one "\tTestName (1s)" line of a go test timeout panic.
func (p *Parser) runningTest(b []byte) {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndex(b, []byte(" (")); i > 0 && bytes.HasSuffix(b, []byte(")")) {
		b = b[:i]
	}
	if len(b) > 0 && len(p.d.RunningTests) < maxReasonLines {
		p.d.RunningTests = append(p.d.RunningTests, string(b))
	}
}

func (p *Parser) reason(b []byte) {
	if len(p.d.Reason) >= maxReasonLines {
		return
	}
	if len(b) > maxReasonLength {
		b = b[:maxReasonLength]
	}
	b = bytes.TrimSpace(b)
	for _, r := range p.d.Reason {
		if r == string(b) {
			return // crash mode repeats "SIGQUIT: quit" once per thread
		}
	}
	p.d.Reason = append(p.d.Reason, string(b))
}

func (p *Parser) profileHeader(b []byte, profile string) bool {
	done := p.finish()
	p.d.Format = FormatDebug1
	p.d.Profile = profile
	if i := bytes.LastIndexByte(b, ' '); i >= 0 {
		if n, err := strconv.Atoi(string(b[i+1:])); err == nil {
			p.d.DeclaredTotal = n
		}
	}
	return done
}

// header parses "goroutine 18 [chan receive, 2 minutes]:" and variants with
// "gp=… m=… mp=…", "locked to thread", "(leaked)" and "labels:{…}".
func (p *Parser) header(b []byte) bool {
	rest := b[len("goroutine "):]
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	open := bytes.IndexByte(rest, '[')
	if i == 0 || i > 19 || open < 0 || !bytes.HasSuffix(rest, []byte("]:")) || open+2 > len(rest)-2 {
		if p.known(b) {
			return false
		}
		p.skip(b)
		return false
	}
	id, ok := parseInt(rest[:i])
	if !ok {
		p.skip(b)
		return false
	}
	done := p.finish()
	g := p.cur
	g.ID = id
	g.Line = p.d.Lines
	p.sec = secGoroutine
	if p.d.Format == FormatUnknown {
		p.d.Format = FormatTraceback
	}
	if p.tbAt < 0 {
		p.tbAt = p.lineAt
	}
	inner := rest[open+1 : len(rest)-2]
	if j := bytes.Index(inner, []byte(" labels:{")); j >= 0 {
		g.Labels = p.parseLabels(g.Labels, inner[j+len(" labels:"):])
		inner = inner[:j]
	}
	state := inner
	if j := bytes.IndexByte(inner, ','); j >= 0 {
		state = inner[:j]
		for _, part := range bytes.Split(inner[j+1:], []byte(",")) {
			part = bytes.TrimSpace(part)
			switch {
			case bytes.HasSuffix(part, []byte(" minutes")):
				if n, ok := parseInt(bytes.TrimSuffix(part, []byte(" minutes"))); ok && n < 1<<40 {
					g.WaitMinutes = int(n)
				}
			case bytes.Equal(part, []byte("locked to thread")):
				g.Locked = true
			}
		}
	}
	for {
		switch {
		case bytes.HasSuffix(state, []byte(" (leaked)")):
			g.Leaked = true
			state = state[:len(state)-len(" (leaked)")]
			continue
		case bytes.HasSuffix(state, []byte(" (scan)")):
			state = state[:len(state)-len(" (scan)")]
			continue
		}
		break
	}
	g.State = p.str(state)
	return done
}

func (p *Parser) startRecord(count []byte) {
	g := p.cur
	n, err := strconv.Atoi(string(count))
	if err != nil || n < 0 {
		n = 1
	}
	g.Count = n
	g.Line = p.d.Lines
	g.Leaked = p.d.Profile == "goroutineleak"
	g.NoWaitInfo = true
	p.sec = secRecord
	if p.d.Format == FormatUnknown {
		p.d.Format = FormatDebug1
	}
}

// recordComment parses "# labels: {…}" and "#\t0xPC\tfunc+0xOFF\tfile:line".
func (p *Parser) recordComment(b []byte) {
	g := p.cur
	if rest, ok := bytes.CutPrefix(b, []byte("# labels: ")); ok {
		g.Labels = p.parseLabels(g.Labels, rest)
		return
	}
	if len(b) < 2 || b[1] != '\t' {
		p.skip(b)
		return
	}
	var fields [3][]byte
	n := 0
	for _, f := range bytes.Split(b[2:], []byte("\t")) {
		if len(f) == 0 {
			continue
		}
		if n == 3 {
			n++
			break
		}
		fields[n] = f
		n++
	}
	if n != 3 {
		p.skip(b)
		return
	}
	fn := fields[1]
	var off uint64
	if k := bytes.LastIndex(fn, []byte("+0x")); k > 0 {
		off = parseHex(fn[k+3:])
		fn = fn[:k]
	}
	file, line, ok := splitFileLine(fields[2])
	if !ok {
		p.skip(b)
		return
	}
	if len(g.Frames) >= maxFrames {
		g.Elided++
		return
	}
	g.Frames = append(g.Frames, Frame{Function: p.str(fn), File: p.str(file), Line: line, Offset: off})
}

// function handles "pkg.fn(args)"; it reports whether the line was one.
func (p *Parser) function(b []byte) bool {
	if len(b) < 3 || b[len(b)-1] != ')' {
		return false
	}
	open := bytes.LastIndexByte(b, '(')
	if open <= 0 {
		return false
	}
	name := b[:open]
	if bytes.IndexByte(name, ' ') >= 0 || bytes.IndexByte(name, '\t') >= 0 {
		return false
	}
	p.creator = false
	if p.sec == secIgnore {
		return true
	}
	g := p.cur
	if len(g.Frames) >= maxFrames {
		g.Elided++
		p.pendFn = false
		return true
	}
	f := Frame{Function: p.str(name)}
	if g.LockAddr == 0 && len(name) > 7 && (name[0] == 's' || name[0] == 'i') && bytes.Contains(name[:min(len(name), 16)], []byte("sync.(*")) {
		g.LockAddr = lockReceiver(name, b[open+1:len(b)-1])
	}
	if !p.skipArgs {
		// Argument values differ per goroutine: interning them would only
		// grow the table. Inlined frames print "...", shared as a constant.
		// They are gathered in one buffer and turned into one string per
		// goroutine in finish; the frames get substrings of it.
		args := b[open+1 : len(b)-1]
		if string(args) == "..." {
			f.Args = "..."
			p.argSpans = append(p.argSpans, [2]int32{-1, -1})
		} else if len(p.argBuf)+len(args) <= maxLineLen*4 {
			p.argSpans = append(p.argSpans, [2]int32{int32(len(p.argBuf)), int32(len(p.argBuf) + len(args))})
			p.argBuf = append(p.argBuf, args...)
		} else {
			p.argSpans = append(p.argSpans, [2]int32{-1, -1})
		}
	}
	g.Frames = append(g.Frames, f)
	p.pendFn = true
	return true
}

// lockReceiver returns the receiver value of a sync.(*Mutex).Lock,
// (*RWMutex).Lock or RLock frame (its first argument), 0 if it is none.
func lockReceiver(name, args []byte) uint64 {
	switch string(name) {
	case "sync.(*Mutex).Lock", "sync.(*Mutex).lockSlow", "internal/sync.(*Mutex).lockSlow", "internal/sync.(*Mutex).Lock",
		"sync.(*RWMutex).Lock", "sync.(*RWMutex).RLock":
	default:
		return 0
	}
	if i := bytes.IndexAny(args, ",)"); i >= 0 {
		args = args[:i]
	}
	args = bytes.TrimSpace(args)
	if !bytes.HasPrefix(args, []byte("0x")) {
		return 0
	}
	return parseHex(args[2:])
}

// createdBy handles "created by pkg.fn in goroutine 7".
func (p *Parser) createdBy(b []byte) {
	p.pendFn = false
	if p.sec == secIgnore {
		p.creator = true
		return
	}
	g := p.cur
	if i := bytes.Index(b, []byte(" in goroutine ")); i >= 0 {
		if id, ok := parseInt(b[i+len(" in goroutine "):]); ok {
			g.CreatorID = id
		}
		b = b[:i]
	}
	g.CreatedBy = Frame{Function: p.str(b)}
	p.creator = true
}

// location handles "/path/file.go:LINE +0xOFF fp=… sp=… pc=…".
func (p *Parser) location(b []byte) {
	if p.sec == secIgnore {
		p.pendFn, p.creator = false, false
		return
	}
	if p.sec != secGoroutine || (!p.pendFn && !p.creator) {
		if p.sec == secNone && bytes.HasPrefix(b, []byte("panic: ")) {
			p.reason(b) // nested panic under "panic: x [recovered]"
			return
		}
		p.skip(append([]byte{'\t'}, b...))
		return
	}
	if i := bytes.Index(b, []byte(" fp=")); i >= 0 {
		b = b[:i]
	}
	var off uint64
	if i := bytes.LastIndex(b, []byte(" +0x")); i >= 0 {
		off = parseHex(b[i+4:])
		b = b[:i]
	}
	file, line, ok := splitFileLine(b)
	if !ok {
		p.skip(append([]byte{'\t'}, b...))
		p.pendFn, p.creator = false, false
		return
	}
	g := p.cur
	f := &g.CreatedBy
	if !p.creator {
		f = &g.Frames[len(g.Frames)-1]
	}
	f.File, f.Line, f.Offset = p.str(file), line, off
	p.pendFn, p.creator = false, false
	p.locDone = true
}

func splitFileLine(b []byte) (file []byte, line int, ok bool) {
	i := bytes.LastIndexByte(b, ':')
	if i <= 0 || i == len(b)-1 || len(b)-i > 10 {
		return nil, 0, false
	}
	n := 0
	for _, c := range b[i+1:] {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		n = n*10 + int(c-'0')
	}
	return b[:i], n, true
}

// parseInt parses a non-negative decimal without allocating.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseHex parses hex digits (no prefix) without allocating; 0 if malformed.
func parseHex(b []byte) uint64 {
	if len(b) == 0 || len(b) > 16 {
		return 0
	}
	var n uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | uint64(c-'a'+10)
		default:
			return 0
		}
	}
	return n
}

// pcList matches the " 0x4f1a 0x4f2b" after "N @" in a debug=1 record.
func pcList(b []byte) bool {
	if len(b) == 0 {
		return true // pprof prints "N @" with no PCs for an empty stack
	}
	for _, f := range bytes.Fields(b) {
		if len(f) < 3 || f[0] != '0' || f[1] != 'x' {
			return false
		}
	}
	return true
}

func allDigits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isRegister matches register dump lines such as "rax    0xca" or "r8 0x0".
func isRegister(b []byte) bool {
	i := 0
	for i < len(b) && i < 8 && (b[i] >= 'a' && b[i] <= 'z' || b[i] >= '0' && b[i] <= '9') {
		i++
	}
	if i == 0 || i >= len(b) || b[i] != ' ' {
		return false
	}
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if !bytes.HasPrefix(b[i:], []byte("0x")) || i+2 == len(b) {
		return false
	}
	for _, c := range b[i+2:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// str interns b so that repeated function and file names share memory.
func (p *Parser) str(b []byte) string {
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(p.intern) < maxInterned && len(s) <= 1024 {
		p.intern[s] = s
	}
	return s
}

// leadingTime finds a timestamp at the start of a log line
// (RFC 3339, or the log package's "2006/01/02 15:04:05").
func leadingTime(b []byte) (time.Time, bool) {
	if len(b) < 19 || b[4] != b[7] || (b[4] != '-' && b[4] != '/') {
		return time.Time{}, false
	}
	if b[4] == '/' {
		t, err := time.ParseInLocation("2006/01/02 15:04:05", string(b[:19]), time.Local)
		return t, err == nil
	}
	end := bytes.IndexAny(b, " \t")
	if end < 0 {
		end = len(b)
	}
	s := string(bytes.Trim(b[:end], `"[]`))
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

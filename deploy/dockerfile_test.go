package deploy

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts, from 1
	cmd  string // upper-cased: FROM, RUN, …
	args string // the rest, as written
}

// stage is one FROM and what follows it.
type stage struct {
	base, name string
	ins        []instruction
}

// parseDockerfile splits a Dockerfile into stages. It knows the syntax the
// project's Dockerfile uses: comments, backslash continuations, and
// "FROM image AS name".
func parseDockerfile(t *testing.T, file string) []stage {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", file, in.line, in.cmd)
			}
			return
		}
		last := &stages[len(stages)-1]
		last.ins = append(last.ins, in)
	}
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 {
			if trimmed == "" || strings.HasPrefix(trimmed, "#") {
				continue
			}
			start = i + 1
		} else if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

// find returns the stage's instructions of one kind.
func (s stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// shellWords splits a RUN line as sh would for the simple words it holds:
// blanks separate, single and double quotes group.
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// buildLine is the builder stage's `go build` command: its environment
// assignments, its arguments with the stage's ARGs expanded (overrides
// first, as `docker build --build-arg` does), and the -o output.
type buildLine struct {
	env    []string // KEY=VALUE written before "go"
	args   []string // after "go"
	output string
	from   stage
}

func dockerBuildLine(t *testing.T, stages []stage, buildArgs map[string]string) buildLine {
	t.Helper()
	for _, s := range stages {
		vars := map[string]string{}
		for _, a := range s.find("ARG") {
			k, v, _ := strings.Cut(a.args, "=")
			vars[k] = v
		}
		for k, v := range buildArgs {
			if _, ok := vars[k]; ok {
				vars[k] = v
			}
		}
		for _, run := range s.find("RUN") {
			if !strings.Contains(run.args, "go build") {
				continue
			}
			expanded := os.Expand(run.args, func(k string) string {
				v, ok := vars[k]
				if !ok {
					t.Fatalf("Dockerfile:%d: $%s is not an ARG of the stage", run.line, k)
				}
				return v
			})
			var bl buildLine
			bl.from = s
			words := shellWords(expanded)
			for len(words) > 0 && strings.Contains(words[0], "=") {
				bl.env, words = append(bl.env, words[0]), words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" || strings.ContainsAny(expanded, "&|;") {
				t.Fatalf("Dockerfile:%d: want one plain `[VAR=v …] go build …` command, got %q", run.line, run.args)
			}
			bl.args = words[1:]
			if i := slices.Index(bl.args, "-o"); i >= 0 && i+1 < len(bl.args) {
				bl.output = bl.args[i+1]
			}
			return bl
		}
	}
	t.Fatal("Dockerfile: no RUN … go build line")
	return buildLine{}
}

// image holds the binary built by the Dockerfile's build line, once per
// test run; mu guards it, TestMain removes dir.
var image struct {
	mu       sync.Mutex
	dir, bin string
}

// imageVersion is passed as the VERSION build argument, so a test can tell
// the -ldflags of the build line took effect.
const imageVersion = "deploy-test"

// imageBinary builds cmd/spindle exactly as the Dockerfile's builder stage
// does (same environment and flags; only -o points into a temporary folder)
// and returns its path.
func imageBinary(t *testing.T) string {
	t.Helper()
	image.mu.Lock()
	defer image.mu.Unlock()
	if image.bin != "" {
		return image.bin
	}
	bl := dockerBuildLine(t, parseDockerfile(t, "Dockerfile"), map[string]string{"VERSION": imageVersion})
	if bl.output == "" {
		t.Fatalf("the build line has no -o: %q", bl.args)
	}
	dir, err := os.MkdirTemp("", "spindle-image")
	if err != nil {
		t.Fatal(err)
	}
	image.dir = dir
	bin := filepath.Join(dir, "spindle")
	args := slices.Clone(bl.args)
	args[slices.Index(args, "-o")+1] = bin
	cmd := exec.Command("go", args...)
	cmd.Dir = ".." // the build context: the repository root (COPY . .)
	cmd.Env = append(os.Environ(), bl.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	image.bin = bin
	return bin
}

// The Dockerfile builds in one stage and ships only the binary in a second,
// as a non-root user, with SIGTERM as the stop signal and the binary itself
// (exec form, no shell) as the entrypoint, so it is PID 1 and gets the
// signal.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages; want a builder and a final stage", len(stages))
	}
	final := stages[len(stages)-1]
	bl := dockerBuildLine(t, stages, nil)
	if !slices.Contains(bl.env, "CGO_ENABLED=0") {
		t.Errorf("build line environment %q: want CGO_ENABLED=0 (a static binary for an image without libc)", bl.env)
	}
	if bl.from.name == "" || bl.from.name == final.name {
		t.Errorf("the go build runs in stage %q; want a named builder stage before the final one", bl.from.name)
	}
	if !slices.Contains(bl.args, "./cmd/spindle") {
		t.Errorf("build line %q does not build ./cmd/spindle", bl.args)
	}

	copies := final.find("COPY")
	var shipped string
	for _, c := range copies {
		f := strings.Fields(c.args)
		if len(f) == 3 && f[0] == "--from="+bl.from.name && f[1] == bl.output {
			shipped = f[2]
		}
	}
	if shipped == "" || len(copies) != 1 {
		t.Errorf("final stage COPY %v: want exactly the builder's %s", copies, bl.output)
	}
	if len(final.find("RUN")) > 0 {
		t.Errorf("final stage runs commands %v; it should only receive the binary", final.find("RUN"))
	}

	// A numeric uid: Kubernetes' runAsNonRoot can only verify numbers.
	if uid := dockerUser(t); uid == 0 {
		t.Error("final stage USER is root")
	}
	if sig := final.find("STOPSIGNAL"); len(sig) != 1 || sig[0].args != "SIGTERM" {
		t.Errorf("STOPSIGNAL %v; want SIGTERM, the signal that drains", sig)
	}
	ep := final.find("ENTRYPOINT")
	if len(ep) != 1 || !regexp.MustCompile(`^\[\s*"`+regexp.QuoteMeta(shipped)+`"\s*,\s*"serve"\s*\]$`).MatchString(ep[0].args) {
		t.Errorf("ENTRYPOINT %v; want the exec form [%q, \"serve\"]: a shell form makes sh PID 1, and sh does not pass SIGTERM on", ep, shipped)
	}
	if len(final.find("CMD")) > 0 || len(final.find("HEALTHCHECK")) > 0 {
		t.Error("final stage has CMD or HEALTHCHECK: flags come from the Deployment's args, health from its probes")
	}
}

// The binary the image ships is statically linked — no ELF interpreter, no
// shared library — so it runs on distroless/static, and it carries the
// version passed as a build argument.
func TestImageBinaryStatic(t *testing.T) {
	bin := imageBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a PT_INTERP program header: dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: the build line's -s did not apply")
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "spindle "+imageVersion+" ") {
		t.Errorf("spindle version: %q, %v; want version %q from the VERSION build argument", out, err, imageVersion)
	}
}

// The Dockerfile passes dockerfile-utils lint (hadolint is not in Debian):
// the Docker builder's own checks of every instruction and its flags, and
// its style warnings, none of them allowed.
func TestDockerfileLint(t *testing.T) {
	node := requireTool(t, "node", "Debian package nodejs; scripts/deps.sh installs it")
	lint := filepath.Join("lint", "node_modules", "dockerfile-utils", "bin", "dockerfile-utils")
	if _, err := os.Stat(lint); err != nil {
		toolMissing(t, "dockerfile-utils is not installed in deploy/lint (scripts/deps.sh runs npm ci there): "+err.Error())
	}
	out, err := exec.Command(node, lint, "lint", "--json", "Dockerfile").Output()
	var problems []struct {
		InstructionLine int    `json:"instructionLine"`
		Message         string `json:"message"`
		Severity        string `json:"severity"`
	}
	if jerr := json.Unmarshal(out, &problems); jerr != nil {
		t.Fatalf("dockerfile-utils lint: %v, %v: %s", err, jerr, out)
	}
	for _, p := range problems {
		t.Errorf("Dockerfile:%d: %s: %s", p.InstructionLine+1, p.Severity, p.Message)
	}
	if err != nil && len(problems) == 0 {
		t.Fatalf("dockerfile-utils lint: %v", err)
	}
}

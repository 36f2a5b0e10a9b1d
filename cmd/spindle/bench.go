package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/lesismal/nbio/logging"

	"github.com/spindlehq/spindle/bench"
)

const benchUsage = `usage: spindle bench <command> [flags] ...

  run SCENARIO.yaml [flags]
        run a load scenario against a Centrifugo-protocol server
  compare A.json B.json
        compare two results of run --out
  worker
        one worker process of run (run starts them; they read a plan on stdin)

Run "spindle bench <command> --help" for the flags of a command.
`

// runBench dispatches `spindle bench run|compare` (and the hidden `worker`
// that run starts as child processes).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return 2
	}
	switch args[0] {
	case "run":
		return benchRun(ctx, args[1:], stdout, stderr)
	case "compare":
		return benchCompare(args[1:], stdout, stderr)
	case "worker":
		return benchWorker(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "spindle bench: unknown command %q\n\n%s", args[0], benchUsage)
		return 2
	}
}

func benchWorker(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench worker", "", `Runs one worker of "spindle bench run": it reads its plan from stdin and writes
its results to stdout. bench run starts the workers itself; there is no need to
run one by hand.`)
	pos, code, ok := parseFlags(fs, args, false, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "spindle bench worker: unexpected argument %q\n", pos[0])
		return 2
	}
	// stdout carries the worker protocol: nbio's own log lines (its
	// default logger prints to stdout) go to stderr instead.
	logging.Output = stderr
	logging.SetLevel(logging.LevelWarn)
	// An interrupt reaches the whole process group; the coordinator
	// decides when a worker ends (it closes stdin), so ignore ctx.
	if err := bench.RunWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(stderr, "spindle bench worker: %v\n", err)
		return 1
	}
	return 0
}

func benchRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench run", "SCENARIO.yaml [flags]", `Runs a load scenario (see bench/scenarios/README.md) and prints its result.`)
	url := fs.String("url", "", "WebSocket URL(s), comma-separated (overrides the scenario)")
	api := fs.String("api", "", "server API base URL, e.g. http://127.0.0.1:8000/api")
	apiKey := fs.String("api-key", "", "server API key")
	secret := fs.String("hmac-secret", "", "HMAC secret to mint one token per connection")
	token := fs.String("token", "", "static connection token")
	duration := fs.Duration("duration", 0, "cut the stages to this length")
	workers := fs.Int("workers", 0, "worker processes (overrides the scenario)")
	out := fs.String("out", "", "write the result JSON here")
	html := fs.String("html", "", "write an HTML report here")
	serverPID := fs.Int("server-pid", 0, "sample this local server process's RSS")
	serverMetrics := fs.String("server-metrics", "", "sample go_goroutines from this Prometheus URL, e.g. http://127.0.0.1:9000/metrics")
	metrics := fs.String("metrics-listen", "", "serve Prometheus metrics of the run here, e.g. 127.0.0.1:9400")
	quiet := fs.Bool("quiet", false, "no per-second progress")
	inProcess := fs.Bool("in-process", false, "run workers as goroutines instead of processes")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (with --in-process: of the workers too)")
	pos, code, ok := parseFlags(fs, args, true, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "spindle bench run: want exactly one SCENARIO.yaml")
		return 2
	}
	sc, err := bench.LoadScenario(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
		return 2
	}
	if *url != "" {
		sc.URLs = strings.Split(*url, ",")
	}
	for _, o := range []struct{ flag, field *string }{{api, &sc.API}, {apiKey, &sc.APIKey}, {secret, &sc.HMACSecret}, {token, &sc.Token}} {
		if *o.flag != "" {
			*o.field = *o.flag
		}
	}
	if *workers > 0 {
		sc.Workers = *workers
	}
	if *duration > 0 {
		sc.Truncate(*duration)
	}
	if err := sc.Validate(); err != nil {
		fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
		return 2
	}
	opt := bench.Options{ServerPID: *serverPID, ServerMetrics: *serverMetrics, MetricsListen: *metrics}
	if !*quiet {
		opt.Progress = stderr
	}
	if !*inProcess {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
			return 1
		}
		opt.WorkerCommand = func(int) *exec.Cmd { return exec.Command(self, "bench", "worker") }
	}
	fmt.Fprintf(stderr, "bench %q: %d stages, %v, up to %.0f connections over %d workers\n",
		sc.Name, len(sc.Stages), sc.Duration().Round(time.Millisecond), sc.MaxConnections(), sc.Workers)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(ctx, sc, opt)
	if err != nil {
		fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
		return 1
	}
	res.WriteText(stdout)
	if *out != "" {
		if err := res.WriteJSON(*out); err != nil {
			fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
			return 1
		}
	}
	if *html != "" {
		if err := res.WriteHTMLFile(*html); err != nil {
			fmt.Fprintf(stderr, "spindle bench run: %v\n", err)
			return 1
		}
	}
	return 0
}

func benchCompare(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench compare", "A.json B.json", `Compares two results written by "spindle bench run --out", B against A.`)
	args, code, ok := parseFlags(fs, args, true, stdout, stderr)
	if !ok {
		return code
	}
	if len(args) != 2 {
		fmt.Fprintln(stderr, "spindle bench compare: want two results: A.json B.json")
		return 2
	}
	a, err := bench.ReadResult(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "spindle bench compare: %v\n", err)
		return 1
	}
	b, err := bench.ReadResult(args[1])
	if err != nil {
		fmt.Fprintf(stderr, "spindle bench compare: %v\n", err)
		return 1
	}
	bench.Compare(stdout, args[0], a, args[1], b)
	return 0
}

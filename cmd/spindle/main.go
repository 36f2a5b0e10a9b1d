// Command spindle is a real-time push gateway speaking the Centrifugo client
// protocol, plus the tools that prove it works: a load generator, a fault
// proxy and a goroutine-dump analyzer.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand of the spindle binary.
type command struct {
	summary string
	// run executes the subcommand with the arguments after its name and
	// returns the process exit code.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands lists every subcommand; each lives in a file named after it.
var commands = map[string]command{
	"serve":      {"run the WebSocket gateway", runServe},
	"token":      {"mint a connection or subscription JWT for testing", runToken},
	"version":    {"print the version", runVersion},
	"goroutines": {"analyze, diff and watch goroutine dumps of any Go program", runGoroutines},
	"bench":      {"load generator for Centrifugo-protocol servers", runBench},
	"proxy":      {"fault-injecting TCP proxy for tests", runProxy},
	// The benchmark baseline: the way most Go services build a hub.
	"baseline-hub": {"the gorilla/websocket hub used as the benchmark baseline", runBaseline},
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "spindle: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	// serve installs its own signal handling (graceful drain); the others
	// simply stop on the first interrupt.
	ctx := context.Background()
	if args[0] != "serve" {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: spindle <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'spindle <command> -h' for the flags of a command.")
}

// parseInterleaved parses flags that may come before or after positional
// arguments (`run SCENARIO.yaml --duration 10s`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

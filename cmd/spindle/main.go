// Command spindle is a real-time push gateway speaking the Centrifugo client
// protocol, plus the tools that prove it works: a load generator, a fault
// proxy and a goroutine-dump analyzer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
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
	// The benchmark floor: the least a server can do to deliver.
	"floor-hub": {"the one-write-per-delivery server used as the benchmark floor", runFloor},
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		// spindle help CMD [SUB] is spindle CMD [SUB] --help
		return dispatch(append(append([]string{}, args[1:]...), "--help"), stdout, stderr)
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
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'spindle <command> --help' (or 'spindle help <command>') for the flags of a command.")
}

// newFlags returns the flag set of `spindle <name>`: its usage, which
// --help prints, starts "usage: spindle <name> <synopsis>", then about,
// then the flags.
func newFlags(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, strings.TrimSpace("usage: spindle "+name+" "+synopsis))
		if about != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimRight(about, "\n"))
		}
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nflags:")
			printFlags(w, fs)
		}
	}
	return fs
}

// printFlags lists the flags as "--name type", then the usage and default;
// a flag.Value with a typeName method names its own type.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, use := flag.UnquoteUsage(f)
		if t, ok := f.Value.(interface{ typeName() string }); ok {
			typ = t.typeName()
		}
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(use, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			if typ == "string" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
		}
		fmt.Fprintln(w)
	})
}

// parseFlags parses args with fs; with interleaved, flags may also follow
// positional arguments (`run SCENARIO.yaml --duration 10s`). When ok is
// false the command ends with code: 0 after -h/--help printed the usage to
// stdout, 2 after a bad flag, whose error went to stderr.
func parseFlags(fs *flag.FlagSet, args []string, interleaved bool, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	// The flag package prints the usage on help and on errors: it is
	// printed here instead, to stdout when asked for.
	fs.SetOutput(io.Discard)
	var err error
	if interleaved {
		pos, err = parseInterleaved(fs, args)
	} else if err = fs.Parse(args); err == nil {
		pos = fs.Args()
	}
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return nil, 0, false
	case err != nil:
		fmt.Fprintf(stderr, "spindle %s: %v\nRun 'spindle %s --help' for usage.\n", fs.Name(), err, fs.Name())
		return nil, 2, false
	}
	return pos, 0, true
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
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

package proxy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Command is `spindle proxy`: it parses args, runs a proxy until ctx is
// cancelled, and returns the exit code (2 for bad flags, 1 for failures).
// Once listening it prints "listening on ADDR" (and "control on URL") to
// stdout, so scripts can use port 0; logs go to stderr.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: spindle proxy --listen 127.0.0.1:P --upstream HOST:Q [fault flags]")
		fmt.Fprintln(stderr, "\nA TCP proxy that injects faults; change them with --control or --schedule.")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "", "loopback address to accept clients on, e.g. 127.0.0.1:9000 (port 0 picks one)")
	upstream := fs.String("upstream", "", "address to forward to, e.g. 127.0.0.1:8000")
	var f Faults
	fs.DurationVar(&f.Latency, "latency", 0, "delay added to each chunk, each direction")
	fs.DurationVar(&f.Jitter, "jitter", 0, "each chunk's delay varies by up to ± this (bytes keep their order)")
	fs.Float64Var(&f.Drop, "drop", 0, "share of new connections reset at once, 0 to 1")
	fs.DurationVar(&f.ResetAfter, "reset-after", 0, "reset (RST) each connection once it is this old")
	fs.Func("bandwidth", "cap per direction per connection in bytes/s, e.g. 64KiB, 1MiB, 512 (default unlimited)", func(s string) error {
		n, err := ParseSize(s)
		f.Bandwidth = n
		return err
	})
	fs.BoolVar(&f.StallReads, "stall-reads", false, "stop reading from the upstream (the client becomes a slow consumer)")
	fs.BoolVar(&f.Blackhole, "blackhole", false, "accept but forward nothing and close nothing")
	control := fs.String("control", "", "loopback address for the HTTP control API (GET/PUT/PATCH /faults, GET /stats, /conns)")
	schedFile := fs.String("schedule", "", "file of timed fault changes, lines like \"at 5s latency=100ms\" ('go doc ./proxy Schedule')")
	verbose := fs.Bool("v", false, "log every connection")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "spindle proxy: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q", fs.Arg(0))
	case *listen == "":
		return usageErr("--listen is required")
	case *upstream == "":
		return usageErr("--upstream is required")
	}
	if err := CheckLoopback(*listen); err != nil {
		return usageErr("--listen: %v", err)
	}
	if _, _, err := net.SplitHostPort(*upstream); err != nil {
		return usageErr("--upstream %q: %v", *upstream, err)
	}
	if *control != "" {
		if err := CheckLoopback(*control); err != nil {
			return usageErr("--control: %v", err)
		}
	}
	if err := f.Validate(); err != nil {
		return usageErr("%v", err)
	}
	var sched Schedule
	if *schedFile != "" {
		fh, err := os.Open(*schedFile)
		if err != nil {
			return usageErr("--schedule: %v", err)
		}
		sched, err = ParseSchedule(fh)
		fh.Close()
		if err != nil {
			return usageErr("--schedule %s: %v", *schedFile, err)
		}
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	p, err := New(*listen, *upstream, f)
	if err != nil {
		fmt.Fprintln(stderr, "spindle proxy:", err)
		return 1
	}
	p.SetLogger(log)

	var ctlLn net.Listener
	if *control != "" {
		if ctlLn, err = net.Listen("tcp", *control); err != nil {
			p.Close()
			fmt.Fprintf(stderr, "spindle proxy: control listener on %s: %v\n", *control, err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "listening on %s\n", p.Addr())
	if ctlLn != nil {
		fmt.Fprintf(stdout, "control on http://%s\n", ctlLn.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- p.Serve(ctx)
		cancel()
	}()
	if ctlLn != nil {
		srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctlLn); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("control endpoint: %w", err)
				cancel()
			}
		}()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	if sched != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sched.Run(ctx, p); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	code := 0
	for err := range errs {
		if err != nil {
			fmt.Fprintln(stderr, "spindle proxy:", err)
			code = 1
		}
	}
	st := p.Stats()
	log.Info("proxy stopped", "accepted", st.Accepted, "dropped", st.Dropped, "reset", st.Reset,
		"dial_errors", st.DialErrors, "bytes_up", st.BytesUp, "bytes_down", st.BytesDown)
	return code
}

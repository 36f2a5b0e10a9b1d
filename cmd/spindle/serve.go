package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

const serveAbout = `Runs the WebSocket gateway: clients at /connection/websocket, the server API at
/api/<method> (header X-API-Key), health, metrics and pprof on the admin address.

Every flag below but --config is also a YAML key (dashes become underscores,
--ping-interval is ping_interval) and the environment variable shown. A flag
overrides the variable, which overrides the --config file, which overrides the
embedded defaults. Durations are like 25s or 5m, sizes may end in KiB/MiB/GiB,
lists are comma-separated.`

// settingValue is the flag of one config setting. It keeps the text given
// on the command line; serveConfig applies it with config.Set after the file
// and the environment, so that flags win.
type settingValue struct {
	s    config.Setting
	text string
}

func (v *settingValue) String() string {
	if v == nil {
		return ""
	}
	return v.text
}

// Set checks the value at once, so a bad one is reported with its flag.
func (v *settingValue) Set(text string) error {
	c := config.Default()
	if err := c.Set(v.s.Key, text); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), v.s.Key+": "))
	}
	v.text = text
	return nil
}

func (v *settingValue) IsBoolFlag() bool { return v.s.Type == "bool" }

func (v *settingValue) typeName() string {
	if v.s.Type == "bool" {
		return ""
	}
	return v.s.Type
}

// serveConfig builds the configuration of `spindle serve` from its flags,
// the environment and the file --config names. When ok is false serve
// ends with code: 0 after --help, 2 after a bad flag or setting.
func serveConfig(args, environ []string, stdout, stderr io.Writer) (cfg config.Config, code int, ok bool) {
	fs := newFlags("serve", "[flags]", serveAbout)
	file := fs.String("config", "", "YAML config file over the embedded defaults")
	var anon *settingValue
	for _, s := range config.Settings() {
		v := &settingValue{s: s, text: s.Default}
		fs.Var(v, s.Flag(), s.Usage+"  ["+s.Env()+"]")
		if s.Key == "allow_anonymous_connect" {
			anon = v
		}
	}
	if anon != nil {
		fs.Var(anon, "allow-anonymous", "alias of --allow-anonymous-connect")
	}
	pos, code, ok := parseFlags(fs, args, false, stdout, stderr)
	if !ok {
		return cfg, code, false
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "spindle serve: unexpected argument %q (settings are flags, e.g. --listen ADDR)\n", pos[0])
		return cfg, 2, false
	}
	cfg, err := config.Load(*file, environ)
	if err != nil {
		fmt.Fprintln(stderr, "spindle serve:", err)
		return cfg, 2, false
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		if v, ok := f.Value.(*settingValue); ok && ferr == nil {
			if err := cfg.Set(v.s.Key, v.text); err != nil {
				ferr = fmt.Errorf("--%s: %w", f.Name, err)
			}
		}
	})
	if ferr != nil {
		fmt.Fprintln(stderr, "spindle serve: flag", ferr)
		return cfg, 2, false
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "spindle serve: bad config:", err)
		return cfg, 2, false
	}
	return cfg, 0, true
}

// selfCommand is how the user can run this binary again: os.Args[0], or
// under `go run` (a binary in a go-build temporary directory) the go run
// command, which works from the module root.
func selfCommand(arg0 string) string {
	switch {
	case arg0 == "":
		return "spindle"
	case strings.Contains(arg0, "go-build"):
		return "go run ./cmd/spindle"
	case strings.Trim(arg0, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+") != "":
		return "'" + strings.ReplaceAll(arg0, "'", `'\''`) + "'"
	}
	return arg0
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, code, ok := serveConfig(args, os.Environ(), stdout, stderr)
	if !ok {
		return code
	}

	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	// Signals: the first starts the drain, a second exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)

	srv, err := server.Run(cfg, server.Options{Logger: log, Version: version})
	if err != nil {
		fmt.Fprintln(stderr, "spindle serve:", err)
		return 1
	}
	fmt.Fprintf(stdout, "spindle %s serving\n", version)
	fmt.Fprintf(stdout, "  clients: %s\n", srv.WebSocketURL())
	fmt.Fprintf(stdout, "  api:     %s/<method>  (header X-API-Key)\n", srv.APIURL())
	if srv.Config.Demo {
		fmt.Fprintf(stdout, "  demo:    http://%s/demo/  (paste a token, or open /demo/#token=TOKEN)\n", srv.Addr())
	}
	if a := srv.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, "  admin:   http://%s/  (the admin page; /healthz /readyz /metrics /debug/pprof/ /info)\n", a)
		if srv.Config.AdminToken == "" {
			fmt.Fprintln(stdout, "           open to anyone who reaches it: set --admin-token (SPINDLE_ADMIN_TOKEN) to require a token")
		}
	}
	fmt.Fprintf(stdout, "  captures: %s  (kill -USR2 %d for one now)\n", srv.CaptureDir(), os.Getpid())
	for _, g := range srv.Generated {
		fmt.Fprintf(stdout, "  generated %s\n", g)
	}
	if s := srv.Config.TokenHMACSecret; s != "" {
		fmt.Fprintf(stdout, "  a token: %s token --user 42 --secret %s\n", selfCommand(os.Args[0]), s)
	}
	log.Info("serving", "listen", srv.Addr(), "max_connections", srv.Node.MaxConnections())

	// SIGUSR2 (registered before the server starts, so one sent as soon as
	// the banner is out is kept): a capture while serving on.
	captured := make(chan struct{})
	defer close(captured)
	go func() {
		for {
			select {
			case <-usr2:
				if _, err := srv.Capture("signal: SIGUSR2"); err != nil {
					log.Error("capture on SIGUSR2", "err", err)
				}
			case <-captured:
				return
			}
		}
	}()

	select {
	case sig := <-sigs:
		log.Info("signal received, draining", "signal", sig.String(), "grace", srv.Config.ShutdownGracePeriod.D())
	case <-ctx.Done():
		log.Info("context done, draining")
	}
	go func() {
		sig := <-sigs
		log.Warn("second signal, exiting now", "signal", sig.String())
		os.Exit(1)
	}()
	// The drain may take 90% of the grace period; closing the listeners
	// after it is bounded on its own.
	grace := srv.Config.ShutdownGracePeriod.D()
	sctx, cancel := context.WithTimeout(context.Background(), grace*9/10)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown finished with clients or requests cut off", "err", err)
	}
	log.Info("stopped")
	return 0
}

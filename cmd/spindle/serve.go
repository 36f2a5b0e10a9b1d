package main

import (
	"context"
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

// serveFlags are the settings most often given on the command line; each
// overrides the config file and SPINDLE_* environment variables.
var serveFlags = []struct{ name, usage string }{
	{"listen", "client WebSocket and server API address"},
	{"admin-listen", "admin address: /healthz, /readyz, /metrics, /debug/pprof/ (empty disables)"},
	{"api-key", "X-API-Key for the server API (generated when empty)"},
	{"token-hmac-secret", "HS256 secret for connection and subscription JWTs (generated when no key is set)"},
	{"token-rsa-public-key", "PEM or path of an RSA public key for RS256 tokens"},
	{"token-ecdsa-public-key", "PEM or path of an ECDSA public key for ES256 tokens"},
	{"log-level", "debug, info, warn or error"},
	{"max-connections", "client connection limit (0: derived from the file limit)"},
	{"max-message-size", "largest client message in bytes"},
	{"ping-interval", "server ping period, e.g. 25s"},
	{"pong-timeout", "time a client has to answer a ping"},
	{"client-queue-max-size", "bytes queued for one client before it is disconnected as slow"},
	{"client-stall-timeout", "how long a client socket may take no bytes while data waits"},
	{"shutdown-grace-period", "SIGTERM: time until exit"},
	{"shutdown-reconnect-window", "SIGTERM: disconnects are spread over this window"},
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "YAML config file (defaults are embedded)")
	vals := map[string]*string{}
	for _, f := range serveFlags {
		vals[f.name] = fs.String(f.name, "", f.usage)
	}
	anon := fs.Bool("allow-anonymous", false, "accept connections without a token")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*file, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "spindle serve:", err)
		return 2
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		if v, ok := vals[f.Name]; ok && ferr == nil {
			ferr = cfg.Set(strings.ReplaceAll(f.Name, "-", "_"), *v)
		}
		if f.Name == "allow-anonymous" {
			cfg.AllowAnonymousConnect = *anon
		}
	})
	if ferr != nil {
		fmt.Fprintln(stderr, "spindle serve: flag:", ferr)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "spindle serve: bad config:", err)
		return 2
	}

	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	// Signals: the first starts the drain, a second exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	srv, err := server.Run(cfg, server.Options{Logger: log, Version: version})
	if err != nil {
		fmt.Fprintln(stderr, "spindle serve:", err)
		return 1
	}
	fmt.Fprintf(stdout, "spindle %s serving\n", version)
	fmt.Fprintf(stdout, "  clients: %s\n", srv.WebSocketURL())
	fmt.Fprintf(stdout, "  api:     %s/<method>  (header X-API-Key)\n", srv.APIURL())
	if a := srv.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, "  admin:   http://%s/  (/healthz /readyz /metrics /debug/pprof/)\n", a)
	}
	for _, g := range srv.Generated {
		fmt.Fprintf(stdout, "  generated %s\n", g)
	}
	if s := srv.Config.TokenHMACSecret; s != "" {
		fmt.Fprintf(stdout, "  a token: spindle token --user 42 --secret %s\n", s)
	}
	log.Info("serving", "listen", srv.Addr(), "max_connections", srv.Node.MaxConnections())

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

// Package server assembles a whole gateway — transport, node, broker, server
// API and admin listener — from a config, so that `spindle serve` and the
// tests run the very same thing.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spindlehq/spindle/admin"
	"github.com/spindlehq/spindle/api"
	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker/memory"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway"
	"github.com/spindlehq/spindle/transport"
)

// Server is one running gateway.
type Server struct {
	Config    config.Config // as in force, with generated key and secret filled in
	Generated []string      // what was generated because the config left it empty
	Node      *gateway.Node
	Registry  *prometheus.Registry

	log    *slog.Logger
	api    *api.Handler
	tr     *transport.Server
	admin  *admin.Server
	mem    *memory.Broker
	cancel context.CancelFunc
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start builds the gateway from cfg and starts listening.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, version string) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{log: log}
	if cfg.APIKey == "" {
		cfg.APIKey = randomHex(16)
		s.Generated = append(s.Generated, "api key: "+cfg.APIKey)
	}
	rsa, err := config.ReadPEM(cfg.TokenRSAPublicKey)
	if err != nil {
		return nil, err
	}
	ec, err := config.ReadPEM(cfg.TokenECDSAPublicKey)
	if err != nil {
		return nil, err
	}
	if cfg.TokenHMACSecret == "" && rsa == "" && ec == "" && !cfg.AllowAnonymousConnect {
		cfg.TokenHMACSecret = randomHex(16)
		s.Generated = append(s.Generated, "token hmac secret: "+cfg.TokenHMACSecret)
	}
	s.Config = cfg
	verifier, err := auth.NewVerifier(auth.Config{
		HMACSecret: cfg.TokenHMACSecret, RSAPublicKey: rsa, ECDSAPublicKey: ec,
		Audience: cfg.TokenAudience, Issuer: cfg.TokenIssuer,
	})
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}

	s.Registry = prometheus.NewRegistry()
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	s.mem = memory.New()
	s.Node, err = gateway.New(gateway.Options{
		Config: cfg, Broker: s.mem, Presence: s.mem, Verifier: verifier,
		Logger: log, Registry: s.Registry, Version: version,
	})
	if err != nil {
		return nil, err
	}
	s.api = api.New(s.Node, cfg.APIKey, log)
	mux := http.NewServeMux()
	mux.Handle("/api", s.api)
	mux.Handle("/api/", s.api)

	ctx, s.cancel = context.WithCancel(ctx)
	if err := s.Node.Start(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	s.tr, err = transport.New(transport.Config{
		Addr:           cfg.Listen,
		Path:           "/connection/websocket",
		MaxMessageSize: cfg.MaxMessageSize,
		// No read deadline per connection: the gateway's heartbeat loop
		// (connect timeout, pings, pong timeout) already closes silent and
		// dead peers, and nbio's deadline costs a timer per connection
		// (about 0.3 KB each, measured) plus a reset on every message.
		IdleTimeout: 0,
		CheckOrigin: s.Node.CheckOrigin,
		Admit:       s.Node.Admit,
		HTTP:        mux,
		MaxConns:    s.Node.MaxConnections(),
		Logger:      log,
	}, s.Node)
	if err == nil {
		err = s.tr.Start()
	}
	if err != nil {
		s.cancel()
		s.Node.Close()
		return nil, err
	}
	if cfg.AdminListen != "" {
		s.admin = admin.New(s.Registry, func() any { return s.Node.Info() }, log)
		if err := s.admin.Start(cfg.AdminListen); err != nil {
			s.Close()
			return nil, err
		}
		s.admin.SetReady(true)
	}
	return s, nil
}

// Addr is the client and API address (host:port).
func (s *Server) Addr() string { return s.tr.Addr().String() }

// WebSocketURL is where clients connect.
func (s *Server) WebSocketURL() string { return "ws://" + s.Addr() + "/connection/websocket" }

// APIURL is the base of the server API, e.g. APIURL()+"/publish".
func (s *Server) APIURL() string { return "http://" + s.Addr() + "/api" }

// AdminAddr is the admin listener's address, empty when disabled.
func (s *Server) AdminAddr() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr().String()
}

// Shutdown drains gracefully: readiness goes false, the listener closes,
// clients are disconnected with reconnect advice spread over the configured
// window, API requests in flight finish; then everything stops. It returns
// within cfg.ShutdownGracePeriod.
func (s *Server) Shutdown() error {
	grace := s.Config.ShutdownGracePeriod.D()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	drainCtx, cancelDrain := context.WithTimeout(ctx, grace*9/10)
	defer cancelDrain()
	if s.admin != nil {
		s.admin.SetReady(false)
	}
	s.tr.StopAccepting()
	var errs []error
	if err := s.Node.Drain(drainCtx, s.Config.ShutdownReconnect.D()); err != nil {
		s.log.Warn("drain incomplete", "err", err)
		errs = append(errs, err)
	}
	if err := s.api.Wait(drainCtx); err != nil {
		s.log.Warn("api drain incomplete", "err", err)
		errs = append(errs, err)
	}
	s.Close()
	return errors.Join(errs...)
}

// Close stops everything at once.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.tr != nil {
		_ = s.tr.Shutdown(ctx)
	}
	s.cancel()
	s.Node.Close()
	_ = s.mem.Close()
	if s.admin != nil {
		_ = s.admin.Shutdown(ctx)
	}
}

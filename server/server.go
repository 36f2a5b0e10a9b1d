// Package server assembles a whole gateway — transport, node, broker, server
// API and admin listener — from a config, so that `spindle serve` and the
// tests run the very same thing.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spindlehq/spindle/admin"
	"github.com/spindlehq/spindle/api"
	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/memory"
	natsbroker "github.com/spindlehq/spindle/broker/nats"
	redisbroker "github.com/spindlehq/spindle/broker/redis"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/demo"
	"github.com/spindlehq/spindle/gateway"
	"github.com/spindlehq/spindle/gateway/proxy"
	"github.com/spindlehq/spindle/guard/admission"
	"github.com/spindlehq/spindle/guard/gcpace"
	"github.com/spindlehq/spindle/guard/signals"
	"github.com/spindlehq/spindle/guard/trim"
	"github.com/spindlehq/spindle/guard/watchdog"
	"github.com/spindlehq/spindle/transport"
)

// Options are what a Server needs besides its config.
type Options struct {
	Logger  *slog.Logger // nil: slog.Default()
	Version string
}

// Server is one gateway: New builds it, Start makes it listen, Shutdown
// drains it and Close stops it at once. It owns every part it builds.
type Server struct {
	Config    config.Config // as in force, with generated key and secret filled in
	Generated []string      // what was generated because the config left it empty
	Node      *gateway.Node
	Registry  *prometheus.Registry

	log      *slog.Logger
	api      *api.Handler
	tr       *transport.Server
	admin    *admin.Server // nil when the admin listener is disabled
	brokerOK func() error  // the broker's health (Redis reachable); nil for memory
	watch    *watchdog.Watchdog
	adm      *admission.Controller // new sessions
	admAPI   *admission.Controller // server API calls
	trim     *trim.Trimmer         // nil when heap_trim_after is 0
	pace     *gcpace.Pacer         // nil when heap_grow_gc_percent is 0

	mu      sync.Mutex // guards started and stopped
	started bool
	stopped bool
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// New builds the gateway from cfg, generating an API key and a token
// secret where cfg leaves them empty. Nothing listens until Start.
func New(cfg config.Config, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	s := &Server{log: o.Logger}
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

	if lim := admission.SetMemoryLimit(int64(cfg.MemoryLimit)); lim < math.MaxInt64 {
		o.Logger.Info("memory limit", "bytes", lim, "from", memoryLimitSource(cfg))
	}
	s.adm = admission.New(admission.Config{Kind: "session", Logger: o.Logger, Registry: s.Registry, Gateway: s.Load})
	// API calls feed the established subscribers: a connection storm that
	// raises scheduler latency must not cut their publications, so only a
	// far higher latency sheds them (see guard/admission).
	s.admAPI = admission.New(admission.Config{Kind: "api", SchedSoft: 50 * time.Millisecond, SchedHard: 500 * time.Millisecond,
		Logger: o.Logger, Registry: s.Registry, Gateway: s.Load})
	if cfg.HeapTrimAfter > 0 {
		s.trim = trim.New(trim.Config{Quiet: cfg.HeapTrimAfter.D(), Delivered: func() uint64 { return s.Node.Delivered() },
			Logger: o.Logger, Registry: s.Registry})
	}
	if cfg.HeapGrowGC > 0 {
		s.pace = gcpace.New(gcpace.Config{Percent: cfg.HeapGrowGC, Delivered: func() uint64 { return s.Node.Delivered() },
			Logger: o.Logger, Registry: s.Registry})
	}
	var br broker.Broker
	var pm broker.PresenceManager
	br, pm, s.brokerOK, err = newBroker(cfg, o.Logger)
	if err != nil {
		return nil, err
	}
	s.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spindle_broker_up", Help: "1 while the broker answers (always 1 for the memory broker), 0 while it is unreachable.",
	}, func() float64 {
		if s.brokerOK != nil && s.brokerOK() != nil {
			return 0
		}
		return 1
	}))
	var px *proxy.Proxy
	if pc, ok := proxy.FromConfig(cfg, o.Logger); ok {
		if px, err = proxy.New(pc); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	s.Node, err = gateway.New(gateway.FromConfig(cfg), gateway.Options{
		Broker: br, Presence: pm, Verifier: verifier,
		Logger: o.Logger, Registry: s.Registry, Version: o.Version,
		Admission: s.adm.Admit, Proxy: px,
	})
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	s.api = api.New(s.Node, api.Config{Admit: s.admAPI.Admit, Key: cfg.APIKey, MaxBatchCommands: cfg.APIMaxBatch, MaxBodySize: int64(cfg.APIMaxBodySize)}, o.Logger)
	mux := http.NewServeMux()
	mux.Handle("/api", s.api)
	mux.Handle("/api/", s.api)
	mux.Handle(gateway.EmulationPath, s.Node.EmulationHandler()) // the SDK's commands on an emulated session
	if cfg.Demo {
		mux.Handle(demo.Prefix, demo.Handler())
	}

	s.tr, err = transport.New(transport.Config{
		Addr:           cfg.Listen,
		KeepHeaders:    px.Headers(),
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
		Logger:      o.Logger,

		HandshakeTimeout: cfg.HandshakeTimeout.D(),
		MaxPending:       cfg.MaxPendingConnections,
		MaxPendingPerIP:  cfg.MaxPendingConnectionsPerIP,
		APIIdleTimeout:   cfg.APIIdleTimeout.D(),
		Refused:          s.Node.RefusedAtDoor,
		Turnaway:         s.Node.Turnaway,

		// JSON, or Protobuf when the upgrade asks for it; uni JSON at UniPath.
		UniPath:      gateway.UniPath,
		Subprotocols: gateway.Subprotocols,
		Binary:       gateway.Binary,

		// Uni JSON pushes as Server-Sent Events and as an HTTP stream; the
		// emulation's replies the same two ways.
		UniSSEPath:        gateway.UniSSEPath,
		UniHTTPStreamPath: gateway.UniHTTPStreamPath,
		SSEPath:           gateway.SSEPath,
		HTTPStreamPath:    gateway.HTTPStreamPath,
	}, s.Node)
	if err != nil {
		return nil, err
	}
	var rules []watchdog.Rule
	for _, text := range cfg.WatchdogRules {
		r, err := watchdog.ParseRule(text)
		if err != nil {
			return nil, fmt.Errorf("config: watchdog_rules: %w", err)
		}
		rules = append(rules, r)
	}
	s.watch, err = watchdog.New(watchdog.Config{
		Dir: cfg.CaptureDir, Rules: rules, Cooldown: cfg.CaptureCooldown.D(), Webhook: cfg.CaptureWebhook,
		Gateway: s.Load, Logger: o.Logger, Registry: s.Registry,
	})
	if err != nil {
		return nil, err
	}
	if cfg.AdminListen != "" {
		s.admin = admin.New(admin.Config{
			Registry: s.Registry, Info: func() any { return s.Node.Info() },
			Page: s.adminPage(), Token: cfg.AdminToken, Logger: o.Logger,
		})
		s.watch.Routes(s.admin)
	}
	return s, nil
}

// Start runs the node, then listens for clients and the API, then on the
// admin address, and reports ready. When a step fails, what was started is
// stopped again. A server starts once.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("server: already started")
	}
	s.started = true
	if err := s.Node.Start(); err != nil {
		s.stopped = true
		return errors.Join(err, s.Node.Close())
	}
	if err := s.tr.Start(); err != nil {
		s.stopped = true
		return errors.Join(err, s.Node.Close())
	}
	s.startGuards()
	if s.admin != nil {
		if err := s.admin.Start(s.Config.AdminListen); err != nil {
			s.stopped = true
			s.stopGuards()
			return errors.Join(err, s.closeTransport(), s.Node.Close())
		}
		s.admin.SetReadyCheck(s.ready)
		s.admin.SetReady(true)
	}
	return nil
}

// newBroker builds the broker cfg.Broker names, and its readiness check
// (nil for memory).
func newBroker(cfg config.Config, log *slog.Logger) (broker.Broker, broker.PresenceManager, func() error, error) {
	switch cfg.Broker {
	case "redis":
		tc, err := redisTLS(cfg)
		if err != nil {
			return nil, nil, nil, err
		}
		r := redisbroker.New(redisbroker.Options{
			Address: cfg.RedisAddress, Username: cfg.RedisUsername, Password: cfg.RedisPassword,
			DB: cfg.RedisDB, Prefix: cfg.RedisPrefix, Timeout: cfg.RedisTimeout.D(), TLS: tc,
		})
		return r, r, r.Healthy, nil
	case "nats":
		n := natsbroker.New(natsbroker.Options{URL: cfg.NatsURL, Prefix: cfg.NatsPrefix, Logger: log})
		return n, n, n.Healthy, nil
	}
	m := memory.New()
	return m, m, nil, nil
}

// redisTLS is the TLS configuration of the Redis connection: nil without
// redis_tls; with it, the system's roots or redis_tls_ca_file's.
func redisTLS(cfg config.Config) (*tls.Config, error) {
	if !cfg.RedisTLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.RedisTLSCAFile != "" {
		pem, err := os.ReadFile(cfg.RedisTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("config: redis_tls_ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: redis_tls_ca_file: %s holds no PEM certificate", cfg.RedisTLSCAFile)
		}
	}
	return tc, nil
}

// Run builds a server from cfg and starts it: New then Start.
func Run(cfg config.Config, o Options) (*Server, error) {
	s, err := New(cfg, o)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
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
// the API refuses new calls (503) and lets those in flight finish, clients
// are disconnected with reconnect advice spread over the configured window;
// then everything stops. ctx is the deadline: when it ends, what is left is
// cut off, and the error says what was.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.stop() {
		return nil
	}
	if s.admin != nil {
		s.admin.SetReady(false)
	}
	s.tr.StopAccepting()
	err := errors.Join(s.api.Shutdown(ctx), s.Node.Shutdown(ctx), s.closeTransport(), s.closeAdmin())
	s.stopGuards()
	return err
}

// Close stops everything at once: connections are cut, requests in flight
// are abandoned.
func (s *Server) Close() error {
	if !s.stop() {
		return nil
	}
	err := errors.Join(s.closeTransport(), s.Node.Close(), s.closeAdmin())
	s.stopGuards()
	return err
}

// startGuards starts what watches the process: the watchdog, admission
// control, the heap trimmer and the GC pacer; stopGuards stops them.
func (s *Server) startGuards() {
	s.watch.Start()
	s.adm.Start()
	s.admAPI.Start()
	if s.trim != nil {
		s.trim.Start()
	}
	if s.pace != nil {
		s.pace.Start()
	}
}

func (s *Server) stopGuards() {
	s.watch.Stop()
	s.adm.Stop()
	s.admAPI.Stop()
	if s.trim != nil {
		s.trim.Stop()
	}
	if s.pace != nil {
		s.pace.Stop()
	}
}

// ready is the readiness check beside draining: not while the node is
// full, admission sheds load, or the broker is unreachable.
func (s *Server) ready() error {
	if err := s.Node.Full(); err != nil {
		return err
	}
	if err := s.adm.Ready(); err != nil {
		return err
	}
	if s.brokerOK != nil {
		return s.brokerOK()
	}
	return nil
}

// memoryLimitSource says where the memory limit in force came from.
func memoryLimitSource(cfg config.Config) string {
	switch {
	case cfg.MemoryLimit > 0:
		return "memory_limit"
	case os.Getenv("GOMEMLIMIT") != "":
		return "GOMEMLIMIT"
	}
	return "90% of the container's memory limit"
}

// Load is what the gateway, the transport and the API carry now, for
// admission and the watchdog; it is called only after New has built them.
func (s *Server) Load() signals.Gateway {
	g := s.Node.Load()
	g.QueuedBytes += s.tr.Unwritten()
	g.APIInFlight = s.api.InFlight()
	return g
}

// Admission is the admission controller of new sessions; its shedding
// also turns readiness off.
func (s *Server) Admission() *admission.Controller { return s.adm }

// APIAdmission is the admission controller of server API calls.
func (s *Server) APIAdmission() *admission.Controller { return s.admAPI }

// Capture asks the watchdog for a capture now (SIGUSR2 does this).
func (s *Server) Capture(reason string) (watchdog.Capture, error) { return s.watch.Capture(reason) }

// CaptureDir is where the watchdog keeps its captures.
func (s *Server) CaptureDir() string { return s.watch.Dir() }

// stop reports whether this call is the one that stops the server.
func (s *Server) stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return false
	}
	s.stopped = true
	return true
}

// closeGrace bounds how long closing the listeners may take once nothing
// is being waited for.
const closeGrace = 2 * time.Second

func (s *Server) closeTransport() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	return s.tr.Shutdown(ctx)
}

func (s *Server) closeAdmin() error {
	if s.admin == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	return s.admin.Shutdown(ctx)
}

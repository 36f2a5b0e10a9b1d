// Package bench is the load generator behind `spindle bench`: it reads a
// scenario, spreads connections over worker processes and source addresses,
// publishes on a schedule, and measures connect and publish→deliver latency
// from the intended send time into HDR histograms.
package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spindlehq/spindle/config"
)

// Scenario is one load test, read from YAML; see bench/scenarios/README.md.
type Scenario struct {
	Name string `yaml:"name"`

	// URLs are the WebSocket endpoints; connections go round-robin over them.
	URLs   []string `yaml:"urls"`
	API    string   `yaml:"api"`     // server API base (http://host:port/api)
	APIKey string   `yaml:"api_key"` // X-API-Key for the server API

	HMACSecret string `yaml:"hmac_secret"` // mint one token per user with this secret
	Token      string `yaml:"token"`       // or use this static token for all

	Channels      int    `yaml:"channels"`       // how many channels (default 1)
	ChannelPrefix string `yaml:"channel_prefix"` // channel names are prefix + index (default "bench")

	MessageSize int    `yaml:"message_size"` // payload bytes per publication (default 128)
	PublishVia  string `yaml:"publish_via"`  // "api" (default) or "client"
	// PublishSenders is how many publishes may be in flight at once, one
	// sender each; a channel always has the same sender, so its
	// publications leave in order (default: channels, at most 32).
	PublishSenders int `yaml:"publish_senders"`
	// PublishTimeout gives up on one publish after this long (default 10s).
	PublishTimeout config.Duration `yaml:"publish_timeout"`

	// ConnectRate caps new connections per second over all workers (0: no cap).
	ConnectRate float64 `yaml:"connect_rate"`

	Stages []Stage `yaml:"stages"`

	// Workers is how many worker processes hold the connections (default 1);
	// each stays below one process's file limit.
	Workers int `yaml:"workers"`
	// SourceAddresses spreads connections over 127.0.0.x source addresses.
	SourceAddresses []string `yaml:"source_addresses"`

	// Drain is how long to wait after the last publish for deliveries.
	Drain config.Duration `yaml:"drain"`
}

// Stage is one period of the run with a shape for the connection count and
// one for the publish rate (publications per second over all channels).
type Stage struct {
	Duration    config.Duration `yaml:"duration"`
	Connections Shape           `yaml:"connections"`
	PublishRate Shape           `yaml:"publish_rate"`
}

// Shape is how a value moves during a stage: flat (To), ramp (From→To
// linearly), or spike (From, jump to To after At, hold for Hold, back to From).
type Shape struct {
	Kind string          `yaml:"shape"`
	From float64         `yaml:"from"`
	To   float64         `yaml:"to"`
	At   config.Duration `yaml:"at"`
	Hold config.Duration `yaml:"hold"`
}

// LoadScenario reads a scenario file and fills in defaults; call Validate
// once command-line overrides are applied.
func LoadScenario(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	sc, err := decodeScenario(data)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return sc, nil
}

// ParseScenario decodes YAML, fills defaults and validates.
func ParseScenario(data []byte) (*Scenario, error) {
	sc, err := decodeScenario(data)
	if err != nil {
		return nil, err
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return sc, nil
}

func decodeScenario(data []byte) (*Scenario, error) {
	var sc Scenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&sc); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	sc.fillDefaults()
	return &sc, nil
}

func (sc *Scenario) fillDefaults() {
	if sc.Channels == 0 {
		sc.Channels = 1
	}
	if sc.ChannelPrefix == "" {
		sc.ChannelPrefix = "bench"
	}
	if sc.MessageSize == 0 {
		sc.MessageSize = 128
	}
	if sc.PublishVia == "" {
		sc.PublishVia = "api"
	}
	if sc.Workers == 0 {
		sc.Workers = 1
	}
	if sc.PublishSenders == 0 {
		sc.PublishSenders = min(sc.Channels, 32)
	}
	if sc.PublishTimeout == 0 {
		sc.PublishTimeout = config.Duration(10 * time.Second)
	}
	if sc.Drain == 0 {
		sc.Drain = config.Duration(2 * time.Second)
	}
	for i := range sc.Stages {
		for _, s := range []*Shape{&sc.Stages[i].Connections, &sc.Stages[i].PublishRate} {
			if s.Kind == "" {
				s.Kind = "flat"
			}
		}
	}
}

// Validate reports the first problem that would make the run meaningless.
func (sc *Scenario) Validate() error {
	if len(sc.URLs) == 0 {
		return errors.New("urls: at least one WebSocket URL is needed")
	}
	if len(sc.Stages) == 0 {
		return errors.New("stages: at least one stage is needed")
	}
	if sc.Channels < 1 {
		return fmt.Errorf("channels: %d, want ≥ 1", sc.Channels)
	}
	if sc.MessageSize < minPayload {
		return fmt.Errorf("message_size: %d, want ≥ %d (room for sequence and timestamp)", sc.MessageSize, minPayload)
	}
	if sc.PublishVia != "api" && sc.PublishVia != "client" {
		return fmt.Errorf("publish_via: %q, want api or client", sc.PublishVia)
	}
	if sc.PublishVia == "api" && sc.MaxRate() > 0 && sc.API == "" {
		return errors.New("api: needed to publish through the server API")
	}
	if sc.PublishSenders < 1 || sc.PublishSenders > min(sc.Channels, 4096) {
		return fmt.Errorf("publish_senders: %d, want 1..%d (at most one per channel, 4,096 in all)", sc.PublishSenders, min(sc.Channels, 4096))
	}
	if sc.PublishTimeout < 0 {
		return errors.New("publish_timeout: must be > 0")
	}
	if sc.Workers < 1 || sc.Workers > 64 {
		return fmt.Errorf("workers: %d, want 1..64", sc.Workers)
	}
	for _, a := range sc.SourceAddresses {
		ip := net.ParseIP(a)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("source_addresses: %q is not a loopback address", a)
		}
	}
	perWorker := (sc.MaxConnections() + float64(sc.Workers) - 1) / float64(sc.Workers)
	if perWorker > maxConnsPerWorker {
		return fmt.Errorf("%.0f connections per worker exceeds %d (the file limit): raise workers", perWorker, maxConnsPerWorker)
	}
	for i, st := range sc.Stages {
		if st.Duration <= 0 {
			return fmt.Errorf("stage %d: duration must be > 0", i+1)
		}
		for name, s := range map[string]Shape{"connections": st.Connections, "publish_rate": st.PublishRate} {
			if err := s.validate(st.Duration.D()); err != nil {
				return fmt.Errorf("stage %d %s: %w", i+1, name, err)
			}
		}
	}
	return nil
}

// maxConnsPerWorker keeps a worker well under the 20,000 open files a
// process may have here.
const maxConnsPerWorker = 18000

func (s Shape) validate(d time.Duration) error {
	switch s.Kind {
	case "flat", "ramp":
	case "spike":
		if s.At.D()+s.Hold.D() > d {
			return fmt.Errorf("spike at %v holding %v ends after the stage (%v)", s.At.D(), s.Hold.D(), d)
		}
	default:
		return fmt.Errorf("shape %q, want flat, ramp or spike", s.Kind)
	}
	if s.From < 0 || s.To < 0 {
		return errors.New("values must be ≥ 0")
	}
	return nil
}

// value is the shape's value at t into a stage lasting d.
func (s Shape) value(t, d time.Duration) float64 {
	switch s.Kind {
	case "ramp":
		return s.From + (s.To-s.From)*float64(t)/float64(d)
	case "spike":
		if t >= s.At.D() && t < s.At.D()+s.Hold.D() {
			return s.To
		}
		return s.From
	default:
		return s.To
	}
}

// cut keeps a ramp's slope when its stage is shortened from full to d.
func (s Shape) cut(d, full time.Duration) Shape {
	if s.Kind == "ramp" {
		s.To = s.value(d, full)
	}
	return s
}

// Duration is the total length of the stages.
func (sc *Scenario) Duration() time.Duration {
	var d time.Duration
	for _, st := range sc.Stages {
		d += st.Duration.D()
	}
	return d
}

// at returns the stage values at t since the start; ok is false past the end.
func (sc *Scenario) at(t time.Duration) (conns, rate float64, ok bool) {
	for _, st := range sc.Stages {
		d := st.Duration.D()
		if t < d {
			return st.Connections.value(t, d), st.PublishRate.value(t, d), true
		}
		t -= d
	}
	return 0, 0, false
}

// MaxConnections is the largest connection target of any stage.
func (sc *Scenario) MaxConnections() float64 {
	var m float64
	for _, st := range sc.Stages {
		m = max(m, st.Connections.From, st.Connections.To)
	}
	return m
}

// MaxRate is the largest publish rate of any stage.
func (sc *Scenario) MaxRate() float64 {
	var m float64
	for _, st := range sc.Stages {
		m = max(m, st.PublishRate.From, st.PublishRate.To)
	}
	return m
}

// Truncate cuts the stages so the run lasts at most d.
func (sc *Scenario) Truncate(d time.Duration) {
	var kept []Stage
	for _, st := range sc.Stages {
		if d <= 0 {
			break
		}
		if full := st.Duration.D(); full > d {
			st.Connections = st.Connections.cut(d, full)
			st.PublishRate = st.PublishRate.cut(d, full)
			st.Duration = config.Duration(d)
		}
		d -= st.Duration.D()
		kept = append(kept, st)
	}
	sc.Stages = kept
}

// Channel is the name of channel i.
func (sc *Scenario) Channel(i int) string { return fmt.Sprintf("%s%d", sc.ChannelPrefix, i) }

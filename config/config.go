// Package config holds the gateway's settings: embedded defaults, a YAML file,
// SPINDLE_* environment variables and flags, applied in that order.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration of `spindle serve`.
type Config struct {
	Listen      string `yaml:"listen"`       // client WebSocket and server API address
	AdminListen string `yaml:"admin_listen"` // health, metrics and pprof address; empty disables
	APIKey      string `yaml:"api_key"`      // X-API-Key for /api; generated at start when empty
	AdminToken  string `yaml:"admin_token"`  // asked by the admin page, /debug/* and /info; empty: open
	LogLevel    string `yaml:"log_level"`    // debug, info, warn, error
	Demo        bool   `yaml:"demo"`         // serve the demo page at /demo/ on the client listener

	TokenHMACSecret     string `yaml:"token_hmac_secret"`      // HS256 secret for connection and subscription JWTs
	TokenRSAPublicKey   string `yaml:"token_rsa_public_key"`   // PEM, or a path to a PEM file
	TokenECDSAPublicKey string `yaml:"token_ecdsa_public_key"` // PEM, or a path to a PEM file
	TokenAudience       string `yaml:"token_audience"`
	TokenIssuer         string `yaml:"token_issuer"`

	AllowAnonymousConnect bool     `yaml:"allow_anonymous_connect"` // connect without a token as user ""
	AllowedOrigins        []string `yaml:"allowed_origins"`         // "*" or patterns like "https://*.example.com"; empty: same origin or no Origin header

	PingInterval   Duration `yaml:"ping_interval"`   // server ping period
	PongTimeout    Duration `yaml:"pong_timeout"`    // how long a client may take to answer a ping
	ConnectTimeout Duration `yaml:"connect_timeout"` // how long after the upgrade the connect command may take

	MaxConnections     int      `yaml:"max_connections"`        // 0: derived from RLIMIT_NOFILE
	MaxMessageSize     int      `yaml:"max_message_size"`       // largest client frame in bytes
	ClientQueueMaxSize int      `yaml:"client_queue_max_size"`  // bytes waiting for one client before it is a slow consumer
	MaxPublicationSize int      `yaml:"max_publication_size"`   // bytes of data one publication may carry
	APIMaxBatch        int      `yaml:"api_batch_max_commands"` // commands in one server API batch
	APIMaxBodySize     int      `yaml:"api_max_body_size"`      // bytes of one server API request body
	APIIdleTimeout     Duration `yaml:"api_idle_timeout"`       // an idle keep-alive API connection is closed after this

	HandshakeTimeout           Duration `yaml:"handshake_timeout"`              // a new connection must send its request head within this
	MaxPendingConnections      int      `yaml:"max_pending_connections"`        // connections not upgraded at once: handshakes and API
	MaxPendingConnectionsPerIP int      `yaml:"max_pending_connections_per_ip"` // of those, from one source address
	ClientStallTimeout         Duration `yaml:"client_stall_timeout"`           // how long a client's socket may accept no bytes while data waits
	CommandRate                float64  `yaml:"command_rate"`                   // commands per second per connection; 0 disables
	CommandBurst               int      `yaml:"command_burst"`                  // burst allowance for command_rate
	MaxSubscriptions           int      `yaml:"max_subscriptions"`              // channels one connection may join
	MaxChannelLength           int      `yaml:"max_channel_length"`             // bytes in a channel name
	PresenceTTL                Duration `yaml:"presence_ttl"`                   // presence entries live this long unless refreshed
	ShutdownGracePeriod        Duration `yaml:"shutdown_grace_period"`          // SIGTERM: time until exit
	ShutdownReconnect          Duration `yaml:"shutdown_reconnect_window"`      // SIGTERM: disconnects are spread over this window

	Broker         string   `yaml:"broker"`            // memory (one node), redis or nats (nodes sharing one Redis or NATS)
	RedisAddress   string   `yaml:"redis_address"`     // host:port of Redis, for broker redis
	RedisPrefix    string   `yaml:"redis_prefix"`      // prefix of every Redis key and pub/sub channel
	RedisUsername  string   `yaml:"redis_username"`    // ACL user; empty: default
	RedisPassword  string   `yaml:"redis_password"`    // empty: no AUTH
	RedisDB        int      `yaml:"redis_db"`          // database number
	RedisTimeout   Duration `yaml:"redis_timeout"`     // dial, read and write timeout of Redis commands
	RedisTLS       bool     `yaml:"redis_tls"`         // connect to Redis over TLS
	RedisTLSCAFile string   `yaml:"redis_tls_ca_file"` // PEM of the CA that signed Redis's certificate; empty: the system's roots
	NatsURL        string   `yaml:"nats_url"`          // nats:// address of NATS (comma-separated for several), for broker nats
	NatsPrefix     string   `yaml:"nats_prefix"`       // prefix of every NATS subject and of the JetStream stream's name

	CaptureDir      string   `yaml:"capture_dir"`          // the watchdog's archive of captures
	WatchdogRules   []string `yaml:"watchdog_rules"`       // "SIGNAL > VALUE for D" or "SIGNAL grow > R/s over D", see guard/watchdog
	CaptureCooldown Duration `yaml:"capture_cooldown"`     // least time between two captures the rules trigger
	CaptureWebhook  string   `yaml:"capture_webhook"`      // a URL POSTed each capture's JSON; empty: none
	MemoryLimit     int      `yaml:"memory_limit"`         // bytes the Go heap is kept under; 0: GOMEMLIMIT, else 90% of the container's limit
	HeapTrimAfter   Duration `yaml:"heap_trim_after"`      // quiet time after which the heap's free memory goes back to the OS; 0: never (guard/trim)
	HeapGrowGC      int      `yaml:"heap_grow_gc_percent"` // GOGC while the live heap grows; 0: the process's own throughout (guard/gcpace)

	// The backend proxy (Centrifugo v5's flat names): an event is proxied
	// when its endpoint is set; subscribe and publish also per namespace.
	ProxyConnectEndpoint    string   `yaml:"proxy_connect_endpoint"`     // URL asked when a client connects without a token
	ProxyConnectTimeout     Duration `yaml:"proxy_connect_timeout"`      // how long one connect call may take
	ProxyRefreshEndpoint    string   `yaml:"proxy_refresh_endpoint"`     // URL asked when a proxied connection's expire_at passes
	ProxyRefreshTimeout     Duration `yaml:"proxy_refresh_timeout"`      // how long one refresh call may take
	ProxySubscribeEndpoint  string   `yaml:"proxy_subscribe_endpoint"`   // URL asked for subscriptions in namespaces with proxy_subscribe
	ProxySubscribeTimeout   Duration `yaml:"proxy_subscribe_timeout"`    // how long one subscribe call may take
	ProxyPublishEndpoint    string   `yaml:"proxy_publish_endpoint"`     // URL asked for client publications in namespaces with proxy_publish
	ProxyPublishTimeout     Duration `yaml:"proxy_publish_timeout"`      // how long one publish call may take
	ProxyRPCEndpoint        string   `yaml:"proxy_rpc_endpoint"`         // URL that answers the client's rpc commands
	ProxyRPCTimeout         Duration `yaml:"proxy_rpc_timeout"`          // how long one rpc call may take
	ProxySubRefreshEndpoint string   `yaml:"proxy_sub_refresh_endpoint"` // URL asked when a proxied subscription's expire_at passes, in namespaces with proxy_sub_refresh
	ProxySubRefreshTimeout  Duration `yaml:"proxy_sub_refresh_timeout"`  // how long one sub_refresh call may take
	ProxyHTTPHeaders        []string `yaml:"proxy_http_headers"`         // headers of the client's upgrade request copied into proxy calls

	Channel    ChannelOptions `yaml:"channel"`    // options of channels without a namespace
	Namespaces []Namespace    `yaml:"namespaces"` // channels "name:rest" take the options of namespace "name"
}

// settings is the one table of the top-level scalar keys: `spindle serve`
// builds a flag from each, SPINDLE_<KEY> sets each, and a test checks that
// it lists exactly Config's scalar fields, in order. A new field needs a
// line here.
var settings = []Setting{
	{Key: "listen", Usage: "client WebSocket and server API address"},
	{Key: "admin_listen", Usage: "admin address: /, /healthz, /readyz, /metrics, /debug/pprof/, /info (empty disables)"},
	{Key: "api_key", Usage: "X-API-Key for the server API (generated when empty)"},
	{Key: "admin_token", Usage: "token the admin page, /debug/* and /info ask for (Authorization: Bearer, or the login form); empty: open"},
	{Key: "log_level", Usage: "debug, info, warn or error"},
	{Key: "demo", Usage: "serve a demo page at /demo/ on the client listener: the centrifuge JS SDK subscribed to a channel, showing its publications"},
	{Key: "token_hmac_secret", Usage: "HS256 secret for connection and subscription JWTs (generated when no key is set)"},
	{Key: "token_rsa_public_key", Usage: "PEM, or path of a PEM file, of an RSA public key for RS256 tokens"},
	{Key: "token_ecdsa_public_key", Usage: "PEM, or path of a PEM file, of an ECDSA public key for ES256 tokens"},
	{Key: "token_audience", Usage: "required aud claim of tokens (empty: not checked)"},
	{Key: "token_issuer", Usage: "required iss claim of tokens (empty: not checked)"},
	{Key: "allow_anonymous_connect", Usage: `connect without a token as user ""`},
	{Key: "allowed_origins", Usage: `comma-separated Origin patterns, "*" or like https://*.example.com (empty: same origin or no Origin header)`},
	{Key: "ping_interval", Usage: "server ping period"},
	{Key: "pong_timeout", Usage: "how long a client may take to answer a ping"},
	{Key: "connect_timeout", Usage: "how long after the upgrade the connect command may take"},
	{Key: "max_connections", Usage: "client connection limit (0: derived from RLIMIT_NOFILE)"},
	{Key: "max_message_size", Usage: "largest client frame in bytes (KiB, MiB, GiB suffixes)"},
	{Key: "client_queue_max_size", Usage: "bytes waiting for one client before it is disconnected as a slow consumer"},
	{Key: "max_publication_size", Usage: "bytes of data one publication may carry; larger ones are refused with 106"},
	{Key: "api_batch_max_commands", Usage: "commands one server API batch may hold"},
	{Key: "api_max_body_size", Usage: "bytes of one server API request body; larger ones get 413 before they are read"},
	{Key: "api_idle_timeout", Usage: "an idle keep-alive server API connection is closed after this"},
	{Key: "handshake_timeout", Usage: "a new connection must send its whole request head within this"},
	{Key: "max_pending_connections", Usage: "connections not upgraded to WebSocket at once (handshakes, API); past it: 503"},
	{Key: "max_pending_connections_per_ip", Usage: "of those, from one source address; past it: 503"},
	{Key: "client_stall_timeout", Usage: "how long a client socket may accept no bytes while data waits"},
	{Key: "command_rate", Usage: "commands per second per connection (0 disables)"},
	{Key: "command_burst", Usage: "burst allowance for command_rate"},
	{Key: "max_subscriptions", Usage: "channels one connection may join"},
	{Key: "max_channel_length", Usage: "bytes in a channel name"},
	{Key: "presence_ttl", Usage: "presence entries live this long unless refreshed"},
	{Key: "shutdown_grace_period", Usage: "SIGTERM: time until exit"},
	{Key: "shutdown_reconnect_window", Usage: "SIGTERM: disconnects are spread over this window"},
	{Key: "broker", Usage: "memory (a single node), redis or nats (nodes sharing one Redis or one NATS)"},
	{Key: "redis_address", Usage: "host:port of Redis for broker redis"},
	{Key: "redis_prefix", Usage: "prefix of every Redis key and pub/sub channel"},
	{Key: "redis_username", Usage: "Redis ACL user name (empty: default user)"},
	{Key: "redis_password", Usage: "Redis password (empty: no AUTH)"},
	{Key: "redis_db", Usage: "Redis database number"},
	{Key: "redis_timeout", Usage: "dial, read and write timeout of Redis commands"},
	{Key: "redis_tls", Usage: "connect to Redis over TLS"},
	{Key: "redis_tls_ca_file", Usage: "PEM file of the CA that signed Redis's certificate (empty: the system's roots)"},
	{Key: "nats_url", Usage: "nats:// address of NATS for broker nats (comma-separated for several servers)"},
	{Key: "nats_prefix", Usage: "prefix of every NATS subject and of the JetStream stream's name"},
	{Key: "capture_dir", Usage: "the watchdog's archive of captures (goroutine dump, heap and CPU profiles)"},
	{Key: "watchdog_rules", Usage: `rules that trigger a capture, comma-separated: "SIGNAL > VALUE for D" or "SIGNAL grow > R/s over D"; SIGNAL goroutines, heap (bytes: 2GiB), sched_p99 (a duration: 50ms) or slow_consumers (5/s); growth for goroutines and heap`},
	{Key: "capture_cooldown", Usage: "least time between two captures the watchdog rules trigger"},
	{Key: "capture_webhook", Usage: "URL POSTed each capture's JSON (empty: none)"},
	{Key: "memory_limit", Usage: "bytes the Go heap is kept under, as GOMEMLIMIT (0: GOMEMLIMIT, else 90% of the container's memory limit)"},
	{Key: "heap_trim_after", Usage: "how long allocation must stay low and no publication be delivered before the heap's free memory is given back to the OS (0: never)"},
	{Key: "heap_grow_gc_percent", Usage: "GC percent (GOGC) while the live heap grows, as during a connect burst, so an idle node keeps fewer holes in its heap (0: the process's own GOGC throughout)"},
	{Key: "proxy_connect_endpoint", Usage: "backend URL asked when a client connects without a token (empty: not proxied)"},
	{Key: "proxy_connect_timeout", Usage: "how long one connect proxy call may take"},
	{Key: "proxy_refresh_endpoint", Usage: "backend URL asked when a proxied connection's expire_at passes (empty: it expires)"},
	{Key: "proxy_refresh_timeout", Usage: "how long one refresh proxy call may take"},
	{Key: "proxy_subscribe_endpoint", Usage: "backend URL asked about subscriptions in namespaces with proxy_subscribe"},
	{Key: "proxy_subscribe_timeout", Usage: "how long one subscribe proxy call may take"},
	{Key: "proxy_publish_endpoint", Usage: "backend URL asked about client publications in namespaces with proxy_publish"},
	{Key: "proxy_publish_timeout", Usage: "how long one publish proxy call may take"},
	{Key: "proxy_rpc_endpoint", Usage: "backend URL that answers the client's rpc commands (empty: 104 method not found)"},
	{Key: "proxy_rpc_timeout", Usage: "how long one rpc proxy call may take"},
	{Key: "proxy_sub_refresh_endpoint", Usage: "backend URL asked when a proxied subscription's expire_at passes, in namespaces with proxy_sub_refresh (else it ends)"},
	{Key: "proxy_sub_refresh_timeout", Usage: "how long one sub_refresh proxy call may take"},
	{Key: "proxy_http_headers", Usage: "comma-separated headers of the client's upgrade request copied into proxy calls, e.g. Cookie,Authorization"},
}

// Setting describes one top-level scalar key of Config.
type Setting struct {
	Key     string // YAML key, e.g. "ping_interval"
	Usage   string // one line
	Type    string // string, bool, int, float, duration or list (comma-separated)
	Default string // the embedded default as text Set accepts; "" when empty
}

// Flag is the setting's command-line flag name: the key with dashes.
func (s Setting) Flag() string { return strings.ReplaceAll(s.Key, "_", "-") }

// Env is the setting's environment variable: SPINDLE_ and the key upper-cased.
func (s Setting) Env() string { return envPrefix + strings.ToUpper(s.Key) }

const envPrefix = "SPINDLE_"

// Settings lists every key Set, flags and SPINDLE_* variables accept, in
// the order of Config's fields, with its type and embedded default.
func Settings() []Setting {
	d := Default()
	fields := d.scalarFields()
	out := make([]Setting, len(settings))
	for i, s := range settings {
		if f, ok := fields[s.Key]; ok {
			s.Type, s.Default = f.kind(), f.String()
		}
		out[i] = s
	}
	return out
}

// ChannelOptions are the per-namespace rules of a channel.
type ChannelOptions struct {
	HistorySize                int      `yaml:"history_size"`                  // publications kept; 0 disables history
	HistoryTTL                 Duration `yaml:"history_ttl"`                   // how long publications are kept
	Presence                   bool     `yaml:"presence"`                      // track who is subscribed
	JoinLeave                  bool     `yaml:"join_leave"`                    // send join/leave pushes
	ForcePushJoinLeave         bool     `yaml:"force_push_join_leave"`         // send them even when a client did not ask
	AllowPublishForClient      bool     `yaml:"allow_publish_for_client"`      // any connected client may publish
	AllowPublishForSubscriber  bool     `yaml:"allow_publish_for_subscriber"`  // subscribers may publish
	AllowSubscribeForAnonymous bool     `yaml:"allow_subscribe_for_anonymous"` // users with an empty ID may subscribe
	AllowPresenceForSubscriber bool     `yaml:"allow_presence_for_subscriber"` // subscribers may ask presence and presence_stats
	AllowHistoryForSubscriber  bool     `yaml:"allow_history_for_subscriber"`  // subscribers may ask history
	SubscribeTokenRequired     bool     `yaml:"subscribe_token_required"`      // subscribe needs a subscription JWT
	AllowRecovery              bool     `yaml:"allow_recovery"`                // subscribe with recover may return missed publications
	ForceRecovery              bool     `yaml:"force_recovery"`                // every subscription is recoverable, asked or not
	ForcePositioning           bool     `yaml:"force_positioning"`             // every subscription gets its stream position
	Conflate                   bool     `yaml:"conflate"`                      // a publication still queued for a subscriber is replaced by the channel's next one
	ProxySubscribe             bool     `yaml:"proxy_subscribe"`               // proxy_subscribe_endpoint decides subscriptions without a token
	ProxyPublish               bool     `yaml:"proxy_publish"`                 // proxy_publish_endpoint decides client publications
	ProxySubRefresh            bool     `yaml:"proxy_sub_refresh"`             // proxy_sub_refresh_endpoint prolongs subscriptions the subscribe proxy gave an expire_at
}

// Namespace names a set of channel options.
type Namespace struct {
	Name           string `yaml:"name"`
	ChannelOptions `yaml:",inline"`
}

// Duration is a time.Duration that reads "25s" style strings from YAML and env.
type Duration time.Duration

// UnmarshalYAML accepts Go duration strings ("1m30s") and plain seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func parseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("bad duration %q: want e.g. 25s, 5m, 1h", s)
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		// NaN, ±Inf and values beyond ±292 years have no time.Duration;
		// converting them would give an arbitrary (negative) one.
		ns := secs * float64(time.Second)
		if math.IsNaN(ns) || ns >= math.MaxInt64 || ns < math.MinInt64 {
			return 0, bad
		}
		return time.Duration(ns), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, bad
	}
	return v, nil
}

// Default returns the embedded defaults: a loopback single node where plain
// channels keep history (100, 5m) and have presence and join/leave.
func Default() Config {
	return Config{
		Listen:             "127.0.0.1:8000",
		AdminListen:        "127.0.0.1:9000",
		LogLevel:           "info",
		PingInterval:       Duration(25 * time.Second),
		PongTimeout:        Duration(8 * time.Second),
		ConnectTimeout:     Duration(10 * time.Second),
		MaxMessageSize:     64 << 10,
		ClientQueueMaxSize: 1 << 20,
		MaxPublicationSize: 4 << 20,
		APIMaxBatch:        1000,
		APIMaxBodySize:     16 << 20,
		APIIdleTimeout:     Duration(30 * time.Second),

		HandshakeTimeout:           Duration(5 * time.Second),
		MaxPendingConnections:      1024,
		MaxPendingConnectionsPerIP: 256,
		ClientStallTimeout:         Duration(10 * time.Second),
		CommandRate:                100,
		CommandBurst:               200,
		MaxSubscriptions:           128,
		MaxChannelLength:           255,
		PresenceTTL:                Duration(60 * time.Second),
		ShutdownGracePeriod:        Duration(30 * time.Second),
		ShutdownReconnect:          Duration(5 * time.Second),
		CaptureDir:                 filepath.Join(os.TempDir(), "spindle-captures"),
		WatchdogRules:              []string{"goroutines > 100000 for 2m", "goroutines grow > 200/s over 5m"},
		CaptureCooldown:            Duration(5 * time.Minute),
		HeapTrimAfter:              Duration(3 * time.Second),
		HeapGrowGC:                 25,
		Broker:                     "memory",
		RedisAddress:               "127.0.0.1:6379",
		RedisPrefix:                "spindle",
		RedisTimeout:               Duration(5 * time.Second),
		NatsURL:                    "nats://127.0.0.1:4222",
		NatsPrefix:                 "spindle",
		ProxyConnectTimeout:        Duration(time.Second),
		ProxyRefreshTimeout:        Duration(time.Second),
		ProxySubscribeTimeout:      Duration(time.Second),
		ProxyPublishTimeout:        Duration(time.Second),
		ProxyRPCTimeout:            Duration(time.Second),
		ProxySubRefreshTimeout:     Duration(time.Second),
		Channel: ChannelOptions{
			HistorySize:                100,
			HistoryTTL:                 Duration(5 * time.Minute),
			Presence:                   true,
			JoinLeave:                  true,
			AllowPresenceForSubscriber: true,
			AllowHistoryForSubscriber:  true,
			AllowRecovery:              true,
		},
	}
}

// Load reads a YAML file over the defaults (no file when path is empty), then
// applies SPINDLE_* environment variables. It does not validate: callers apply
// their flags with Set and then call Validate.
func Load(file string, environ []string) (Config, error) {
	c := Default()
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		if err := decodeYAML(data, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", file, err)
		}
	}
	if err := c.applyEnv(environ); err != nil {
		return c, err
	}
	return c, nil
}

// decodeYAML decodes a file over c, refusing unknown keys. A top-level
// list of strings (allowed_origins) may also be given as one string, read
// as env and flags read it: "*" is ["*"], "a, b" is ["a", "b"].
//
// The fields keep their []string type: the file is decoded into a struct
// like Config whose []string fields have that string-or-list type, then
// copied over. (An UnmarshalYAML on Config itself would lose KnownFields,
// which a node's Decode does not pass on.)
func decodeYAML(data []byte, c *Config) error {
	// A document that is not a mapping would be reported against the
	// shadow's unnamed struct type: say what is wrong in plain words.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	if len(doc.Content) == 1 {
		if root := doc.Content[0]; root.Kind != yaml.MappingNode && root.ShortTag() != "!!null" {
			return fmt.Errorf("line %d: want a mapping of settings (key: value), not %s", root.Line, root.ShortTag())
		}
	}
	v := reflect.ValueOf(c).Elem()
	shadow := reflect.New(yamlShadow).Elem()
	for i := range v.NumField() {
		shadow.Field(i).Set(v.Field(i).Convert(yamlShadow.Field(i).Type))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(shadow.Addr().Interface()); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for i := range v.NumField() {
		v.Field(i).Set(shadow.Field(i).Convert(v.Field(i).Type()))
	}
	return nil
}

// yamlShadow is Config with stringList for each []string field.
var yamlShadow = func() reflect.Type {
	t := reflect.TypeFor[Config]()
	fields := make([]reflect.StructField, t.NumField())
	for i := range fields {
		fields[i] = t.Field(i)
		if fields[i].Type == reflect.TypeFor[[]string]() {
			fields[i].Type = reflect.TypeFor[stringList]()
		}
	}
	return reflect.StructOf(fields)
}()

// stringList reads a YAML sequence of strings, or one string split at commas.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = splitList(n.Value)
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var parts []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return parts
}

// applyEnv sets top-level scalar fields from SPINDLE_<YAML_KEY> variables,
// e.g. SPINDLE_API_KEY or SPINDLE_PING_INTERVAL=10s.
func (c *Config) applyEnv(environ []string) error {
	fields := c.scalarFields()
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, envPrefix) {
			continue
		}
		key := strings.ToLower(strings.TrimPrefix(k, envPrefix))
		f, ok := fields[key]
		if !ok {
			continue // other SPINDLE_ variables belong to other subcommands
		}
		if err := f.set(v); err != nil {
			return fmt.Errorf("env %s: %w", k, err)
		}
	}
	return nil
}

// Set assigns one top-level setting by its YAML key, as flags and env do.
func (c *Config) Set(key, value string) error {
	f, ok := c.scalarFields()[key]
	if !ok {
		return fmt.Errorf("unknown setting %q", key)
	}
	if err := f.set(value); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

type field struct{ v reflect.Value }

func (f field) set(s string) error {
	switch f.v.Interface().(type) {
	case Duration:
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		f.v.SetInt(int64(d))
		return nil
	case []string:
		f.v.Set(reflect.ValueOf(splitList(s)))
		return nil
	}
	switch f.v.Kind() {
	case reflect.String:
		f.v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("bad boolean %q", s)
		}
		f.v.SetBool(b)
	case reflect.Int:
		n, err := parseSize(s)
		if err != nil {
			return err
		}
		f.v.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("bad number %q", s)
		}
		f.v.SetFloat(x)
	default:
		return fmt.Errorf("cannot set from text")
	}
	return nil
}

// kind names the field's type as Setting.Type does.
func (f field) kind() string {
	switch f.v.Interface().(type) {
	case Duration:
		return "duration"
	case []string:
		return "list"
	}
	switch f.v.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Int:
		return "int"
	case reflect.Float64:
		return "float"
	}
	return "string"
}

// String is the field's value as text set reads back.
func (f field) String() string {
	switch x := f.v.Interface().(type) {
	case Duration:
		return x.D().String()
	case []string:
		return strings.Join(x, ",")
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(f.v.Interface())
}

// parseSize reads integers with optional KiB/MiB/GiB suffixes.
func parseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			num, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return 0, fmt.Errorf("bad integer %q", s)
	}
	return n * mult, nil
}

func (c *Config) scalarFields() map[string]field {
	out := map[string]field{}
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Struct:
			continue
		case reflect.Slice:
			if _, ok := fv.Interface().([]string); !ok {
				continue
			}
		}
		out[key] = field{fv}
	}
	return out
}

// Validate reports every setting that cannot work, each naming its key, as one
// errors.Join error; nil when the configuration is usable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Listen == "" {
		bad("listen: must not be empty")
	}
	if c.PingInterval.D() <= 0 {
		bad("ping_interval: must be positive")
	}
	if c.PongTimeout.D() <= 0 {
		bad("pong_timeout: must be positive")
	}
	if c.ConnectTimeout.D() <= 0 {
		bad("connect_timeout: must be positive")
	}
	if c.MaxMessageSize < 128 {
		bad("max_message_size: %d is below 128 bytes", c.MaxMessageSize)
	}
	if c.MaxPublicationSize < 1 {
		bad("max_publication_size: must be at least 1 byte")
	}
	if c.APIMaxBatch < 1 {
		bad("api_batch_max_commands: must be at least 1")
	}
	if c.APIMaxBodySize < 1 {
		bad("api_max_body_size: must be at least 1 byte")
	}
	if c.APIIdleTimeout.D() <= 0 {
		bad("api_idle_timeout: must be positive")
	}
	if c.HandshakeTimeout.D() <= 0 {
		bad("handshake_timeout: must be positive")
	}
	if c.MaxPendingConnections < 1 || c.MaxPendingConnectionsPerIP < 1 {
		bad("max_pending_connections/max_pending_connections_per_ip: must be at least 1")
	}
	if c.MemoryLimit < 0 {
		bad("memory_limit: %d is negative (0: from GOMEMLIMIT or the container)", c.MemoryLimit)
	}
	if c.HeapTrimAfter.D() < 0 {
		bad("heap_trim_after: must not be negative (0: never trim)")
	}
	if c.HeapGrowGC < 0 {
		bad("heap_grow_gc_percent: %d is negative (0: the process's own GOGC throughout)", c.HeapGrowGC)
	}
	if c.ClientQueueMaxSize < c.MaxMessageSize {
		bad("client_queue_max_size: %d is smaller than max_message_size %d", c.ClientQueueMaxSize, c.MaxMessageSize)
	}
	if c.ClientStallTimeout.D() <= 0 {
		bad("client_stall_timeout: must be positive")
	}
	if c.MaxConnections < 0 {
		bad("max_connections: must not be negative")
	}
	if c.CommandRate < 0 || (c.CommandRate > 0 && c.CommandBurst < 1) {
		bad("command_rate/command_burst: rate must be ≥ 0 and burst ≥ 1")
	}
	if c.CaptureDir == "" {
		bad("capture_dir: must not be empty")
	}
	if c.CaptureCooldown.D() <= 0 {
		bad("capture_cooldown: must be positive")
	}
	switch c.Broker {
	case "memory":
	case "redis":
		if c.RedisAddress == "" {
			bad("redis_address: must not be empty with broker redis")
		}
		if c.RedisTimeout.D() <= 0 {
			bad("redis_timeout: must be positive")
		}
		if c.RedisDB < 0 {
			bad("redis_db: must not be negative")
		}
	case "nats":
		if c.NatsURL == "" {
			bad("nats_url: must not be empty with broker nats")
		}
		if c.NatsPrefix == "" || strings.ContainsAny(c.NatsPrefix, "*> \t\r\n/\\") || slices.Contains(strings.Split(c.NatsPrefix, "."), "") {
			bad("nats_prefix: %q must be dot-separated subject tokens without wildcards, spaces or slashes", c.NatsPrefix)
		}
	default:
		bad("broker: %q is none of memory, redis and nats", c.Broker)
	}
	if c.MaxSubscriptions < 1 {
		bad("max_subscriptions: must be at least 1")
	}
	if c.MaxChannelLength < 1 {
		bad("max_channel_length: must be at least 1")
	}
	if c.PresenceTTL.D() <= 0 {
		bad("presence_ttl: must be positive")
	}
	if c.ShutdownGracePeriod.D() <= 0 {
		bad("shutdown_grace_period: must be positive")
	}
	if c.ShutdownReconnect.D() < 0 || c.ShutdownReconnect.D() >= c.ShutdownGracePeriod.D() {
		bad("shutdown_reconnect_window: must be ≥ 0 and shorter than shutdown_grace_period")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	for _, o := range c.AllowedOrigins {
		if _, err := path.Match(o, ""); err != nil {
			bad("allowed_origins: bad pattern %q", o)
		}
	}
	for _, p := range []struct {
		key, url string
		timeout  Duration
	}{
		{"proxy_connect", c.ProxyConnectEndpoint, c.ProxyConnectTimeout},
		{"proxy_refresh", c.ProxyRefreshEndpoint, c.ProxyRefreshTimeout},
		{"proxy_subscribe", c.ProxySubscribeEndpoint, c.ProxySubscribeTimeout},
		{"proxy_publish", c.ProxyPublishEndpoint, c.ProxyPublishTimeout},
		{"proxy_rpc", c.ProxyRPCEndpoint, c.ProxyRPCTimeout},
		{"proxy_sub_refresh", c.ProxySubRefreshEndpoint, c.ProxySubRefreshTimeout},
	} {
		if u, err := url.Parse(p.url); p.url != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			bad("%s_endpoint: %q is not an http:// or https:// URL", p.key, p.url)
		}
		if p.timeout.D() <= 0 {
			bad("%s_timeout: must be positive", p.key)
		}
	}
	for _, h := range c.ProxyHTTPHeaders {
		if strings.ContainsAny(h, " \t:") {
			bad("proxy_http_headers: %q is not a header name", h)
		}
	}
	checkOpts := func(where string, o ChannelOptions) {
		if o.ProxySubscribe && c.ProxySubscribeEndpoint == "" {
			bad("%s.proxy_subscribe: needs proxy_subscribe_endpoint", where)
		}
		if o.ProxySubRefresh && c.ProxySubRefreshEndpoint == "" {
			bad("%s.proxy_sub_refresh: needs proxy_sub_refresh_endpoint", where)
		}
		if o.ProxyPublish && c.ProxyPublishEndpoint == "" {
			bad("%s.proxy_publish: needs proxy_publish_endpoint", where)
		}
		if o.HistorySize < 0 {
			bad("%s.history_size: must not be negative", where)
		}
		if o.HistorySize > 0 && o.HistoryTTL.D() <= 0 {
			bad("%s.history_ttl: must be positive when history_size is set", where)
		}
	}
	checkOpts("channel", c.Channel)
	seen := map[string]bool{}
	for i, ns := range c.Namespaces {
		where := fmt.Sprintf("namespaces[%d]", i)
		if ns.Name == "" || strings.ContainsAny(ns.Name, ":#$ ") {
			bad("%s.name: %q must be non-empty without ':', '#', '$' or spaces", where, ns.Name)
		}
		if seen[ns.Name] {
			bad("%s.name: %q appears twice", where, ns.Name)
		}
		seen[ns.Name] = true
		checkOpts(where, ns.ChannelOptions)
	}
	return errors.Join(errs...)
}

// FileLimit returns the soft RLIMIT_NOFILE of this process.
func FileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	return r.Cur, nil
}

// EffectiveMaxConnections returns max_connections, or when it is 0 the file
// limit less a reserve for listeners, logs and the broker (10% or 100).
func (c *Config) EffectiveMaxConnections() int {
	if c.MaxConnections > 0 {
		return c.MaxConnections
	}
	lim, err := FileLimit()
	if err != nil || lim == 0 || lim > 1<<24 {
		lim = 1 << 20
	}
	reserve := lim / 10
	if reserve < 100 {
		reserve = 100
	}
	if lim <= reserve {
		return 1
	}
	return int(lim - reserve)
}

// ReadPEM returns a PEM given inline, or the contents of the file it names.
func ReadPEM(s string) (string, error) {
	if s == "" || strings.Contains(s, "-----BEGIN") {
		return s, nil
	}
	data, err := os.ReadFile(s)
	if err != nil {
		return "", fmt.Errorf("read public key: %w", err)
	}
	return string(data), nil
}

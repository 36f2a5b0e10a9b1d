package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// ---- Load: defaults and the YAML file ----

func TestLoadWithoutFileIsDefault(t *testing.T) {
	got, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(\"\", nil) = %+v\nwant Default() = %+v", got, want)
	}
}

func TestLoadFileOverridesOnlyWhatItNames(t *testing.T) {
	file := writeFile(t, `
listen: 0.0.0.0:8000
ping_interval: 1m30s
max_message_size: 4096
allowed_origins: ["https://app.example.com", "https://*.example.org"]
channel:
  history_size: 10
namespaces:
  - name: chat
    history_size: 500
    history_ttl: 1h
    allow_publish_for_subscriber: true
  - name: private
    subscribe_token_required: true
  - name: prices
    conflate: true
`)
	got, err := Load(file, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.Listen = "0.0.0.0:8000"
	want.PingInterval = Duration(90 * time.Second)
	want.MaxMessageSize = 4096
	want.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
	want.Channel.HistorySize = 10 // the other plain channel options keep their defaults
	want.Namespaces = []Namespace{
		{Name: "chat", ChannelOptions: ChannelOptions{HistorySize: 500, HistoryTTL: Duration(time.Hour), AllowPublishForSubscriber: true}},
		{Name: "private", ChannelOptions: ChannelOptions{SubscribeTokenRequired: true}},
		{Name: "prices", ChannelOptions: ChannelOptions{Conflate: true}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(file) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestLoadRefusesUnknownKeys(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"top level", "listen: 127.0.0.1:1\nlisten_addr: x\n", []string{"line 2", "listen_addr"}},
		{"in channel", "channel:\n  history_size: 1\n  histroy_ttl: 1m\n", []string{"line 3", "histroy_ttl"}},
		{"in namespace", "namespaces:\n  - name: chat\n    presense: true\n", []string{"line 3", "presense"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, tt.yaml)
			_, err := Load(file, nil)
			wantErr(t, err, append(tt.want, file)...)
		})
	}
}

func TestLoadMissingFileWrapsOSError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(file, nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) error = %v, want one wrapping os.ErrNotExist", err)
	}
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Path != file {
		t.Fatalf("Load(missing) error = %v, want an *os.PathError for %s", err, file)
	}
}

func TestLoadEmptyFileIsDefault(t *testing.T) {
	for name, content := range map[string]string{
		"empty":         "",
		"blank lines":   "\n\n",
		"only comments": "# nothing configured yet\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Load(writeFile(t, content), nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if want := Default(); !reflect.DeepEqual(got, want) {
				t.Fatalf("Load(%s file) = %+v\nwant Default()", name, got)
			}
		})
	}
}

// ---- Durations ----

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"25s", 25 * time.Second},
		{"1m30s", 90 * time.Second},
		{"500ms", 500 * time.Millisecond},
		{"1h", time.Hour},
		{"2.5", 2500 * time.Millisecond},
		{"10", 10 * time.Second},
		{"0", 0},
		{"-5s", -5 * time.Second}, // parsed; Validate decides where negatives are wrong
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseDurationRefusesBadValues(t *testing.T) {
	for _, in := range []string{"", "soon", "25 s", "1d", "s25", "NaN", "inf", "-Inf", "1e10", "1e300"} {
		got, err := parseDuration(in)
		if err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
			continue
		}
		if want := `bad duration "` + in + `"`; !strings.Contains(err.Error(), want) {
			t.Errorf("parseDuration(%q) error = %q, want it to contain %q", in, err, want)
		}
	}
}

func TestDurationFromYAMLEnvAndSet(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"25s", 25 * time.Second},
		{"1m30s", 90 * time.Second},
		{"2.5", 2500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			fromYAML, err := Load(writeFile(t, "pong_timeout: "+tt.in+"\n"), nil)
			if err != nil {
				t.Fatalf("yaml: %v", err)
			}
			fromEnv, err := Load("", []string{"SPINDLE_PONG_TIMEOUT=" + tt.in})
			if err != nil {
				t.Fatalf("env: %v", err)
			}
			fromSet := Default()
			if err := fromSet.Set("pong_timeout", tt.in); err != nil {
				t.Fatalf("Set: %v", err)
			}
			for src, c := range map[string]Config{"yaml": fromYAML, "env": fromEnv, "Set": fromSet} {
				if got := c.PongTimeout.D(); got != tt.want {
					t.Errorf("%s: pong_timeout %q = %v, want %v", src, tt.in, got, tt.want)
				}
			}
		})
	}
}

func TestBadDurationErrors(t *testing.T) {
	t.Run("yaml names the line", func(t *testing.T) {
		file := writeFile(t, "listen: 127.0.0.1:1\n\nping_interval: soon\n")
		_, err := Load(file, nil)
		wantErr(t, err, file, "line 3", `bad duration "soon"`)
	})
	t.Run("yaml in a namespace", func(t *testing.T) {
		_, err := Load(writeFile(t, "namespaces:\n  - name: chat\n    history_ttl: forever\n"), nil)
		wantErr(t, err, "line 3", `bad duration "forever"`)
	})
	t.Run("env", func(t *testing.T) {
		_, err := Load("", []string{"SPINDLE_PING_INTERVAL=soon"})
		wantErr(t, err, "SPINDLE_PING_INTERVAL", `bad duration "soon"`)
	})
	t.Run("Set", func(t *testing.T) {
		c := Default()
		wantErr(t, c.Set("ping_interval", "soon"), "ping_interval", `bad duration "soon"`)
		if c.PingInterval != Default().PingInterval {
			t.Errorf("a refused value changed ping_interval to %v", c.PingInterval.D())
		}
	})
}

func TestDurationYAMLRoundTrip(t *testing.T) {
	type doc struct {
		D Duration `yaml:"d"`
	}
	for _, d := range []time.Duration{0, 2500 * time.Millisecond, 90 * time.Second, 36 * time.Hour} {
		out, err := yaml.Marshal(doc{Duration(d)})
		if err != nil {
			t.Fatalf("Marshal(%v): %v", d, err)
		}
		var back doc
		if err := yaml.Unmarshal(out, &back); err != nil {
			t.Fatalf("Unmarshal(%q): %v", out, err)
		}
		if back.D.D() != d {
			t.Errorf("%v -> %q -> %v", d, out, back.D.D())
		}
	}
}

// ---- Environment ----

func TestLoadEnv(t *testing.T) {
	tests := []struct {
		env   string
		check func(Config) bool
	}{
		{"SPINDLE_API_KEY=k3y", func(c Config) bool { return c.APIKey == "k3y" }},
		{"SPINDLE_API_KEY=", func(c Config) bool { return c.APIKey == "" }},
		{"SPINDLE_PING_INTERVAL=10s", func(c Config) bool { return c.PingInterval.D() == 10*time.Second }},
		{"SPINDLE_MAX_MESSAGE_SIZE=64KiB", func(c Config) bool { return c.MaxMessageSize == 65536 }},
		{"SPINDLE_MAX_CONNECTIONS=5000", func(c Config) bool { return c.MaxConnections == 5000 }},
		{"SPINDLE_ALLOWED_ORIGINS=a, b,,c", func(c Config) bool { return reflect.DeepEqual(c.AllowedOrigins, []string{"a", "b", "c"}) }},
		{"SPINDLE_ALLOW_ANONYMOUS_CONNECT=true", func(c Config) bool { return c.AllowAnonymousConnect }},
		{"SPINDLE_COMMAND_RATE=2.5", func(c Config) bool { return c.CommandRate == 2.5 }},
		{"SPINDLE_LOG_LEVEL=debug", func(c Config) bool { return c.LogLevel == "debug" }},
		{"SPINDLE_TOKEN_HMAC_SECRET=a=b", func(c Config) bool { return c.TokenHMACSecret == "a=b" }}, // only the first '=' separates
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			c, err := Load("", []string{tt.env})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !tt.check(c) {
				t.Fatalf("env %s not applied: %+v", tt.env, c)
			}
		})
	}
}

func TestLoadEnvIgnoresOtherVariables(t *testing.T) {
	c, err := Load("", []string{
		"SPINDLE_BENCH_WORKERS=8",      // another subcommand's
		"SPINDLE_CHANNEL=history",      // a struct setting: not from env
		"SPINDLE_NAMESPACES=chat",      // nor this
		"SPINDLE_=x",                   // no key at all
		"SPINDLE_LISTEN",               // no '='
		"HOME=/root",                   // not ours
		"NOT_SPINDLE_API_KEY=x",        // prefix not at the start
		"spindle_api_key=lowercase",    // prefix is upper case
		"SPINDLE_MAX_MESSAGE_SIZE_X=1", // longer than a key
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Fatalf("unrelated variables changed the config: %+v", c)
	}
}

func TestLoadEnvBadValueNamesVariable(t *testing.T) {
	tests := []struct{ env, variable, why string }{
		{"SPINDLE_PING_INTERVAL=soon", "SPINDLE_PING_INTERVAL", "bad duration"},
		{"SPINDLE_MAX_MESSAGE_SIZE=big", "SPINDLE_MAX_MESSAGE_SIZE", "bad integer"},
		{"SPINDLE_ALLOW_ANONYMOUS_CONNECT=maybe", "SPINDLE_ALLOW_ANONYMOUS_CONNECT", "bad boolean"},
		{"SPINDLE_COMMAND_RATE=fast", "SPINDLE_COMMAND_RATE", "bad number"},
	}
	for _, tt := range tests {
		t.Run(tt.variable, func(t *testing.T) {
			_, err := Load("", []string{tt.env})
			wantErr(t, err, tt.variable, tt.why)
		})
	}
}

func TestPrecedenceDefaultsFileEnvSet(t *testing.T) {
	file := writeFile(t, "listen: 0.0.0.0:8000\napi_key: from-file\nping_interval: 20s\nmax_subscriptions: 10\n")
	c, err := Load(file, []string{"SPINDLE_API_KEY=from-env", "SPINDLE_PING_INTERVAL=15s"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := c.Set("ping_interval", "5s"); err != nil { // flags come last
		t.Fatalf("Set: %v", err)
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"log_level (default)", c.LogLevel, Default().LogLevel},
		{"listen (file over default)", c.Listen, "0.0.0.0:8000"},
		{"max_subscriptions (file over default)", c.MaxSubscriptions, 10},
		{"api_key (env over file)", c.APIKey, "from-env"},
		{"ping_interval (Set over env over file)", c.PingInterval.D(), 5 * time.Second},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.key, tt.got, tt.want)
		}
	}
}

// ---- Set ----

func TestSetEveryScalarKey(t *testing.T) {
	tests := map[string]struct {
		value string
		apply func(*Config) // what the value must do to Default()
	}{
		"listen":                         {"0.0.0.0:1", func(c *Config) { c.Listen = "0.0.0.0:1" }},
		"admin_listen":                   {"", func(c *Config) { c.AdminListen = "" }},
		"api_key":                        {"k", func(c *Config) { c.APIKey = "k" }},
		"admin_token":                    {"t", func(c *Config) { c.AdminToken = "t" }},
		"log_level":                      {"warn", func(c *Config) { c.LogLevel = "warn" }},
		"demo":                           {"true", func(c *Config) { c.Demo = true }},
		"token_hmac_secret":              {"s", func(c *Config) { c.TokenHMACSecret = "s" }},
		"token_rsa_public_key":           {"/k/rsa.pem", func(c *Config) { c.TokenRSAPublicKey = "/k/rsa.pem" }},
		"token_ecdsa_public_key":         {"/k/ec.pem", func(c *Config) { c.TokenECDSAPublicKey = "/k/ec.pem" }},
		"token_audience":                 {"aud", func(c *Config) { c.TokenAudience = "aud" }},
		"token_issuer":                   {"iss", func(c *Config) { c.TokenIssuer = "iss" }},
		"allow_anonymous_connect":        {"true", func(c *Config) { c.AllowAnonymousConnect = true }},
		"allowed_origins":                {"*", func(c *Config) { c.AllowedOrigins = []string{"*"} }},
		"ping_interval":                  {"1s", func(c *Config) { c.PingInterval = Duration(time.Second) }},
		"pong_timeout":                   {"2s", func(c *Config) { c.PongTimeout = Duration(2 * time.Second) }},
		"connect_timeout":                {"3s", func(c *Config) { c.ConnectTimeout = Duration(3 * time.Second) }},
		"max_connections":                {"7", func(c *Config) { c.MaxConnections = 7 }},
		"max_message_size":               {"1KiB", func(c *Config) { c.MaxMessageSize = 1024 }},
		"client_queue_max_size":          {"2MiB", func(c *Config) { c.ClientQueueMaxSize = 2 << 20 }},
		"capture_dir":                    {"/tmp/caps", func(c *Config) { c.CaptureDir = "/tmp/caps" }},
		"watchdog_rules":                 {"goroutines > 5 for 1m", func(c *Config) { c.WatchdogRules = []string{"goroutines > 5 for 1m"} }},
		"capture_cooldown":               {"30s", func(c *Config) { c.CaptureCooldown = Duration(30 * time.Second) }},
		"memory_limit":                   {"3GiB", func(c *Config) { c.MemoryLimit = 3 << 30 }},
		"heap_trim_after":                {"10s", func(c *Config) { c.HeapTrimAfter = Duration(10 * time.Second) }},
		"heap_grow_gc_percent":           {"40", func(c *Config) { c.HeapGrowGC = 40 }},
		"capture_webhook":                {"http://127.0.0.1:1/hook", func(c *Config) { c.CaptureWebhook = "http://127.0.0.1:1/hook" }},
		"max_publication_size":           {"3MiB", func(c *Config) { c.MaxPublicationSize = 3 << 20 }},
		"api_batch_max_commands":         {"10", func(c *Config) { c.APIMaxBatch = 10 }},
		"api_max_body_size":              {"1MiB", func(c *Config) { c.APIMaxBodySize = 1 << 20 }},
		"api_idle_timeout":               {"9s", func(c *Config) { c.APIIdleTimeout = Duration(9 * time.Second) }},
		"handshake_timeout":              {"2s", func(c *Config) { c.HandshakeTimeout = Duration(2 * time.Second) }},
		"max_pending_connections":        {"99", func(c *Config) { c.MaxPendingConnections = 99 }},
		"max_pending_connections_per_ip": {"9", func(c *Config) { c.MaxPendingConnectionsPerIP = 9 }},
		"client_stall_timeout":           {"4s", func(c *Config) { c.ClientStallTimeout = Duration(4 * time.Second) }},
		"command_rate":                   {"0.5", func(c *Config) { c.CommandRate = 0.5 }},
		"command_burst":                  {"3", func(c *Config) { c.CommandBurst = 3 }},
		"max_subscriptions":              {"9", func(c *Config) { c.MaxSubscriptions = 9 }},
		"max_channel_length":             {"64", func(c *Config) { c.MaxChannelLength = 64 }},
		"presence_ttl":                   {"30", func(c *Config) { c.PresenceTTL = Duration(30 * time.Second) }},
		"shutdown_grace_period":          {"1m", func(c *Config) { c.ShutdownGracePeriod = Duration(time.Minute) }},
		"shutdown_reconnect_window":      {"0", func(c *Config) { c.ShutdownReconnect = 0 }},
		"broker":                         {"redis", func(c *Config) { c.Broker = "redis" }},
		"redis_address":                  {"10.0.0.1:6380", func(c *Config) { c.RedisAddress = "10.0.0.1:6380" }},
		"redis_prefix":                   {"sp", func(c *Config) { c.RedisPrefix = "sp" }},
		"redis_username":                 {"u", func(c *Config) { c.RedisUsername = "u" }},
		"redis_password":                 {"pw", func(c *Config) { c.RedisPassword = "pw" }},
		"redis_db":                       {"3", func(c *Config) { c.RedisDB = 3 }},
		"redis_timeout":                  {"2s", func(c *Config) { c.RedisTimeout = Duration(2 * time.Second) }},
		"redis_tls":                      {"true", func(c *Config) { c.RedisTLS = true }},
		"redis_tls_ca_file":              {"/etc/ca.pem", func(c *Config) { c.RedisTLSCAFile = "/etc/ca.pem" }},
		"nats_url":                       {"nats://10.0.0.1:4223", func(c *Config) { c.NatsURL = "nats://10.0.0.1:4223" }},
		"nats_prefix":                    {"sp.a", func(c *Config) { c.NatsPrefix = "sp.a" }},
		"proxy_connect_endpoint":         {"http://127.0.0.1:1/connect", func(c *Config) { c.ProxyConnectEndpoint = "http://127.0.0.1:1/connect" }},
		"proxy_connect_timeout":          {"2s", func(c *Config) { c.ProxyConnectTimeout = Duration(2 * time.Second) }},
		"proxy_refresh_endpoint":         {"http://127.0.0.1:1/refresh", func(c *Config) { c.ProxyRefreshEndpoint = "http://127.0.0.1:1/refresh" }},
		"proxy_refresh_timeout":          {"3s", func(c *Config) { c.ProxyRefreshTimeout = Duration(3 * time.Second) }},
		"proxy_subscribe_endpoint":       {"http://127.0.0.1:1/subscribe", func(c *Config) { c.ProxySubscribeEndpoint = "http://127.0.0.1:1/subscribe" }},
		"proxy_subscribe_timeout":        {"4s", func(c *Config) { c.ProxySubscribeTimeout = Duration(4 * time.Second) }},
		"proxy_publish_endpoint":         {"http://127.0.0.1:1/publish", func(c *Config) { c.ProxyPublishEndpoint = "http://127.0.0.1:1/publish" }},
		"proxy_publish_timeout":          {"5s", func(c *Config) { c.ProxyPublishTimeout = Duration(5 * time.Second) }},
		"proxy_rpc_endpoint":             {"http://127.0.0.1:1/rpc", func(c *Config) { c.ProxyRPCEndpoint = "http://127.0.0.1:1/rpc" }},
		"proxy_rpc_timeout":              {"6s", func(c *Config) { c.ProxyRPCTimeout = Duration(6 * time.Second) }},
		"proxy_http_headers":             {"Cookie, X-Request-Id", func(c *Config) { c.ProxyHTTPHeaders = []string{"Cookie", "X-Request-Id"} }},
		"proxy_sub_refresh_endpoint":     {"http://127.0.0.1:1/sub_refresh", func(c *Config) { c.ProxySubRefreshEndpoint = "http://127.0.0.1:1/sub_refresh" }},
		"proxy_sub_refresh_timeout":      {"7s", func(c *Config) { c.ProxySubRefreshTimeout = Duration(7 * time.Second) }},
	}
	for _, key := range scalarYAMLKeys(t) {
		if _, ok := tests[key]; !ok {
			t.Errorf("top-level setting %q has no case here", key)
		}
	}
	for key, tt := range tests {
		t.Run(key, func(t *testing.T) {
			got, want := Default(), Default()
			if err := got.Set(key, tt.value); err != nil {
				t.Fatalf("Set(%q, %q): %v", key, tt.value, err)
			}
			tt.apply(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Set(%q, %q) gave\n%+v\nwant\n%+v", key, tt.value, got, want)
			}
		})
	}
}

func TestSetUnknownKey(t *testing.T) {
	for _, key := range []string{"x", "", "Listen", "listen-addr", "max-connections", "history_size"} {
		c := Default()
		err := c.Set(key, "1")
		if err == nil || err.Error() != `unknown setting "`+key+`"` {
			t.Errorf("Set(%q) error = %v, want unknown setting %q", key, err, key)
		}
	}
}

func TestSetRefusesStructSettings(t *testing.T) {
	for _, key := range []string{"channel", "namespaces"} {
		c := Default()
		wantErr(t, c.Set(key, "history_size: 1"), `unknown setting "`+key+`"`)
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("Set(%q) changed the config", key)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"128", 128},
		{"-1", -1},
		{"1KiB", 1 << 10},
		{"64KiB", 64 << 10},
		{"64 KiB", 64 << 10},
		{"1MiB", 1 << 20},
		{"3MiB", 3 << 20},
		{"2GiB", 2 << 30},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeRefusesBadValues(t *testing.T) {
	for _, in := range []string{"", "big", "1.5MiB", "64KB", "64kib", "KiB", "0x10", "1 024", "9223372036854775808", "9007199254740992KiB", "8589934592GiB"} {
		got, err := parseSize(in)
		if err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
			continue
		}
		if want := `bad integer "` + in + `"`; !strings.Contains(err.Error(), want) {
			t.Errorf("parseSize(%q) error = %q, want it to contain %q", in, err, want)
		}
	}
}

func TestSetBadValues(t *testing.T) {
	tests := []struct{ key, value, want string }{
		{"max_connections", "lots", `bad integer "lots"`},
		{"max_message_size", "1.5MiB", `bad integer "1.5MiB"`},
		{"command_burst", "", `bad integer ""`},
		{"allow_anonymous_connect", "yes", `bad boolean "yes"`},
		{"allow_anonymous_connect", "", `bad boolean ""`},
		{"command_rate", "fast", `bad number "fast"`},
		{"command_rate", "1,5", `bad number "1,5"`},
		{"presence_ttl", "1 minute", `bad duration "1 minute"`},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			c := Default()
			wantErr(t, c.Set(tt.key, tt.value), tt.key+": ", tt.want)
			if !reflect.DeepEqual(c, Default()) {
				t.Errorf("a refused value changed the config")
			}
		})
	}
}

// ---- Validate ----

func TestDefaultValidates(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // one substring per error expected; none: valid
	}{
		{"empty listen", func(c *Config) { c.Listen = "" }, []string{"listen:"}},
		{"no admin listener is fine", func(c *Config) { c.AdminListen = "" }, nil},
		{"zero ping_interval", func(c *Config) { c.PingInterval = 0 }, []string{"ping_interval"}},
		{"negative pong_timeout", func(c *Config) { c.PongTimeout = Duration(-time.Second) }, []string{"pong_timeout"}},
		{"zero connect_timeout", func(c *Config) { c.ConnectTimeout = 0 }, []string{"connect_timeout"}},
		{"tiny max_message_size", func(c *Config) { c.MaxMessageSize = 127 }, []string{"max_message_size: 127"}},
		{"smallest max_message_size", func(c *Config) { c.MaxMessageSize = 128 }, nil},
		{"queue below message size", func(c *Config) { c.ClientQueueMaxSize = c.MaxMessageSize - 1 }, []string{"client_queue_max_size"}},
		{"queue equal to message size", func(c *Config) { c.ClientQueueMaxSize = c.MaxMessageSize }, nil},
		{"zero max_publication_size", func(c *Config) { c.MaxPublicationSize = 0 }, []string{"max_publication_size"}},
		{"zero api_batch_max_commands", func(c *Config) { c.APIMaxBatch = 0 }, []string{"api_batch_max_commands"}},
		{"zero client_stall_timeout", func(c *Config) { c.ClientStallTimeout = 0 }, []string{"client_stall_timeout"}},
		{"negative max_connections", func(c *Config) { c.MaxConnections = -1 }, []string{"max_connections"}},
		{"negative command_rate", func(c *Config) { c.CommandRate = -1 }, []string{"command_rate"}},
		{"command_rate without burst", func(c *Config) { c.CommandBurst = 0 }, []string{"command_burst"}},
		{"rate limit disabled needs no burst", func(c *Config) { c.CommandRate, c.CommandBurst = 0, 0 }, nil},
		{"zero max_subscriptions", func(c *Config) { c.MaxSubscriptions = 0 }, []string{"max_subscriptions"}},
		{"zero max_channel_length", func(c *Config) { c.MaxChannelLength = 0 }, []string{"max_channel_length"}},
		{"zero presence_ttl", func(c *Config) { c.PresenceTTL = 0 }, []string{"presence_ttl"}},
		{"zero shutdown_grace_period", func(c *Config) { c.ShutdownGracePeriod = 0 }, []string{"shutdown_grace_period", "shutdown_reconnect_window"}},
		{"negative reconnect window", func(c *Config) { c.ShutdownReconnect = Duration(-time.Second) }, []string{"shutdown_reconnect_window"}},
		{"reconnect window as long as grace", func(c *Config) { c.ShutdownReconnect = c.ShutdownGracePeriod }, []string{"shutdown_reconnect_window"}},
		{"no reconnect window", func(c *Config) { c.ShutdownReconnect = 0 }, nil},
		{"unknown log_level", func(c *Config) { c.LogLevel = "verbose" }, []string{`log_level: "verbose"`}},
		{"empty log_level", func(c *Config) { c.LogLevel = "" }, []string{"log_level"}},
		{"upper-case log_level", func(c *Config) { c.LogLevel = "WARN" }, nil},
		{"bad allowed_origins pattern", func(c *Config) { c.AllowedOrigins = []string{"https://ok.example.com", "https://[example.com"} }, []string{`allowed_origins: bad pattern "https://[example.com"`}},
		{"good allowed_origins patterns", func(c *Config) { c.AllowedOrigins = []string{"*", "https://*.example.com", "http://localhost:[0-9]*"} }, nil},
		{"negative channel.history_size", func(c *Config) { c.Channel.HistorySize = -1 }, []string{"channel.history_size"}},
		{"channel history without ttl", func(c *Config) { c.Channel.HistoryTTL = 0 }, []string{"channel.history_ttl"}},
		{"no history needs no ttl", func(c *Config) { c.Channel.HistorySize, c.Channel.HistoryTTL = 0, 0 }, nil},
		{"namespace history without ttl", func(c *Config) {
			c.Namespaces = []Namespace{{Name: "a"}, {Name: "b", ChannelOptions: ChannelOptions{HistorySize: 5}}}
		}, []string{"namespaces[1].history_ttl"}},
		{"negative namespace history_size", func(c *Config) {
			c.Namespaces = []Namespace{{Name: "a", ChannelOptions: ChannelOptions{HistorySize: -1}}}
		}, []string{"namespaces[0].history_size"}},
		{"duplicate namespace", func(c *Config) { c.Namespaces = []Namespace{{Name: "chat"}, {Name: "chat"}} }, []string{`namespaces[1].name: "chat" appears twice`}},
		{"broker nats", func(c *Config) { c.Broker = "nats" }, nil},
		{"broker nats without url", func(c *Config) { c.Broker, c.NatsURL = "nats", "" }, []string{"nats_url"}},
		{"broker nats with a wildcard prefix", func(c *Config) { c.Broker, c.NatsPrefix = "nats", "a.*" }, []string{`nats_prefix: "a.*"`}},
		{"broker nats with an empty prefix token", func(c *Config) { c.Broker, c.NatsPrefix = "nats", "a..b" }, []string{"nats_prefix"}},
		{"unknown broker", func(c *Config) { c.Broker = "kafka" }, []string{`broker: "kafka"`}},
		{"good namespaces", func(c *Config) {
			c.Namespaces = []Namespace{{Name: "chat"}, {Name: "news_feed-1"}, {Name: "h", ChannelOptions: ChannelOptions{HistorySize: 1, HistoryTTL: Duration(time.Second)}}}
		}, nil},
	}
	for _, name := range []string{"", "a:b", "a#b", "$a", "a b"} {
		tests = append(tests, struct {
			name   string
			mutate func(*Config)
			want   []string
		}{"namespace name " + name, func(c *Config) { c.Namespaces = []Namespace{{Name: "ok"}, {Name: name}} }, []string{"namespaces[1].name: " + `"` + name + `"`}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			wantErr(t, err, tt.want...)
			if got := joined(err); len(got) != len(tt.want) {
				t.Fatalf("Validate() reported %d errors, want %d: %v", len(got), len(tt.want), err)
			}
		})
	}
}

func TestValidateReportsEveryBadSetting(t *testing.T) {
	c := Default()
	c.Listen = ""
	c.MaxMessageSize = 1
	c.LogLevel = "loud"
	c.Namespaces = []Namespace{{Name: "x:y"}}
	err := c.Validate()
	wantErr(t, err, "listen:", "max_message_size", "log_level", "namespaces[0].name")
	if got := joined(err); len(got) != 4 {
		t.Fatalf("Validate() reported %d errors, want 4: %v", len(got), err)
	}
}

// ---- ChannelRules ----

func TestEffectiveMaxConnectionsExplicitWins(t *testing.T) {
	for _, n := range []int{1, 5000, 10_000_000} {
		c := Default()
		c.MaxConnections = n
		if got := c.EffectiveMaxConnections(); got != n {
			t.Errorf("max_connections %d: EffectiveMaxConnections() = %d", n, got)
		}
	}
}

func TestEffectiveMaxConnectionsFromFileLimit(t *testing.T) {
	lim, err := FileLimit()
	if err != nil {
		t.Fatalf("FileLimit: %v", err)
	}
	if lim == 0 || lim > 1<<24 {
		t.Skipf("file limit %d is outside the range used as is", lim)
	}
	reserve := max(lim/10, 100)
	want := 1
	if lim > reserve {
		want = int(lim - reserve)
	}
	c := Default()
	if got := c.EffectiveMaxConnections(); got != want {
		t.Fatalf("file limit %d: EffectiveMaxConnections() = %d, want %d", lim, got, want)
	}
}

func TestEffectiveMaxConnectionsReserve(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
			t.Errorf("restore rlimit: %v", err)
		}
	})
	tests := []struct {
		limit uint64
		want  int
	}{
		{100, 1},                        // no room beyond the reserve of 100
		{150, 50},                       // reserve 100 (more than 10%)
		{1000, 900},                     // 10% is 100
		{5000, 4500},                    // reserve 10%
		{1<<24 + 1, 1<<20 - (1<<20)/10}, // implausibly high limits count as 1<<20
	}
	for _, tt := range tests {
		if tt.limit > orig.Max {
			t.Logf("limit %d: above the hard limit %d, skipped", tt.limit, orig.Max)
			continue
		}
		r := syscall.Rlimit{Cur: tt.limit, Max: orig.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			t.Fatalf("setrlimit %d: %v", tt.limit, err)
		}
		c := Default()
		if got := c.EffectiveMaxConnections(); got != tt.want {
			t.Errorf("file limit %d: EffectiveMaxConnections() = %d, want %d", tt.limit, got, tt.want)
		}
	}
}

// ---- ReadPEM ----

func TestReadPEM(t *testing.T) {
	const pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
	file := writeFile(t, pem)
	tests := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"inline", pem, pem},
		{"path", file, pem},
	}
	for _, tt := range tests {
		got, err := ReadPEM(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("%s: ReadPEM = %q, %v; want %q, nil", tt.name, got, err, tt.want)
		}
	}
}

func TestReadPEMMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	got, err := ReadPEM(missing)
	if !errors.Is(err, os.ErrNotExist) || got != "" {
		t.Fatalf("ReadPEM(missing) = %q, %v; want \"\" and an error wrapping os.ErrNotExist", got, err)
	}
	wantErr(t, err, missing)
}

// ---- helpers ----

// writeFile writes content to a fresh file in t.TempDir and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spindle.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantErr fails unless err is non-nil and its text contains every substring.
func wantErr(t *testing.T, err error, substrings ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want one containing %q", substrings)
	}
	for _, s := range substrings {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

// joined returns the errors an errors.Join result holds (err itself otherwise).
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// scalarYAMLKeys lists the YAML keys of Config's top-level fields, less the
// structured ones (channel, namespaces) that only the file can set.
func scalarYAMLKeys(t *testing.T) []string {
	t.Helper()
	var keys []string
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		if key == "" {
			t.Fatalf("field %s has no yaml key", typ.Field(i).Name)
		}
		if key != "channel" && key != "namespaces" {
			keys = append(keys, key)
		}
	}
	return keys
}

// ---- allowed_origins as one string ----

func TestLoadAllowedOriginsFromString(t *testing.T) {
	tests := []struct {
		yaml string
		want []string
	}{
		{`allowed_origins: "*"`, []string{"*"}},
		{`allowed_origins: '*'`, []string{"*"}},
		{`allowed_origins: https://app.example.com`, []string{"https://app.example.com"}},
		{`allowed_origins: "https://a.example, https://*.b.example"`, []string{"https://a.example", "https://*.b.example"}}, // as in env and flags
		{`allowed_origins: ["*"]`, []string{"*"}},
		{"allowed_origins:\n  - https://a.example\n  - https://b.example", []string{"https://a.example", "https://b.example"}},
		{`allowed_origins: ""`, nil},
		{`allowed_origins:`, nil},
		{`allowed_origins: []`, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			c, err := Load(writeFile(t, "listen: 127.0.0.1:1\n"+tt.yaml+"\n"), nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(c.AllowedOrigins, tt.want) {
				t.Fatalf("allowed_origins = %#v, want %#v", c.AllowedOrigins, tt.want)
			}
			want := Default()
			want.Listen, want.AllowedOrigins = "127.0.0.1:1", tt.want
			if !reflect.DeepEqual(c, want) {
				t.Fatalf("Load changed more than allowed_origins: %+v", c)
			}
		})
	}
}

func TestLoadAllowedOriginsRefusesMaps(t *testing.T) {
	file := writeFile(t, "listen: 127.0.0.1:1\nallowed_origins: {a: b}\n")
	_, err := Load(file, nil)
	wantErr(t, err, file, "line 2")
	// the other errors still name their line and unknown keys are still refused
	_, err = Load(writeFile(t, "allowed_origins: \"*\"\n\nping_interval: soon\n"), nil)
	wantErr(t, err, "line 3", `bad duration "soon"`)
	_, err = Load(writeFile(t, "allowed_origins: \"*\"\nallowed_origin: x\n"), nil)
	wantErr(t, err, "line 2", "allowed_origin")
}

func TestLoadRefusesADocumentThatIsNotAMapping(t *testing.T) {
	for _, content := range []string{"hello\n", "- listen: x\n", "\n\n42\n"} {
		file := writeFile(t, content)
		_, err := Load(file, nil)
		wantErr(t, err, file, "want a mapping of settings")
		if err != nil && strings.Contains(err.Error(), "struct {") {
			t.Errorf("%q: error names an internal type: %v", content, err)
		}
	}
	if _, err := Load(writeFile(t, "~\n"), nil); err != nil {
		t.Errorf("a null document: %v", err)
	}
}

package gateway

import (
	"errors"
	"fmt"
	"time"

	"github.com/spindlehq/spindle/config"
)

// Config is what a Node uses of the gateway's settings. Package server
// builds it from a config.Config; secrets and listen addresses stay there.
type Config struct {
	AllowAnonymousConnect bool     // connect without a token as user ""
	AllowedOrigins        []string // see Node.CheckOrigin

	PingInterval   time.Duration // server ping period
	PongTimeout    time.Duration // how long a client may take to answer a ping
	ConnectTimeout time.Duration // how long after the upgrade the connect command may take

	MaxConnections     int           // sessions admitted at once
	MaxPublicationSize int           // bytes of data one publication may carry; 0: no limit
	ClientQueueMaxSize int           // bytes waiting for one client before it is a slow consumer
	ClientStallTimeout time.Duration // how long a socket may accept no bytes while data waits
	CommandRate        float64       // commands per second per connection; 0 disables
	CommandBurst       int           // burst allowance for CommandRate
	MaxSubscriptions   int           // channels one connection may join
	MaxChannelLength   int           // bytes in a channel name
	PresenceTTL        time.Duration // presence entries live this long unless refreshed
	DrainWindow        time.Duration // Shutdown spreads disconnects over this window

	Channel    config.ChannelOptions            // options of channels without a namespace
	Namespaces map[string]config.ChannelOptions // options of channels "name:rest", by name
}

// FromConfig takes the gateway's part of a whole configuration.
func FromConfig(c config.Config) Config {
	ns := make(map[string]config.ChannelOptions, len(c.Namespaces))
	for _, n := range c.Namespaces {
		ns[n.Name] = n.ChannelOptions
	}
	return Config{
		AllowAnonymousConnect: c.AllowAnonymousConnect,
		AllowedOrigins:        c.AllowedOrigins,
		PingInterval:          c.PingInterval.D(),
		PongTimeout:           c.PongTimeout.D(),
		ConnectTimeout:        c.ConnectTimeout.D(),
		MaxConnections:        c.EffectiveMaxConnections(),
		MaxPublicationSize:    c.MaxPublicationSize,
		ClientQueueMaxSize:    c.ClientQueueMaxSize,
		ClientStallTimeout:    c.ClientStallTimeout.D(),
		CommandRate:           c.CommandRate,
		CommandBurst:          c.CommandBurst,
		MaxSubscriptions:      c.MaxSubscriptions,
		MaxChannelLength:      c.MaxChannelLength,
		PresenceTTL:           c.PresenceTTL.D(),
		DrainWindow:           c.ShutdownReconnect.D(),
		Channel:               c.Channel,
		Namespaces:            ns,
	}
}

// validate names the first settings a node cannot run with. Package config
// checks a whole configuration for users; this guards the node's own use.
func (c *Config) validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	positive("ping interval", c.PingInterval)
	positive("pong timeout", c.PongTimeout)
	positive("connect timeout", c.ConnectTimeout)
	positive("client stall timeout", c.ClientStallTimeout)
	if c.MaxConnections < 1 || c.MaxSubscriptions < 1 || c.MaxChannelLength < 1 || c.ClientQueueMaxSize < 1 {
		errs = append(errs, errors.New("max connections, max subscriptions, max channel length and client queue size must be at least 1"))
	}
	if c.CommandRate > 0 && c.CommandBurst < 1 {
		errs = append(errs, errors.New("command burst must be at least 1 when a command rate is set"))
	}
	return errors.Join(errs...)
}

package proxy

import (
	"log/slog"

	"github.com/spindlehq/spindle/config"
)

// FromConfig takes the proxy's part of a whole configuration; ok is false
// when no event is proxied.
func FromConfig(c config.Config, log *slog.Logger) (cfg Config, ok bool) {
	cfg = Config{
		Endpoints: map[Event]Endpoint{
			Connect:    {c.ProxyConnectEndpoint, c.ProxyConnectTimeout.D()},
			Refresh:    {c.ProxyRefreshEndpoint, c.ProxyRefreshTimeout.D()},
			Subscribe:  {c.ProxySubscribeEndpoint, c.ProxySubscribeTimeout.D()},
			Publish:    {c.ProxyPublishEndpoint, c.ProxyPublishTimeout.D()},
			RPC:        {c.ProxyRPCEndpoint, c.ProxyRPCTimeout.D()},
			SubRefresh: {c.ProxySubRefreshEndpoint, c.ProxySubRefreshTimeout.D()},
		},
		Headers: c.ProxyHTTPHeaders,
		Logger:  log,
	}
	for _, ep := range cfg.Endpoints {
		ok = ok || ep.URL != ""
	}
	return cfg, ok
}

package server

import (
	"context"
	"encoding/json"

	"github.com/spindlehq/spindle/admin"
	"github.com/spindlehq/spindle/gateway"
)

// adminPage is what the admin web page reads from this server and does on
// it: the node's counters and channels, the admission state, and a publish
// through the node as the server API would do it.
func (s *Server) adminPage() *admin.Page {
	return &admin.Page{
		Stats: func() admin.Stats {
			info := s.Node.Info()
			m := s.Node.Metrics()
			state, why := s.adm.State()
			return admin.Stats{
				Version: info.Version, UptimeSeconds: info.Uptime,
				Connections: info.NumClients, MaxConnections: info.MaxClients, Users: info.NumUsers,
				Subscriptions: info.NumSubs, Channels: info.NumChannels,
				Publications: m["spindle_publications_total"], Deliveries: m["spindle_deliveries_total"],
				Goroutines: info.Goroutines, Admission: state.String(), AdmissionWhy: why, Draining: info.Draining,
			}
		},
		Channels: func() map[string]int { return s.Node.Channels("") },
		Publish: func(ctx context.Context, ch string, data json.RawMessage) error {
			_, err := s.Node.Publish(ctx, ch, data, gateway.PublishOptions{})
			if e := gateway.AsError(err); err != nil && e.Code != gateway.ErrInternal.Code && !e.Temporary {
				return &admin.RequestError{Err: err}
			}
			return err
		},
	}
}

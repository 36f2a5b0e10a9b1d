package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// drain stops admitting sessions and disconnects every client with 3001
// "shutdown", spread at random over the drain window so they do not all
// reconnect elsewhere at once. It returns when every session is gone or
// ctx ends; when ctx ends first, those not yet told are told at once.
func (n *Node) drain(ctx context.Context) error {
	if n.draining.Swap(true) {
		return fmt.Errorf("drain: already started")
	}
	var all []*session
	n.sessions.each(func(s *session) { all = append(all, s) })
	if n.sessions.count() == 0 {
		n.goneOnce.Do(func() { close(n.allGone) })
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	window := n.cfg.DrainWindow
	n.log.Info("draining clients", "clients", len(all), "window", window)
	const steps = 50
	per := max((len(all)+steps-1)/steps, 1)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < len(all); i += per {
		due := start.Add(time.Duration(float64(window) * float64(i) / float64(len(all))))
		if d := time.Until(due); d > 0 && ctx.Err() == nil {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		for _, s := range all[i:min(i+per, len(all))] {
			s.close(DisconnectShutdown, false)
		}
	}
	// Sessions that opened while the list above was taken.
	n.sessions.each(func(s *session) { s.close(DisconnectShutdown, false) })
	select {
	case <-n.allGone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: %d clients left: %w", n.sessions.count(), ctx.Err())
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/spindlehq/spindle/config"
)

// consistency checks that every view of who is subscribed agrees, once the
// node is quiet: each session's subs are all live and each is in the hub;
// the hub holds nothing else; its counters match; presence and the
// broker's channel list match the hub. It returns the live subscribers of
// each channel by client id.
func consistency(t *testing.T, tn *testNode) map[string][]string {
	t.Helper()
	// A reply can reach the client while its handler still ends the
	// subscription (presence, leave): wait for the node to settle first.
	waitFor(t, "subscriptions to settle", func() bool { return settled(tn) })
	bySession := map[*session]map[string]*subscription{}
	total := 0
	tn.sessions.each(func(s *session) {
		s.mu.Lock()
		defer s.mu.Unlock()
		m := map[string]*subscription{}
		for _, sub := range s.subs {
			if sub.state != subLive || !sub.live.Load() {
				t.Errorf("client %s: subscription to %q left in state %d", s.id, sub.channel, sub.state)
			}
			if m[sub.channel] != nil {
				t.Errorf("client %s: two subscriptions to %q", s.id, sub.channel)
			}
			m[sub.channel] = sub
			total++
		}
		bySession[s] = m
	})
	inHub := 0
	live := map[string][]string{}
	for i := range tn.hub.shards {
		sh := &tn.hub.shards[i]
		sh.mu.RLock()
		for ch, m := range sh.channels {
			if len(m) == 0 {
				t.Errorf("hub keeps channel %q with no subscriber", ch)
			}
			for s, sub := range m {
				inHub++
				if bySession[s][ch] != sub {
					t.Errorf("hub has client %s in %q, the session does not", s.id, ch)
				}
				live[ch] = append(live[ch], s.id)
			}
		}
		sh.mu.RUnlock()
	}
	if inHub != total || tn.hub.numSubs() != total || tn.Info().NumSubs != total {
		t.Errorf("sessions hold %d subscriptions, hub entries %d, hub count %d, info %d", total, inHub, tn.hub.numSubs(), tn.Info().NumSubs)
	}
	if got := metricValue(t, tn, "spindle_subscriptions"); got != float64(total) {
		t.Errorf("spindle_subscriptions = %v, want %d", got, total)
	}
	brokerChans := tn.mem.Channels()
	slices.Sort(brokerChans)
	var hubChans []string
	for ch := range live {
		hubChans = append(hubChans, ch)
		slices.Sort(live[ch])
	}
	slices.Sort(hubChans)
	if !slices.Equal(brokerChans, hubChans) {
		t.Errorf("broker subscribed to %v, hub has %v", brokerChans, hubChans)
	}
	for _, ch := range hubChans {
		rules, _ := tn.rules.resolve(ch)
		if !rules.Presence {
			continue
		}
		p, err := tn.mem.Presence(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for id := range p {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, live[ch]) {
			t.Errorf("presence of %q is %v, subscribers %v", ch, ids, live[ch])
		}
	}
	return live
}

// settled reports whether no subscription is between states.
func settled(tn *testNode) bool {
	ok := true
	tn.sessions.each(func(s *session) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sub := range s.subs {
			ok = ok && sub.state == subLive
		}
	})
	return ok
}

// checkViews compares what each client was told with what the node holds.
func checkViews(t *testing.T, clients []*tclient, live map[string][]string, ch string) {
	t.Helper()
	for _, c := range clients {
		c.sync()
		sub, _, violations := c.state(ch)
		for _, v := range violations {
			t.Errorf("client %s: %s", c.id, v)
		}
		if want := slices.Contains(live[ch], c.id); sub != want {
			t.Errorf("client %s believes subscribed=%v to %q, node says %v", c.id, sub, ch, want)
		}
	}
}

// The client's subscribe, the server API's subscribe and unsubscribe, and
// connections that join through their token and close at once, all on the
// same channel at the same time, end with exactly the subscriptions that
// should exist: one per session at most, the hub, presence, the broker and
// the counters agreeing, and each client told exactly what it holds.
func TestSubscribeRace(t *testing.T) {
	tn := startTestNode(t, func(c *Config) { c.CommandRate = 0 })
	const (
		ch       = "race"
		clients  = 6
		rounds   = 3
		perRound = 60
		churners = 20
	)
	ctx := context.Background()
	var cs []*tclient
	for range clients {
		c := dialClient(t, tn.url)
		c.connect(connectToken(t, "u"))
		cs = append(cs, c)
	}
	for round := range rounds {
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Go(func() {
				for range perRound {
					// Already subscribed (by the API), or the API's
					// unsubscribe still ending (temporary): both are fine.
					r := c.cmd("subscribe", map[string]any{"channel": ch})
					if code := errorCode(r); r == nil || (code != 0 && code != ErrAlreadySubscribed.Code && code != ErrInternal.Code) {
						t.Errorf("client subscribe: %s", r["error"])
						return
					}
					c.cmd("unsubscribe", map[string]any{"channel": ch})
				}
			})
		}
		for range 2 {
			wg.Go(func() {
				for range perRound {
					if _, err := tn.Subscribe(ctx, "u", "", ch); err != nil {
						t.Errorf("API subscribe: %v", err)
						return
					}
					tn.Unsubscribe(ctx, "u", "", ch)
				}
			})
		}
		wg.Go(func() {
			for range churners {
				c := dialClient(t, tn.url)
				c.connect(connectToken(t, "u", ch))
				c.close()
			}
		})
		wg.Wait()
		waitFor(t, "churning sessions to be cleaned up", func() bool { return tn.NumClients() == clients })
		live := consistency(t, tn)
		checkViews(t, cs, live, ch)
		if t.Failed() {
			t.Fatalf("round %d inconsistent", round)
		}
	}

	// From a settled state: every session joins once, one publication
	// reaches each exactly once, and leaving leaves nothing behind.
	if n, err := tn.Subscribe(ctx, "u", "", ch); err != nil {
		t.Fatal(err)
	} else if _, err := tn.Subscribe(ctx, "u", "", ch); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("API subscribe joined %d sessions", n)
	}
	live := consistency(t, tn)
	if len(live[ch]) != clients {
		t.Fatalf("%d subscribers after API subscribe, want %d", len(live[ch]), clients)
	}
	checkViews(t, cs, live, ch)
	before := make([]int, clients)
	for i, c := range cs {
		_, before[i], _ = c.state(ch)
	}
	if _, err := tn.Publish(ctx, ch, json.RawMessage(`{"n":1}`), PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		c.sync()
		if _, pubs, _ := c.state(ch); pubs != before[i]+1 {
			t.Errorf("client %s got %d copies of one publication", c.id, pubs-before[i])
		}
	}
	if n := tn.Unsubscribe(ctx, "u", "", ch); n != clients {
		t.Errorf("API unsubscribe left %d sessions, want %d", n, clients)
	}
	live = consistency(t, tn)
	if len(live) != 0 || tn.hub.numChannels() != 0 {
		t.Errorf("after unsubscribing everyone: %v, %d channels in the hub", live, tn.hub.numChannels())
	}
	checkViews(t, cs, live, ch)
}

// After the server unsubscribes a client, it can subscribe again, and the
// counts follow (a stale entry once made resubscribing fail).
func TestResubscribeAfterServerUnsubscribe(t *testing.T) {
	tn := startTestNode(t, nil)
	c := dialClient(t, tn.url)
	c.connect(connectToken(t, "7"))
	for i := range 3 {
		if r := c.cmd("subscribe", map[string]any{"channel": "news"}); r["error"] != nil {
			t.Fatalf("subscribe %d: %s", i, r["error"])
		}
		if n := tn.Unsubscribe(context.Background(), "7", "", "news"); n != 1 {
			t.Fatalf("server unsubscribe %d: %d sessions", i, n)
		}
		c.sync()
		if live := consistency(t, tn); len(live) != 0 {
			t.Fatalf("after unsubscribe %d: %v", i, live)
		}
	}
	if _, _, v := c.state("news"); len(v) != 0 {
		t.Fatal(v)
	}
}

// The limit on channels per connection holds against the API and the
// client at once: reservation and check are one step.
func TestSubscriptionLimitHoldsConcurrently(t *testing.T) {
	tn := startTestNode(t, func(c *Config) { c.MaxSubscriptions = 3 })
	c := dialClient(t, tn.url)
	c.connect(connectToken(t, "9"))
	var wg sync.WaitGroup
	for i := range 8 {
		ch := fmt.Sprintf("c%d", i)
		if i%2 == 0 {
			wg.Go(func() { c.cmd("subscribe", map[string]any{"channel": ch}) })
		} else {
			wg.Go(func() { _, _ = tn.Subscribe(context.Background(), "9", "", ch) })
		}
	}
	wg.Wait()
	c.sync()
	if got := tn.hub.numSubs(); got != 3 {
		t.Fatalf("%d subscriptions with a limit of 3", got)
	}
	consistency(t, tn)
}

// A second subscription of one session to one channel is refused by the
// hub itself, and removing needs the subscription that is there.
func TestHubRefusesDuplicates(t *testing.T) {
	h := newHub()
	s := &session{id: "s"}
	a := &subscription{channel: "x"}
	if first, err := h.add(s, a); !first || err != nil {
		t.Fatalf("first add: first=%v err=%v", first, err)
	}
	if _, err := h.add(s, &subscription{channel: "x"}); err == nil || AsError(err) != ErrAlreadySubscribed {
		t.Fatalf("duplicate add: %v", err)
	}
	if h.numSubs() != 1 {
		t.Fatalf("count %d after a refused duplicate", h.numSubs())
	}
	if h.remove(s, &subscription{channel: "x"}) || h.numSubs() != 1 {
		t.Fatal("removed with a subscription that is not the one held")
	}
	if !h.remove(s, a) || h.numSubs() != 0 || h.numChannels() != 0 {
		t.Fatal("remove of the held subscription")
	}
}

// The token's channels claim goes through the same path: its limit, and
// the reply carrying results before any publication.
func TestTokenChannelsShareThePath(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.MaxSubscriptions = 2
		c.Namespaces = map[string]config.ChannelOptions{"ns": {}}
	})
	c := dialClient(t, tn.url)
	r := c.connect(connectToken(t, "5", "a", "b", "c", "nope:x", "ns:1"))
	var res struct {
		Subs map[string]json.RawMessage `json:"subs"`
	}
	_ = json.Unmarshal(r["connect"], &res)
	if len(res.Subs) != 2 {
		t.Fatalf("connect reply subscribed %d channels with a limit of 2: %v", len(res.Subs), res.Subs)
	}
	c.sync()
	if live := consistency(t, tn); len(live) != 2 {
		t.Fatalf("live channels %v", live)
	}
}

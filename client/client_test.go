package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/auth"
	"github.com/spindlehq/spindle/client"
	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/gateway"
	"github.com/spindlehq/spindle/server"
)

const secret = "client-test-secret"

func startServer(t *testing.T) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.APIKey = "key"
	cfg.TokenHMACSecret = secret
	cfg.Channel.AllowPublishForSubscriber = true
	srv, err := server.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func dial(t *testing.T, srv *server.Server, user string, cfg client.Config) *client.Client {
	t.Helper()
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: user}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL = srv.WebSocketURL()
	cfg.Token = tok
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPublishSubscribeHistoryPresence(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var mu sync.Mutex
	var got []string
	pubs := make(chan struct{}, 10)
	sub := dial(t, srv, "alice", client.Config{
		// Subscribing from a second source address exercises LocalAddr.
		LocalAddr: net.IPv4(127, 0, 0, 2),
		OnPublication: func(ch string, p *protocol.Publication) {
			mu.Lock()
			got = append(got, ch+":"+string(p.Data))
			mu.Unlock()
			pubs <- struct{}{}
		},
	})
	if sub.ID() == "" {
		t.Fatal("no client id")
	}
	if _, err := sub.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, srv, "bob", client.Config{})
	if _, err := pub.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{`{"n":1}`, `{"n":2}`} {
		if err := pub.Publish(ctx, "news", []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-pubs:
		case <-ctx.Done():
			t.Fatal("publications not delivered")
		}
	}
	mu.Lock()
	if len(got) != 2 || got[0] != `news:{"n":1}` || got[1] != `news:{"n":2}` {
		t.Fatalf("got %q", got)
	}
	mu.Unlock()

	h, err := sub.History(ctx, "news", 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Publications) != 2 || h.Publications[1].Offset != 2 || h.Epoch == "" {
		t.Fatalf("history %+v", h)
	}
	p, err := sub.Presence(ctx, "news")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Presence) != 2 {
		t.Fatalf("presence has %d clients, want 2", len(p.Presence))
	}
	if err := sub.Unsubscribe(ctx, "news"); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: "forged"})
	var de *client.DisconnectError
	if !errors.As(err, &de) || de.Code != 3500 {
		t.Fatalf("bad token: got %v, want disconnect 3500", err)
	}

	c := dial(t, srv, "carol", client.Config{})
	err = c.Publish(ctx, "news", []byte(`{}`))
	var se *client.Error
	if !errors.As(err, &se) || se.Code != 103 {
		t.Fatalf("publish without subscription: got %v, want error 103", err)
	}
	c.Close()
	if err := c.Publish(ctx, "news", []byte(`{}`)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("after Close: got %v, want ErrClosed", err)
	}
}

func TestServerDisconnectIsReported(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv, "dave", client.Config{})
	if n := srv.Node.Disconnect("dave", "", gateway.Disconnect{Code: 4000, Reason: "bye"}); n != 1 {
		t.Fatalf("disconnected %d sessions, want 1", n)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not disconnected")
	}
	var de *client.DisconnectError
	if !errors.As(c.Err(), &de) || de.Code != 4000 {
		t.Fatalf("got %v, want disconnect 4000", c.Err())
	}
}

package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

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
	srv, err := server.Run(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
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

// eachCarrier runs f with a reader goroutine per connection and on an event loop.
func eachCarrier(t *testing.T, f func(t *testing.T, loop *client.Loop)) {
	t.Run("goroutine", func(t *testing.T) { f(t, nil) })
	t.Run("loop", func(t *testing.T) {
		loop, err := client.NewLoop(2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(loop.Stop)
		f(t, loop)
	})
}

func TestPublishSubscribeHistoryPresence(t *testing.T) { eachCarrier(t, testPublishSubscribe) }
func TestErrors(t *testing.T)                          { eachCarrier(t, testErrors) }
func TestServerDisconnectIsReported(t *testing.T)      { eachCarrier(t, testServerDisconnect) }

func testPublishSubscribe(t *testing.T, loop *client.Loop) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var mu sync.Mutex
	var got []string
	pubs := make(chan struct{}, 10)
	sub := dial(t, srv, "alice", client.Config{
		Loop: loop,
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
	pub := dial(t, srv, "bob", client.Config{Loop: loop})
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

func testErrors(t *testing.T, loop *client.Loop) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL(), Token: "forged", Loop: loop})
	var de *client.DisconnectError
	if !errors.As(err, &de) || de.Code != 3500 {
		t.Fatalf("bad token: got %v, want disconnect 3500", err)
	}

	c := dial(t, srv, "carol", client.Config{Loop: loop})
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

func testServerDisconnect(t *testing.T, loop *client.Loop) {
	srv := startServer(t)
	c := dial(t, srv, "dave", client.Config{Loop: loop})
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

// Pushes of every WebSocket length form (7-bit, 16-bit, 64-bit) arrive whole.
func TestLargePushes(t *testing.T) {
	eachCarrier(t, func(t *testing.T, loop *client.Loop) {
		srv := startServer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got := make(chan []byte, 4)
		c := dial(t, srv, "erin", client.Config{Loop: loop, OnPublication: func(_ string, p *protocol.Publication) {
			got <- append([]byte(nil), p.Data...)
		}})
		if _, err := c.Subscribe(ctx, "big", client.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{10, 1000, 60000, 200000} {
			data := []byte(`"` + strings.Repeat("y", n) + `"`)
			if _, err := srv.Node.Publish(ctx, "big", data, gateway.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
			select {
			case d := <-got:
				if string(d) != string(data) {
					t.Fatalf("%d bytes: got %d bytes back", n, len(d))
				}
			case <-ctx.Done():
				t.Fatalf("%d bytes: not delivered", n)
			}
		}
	})
}

// With Protobuf (set, or asked for by the URL as Centrifugo's endpoints
// accept) the client speaks binary frames with the gateway: connect,
// subscribe, publications from a JSON client, history, presence, errors
// and a push in every WebSocket length form.
func TestProtobuf(t *testing.T) {
	eachCarrier(t, func(t *testing.T, loop *client.Loop) {
		srv := startServer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got := make(chan []byte, 8)
		pb := dial(t, srv, "pat", client.Config{Loop: loop, Protobuf: true, OnPublication: func(_ string, p *protocol.Publication) {
			got <- append([]byte(nil), p.Data...)
		}})
		if pb.ID() == "" {
			t.Fatal("no client id")
		}
		tok, _ := auth.MintConnect(secret, auth.ConnectClaims{UserID: "rae"}, time.Hour)
		q, err := client.Dial(ctx, client.Config{URL: srv.WebSocketURL() + "?format=protobuf", Token: tok, Loop: loop})
		if err != nil {
			t.Fatalf("dial with ?format=protobuf: %v", err)
		}
		defer q.Close()
		if _, err := pb.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		js := dial(t, srv, "sam", client.Config{Loop: loop})
		if _, err := js.Subscribe(ctx, "news", client.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := js.Publish(ctx, "news", []byte(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := pb.Publish(ctx, "news", []byte(`{"n":2}`)); err != nil {
			t.Fatal(err)
		}
		want := []string{`{"n":1}`, `{"n":2}`}
		for _, n := range []int{1000, 60000, 200000} {
			data := `"` + strings.Repeat("y", n) + `"`
			if _, err := srv.Node.Publish(ctx, "news", []byte(data), gateway.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
			want = append(want, data)
		}
		for i, w := range want {
			select {
			case d := <-got:
				if string(d) != w {
					t.Fatalf("publication %d: got %d bytes %.40q, want %d bytes", i, len(d), d, len(w))
				}
			case <-ctx.Done():
				t.Fatalf("publication %d (%d bytes) not delivered", i, len(w))
			}
		}
		h, err := pb.History(ctx, "news", 10, nil)
		if err != nil || len(h.Publications) != 5 || string(h.Publications[0].Data) != `{"n":1}` || h.Epoch == "" {
			t.Fatalf("history %+v %v", h, err)
		}
		if p, err := pb.Presence(ctx, "news"); err != nil || len(p.Presence) != 2 || p.Presence[pb.ID()].User != "pat" {
			t.Fatalf("presence %+v %v", p, err)
		}
		var se *client.Error
		if err := q.Publish(ctx, "news", []byte(`{}`)); !errors.As(err, &se) || se.Code != 103 {
			t.Fatalf("publish without subscription: got %v, want error 103", err)
		}
	})
}

// A client asking for Protobuf refuses a server that does not name the
// subprotocol in its upgrade answer, rather than speak past it.
func TestProtobufRefusedByJSONOnlyServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil) // offers no subprotocol
		if err == nil {
			_, _, _ = ws.ReadMessage()
			_ = ws.Close()
		}
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = client.Dial(ctx, client.Config{URL: "ws://" + ln.Addr().String() + "/", Protobuf: true})
	if err == nil || !strings.Contains(err.Error(), "did not accept subprotocol") {
		t.Fatalf("dial: %v", err)
	}
}

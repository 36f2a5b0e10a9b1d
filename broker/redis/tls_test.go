package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/spindlehq/spindle/broker"
	"github.com/spindlehq/spindle/broker/brokertest"
	"github.com/spindlehq/spindle/broker/redis/redistest"
)

// A Redis that speaks only TLS: with its CA the broker publishes and
// delivers; without TLS it is not healthy; with a CA that did not sign the
// server's certificate it is not healthy either.
func TestTLS(t *testing.T) {
	srv := redistest.StartTLS(t)
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file does not parse")
	}
	b := New(Options{Address: srv.Addr(), Prefix: "tls", Timeout: 2 * time.Second, TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	t.Cleanup(func() { _ = b.Close() })
	r := brokertest.NewRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(); err != nil {
		t.Fatalf("healthy over TLS: %v", err)
	}
	for range 3 {
		if _, err := b.Publish(ctx, "c", json.RawMessage(`{}`), broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(r.Delivered("c"), []uint64{1, 2, 3}) {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v over TLS, want [1 2 3]", r.Delivered("c"))
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}

	plain := New(Options{Address: srv.Addr(), Prefix: "tls", Timeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = plain.Close() })
	if err := plain.Healthy(); err == nil {
		t.Fatal("a plain-TCP broker is healthy against a TLS-only Redis")
	}
	other := New(Options{Address: srv.Addr(), Prefix: "tls", Timeout: 500 * time.Millisecond, TLS: &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}})
	t.Cleanup(func() { _ = other.Close() })
	if err := other.Healthy(); err == nil {
		t.Fatal("healthy with a CA that did not sign the server's certificate")
	}
}

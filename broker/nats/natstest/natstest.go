// Package natstest runs a real nats-server, in this process, for tests.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an in-process nats-server on a loopback port, with JetStream
// storing in a temporary directory that outlives a restart.
type Server struct {
	t        testing.TB
	port     int
	dir      string
	noStream bool
	srv      *server.Server // nil while stopped
}

// Start runs a nats-server with JetStream on a free loopback port and waits
// until it accepts connections; t.Cleanup shuts it down.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartCore is Start without JetStream: core NATS only.
func StartCore(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, noJetStream bool) *Server {
	s := &Server{t: t, port: server.RANDOM_PORT, dir: t.TempDir(), noStream: noJetStream}
	s.Restart()
	s.port = s.srv.Addr().(*net.TCPAddr).Port // a restart comes back on the same port
	t.Cleanup(s.Stop)
	return s
}

// URL is the nats:// address of the server.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Restart starts the server again after Stop, on the same port and store,
// and waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	if s.srv != nil {
		s.t.Fatal("natstest: Restart while running")
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "spindle-test", Host: "127.0.0.1", Port: s.port, NoLog: true, NoSigs: true,
		JetStream: !s.noStream, StoreDir: s.dir,
	})
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatal("natstest: nats-server not ready within 10s")
	}
	s.srv = srv
}

// Stop shuts the server down and waits until it has. It may be called more
// than once.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

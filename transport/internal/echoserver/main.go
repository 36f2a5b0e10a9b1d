// Command echoserver is a WebSocket echo server on the transport package,
// for the Autobahn|Testsuite fuzzing client (scripts/autobahn.sh). It is
// not part of the gateway: the gateway's protocol layer would reject the
// suite's payloads, so the suite tests the transport layer itself.
//
//	echoserver -addr 127.0.0.1:9001 [-path /]
//
// Every message is sent back with its opcode (text or binary). It prints
// "listening on ADDR" once it accepts connections and stops on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spindlehq/spindle/transport"
)

type echo struct{}

func (echo) OnOpen(*transport.Conn)                {}
func (echo) OnClose(*transport.Conn, error)        {}
func (echo) OnMessage(c *transport.Conn, d []byte) { echo{}.OnMessageOp(c, transport.OpText, d) }
func (echo) OnMessageOp(c *transport.Conn, op byte, d []byte) {
	_ = c.Write(transport.AppendFrame(make([]byte, 0, transport.FrameSize(len(d))), op, d))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address")
	path := flag.String("path", "/", "WebSocket endpoint")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := transport.New(transport.Config{
		Addr:           *addr,
		Path:           *path,
		MaxMessageSize: 16 << 20, // the suite's 9.* cases send up to 16 MiB
		IdleTimeout:    time.Minute,
		Logger:         log,
	}, echo{})
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", s.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(sctx)
}

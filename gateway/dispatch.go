package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/spindlehq/spindle/transport"
)

// commandTimeout bounds the broker calls one client command may make.
const commandTimeout = 10 * time.Second

// maxFrameCommands bounds the commands one frame may carry.
const maxFrameCommands = 100

// handleFrame decodes and runs every command of one client frame.
func (s *session) handleFrame(data []byte) {
	s.hb.touch()
	s.node.metrics.bytesIn.Add(float64(len(data)))
	enc := s.enc()
	if len(data) == 0 || enc != encProtobuf && len(bytes.TrimSpace(data)) == 0 {
		return
	}
	if isPong(enc, data) {
		s.hb.pong()
		return
	}
	cmds, err := decodeFrame(enc, data)
	if err != nil {
		s.node.log.Info("malformed client frame", "client", s.id, "remote", s.conn.RemoteAddr(), "encoding", enc, "err", err)
		s.node.metrics.commandErrors.WithLabelValues("decode").Inc()
		s.close(DisconnectBadRequest, false)
		return
	}
	if s.queueCommands(cmds) {
		return
	}
	s.runCommands(cmds)
}

// runCommands runs cmds in order, on the event loop or on the command
// runner; it returns false when the connection is being closed.
func (s *session) runCommands(cmds []*protocol.Command) bool {
	for i, cmd := range cmds {
		if s.deferWhileConnecting(cmds[i:]) {
			return true
		}
		if !s.handleCommand(cmd) {
			return false
		}
	}
	return true
}

// isPong reports whether a frame is one empty command, the answer to a
// ping: an idle node gets one per client per ping interval, and decoding it
// would be most of the garbage such a node makes.
func isPong(enc encoding, data []byte) bool {
	if enc == encProtobuf {
		return len(data) == 1 && data[0] == 0 // a zero length prefix: an empty Command
	}
	return string(data) == "{}" // what the SDKs send; anything else goes through the decoder
}

// decodeFrame splits a client frame into its commands: newline-delimited
// in JSON, each prefixed with its varint length in Protobuf. A JSON frame
// is copied first: that decoder does not copy strings, the transport reuses
// data after the handler returns, and channel names live on. The Protobuf
// decoder copies what it decodes.
func decodeFrame(enc encoding, data []byte) ([]*protocol.Command, error) {
	var dec protocol.CommandDecoder
	if enc == encProtobuf {
		dec = protocol.NewProtobufCommandDecoder(data)
	} else {
		dec = protocol.NewJSONCommandDecoder(bytes.Clone(data))
	}
	var cmds []*protocol.Command
	for {
		cmd, err := dec.Decode()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("command %d: %w", len(cmds)+1, err)
		}
		// The Protobuf decoder returns the last command with io.EOF; io.EOF
		// alone means bytes are left that are no length prefix.
		if enc == encProtobuf && cmd == nil && len(data) > 0 {
			return nil, fmt.Errorf("command %d: truncated or invalid length prefix", len(cmds)+1)
		}
		if cmd != nil {
			cmds = append(cmds, cmd)
			if len(cmds) > maxFrameCommands {
				return nil, fmt.Errorf("more than %d commands in one frame", maxFrameCommands)
			}
		}
		if err != nil { // io.EOF: that was the last command
			return cmds, nil
		}
	}
}

// outcome is what a command handler decided: a reply to queue, nothing
// (the handler queued its own reply, in order with pushes), or a disconnect.
type outcome struct {
	reply      *protocol.Reply
	disconnect *Disconnect
}

func replied(r *protocol.Reply) outcome { return outcome{reply: r} }
func failed(err error) outcome          { return outcome{reply: &protocol.Reply{Error: protoError(err)}} }
func disconnect(d Disconnect) outcome   { return outcome{disconnect: &d} }
func (o outcome) queuedByHandler() bool { return o.reply == nil && o.disconnect == nil }

// handleCommand runs one command and queues its reply. It returns false when
// the connection is being closed.
func (s *session) handleCommand(cmd *protocol.Command) bool {
	method := commandMethod(cmd)
	if method == "pong" {
		s.hb.pong()
		return true
	}
	n := s.node
	n.metrics.commandsIn.WithLabelValues(method).Inc()
	start := time.Now()
	defer func() { n.metrics.commandDuration.WithLabelValues(method).Observe(time.Since(start).Seconds()) }()

	if method != "connect" && !s.authed() {
		n.log.Info("command before connect", "client", s.id, "method", method)
		s.close(DisconnectBadRequest, false)
		return false
	}
	if method != "connect" && !s.allowCommand() {
		n.metrics.commandErrors.WithLabelValues("rate").Inc()
		return s.reply(cmd.Id, &protocol.Reply{Error: protoError(ErrTooManyRequests)})
	}
	if cmd.Id == 0 && method != "send" {
		n.log.Info("command without id", "client", s.id, "method", method)
		s.close(DisconnectBadRequest, false)
		return false
	}

	if s.enc() == encProtobuf && !jsonData(cmd) { // JSON frames carry JSON data by construction
		n.log.Info("command data is not JSON", "client", s.id, "method", method)
		n.metrics.commandErrors.WithLabelValues(method).Inc()
		if method == "send" {
			return true
		}
		return s.reply(cmd.Id, &protocol.Reply{Error: protoError(ErrBadRequest)})
	}

	ctx := n.deadlines.context()
	var out outcome
	switch method {
	case "connect":
		out = s.handleConnect(ctx, cmd.Id, cmd.Connect)
	case "subscribe":
		out = s.handleSubscribe(ctx, cmd.Id, cmd.Subscribe)
	case "unsubscribe":
		out = s.handleUnsubscribe(ctx, cmd.Id, cmd.Unsubscribe)
	case "publish":
		out = s.handlePublish(ctx, cmd.Id, cmd.Publish)
	case "presence":
		out = s.handlePresence(ctx, cmd.Presence)
	case "presence_stats":
		out = s.handlePresenceStats(ctx, cmd.PresenceStats)
	case "history":
		out = s.handleHistory(ctx, cmd.History)
	case "refresh":
		out = s.handleRefresh(cmd.Refresh)
	case "sub_refresh":
		out = s.handleSubRefresh(cmd.SubRefresh)
	case "rpc":
		out = s.handleRPC(cmd.Id, cmd.Rpc)
	case "ping":
		out = replied(&protocol.Reply{Ping: &protocol.PingResult{}})
	case "send":
		return true // asynchronous messages have no handler here
	default:
		out = failed(ErrMethodNotFound)
	}
	return s.conclude(method, cmd.Id, out)
}

// conclude carries out a command's outcome: it queues the reply, or
// disconnects. A command the backend is asked about (gateway/proxy) is
// finished by the proxy worker with the backend's answer. It returns false
// when the connection is being closed.
func (s *session) conclude(method string, id uint32, out outcome) bool {
	n := s.node
	switch {
	case out.disconnect != nil:
		d := *out.disconnect
		n.log.Info("disconnecting client", "client", s.id, "user", s.identity(), "method", method, "code", d.Code, "reason", d.Reason)
		s.close(d, false)
		return false
	case out.queuedByHandler():
		return true
	}
	if out.reply.Error != nil {
		n.metrics.commandErrors.WithLabelValues(method).Inc()
	}
	return s.reply(id, out.reply)
}

// reply queues rep as the answer to command id. A unidirectional session
// gets no replies but its connect push; an error, which only its connect
// can get, closes it (uniRefusal).
func (s *session) reply(id uint32, rep *protocol.Reply) bool {
	rep.Id = id
	if s.enc().uni() && rep.Error != nil {
		d := uniRefusal(rep.Error)
		s.node.log.Info("unidirectional connect refused", "client", s.id, "error", rep.Error.Message, "code", d.Code)
		s.close(d, false)
		return false
	}
	if rep.Connect != nil && s.emu != nil {
		rep.Connect.Session = s.emu.id // the emulation's requests name the session by it
	}
	frame, err := encodeReply(s.enc(), rep)
	if err != nil {
		s.node.log.Error("encode reply", "client", s.id, "err", err)
		s.close(DisconnectServerError, false)
		return false
	}
	if frame == nil {
		return true
	}
	return s.enqueue(frame)
}

// jsonData reports whether the data a command carries, if any, is JSON.
// Spindle relays data as JSON, to the backend and to JSON subscribers, so
// a Protobuf session's data must be JSON too (Centrifugo's b64data for
// binary payloads is not supported).
func jsonData(c *protocol.Command) bool {
	var data []byte
	switch {
	case c.Connect != nil:
		data = c.Connect.Data
	case c.Subscribe != nil:
		data = c.Subscribe.Data
	case c.Publish != nil:
		data = c.Publish.Data
	case c.Rpc != nil:
		data = c.Rpc.Data
	case c.Send != nil:
		data = c.Send.Data
	}
	return len(data) == 0 || json.Valid(data)
}

func commandMethod(c *protocol.Command) string {
	switch {
	case c.Connect != nil:
		return "connect"
	case c.Subscribe != nil:
		return "subscribe"
	case c.Unsubscribe != nil:
		return "unsubscribe"
	case c.Publish != nil:
		return "publish"
	case c.Presence != nil:
		return "presence"
	case c.PresenceStats != nil:
		return "presence_stats"
	case c.History != nil:
		return "history"
	case c.Ping != nil:
		return "ping"
	case c.Send != nil:
		return "send"
	case c.Rpc != nil:
		return "rpc"
	case c.Refresh != nil:
		return "refresh"
	case c.SubRefresh != nil:
		return "sub_refresh"
	case c.Id == 0:
		return "pong"
	}
	return "unknown"
}

// allowCommand takes one token from the connection's command bucket.
func (s *session) allowCommand() bool {
	rate := s.node.cfg.CommandRate
	if rate <= 0 {
		return true
	}
	now := transport.Mono()
	burst := float32(s.node.cfg.CommandBurst)
	if s.tokensAt == 0 {
		s.tokens = burst
	} else {
		s.tokens = min(s.tokens+float32(float64(now-s.tokensAt)/float64(time.Second)*rate), burst)
	}
	s.tokensAt = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

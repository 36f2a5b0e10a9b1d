package floor

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// commands runs the newline-separated commands of one text frame.
func (c *conn) commands(payload []byte) error {
	for len(payload) > 0 {
		line := payload
		if i := bytes.IndexByte(payload, '\n'); i >= 0 {
			line, payload = payload[:i], payload[i+1:]
		} else {
			payload = nil
		}
		if err := c.command(bytes.TrimSpace(line)); err != nil {
			return err
		}
	}
	return nil
}

// command answers one command: connect and subscribe with fixed replies,
// an empty command (a pong) with nothing, anything else with an error.
func (c *conn) command(line []byte) error {
	if len(line) == 0 || string(line) == "{}" {
		return nil
	}
	id, method, body, ok := scanCommand(line)
	if !ok {
		return c.disconnect(closeBadRequest, "bad request", fmt.Errorf("command %.64q: want {\"id\":N,\"method\":…}", line))
	}
	switch {
	case method == "connect":
		if c.connected {
			_ = c.write(errorReply(id, 107, "bad request")) // best effort: the connection is closed next
			return c.disconnect(closeBadRequest, "bad request", errors.New("a second connect"))
		}
		c.connected = true
		return c.write(connectReply(id, c.id))
	case !c.connected:
		_ = c.write(errorReply(id, 101, "unauthorized")) // best effort: the connection is closed next
		return c.disconnect(closeBadRequest, "bad request", fmt.Errorf("%s before connect", method))
	case method == "subscribe":
		name, ok := scanChannel(body)
		if !ok {
			return c.write(errorReply(id, 107, "bad request"))
		}
		return c.subscribe(id, name)
	default:
		return c.write(errorReply(id, 104, "method not found"))
	}
}

// subscribe adds c to the channel named name and replies.
func (c *conn) subscribe(id uint32, name string) error {
	for _, ch := range c.subs {
		if ch.name == name {
			return c.write(errorReply(id, 105, "already subscribed"))
		}
	}
	ch := c.srv.channel(name)
	c.srv.subscriptions.Add(1) // before the reply, so that a client that read it finds itself counted
	if err := ch.add(c, subscribeReply(id)); err != nil {
		c.srv.subscriptions.Add(-1)
		return err
	}
	c.subs = append(c.subs, ch)
	return nil
}

// scanCommand reads {"id":N,"method": from the start of line, the shape
// the protocol's JSON encoders write, and returns the rest as body.
func scanCommand(line []byte) (id uint32, method string, body []byte, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte(`{"id":`))
	if !found {
		return 0, "", nil, false
	}
	digits := 0
	for digits < len(rest) && rest[digits] >= '0' && rest[digits] <= '9' {
		digits++
	}
	n, err := strconv.ParseUint(string(rest[:digits]), 10, 32)
	if err != nil || n == 0 {
		return 0, "", nil, false
	}
	rest, found = bytes.CutPrefix(rest[digits:], []byte(`,"`))
	if !found {
		return 0, "", nil, false
	}
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || len(rest) < end+2 || rest[end+1] != ':' {
		return 0, "", nil, false
	}
	return uint32(n), string(rest[:end]), rest[end+2:], true
}

// scanChannel finds "channel":"name" in a command's body. A name with an
// escape in it is refused: the floor does not decode JSON strings.
func scanChannel(body []byte) (string, bool) {
	_, rest, found := bytes.Cut(body, []byte(`"channel":"`))
	if !found {
		return "", false
	}
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", false
	}
	return string(rest[:end]), true
}

// connectReply is the fixed connect result: a client id, no pings.
func connectReply(id uint32, client string) []byte {
	b := appendID(nil, id)
	b = append(b, `,"connect":{"client":"`...)
	b = append(b, client...)
	return append(b, `","version":"floor"}}`...)
}

func subscribeReply(id uint32) []byte {
	return append(appendID(nil, id), `,"subscribe":{}}`...)
}

// errorReply is an error reply; message holds nothing to escape.
func errorReply(id uint32, code int, message string) []byte {
	b := appendID(nil, id)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":"`...)
	b = append(b, message...)
	return append(b, `"}}`...)
}

func appendID(b []byte, id uint32) []byte {
	return strconv.AppendUint(append(b, `{"id":`...), uint64(id), 10)
}

package floor

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/spindlehq/spindle/transport"
)

// channel is one channel's subscribers and offset.
type channel struct {
	name   string
	quoted []byte // name as a JSON string

	// mu guards offset and subs. It is held while a publication is framed
	// and written, so a channel's publications reach each subscriber in
	// offset order, and while a subscribe reply is written, so a new
	// subscriber gets every publication framed after its reply and none
	// before.
	mu     sync.Mutex
	offset uint64  // the last publication's offset
	subs   []*conn // in no particular order
}

func newChannel(name string) *channel {
	q, _ := json.Marshal(name) // a string always encodes
	return &channel{name: name, quoted: q}
}

// add subscribes c and writes the subscribe reply to it under the lock.
func (ch *channel) add(c *conn, reply []byte) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := c.write(reply); err != nil {
		return err
	}
	ch.subs = append(ch.subs, c)
	return nil
}

// remove unsubscribes c.
func (ch *channel) remove(c *conn) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for i, sub := range ch.subs {
		if sub == c {
			last := len(ch.subs) - 1
			ch.subs[i] = ch.subs[last]
			ch.subs[last] = nil
			ch.subs = ch.subs[:last]
			return
		}
	}
}

// publish frames data (valid JSON) as the channel's next publication, calls
// framed, then writes the frame to every subscriber and returns when every
// write has returned.
func (ch *channel) publish(s *Server, data []byte, framed func()) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.offset++
	frame := ch.frame(data)
	s.publications.Add(1)
	framed()
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)

	subs := ch.subs
	writers := min(s.cfg.Writers, (len(subs)+minPerWriter-1)/minPerWriter)
	if writers <= 1 {
		s.writeAll(subs, frame)
		return
	}
	per := (len(subs) + writers - 1) / writers
	var wg sync.WaitGroup
	for from := per; from < len(subs); from += per {
		part := subs[from:min(from+per, len(subs))]
		wg.Go(func() { s.writeAll(part, frame) })
	}
	s.writeAll(subs[:per], frame)
	wg.Wait()
}

// frame returns the WebSocket text frame of the push
// {"push":{"channel":…,"pub":{"data":…,"offset":N}}}, with data compacted
// so that the reply stays on one line.
func (ch *channel) frame(data []byte) []byte {
	const headerRoom = 10 // the longest frame header
	b := make([]byte, headerRoom, headerRoom+len(data)+len(ch.quoted)+64)
	b = append(b, `{"push":{"channel":`...)
	b = append(b, ch.quoted...)
	b = append(b, `,"pub":{"data":`...)
	if bytes.ContainsAny(data, " \t\r\n") {
		buf := bytes.NewBuffer(b)
		_ = json.Compact(buf, data) // data was validated by the API's decode
		b = buf.Bytes()
	} else {
		b = append(b, data...)
	}
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, ch.offset, 10)
	b = append(b, `}}}`...)
	n := len(b) - headerRoom
	start := headerRoom - (transport.FrameSize(n) - n)
	// The header goes right before the payload, into the room left for it.
	transport.AppendFrameHeader(b[start:start], transport.OpText, n)
	return b[start:]
}

// writeAll writes frame to each of subs in turn.
func (s *Server) writeAll(subs []*conn, frame []byte) {
	for _, c := range subs {
		if _, err := c.nc.Write(frame); err != nil {
			s.writeFailed(c, err)
		}
	}
}

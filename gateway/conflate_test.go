package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/config"
)

// The stream of the conflation tests: a fast-changing value published at
// 1,000/s while its reader reads nothing for a second. Its publications are
// large enough (8 KB) that the kernel's socket buffers on loopback can not
// hold a second of them: the rest waits in the gateway.
const (
	stallPubs    = 1000
	stallRate    = time.Millisecond // one publication per
	stallPayload = 8 << 10
	stallBound   = 64 << 10 // client_queue_max_size: small, so that a backlog is slow
)

// stallNode serves namespace "prices" with history and recovery, conflated
// or not, with a small queue bound.
func stallNode(t *testing.T, conflate bool) *testNode {
	return startTestNode(t, func(c *Config) {
		c.ClientQueueMaxSize = stallBound
		c.Namespaces = map[string]config.ChannelOptions{"prices": {
			HistorySize: 2 * stallPubs, HistoryTTL: config.Duration(5 * time.Minute),
			AllowRecovery: true, Conflate: conflate,
		}}
	})
}

// frameReader is a raw client with a small receive buffer that counts the
// bytes of the frames it reads: at a frame's start, how many bytes the
// server had written to it before, as the server's Conn.Handed counts them.
type frameReader struct {
	t   *testing.T
	ws  *websocket.Conn
	pos int64
}

func dialSmallBuffer(t *testing.T, url string) *frameReader {
	t.Helper()
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}).DialContext}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &frameReader{t: t, ws: ws}
}

// capServerSendBuffer sets SO_SNDBUF of the server's end of r's
// connection, found among this process's descriptors by its addresses:
// on loopback the kernel otherwise lets the server's send buffer grow to
// megabytes, which a stalled reader then reads before anything the
// gateway still holds.
func capServerSendBuffer(t *testing.T, r *frameReader, size int) {
	t.Helper()
	client := r.ws.UnderlyingConn().LocalAddr().(*net.TCPAddr)
	server := r.ws.UnderlyingConn().RemoteAddr().(*net.TCPAddr)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		local, err1 := syscall.Getsockname(fd)
		peer, err2 := syscall.Getpeername(fd)
		if err1 != nil || err2 != nil || !sameInet4(local, server) || !sameInet4(peer, client) {
			continue
		}
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, size); err != nil {
			t.Fatalf("SO_SNDBUF of the server's socket: %v", err)
		}
		return
	}
	t.Fatalf("the server's end of %v is not among this process's descriptors", client)
}

func sameInet4(sa syscall.Sockaddr, a *net.TCPAddr) bool {
	in, ok := sa.(*syscall.SockaddrInet4)
	return ok && in.Port == a.Port && net.IP(in.Addr[:]).Equal(a.IP)
}

// message is one frame the reader read: a reply, a ping, or a publication.
type message struct {
	start   int64 // bytes the server wrote before this frame
	pub     bool
	offset  uint64
	channel string
	raw     []byte
}

func (r *frameReader) read() (message, error) {
	_ = r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		return message{}, err
	}
	m := message{start: r.pos, raw: data}
	r.pos += int64(len(data)) + wsHeaderLen(len(data))
	var f struct {
		Push *struct {
			Channel string `json:"channel"`
			Pub     *struct {
				Offset uint64 `json:"offset"`
			} `json:"pub"`
		} `json:"push"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return m, fmt.Errorf("frame %q: %w", data, err)
	}
	if f.Push != nil && f.Push.Pub != nil {
		m.pub, m.offset, m.channel = true, f.Push.Pub.Offset, f.Push.Channel
	}
	return m, nil
}

// wsHeaderLen is the header size of an unmasked server frame of n bytes.
func wsHeaderLen(n int) int64 {
	switch {
	case n < 126:
		return 2
	case n < 1<<16:
		return 4
	}
	return 10
}

// command sends one command and reads up to its reply, which it returns.
func (r *frameReader) command(id int, method string, params any) map[string]json.RawMessage {
	r.t.Helper()
	body, _ := json.Marshal(params)
	if err := r.ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,%q:%s}`, id, method, body)); err != nil {
		r.t.Fatalf("%s: %v", method, err)
	}
	for {
		m, err := r.read()
		if err != nil {
			r.t.Fatalf("%s reply: %v", method, err)
		}
		var rep map[string]json.RawMessage
		_ = json.Unmarshal(m.raw, &rep)
		if string(rep["id"]) == fmt.Sprint(id) {
			if rep["error"] != nil {
				r.t.Fatalf("%s: %s", method, rep["error"])
			}
			return rep
		}
	}
}

// readUntil reads publications of ch until one with offset last, and
// returns them; it fails the test on a read error.
func (r *frameReader) readUntil(ch string, last uint64) []message {
	r.t.Helper()
	var got []message
	for {
		m, err := r.read()
		if err != nil {
			r.t.Fatalf("reading to offset %d (got %d publications): %v", last, len(got), err)
		}
		if m.pub && m.channel == ch {
			got = append(got, m)
			if m.offset >= last {
				return got
			}
		}
	}
}

// publishAtRate publishes n publications of ch at one per stallRate and
// returns the offset of the last.
func publishAtRate(t *testing.T, tn *testNode, ch string, n int) uint64 {
	t.Helper()
	data := json.RawMessage(`{"price":"` + strings.Repeat("9", stallPayload) + `"}`)
	start := time.Now()
	var last uint64
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * stallRate)); d > 0 {
			time.Sleep(d) // pacing the publisher, not waiting for an event
		}
		sp, err := tn.Publish(context.Background(), ch, data, PublishOptions{})
		if err != nil {
			t.Errorf("publish %d: %v", i, err) // not Fatal: it may run on a goroutine of its own
			return last
		}
		last = sp.Offset
	}
	return last
}

// sessionOf finds the node's one session of user.
func sessionOf(t *testing.T, tn *testNode, user string) *session {
	t.Helper()
	var found *session
	waitFor(t, "the session of "+user, func() bool {
		tn.sessions.each(func(s *session) {
			if s.identity() == user {
				found = s
			}
		})
		return found != nil
	})
	return found
}

// subscribeReader connects a small-buffer reader as user, subscribes it to
// ch as recoverable, and has it read n publications, each before the next
// is published; it returns the reader and the stream's epoch.
func subscribeReader(t *testing.T, tn *testNode, user, ch string, n int) (*frameReader, string) {
	t.Helper()
	r := dialSmallBuffer(t, tn.url)
	capServerSendBuffer(t, r, 4096)
	r.command(1, "connect", map[string]any{"token": connectToken(t, user)})
	rep := r.command(2, "subscribe", map[string]any{"channel": ch, "recoverable": true})
	var res struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	_ = json.Unmarshal(rep["subscribe"], &res)
	if res.Epoch == "" {
		t.Fatalf("subscribe reply without a stream position: %s", rep["subscribe"])
	}
	for range n {
		last := publishAtRate(t, tn, ch, 1)
		if got := r.readUntil(ch, last); len(got) != 1 {
			t.Fatalf("a reader that keeps up got %d publications for one", len(got))
		}
	}
	return r, res.Epoch
}

// A reader of a conflated channel that stops reading for a second under a
// 1,000/s stream is not disconnected: when it reads again it gets what the
// kernel had already taken, then at once the newest publication, with
// offsets that only grow. The gateway's resync does not see the skipped
// offsets as a gap; and a client that recovers from its position before
// the stall gets every publication from history.
func TestConflatedReaderGetsTheLatestAfterAStall(t *testing.T) {
	tn := stallNode(t, true)
	const ch = "prices:btc"
	r, epoch := subscribeReader(t, tn, "stall", ch, 20)
	before := uint64(20)
	s := sessionOf(t, tn, "stall")

	// The reader reads nothing while a second of the stream is published.
	last := publishAtRate(t, tn, ch, stallPubs)
	var handed int64
	var queued, parked bool
	waitFor(t, "the session to hold its queue while the socket is backed up", func() bool {
		s.qmu.Lock()
		defer s.qmu.Unlock()
		parked = s.cq != nil && s.cq.parked
		queued = len(s.q) > 0
		handed = s.conn.Handed()
		return parked && queued
	})

	got := r.readUntil(ch, last)
	if first := got[len(got)-1]; first.start < handed {
		t.Fatalf("the newest publication (%d) starts at byte %d, before the %d bytes handed to the socket during the stall", last, first.start, handed)
	}
	prev := before
	for i, m := range got {
		if m.offset <= prev {
			t.Fatalf("publication %d after the stall has offset %d after %d: offsets must only grow", i, m.offset, prev)
		}
		prev = m.offset
		if i < len(got)-1 && m.start >= handed {
			t.Fatalf("publication %d (offset %d) came from the queue after the stall, before the newest: it should have been replaced", i, m.offset)
		}
	}
	t.Logf("after the stall: %d publications of %d, %d of them from the socket's buffers, then offset %d", len(got), stallPubs, len(got)-1, last)
	if len(got) >= stallPubs {
		t.Fatalf("the reader got all %d publications: nothing was conflated, the test did not stall the socket", len(got))
	}
	// The connection still works, and nothing counted it slow or a gap.
	r.command(3, "ping", map[string]any{})
	for name, want := range map[string]float64{"spindle_slow_consumer_disconnects_total": 0, "spindle_resyncs_total": 0} {
		if v := metricValue(t, tn, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if v := metricValue(t, tn, "spindle_conflated_total"); v == 0 {
		t.Error("spindle_conflated_total = 0 after a conflated stall")
	}

	// Recovery from the position the reader had before the stall gives
	// every publication since, the replaced ones too, from history.
	again := dialSmallBuffer(t, tn.url)
	again.command(1, "connect", map[string]any{"token": connectToken(t, "stall")})
	rep := again.command(2, "subscribe", map[string]any{"channel": ch, "recover": true, "offset": before, "epoch": epoch})
	var rec struct {
		Recovered    bool `json:"recovered"`
		Publications []struct {
			Offset uint64 `json:"offset"`
		} `json:"publications"`
	}
	_ = json.Unmarshal(rep["subscribe"], &rec)
	if !rec.Recovered || uint64(len(rec.Publications)) != last-before {
		t.Fatalf("recovered=%v with %d publications, want %d", rec.Recovered, len(rec.Publications), last-before)
	}
	for i, p := range rec.Publications {
		if p.Offset != before+uint64(i)+1 {
			t.Fatalf("recovered publication %d has offset %d, want %d", i, p.Offset, before+uint64(i)+1)
		}
	}
}

// The control: the same stall on a channel that does not conflate, with
// the same queue bound, disconnects the reader as a slow consumer (3008).
func TestUnconflatedReaderIsSlowAfterAStall(t *testing.T) {
	tn := stallNode(t, false)
	const ch = "prices:btc"
	r, _ := subscribeReader(t, tn, "stall", ch, 20)
	publishAtRate(t, tn, ch, stallPubs)
	waitFor(t, "the reader to be disconnected as slow", func() bool {
		return metricValue(t, tn, "spindle_slow_consumer_disconnects_total") == 1
	})
	for {
		_, err := r.read()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != DisconnectSlow.Code {
			t.Fatalf("the connection ended with %v, want close code %d", err, DisconnectSlow.Code)
		}
		return
	}
}

// A reader of a conflated channel that reads, but slower than the stream,
// gets a subsequence of it: offsets only grow, the last one it reads is the
// last published, and it is never disconnected.
func TestConflatedSlowReaderOffsetsGrow(t *testing.T) {
	tn := stallNode(t, true)
	const ch = "prices:eth"
	r, _ := subscribeReader(t, tn, "slow", ch, 5)
	done := make(chan uint64, 1)
	go func() { done <- publishAtRate(t, tn, ch, stallPubs/2) }()
	prev, n := uint64(5), 0
	for {
		m, err := r.read()
		if err != nil {
			t.Fatalf("after %d publications at offset %d: %v", n, prev, err)
		}
		if !m.pub {
			continue
		}
		if m.offset <= prev {
			t.Fatalf("offset %d after %d: offsets must only grow", m.offset, prev)
		}
		prev, n = m.offset, n+1
		select {
		case last := <-done:
			done <- last
			if prev == last {
				t.Logf("a reader 4x slower than the stream got %d of %d publications, the last one last", n, stallPubs/2)
				if v := metricValue(t, tn, "spindle_slow_consumer_disconnects_total"); v != 0 {
					t.Fatalf("%v slow consumer disconnects", v)
				}
				return
			}
		default:
		}
		time.Sleep(4 * stallRate) // the reader's own pace, a quarter of the stream's
	}
}

// A conflated reader that stops reading altogether is still disconnected
// by the stall timeout while the gateway holds its queue: holding it does
// not hide the session from the heartbeat or the close.
func TestParkedReaderStillTimesOut(t *testing.T) {
	tn := startTestNode(t, func(c *Config) {
		c.ClientQueueMaxSize = stallBound
		c.ClientStallTimeout = 300 * time.Millisecond
		c.Namespaces = map[string]config.ChannelOptions{"prices": {HistorySize: 10, HistoryTTL: config.Duration(time.Minute), AllowRecovery: true, Conflate: true}}
	})
	const ch = "prices:sol"
	subscribeReader(t, tn, "stuck", ch, 1)
	waitFor(t, "the stuck reader to be disconnected", func() bool {
		publishAtRate(t, tn, ch, 50)
		return metricValue(t, tn, "spindle_slow_consumer_disconnects_total") == 1
	})
	waitFor(t, "the stuck session to be freed", func() bool { return tn.NumClients() == 0 })
}

package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestForwardsBothWaysAndHalfClose(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{})
	c := dial(t, p.Addr().String())
	want := make([]byte, 1<<20)
	rand.Read(want)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.Write(want); err != nil {
			t.Errorf("write: %v", err)
		}
		// Half-close: the echo sees EOF, closes, and EOF comes back to us.
		if err := c.CloseWrite(); err != nil {
			t.Errorf("close write: %v", err)
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	wg.Wait()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echoed %d bytes, differing from the %d sent", len(got), len(want))
	}
	waitFor(t, 5*time.Second, "the proxy to drop the closed connection", func() bool { return p.Stats().Active == 0 })
	st := p.Stats()
	if st.Accepted != 1 || st.BytesUp != int64(len(want)) || st.BytesDown != int64(len(want)) || st.Dropped != 0 || st.Reset != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLatencyIsAdded(t *testing.T) {
	const latency = 50 * time.Millisecond
	echo := startEcho(t)
	direct := minRTT(t, dial(t, echo.addr()), 5)
	p := startProxy(t, echo.addr(), Faults{Latency: latency})
	via := minRTT(t, dial(t, p.Addr().String()), 5)
	t.Logf("round trip: direct %v, through proxy with %v each way %v", direct, latency, via)
	if via < 2*latency {
		t.Fatalf("round trip through proxy %v, want at least 2×%v", via, latency)
	}
	if limit := direct + 2*latency + 2*time.Second; via > limit {
		t.Fatalf("round trip through proxy %v, want under %v", via, limit)
	}
}

func TestDelayLineDoesNotSerialiseThroughput(t *testing.T) {
	// With 100ms each way, a stop-and-wait proxy would need ≥ 200ms per
	// round of 50 pipelined messages: 20 rounds ≥ 4s. The delay line keeps
	// them all in flight, so the whole batch takes about one round trip.
	const latency = 100 * time.Millisecond
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{Latency: latency})
	c := dial(t, p.Addr().String())
	const msgs = 1000
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range msgs {
			if _, err := c.Write(make([]byte, 512)); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			if i%50 == 49 {
				time.Sleep(time.Millisecond) // separate reads, so many chunks
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadFull(c, make([]byte, msgs*512))
	wg.Wait()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pipelined messages with %v each way: %v", msgs, latency, elapsed)
	if elapsed < 2*latency {
		t.Fatalf("took %v, less than one round trip", elapsed)
	}
	if elapsed > 3*time.Second {
		t.Fatalf("took %v: chunks are delayed one after another, not in flight together", elapsed)
	}
}

func TestJitterKeepsOrder(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{Latency: 5 * time.Millisecond, Jitter: 5 * time.Millisecond})
	c := dial(t, p.Addr().String())
	const n = 5000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var b [4]byte
		for i := range uint32(n) {
			binary.BigEndian.PutUint32(b[:], i)
			if _, err := c.Write(b[:]); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			if i%100 == 99 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, 4*n)
	_, err := io.ReadFull(c, got)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint32(n) {
		if v := binary.BigEndian.Uint32(got[4*i:]); v != i {
			t.Fatalf("position %d holds %d: bytes were reordered", i, v)
		}
	}
}

func TestJitterVariesDelay(t *testing.T) {
	f := Faults{Latency: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := f.delay()
		if d < 5*time.Millisecond || d > 15*time.Millisecond {
			t.Fatalf("delay %v outside 10ms±5ms", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct delays in 1000 draws", len(seen))
	}
	if d := (Faults{Latency: time.Millisecond, Jitter: time.Second}).delay(); d < 0 {
		t.Fatalf("negative delay %v", d)
	}
}

func TestBandwidthCap(t *testing.T) {
	const bw = 256 << 10
	const size = 384 << 10
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{Bandwidth: bw})
	c := dial(t, p.Addr().String())
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Errorf("write: %v", err)
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.ReadFull(c, make([]byte, size))
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	// Each direction may send its first 1/20 s slice at once; the rest is paced.
	lower := time.Duration(size-bw/20) * time.Second / bw
	t.Logf("%d bytes echoed at %d B/s per direction in %v (lower bound %v)", size, bw, elapsed, lower)
	if elapsed < lower*9/10 {
		t.Fatalf("took %v, under the %v the cap allows", elapsed, lower)
	}
}

func TestResetAfterTCP(t *testing.T) {
	echo := startEcho(t)
	const after = 200 * time.Millisecond
	p := startProxy(t, echo.addr(), Faults{ResetAfter: after})
	start := time.Now()
	c := dial(t, p.Addr().String())
	minRTT(t, c, 1)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !isReset(err) {
		t.Fatalf("read error %v, want connection reset", err)
	}
	if el := time.Since(start); el < after {
		t.Fatalf("reset after %v, before %v", el, after)
	}
	if st := p.Stats(); st.Reset != 1 {
		t.Fatalf("stats %+v, want Reset 1", st)
	}
}

// wsEchoServer runs a gorilla WebSocket echo server and reports each
// handler's final read error.
func wsEchoServer(t *testing.T) (addr string, readErrs <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	var handlers sync.WaitGroup
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		handlers.Add(1)
		defer handlers.Done()
		defer ws.Close()
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				errs <- err
				return
			}
			if err := ws.WriteMessage(mt, msg); err != nil {
				errs <- err
				return
			}
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		handlers.Wait()
	})
	return srv.Listener.Addr().String(), errs
}

func TestResetAfterWebSocket(t *testing.T) {
	upstream, serverErrs := wsEchoServer(t)
	p := startProxy(t, upstream, Faults{ResetAfter: 300 * time.Millisecond})
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("echo %q, %v", msg, err)
	}
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if errors.As(err, &ce) || !isReset(err) {
		t.Fatalf("client read error %v, want a connection reset (no close frame)", err)
	}
	select {
	case err := <-serverErrs:
		if !isReset(err) {
			t.Fatalf("server read error %v, want a connection reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not see the connection end")
	}
}

func TestDrop(t *testing.T) {
	for _, tc := range []struct {
		drop    float64
		dropped bool
	}{{1, true}, {0, false}} {
		echo := startEcho(t)
		p := startProxy(t, echo.addr(), Faults{Drop: tc.drop})
		const n = 10
		for i := range n {
			nc, err := net.DialTimeout("tcp", p.Addr().String(), 5*time.Second)
			if err != nil {
				// The reset can beat connect's return: refused at once.
				if tc.dropped && isReset(err) {
					continue
				}
				t.Fatalf("drop=%v: dial %d: %v", tc.drop, i, err)
			}
			c := nc.(*net.TCPConn)
			t.Cleanup(func() { c.Close() })
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, werr := c.Write([]byte{byte(i)})
			_, rerr := io.ReadFull(c, make([]byte, 1))
			// The write may land before the reset; the read must not.
			if tc.dropped && !isReset(rerr) && !errors.Is(rerr, io.EOF) {
				t.Fatalf("drop=%v: connection %d: write %v, read %v; want it refused", tc.drop, i, werr, rerr)
			}
			if !tc.dropped && (werr != nil || rerr != nil) {
				t.Fatalf("drop=%v: connection %d: write %v, read %v", tc.drop, i, werr, rerr)
			}
		}
		st := p.Stats()
		wantDropped := int64(0)
		if tc.dropped {
			wantDropped = n
		}
		if st.Accepted != n || st.Dropped != wantDropped {
			t.Fatalf("drop=%v: stats %+v, want %d accepted and %d dropped", tc.drop, st, n, wantDropped)
		}
		if tc.dropped && echo.accepted() != 0 {
			t.Fatalf("drop=1: upstream saw %d connections", echo.accepted())
		}
	}
}

// floodServer is an upstream that, after reading one id byte, writes to
// the client with a 1s deadline per write: 16MiB for 'B', up to 256MiB
// (more than any socket buffers hold) for anything else. It reports each
// connection's id and final write error.
type floodResult struct {
	id  byte
	err error
}

func startFlood(t *testing.T) (*server, <-chan floodResult) {
	results := make(chan floodResult, 8)
	s := startServer(t, func(c net.Conn) {
		id := make([]byte, 1)
		if _, err := io.ReadFull(c, id); err != nil {
			return
		}
		total := 256 << 20
		if id[0] == 'B' {
			total = 16 << 20
		}
		buf := make([]byte, 64<<10)
		var err error
		for sent := 0; sent < total && err == nil; sent += len(buf) {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, err = c.Write(buf)
		}
		results <- floodResult{id[0], err}
	})
	return s, results
}

// drain reads c until it fails, so the client is never the slow one.
func drain(t *testing.T, c net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() { c.Close(); wg.Wait() })
}

func TestStallReadsOneConnection(t *testing.T) {
	flood, results := startFlood(t)
	p := startProxy(t, flood.addr(), Faults{})
	a := dial(t, p.Addr().String())
	b := dial(t, p.Addr().String())
	var id uint64
	waitFor(t, 5*time.Second, "the proxy to track the connection", func() bool {
		var ok bool
		id, ok = p.ConnID(a.LocalAddr().String())
		return ok
	})
	if err := p.SetConnFaults(id, Faults{StallReads: true}); err != nil {
		t.Fatal(err)
	}
	drain(t, a)
	drain(t, b)
	if _, err := a.Write([]byte{'A'}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte{'B'}); err != nil {
		t.Fatal(err)
	}
	got := map[byte]error{}
	for range 2 {
		select {
		case r := <-results:
			got[r.id] = r.err
		case <-time.After(20 * time.Second):
			t.Fatalf("upstream writers still running after 20s: %v", got)
		}
	}
	if err := got['B']; err != nil {
		t.Fatalf("connection B (not stalled): upstream write error %v", err)
	}
	if err := got['A']; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection A (stalled): upstream write error %v, want its write deadline exceeded", err)
	}
	conns := p.Conns()
	if len(conns) != 2 || conns[0].ID != id || conns[0].Faults == nil || !conns[0].Faults.StallReads || conns[1].Faults != nil {
		t.Fatalf("conns %+v", conns)
	}
}

func TestStallReadsAllStillForwardsUp(t *testing.T) {
	flood, results := startFlood(t)
	p := startProxy(t, flood.addr(), Faults{StallReads: true})
	a := dial(t, p.Addr().String())
	drain(t, a)
	// The id byte goes client→upstream, which stall-reads leaves flowing.
	if _, err := a.Write([]byte{'A'}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("upstream write error %v, want its write deadline exceeded", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("upstream writer never blocked")
	}
	// Lifting the fault lets new connections through in full.
	if err := p.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	b := dial(t, p.Addr().String())
	drain(t, b)
	if _, err := b.Write([]byte{'B'}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		if r.err != nil {
			t.Fatalf("after clearing stall-reads: upstream write error %v", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("upstream writer blocked after stall-reads was cleared")
	}
}

func TestSetFaultsAtRuntime(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr(), Faults{})
	c := dial(t, p.Addr().String())
	minRTT(t, c, 1)

	// Latency applies to a connection opened before it was set.
	const latency = 60 * time.Millisecond
	if err := p.SetFaults(Faults{Latency: latency}); err != nil {
		t.Fatal(err)
	}
	if rtt := minRTT(t, c, 3); rtt < 2*latency {
		t.Fatalf("round trip %v after SetFaults(latency %v)", rtt, latency)
	}

	// A blackhole holds bytes back, on old and new connections, without closing.
	if err := p.SetFaults(Faults{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	fresh := dial(t, p.Addr().String())
	for _, conn := range []*net.TCPConn{c, fresh} {
		if _, err := conn.Write([]byte{7}); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blackholed read: %d bytes, %v; want nothing until the deadline", n, err)
		}
	}
	if n := echo.accepted(); n != 1 {
		t.Fatalf("blackholed connection reached the upstream (%d connections)", n)
	}
	if err := p.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*net.TCPConn{c, fresh} {
		b := make([]byte, 1)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, b); err != nil || b[0] != 7 {
			t.Fatalf("after the blackhole lifted: %v %v", b, err)
		}
	}

	// ResetAfter shorter than a connection's age resets it at once.
	if err := p.SetFaults(Faults{ResetAfter: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("after SetFaults(reset-after 1ms): read %v, want reset", err)
	}
	if err := p.SetFaults(Faults{Drop: 2}); err == nil {
		t.Fatal("SetFaults accepted drop=2")
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		listen, upstream string
		f                Faults
	}{
		{"0.0.0.0:0", "127.0.0.1:1", Faults{}},
		{":0", "127.0.0.1:1", Faults{}},
		{"127.0.0.1:0", "nope", Faults{}},
		{"127.0.0.1:0", "127.0.0.1:1", Faults{Latency: -1}},
		{"127.0.0.1:0", "127.0.0.1:1", Faults{Drop: 1.5}},
	} {
		if p, err := New(tc.listen, tc.upstream, tc.f); err == nil {
			p.Close()
			t.Errorf("New(%q, %q, %+v) succeeded", tc.listen, tc.upstream, tc.f)
		}
	}
}

func TestCloseEndsEverything(t *testing.T) {
	echo := startEcho(t)
	p, err := New("127.0.0.1:0", echo.addr(), Faults{Latency: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p.SetLogger(quietLogger)
	done := make(chan error, 1)
	go func() { done <- p.Serve(t.Context()) }()
	c := dial(t, p.Addr().String())
	if _, err := c.Write([]byte("held for an hour")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the connection to be tracked", func() bool { return p.Stats().Active == 1 })
	p.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read %v after Close, want the connection closed", err)
	}
	if err := p.Serve(t.Context()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("second Serve: %v", err)
	}
}

package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spindlehq/spindle/broker/redis/redistest"
	"github.com/spindlehq/spindle/client"
)

// faultProxy is a `spindle proxy` process: addr takes the connections it
// forwards, control is its HTTP control API.
type faultProxy struct {
	addr    string
	control string
}

// startFaultProxy runs `spindle proxy` in front of upstream with no fault
// yet; t.Cleanup kills it.
func startFaultProxy(t *testing.T, bin, upstream string) *faultProxy {
	t.Helper()
	cmd := exec.Command(bin, "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream, "--control", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 4)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	p := &faultProxy{}
	timeout := time.After(10 * time.Second)
	for p.addr == "" || p.control == "" {
		select {
		case line := <-lines:
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				p.addr = a
			}
			if c, ok := strings.CutPrefix(line, "control on "); ok {
				p.control = c
			}
		case <-exited:
			t.Fatal("spindle proxy exited before it printed its addresses")
		case <-timeout:
			t.Fatal("spindle proxy did not print its addresses within 10s")
		}
	}
	return p
}

// setFaults changes the proxy's faults for every connection (PATCH
// /faults with a JSON object such as {"latency":"100ms"}).
func (p *faultProxy) setFaults(t *testing.T, faults string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPatch, p.control+"/faults", strings.NewReader(faults))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("proxy faults %s: %v", faults, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("proxy faults %s: HTTP %d %s", faults, resp.StatusCode, body)
	}
}

// admitted retries dial while the node refuses new connections with 503
// (its admission controller sheds them while this machine is busy), as
// clients do, for up to 30 s.
func admitted(dial func() (refused bool, err error)) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		refused, err := dial()
		if !refused || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond) // retry interval, as after Retry-After
	}
}

// dialClient is client.Dial, retried while the node answers 503.
func dialClient(cfg client.Config) (*client.Client, error) {
	var c *client.Client
	err := admitted(func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		c, err = client.Dial(ctx, cfg)
		var he *client.HandshakeError
		return errors.As(err, &he) && he.Status == http.StatusServiceUnavailable, err
	})
	return c, err
}

// dialURL is dial for a node in another process.
func dialURL(t *testing.T, url string) *wsc {
	t.Helper()
	var c *websocket.Conn
	err := admitted(func() (bool, error) {
		var resp *http.Response
		var err error
		c, resp, err = websocket.DefaultDialer.Dial(url, nil)
		return resp != nil && resp.StatusCode == http.StatusServiceUnavailable, err
	})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	w := &wsc{t: t, c: c, msgs: make(chan []byte, 1000), done: make(chan struct{})}
	go w.readLoop()
	t.Cleanup(func() { _ = c.Close(); <-w.done })
	return w
}

// ping sends a ping command and waits up to a deadline for its reply: a
// wait longer than wsc.cmd's is a figure here, not a failure.
func (w *wsc) ping(timeout time.Duration) (time.Duration, error) {
	w.id++
	id := w.id
	start := time.Now()
	if err := w.c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":%d,"ping":{}}`, id))); err != nil {
		return 0, fmt.Errorf("ping: %w", err)
	}
	deadline := time.After(timeout)
	for {
		select {
		case m := <-w.msgs:
			if bytes.HasPrefix(m, []byte(fmt.Sprintf(`{"id":%d,`, id))) || bytes.Equal(m, []byte(fmt.Sprintf(`{"id":%d}`, id))) {
				if bytes.Contains(m, []byte(`"error"`)) {
					return 0, fmt.Errorf("ping: %s", m)
				}
				return time.Since(start), nil
			}
		case <-w.done:
			return 0, fmt.Errorf("ping: connection closed: %v", w.err)
		case <-deadline:
			return 0, fmt.Errorf("ping: no reply within %v", timeout)
		}
	}
}

// dialCrowd connects n clients of the project's client package on one
// client event loop; t.Cleanup closes them.
func dialCrowd(t *testing.T, url string, n int) []*client.Client {
	t.Helper()
	loop, err := client.NewLoop(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loop.Stop)
	cs := make([]*client.Client, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32) // dials at once
	var wg sync.WaitGroup
	for i := range cs {
		tok := token(t, fmt.Sprintf("crowd-%d", i), time.Hour)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialClient(client.Config{URL: url, Token: tok, Name: "slow-test", Loop: loop})
			if err != nil {
				errs <- err
				return
			}
			cs[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("crowd: %v", err)
	}
	return cs
}

// latencies are the round trips of one kind of probe in one phase; mu
// guards them when a probe goroutine adds to them.
type latencies struct {
	mu     sync.Mutex
	d      []time.Duration
	failed int
	err    error
}

func (l *latencies) add(d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed++
		l.err = err
		return
	}
	l.d = append(l.d, d)
}

func (l *latencies) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case len(l.d) == 0 && l.failed == 0:
		return "none"
	case len(l.d) == 0:
		return fmt.Sprintf("none answered, %d failed (last: %v)", l.failed, l.err)
	}
	d := slices.Clone(l.d)
	slices.Sort(d)
	q := func(f float64) time.Duration {
		return d[min(len(d)-1, int(f*float64(len(d))))].Round(100 * time.Microsecond)
	}
	s := fmt.Sprintf("%d answered, p50 %v, p99 %v, max %v", len(d), q(0.5), q(0.99), d[len(d)-1].Round(100*time.Microsecond))
	if l.failed > 0 {
		s += fmt.Sprintf(", %d failed (last: %v)", l.failed, l.err)
	}
	return s
}

// slowLoad publishes to one channel from api server-API senders and ws
// WebSocket clients, each one publish at a time, until stop: the channel
// whose publishes wait on the slow Redis.
type slowLoad struct {
	apiDone, wsDone latencies
	stop            context.CancelFunc
	wg              sync.WaitGroup
}

func startSlowLoad(hc *http.Client, base string, clients []*client.Client, api int, ch string) *slowLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &slowLoad{stop: cancel}
	for i := 0; i < api; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				_, _, err := callAPI(ctx, hc, base, "publish", map[string]any{"channel": ch, "data": map[string]int{"n": i}})
				if ctx.Err() == nil {
					l.apiDone.add(time.Since(start), err)
				}
			}
		}()
	}
	for _, c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				err := c.Publish(ctx, ch, []byte(`{"from":"ws"}`))
				if ctx.Err() == nil {
					l.wsDone.add(time.Since(start), err)
				}
			}
		}()
	}
	return l
}

func (l *slowLoad) halt() { l.stop(); l.wg.Wait() }

// A slow Redis must not stall anyone else. One `spindle serve --broker
// redis` reaches Redis through `spindle proxy` (the project's fault
// injector, a real process); in the slow phases the proxy delays each
// direction by 100 ms, so every Redis round trip answers 200 ms late.
// While server-API senders and WebSocket clients publish to channel "a"
// (each publish waits on Redis, a WebSocket one on the event loop's worker
// of its connection), the test times what other users get:
//   - the server API's info and channels, which read the node only and
//     never touch Redis;
//   - server-API publishes to channel "b", which go through Redis too, so
//     they cannot be faster than the round trip: what counts is what they
//     wait on top of it, behind "a";
//   - ping commands of other connected clients (each subscribed to a
//     channel of its own), answered on the event loop.
//
// It asserts only that every probe was answered; the figures are logged,
// with a goroutine dump's analysis taken in the heaviest slow phase.
func TestSlowRedis(t *testing.T) {
	rs := redistest.Start(t)
	bin := spindleBinary(t)
	px := startFaultProxy(t, bin, rs.Addr())
	cfg := filepath.Join(t.TempDir(), "spindle.yaml")
	if err := os.WriteFile(cfg, []byte("channel:\n  allow_publish_for_client: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node := runServeBinary(t, bin, "--config", cfg, "--broker", "redis", "--redis-address", px.addr,
		"--redis-prefix", "slow", "--redis-timeout", "5s")
	waitFor(t, func() bool { return node.status("/readyz") == 200 })

	const others = 20
	pingers := make([]*wsc, others)
	for i := range pingers {
		w := dialURL(t, node.ws)
		w.connect(token(t, fmt.Sprintf("other-%d", i), time.Hour))
		if r := w.cmd("subscribe", map[string]any{"channel": fmt.Sprintf("other-%d", i)}); r["error"] != nil {
			t.Fatalf("subscribe other-%d: %s", i, r["error"])
		}
		pingers[i] = w
	}
	wsPublishers := make([]*client.Client, 16)
	for i := range wsPublishers {
		c, err := dialClient(client.Config{URL: node.ws, Token: token(t, fmt.Sprintf("pub-%d", i), time.Hour), Name: "slow-test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		wsPublishers[i] = c
	}
	loadHTTP := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(loadHTTP.CloseIdleConnections)
	hcLoad := &http.Client{Transport: loadHTTP, Timeout: 10 * time.Second}
	hc := apiClient(t)

	// The crowd: more WebSocket publishers than the event loop has
	// workers (nbio's pool: 256 per core, 512 here).
	crowd := dialCrowd(t, node.ws, 600)
	phases := []struct {
		name   string
		faults string
		api    int              // server-API publishers to "a"
		ws     []*client.Client // WebSocket publishers to "a"
		dump   bool
	}{
		{"direct", `{"latency":"0s"}`, 32, wsPublishers, false},
		{"slow, light load", `{"latency":"100ms"}`, 4, wsPublishers[:4], false},
		{"slow, heavy load", `{"latency":"100ms"}`, 32, wsPublishers, false},
		{"slow, a crowd of WebSocket publishers", `{"latency":"100ms"}`, 0, crowd, true},
	}
	const phaseLength = 3 * time.Second
	for _, ph := range phases {
		px.setFaults(t, ph.faults)
		load := startSlowLoad(hcLoad, node.apiURL(), ph.ws, ph.api, "a")
		var info, channels, ping, other latencies
		end := time.Now().Add(phaseLength)
		var probes sync.WaitGroup
		// Each probe runs one call at a time until the phase ends, and
		// waits for the call in flight: a call still waiting then counts.
		probe := func(l *latencies, call func(n int) (time.Duration, error)) {
			probes.Add(1)
			go func() {
				defer probes.Done()
				for n := 1; time.Now().Before(end); n++ {
					l.add(call(n))
					time.Sleep(10 * time.Millisecond) // the probe's pace, not synchronisation
				}
			}()
		}
		timed := func(method string, params func(n int) any) func(n int) (time.Duration, error) {
			return func(n int) (time.Duration, error) {
				start := time.Now()
				_, _, err := callAPI(context.Background(), hc, node.apiURL(), method, params(n))
				return time.Since(start), err
			}
		}
		noParams := func(int) any { return map[string]any{} }
		probe(&info, timed("info", noParams))
		probe(&channels, timed("channels", noParams))
		probe(&other, timed("publish", func(n int) any { return map[string]any{"channel": "b", "data": map[string]int{"n": n}} }))
		probe(&ping, func(n int) (time.Duration, error) { return pingers[n%others].ping(30 * time.Second) })
		var analysis string
		if ph.dump {
			time.Sleep(phaseLength / 2) // the middle of the phase, not synchronisation
			analysis = analyzeGoroutines(t, bin, node)
		}
		probes.Wait()
		load.halt()
		t.Logf("%s (proxy %s; publishing to \"a\": %d API senders, %d WebSocket clients):", ph.name, ph.faults, ph.api, len(ph.ws))
		t.Logf("  load: API publishes to \"a\" %v", &load.apiDone)
		t.Logf("  load: WebSocket publishes to \"a\" %v", &load.wsDone)
		t.Logf("  API info %v", &info)
		t.Logf("  API channels %v", &channels)
		t.Logf("  API publish to \"b\" %v", &other)
		t.Logf("  WebSocket ping of %d other clients %v", others, &ping)
		if analysis != "" {
			t.Logf("  goroutines (spindle goroutines analyze of /debug/pprof/goroutine?debug=2):\n%s", analysis)
		}
		// What does not touch Redis must be answered, and succeed; a
		// publish to "b" must be answered, but may fail (its wait for a
		// Redis connection can time out).
		for name, l := range map[string]*latencies{"info": &info, "channels": &channels, "ping": &ping} {
			if l.failed > 0 || len(l.d) == 0 {
				t.Errorf("%s: %s: %v", ph.name, name, l)
			}
		}
		if len(other.d)+other.failed == 0 {
			t.Errorf("%s: no publish to b answered", ph.name)
		}
	}
}

// analyzeGoroutines takes a goroutine dump of node and returns the first
// lines of `spindle goroutines analyze` on it.
func analyzeGoroutines(t *testing.T, bin string, node *proc) string {
	t.Helper()
	resp, err := http.Get("http://" + node.admin + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dump := filepath.Join(t.TempDir(), "goroutines.txt")
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("goroutine dump: HTTP %d, %v", resp.StatusCode, err)
	}
	if err := os.WriteFile(dump, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "goroutines", "analyze", dump).CombinedOutput()
	if err != nil {
		t.Fatalf("spindle goroutines analyze: %v\n%s", err, out)
	}
	// The summary, then each group's heading and creator.
	var keep []string
	groups := false
	for _, line := range strings.Split(string(out), "\n") {
		trimmed := strings.TrimSpace(line)
		groups = groups || strings.HasPrefix(trimmed, "GROUPS")
		if !groups || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "created by") {
			keep = append(keep, line)
		}
	}
	return "    " + strings.Join(keep, "\n    ")
}

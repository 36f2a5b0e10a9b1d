package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// boundedCtx is a context whose deadline bounds only a failure: a
// Shutdown that should return nil does so long before it.
func boundedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// shuttingDown reports whether shutdown has begun.
func (f *inflight) shuttingDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shutting
}

// waitShutting waits until Shutdown, started elsewhere, has begun: then
// a "not returned yet" check says something.
func waitShutting(t *testing.T, h *Handler) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !h.inflight.shuttingDown() {
		if time.Now().After(deadline) {
			t.Fatal("Shutdown did not begin")
		}
		time.Sleep(time.Millisecond)
	}
}

// notYet fails t if done delivers within a short while. It only ever
// shows that something has not happened (yet).
func notYet(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v) while a call was in flight", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestShutdownWaitsForCallInFlight(t *testing.T) {
	e := newTestEnv(t)
	h := e.h
	if !h.inflight.enter() { // a call in flight
		t.Fatal("enter refused before shutdown")
	}
	if !h.inflight.enter() { // and another
		t.Fatal("enter refused before shutdown")
	}
	ctx := boundedCtx(t)
	done := make(chan error, 1)
	go func() { done <- h.Shutdown(ctx) }()
	waitShutting(t, h)
	notYet(t, done, "Shutdown")

	// New calls are refused while the old ones run.
	if h.inflight.enter() {
		t.Fatal("enter admitted a call after shutdown began")
	}
	status, hdr, _ := e.do(http.MethodPost, "/api/info", "{}", map[string]string{"X-API-Key": testKey})
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("during shutdown: status %d, Retry-After %q; want 503 with Retry-After", status, hdr.Get("Retry-After"))
	}

	h.inflight.leave()
	notYet(t, done, "Shutdown") // one call still runs
	h.inflight.leave()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := h.inflight.count(); n != 0 {
		t.Errorf("%d calls counted after shutdown, want 0", n)
	}
}

func TestShutdownIdleReturnsAtOnce(t *testing.T) {
	h := New(nil, Config{Key: testKey}, discardLogger())
	if err := h.Shutdown(boundedCtx(t)); err != nil {
		t.Fatalf("Shutdown of an idle handler: %v", err)
	}
}

func TestShutdownExpiredContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := New(nil, Config{Key: testKey}, discardLogger())
	for range 3 {
		if !h.inflight.enter() {
			t.Fatal("enter refused before shutdown")
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err := h.Shutdown(ctx)
	if err == nil {
		t.Fatal("Shutdown with an expired ctx returned nil while calls run")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "3 calls still running") {
		t.Errorf("error %q does not say how many calls still run", err)
	}
	// The calls that outlived Shutdown may still end: nothing panics,
	// and new ones stay refused.
	for range 3 {
		h.inflight.leave()
	}
	if h.inflight.enter() {
		t.Error("enter admitted a call after a timed-out shutdown")
	}
	if n := h.inflight.count(); n != 0 {
		t.Errorf("%d calls counted, want 0", n)
	}
}

func TestShutdownCanceledWhileWaiting(t *testing.T) {
	h := New(nil, Config{Key: testKey}, discardLogger())
	h.inflight.enter()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Shutdown(ctx) }()
	waitShutting(t, h)
	notYet(t, done, "Shutdown")
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 calls still running") {
		t.Errorf("Shutdown = %v, want 1 call still running and context.Canceled", err)
	}
	h.inflight.leave()
}

func TestShutdownTwice(t *testing.T) {
	h := New(nil, Config{Key: testKey}, discardLogger())
	if err := h.Shutdown(boundedCtx(t)); err != nil {
		t.Fatalf("first Shutdown: %v", err)
	}
	err := h.Shutdown(boundedCtx(t))
	if err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("second Shutdown = %v, want an error saying it already began", err)
	}
}

func TestRequestsAfterShutdownGet503(t *testing.T) {
	e := newTestEnv(t)
	if err := e.h.Shutdown(boundedCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, c := range []struct {
		path, body string
		hdr        map[string]string
	}{
		{"/api/publish", `{"channel":"late","data":1}`, map[string]string{"X-API-Key": testKey}},
		{"/api", `{"method":"info"}`, map[string]string{"Authorization": "apikey " + testKey}},
		{"/api/info", `{}`, nil}, // even without a key: refused before anything else
	} {
		status, hdr, _ := e.do(http.MethodPost, c.path, c.body, c.hdr)
		if status != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503", c.path, status)
		}
		if got := hdr.Get("Retry-After"); got != "1" {
			t.Errorf("%s: Retry-After %q, want 1", c.path, got)
		}
	}
	// The refused publish did not happen.
	h, err := e.node.History(context.Background(), "late", -1, nil, false)
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(h.Publications) != 0 {
		t.Errorf("a publish refused with 503 reached history: %d publications", len(h.Publications))
	}
}

// Every request, whatever its answer, leaves the count where it found
// it, so that Shutdown does not wait forever.
func TestInflightBalancedAfterRequests(t *testing.T) {
	e := newEnv(t, envOptions{key: testKey, maxBody: 64})
	key := map[string]string{"X-API-Key": testKey}
	for _, c := range []struct {
		method, path, body string
		hdr                map[string]string
		status             int
	}{
		{http.MethodPost, "/api/info", `{}`, key, http.StatusOK},
		{http.MethodPost, "/api/info", `{}`, nil, http.StatusUnauthorized},
		{http.MethodGet, "/api/info", ``, key, http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/publish", strings.Repeat(" ", 65), key, http.StatusRequestEntityTooLarge},
		{http.MethodPost, "/api/nope", `{}`, key, http.StatusNotFound},
		{http.MethodPost, "/api/publish", `{"channel":"nope:x","data":1}`, key, http.StatusOK},
		{http.MethodPost, "/api", `garbage`, key, http.StatusBadRequest},
	} {
		status, _, body := e.do(c.method, c.path, c.body, c.hdr)
		if status != c.status {
			t.Errorf("%s %s: status %d (%q), want %d", c.method, c.path, status, body, c.status)
		}
	}
	// Shutdown returns only when the count is back to 0.
	if err := e.h.Shutdown(boundedCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Real concurrent calls racing Shutdown: each is either served in full
// or refused with 503, and Shutdown returns once the served ones ended.
func TestShutdownUnderLoad(t *testing.T) {
	e := newTestEnv(t)
	client := e.srv.Client()
	const workers = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		served   int
		problems []string
	)
	started := make(chan struct{}, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/publish",
					strings.NewReader(fmt.Sprintf(`{"channel":"load%d","data":%d}`, w, i)))
				if err != nil {
					panic(err)
				}
				req.Header.Set("X-API-Key", testKey)
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					problems = append(problems, err.Error())
					mu.Unlock()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					if !strings.Contains(string(body), `"offset"`) {
						mu.Lock()
						problems = append(problems, fmt.Sprintf("200 with %q", body))
						mu.Unlock()
					}
					mu.Lock()
					served++
					mu.Unlock()
					if i == 0 {
						started <- struct{}{}
					}
				case http.StatusServiceUnavailable:
					if i == 0 {
						started <- struct{}{}
					}
					return
				default:
					mu.Lock()
					problems = append(problems, fmt.Sprintf("status %d: %q", resp.StatusCode, body))
					mu.Unlock()
					return
				}
			}
		}()
	}
	for range workers { // every worker got at least one answer
		<-started
	}
	if err := e.h.Shutdown(boundedCtx(t)); err != nil {
		t.Fatalf("Shutdown under load: %v", err)
	}
	if n := e.h.inflight.count(); n != 0 {
		t.Errorf("%d calls counted after Shutdown returned", n)
	}
	wg.Wait()
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	// Every publication answered with 200 was published, and no other
	// (the stream's top offset counts them, however many history keeps).
	total := 0
	for w := range workers {
		h, err := e.node.History(context.Background(), fmt.Sprintf("load%d", w), -1, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		total += int(h.Offset)
	}
	if total != served {
		t.Errorf("%d publications made, %d were answered with 200", total, served)
	}
}

//go:build leakinject

package main

// Test builds only (go build -tags leakinject): with SPINDLE_TEST_LEAK_RATE=N
// the process leaks N goroutines a second in leakInjected, so the tests can
// watch the watchdog catch a real leak. Release builds do not have this file.

import (
	"os"
	"strconv"
	"time"
)

func init() {
	rate, err := strconv.Atoi(os.Getenv("SPINDLE_TEST_LEAK_RATE"))
	if err != nil || rate <= 0 {
		return
	}
	go func() {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for range t.C {
			go leakInjected(make(chan struct{}))
		}
	}()
}

// leakInjected blocks forever on a channel nobody will send on.
func leakInjected(never chan struct{}) { <-never }

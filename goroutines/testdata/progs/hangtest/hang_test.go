// Package hangtest has two parallel tests that never finish, so that
// `go test -timeout 2s` panics with their names under "running tests:".
package hangtest

import "testing"

var never = make(chan int)

func waitForever() { <-never }

func TestHangsReading(t *testing.T) {
	t.Parallel()
	waitForever()
}

func TestHangsToo(t *testing.T) {
	t.Parallel()
	waitForever()
}

func TestPasses(t *testing.T) {}

// Command mysvc is a module whose path has no dot, for tests that build it
// under a src/ tree (as GOPATH-era layouts do): its worker pool leaks
// goroutines blocked on a channel nobody sends on, then it writes its
// goroutine dump (-out debug2 or debug1) to stdout.
package main

import (
	"flag"
	"os"
	"runtime/pprof"
	"time"

	"mysvc/pool"
)

func main() {
	out := flag.String("out", "debug2", "debug2 or debug1")
	flag.Parse()
	pool.Start(8)
	time.Sleep(200 * time.Millisecond) // let the workers block
	debug := 2
	if *out == "debug1" {
		debug = 1
	}
	pprof.Lookup("goroutine").WriteTo(os.Stdout, debug)
}

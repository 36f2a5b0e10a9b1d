// Command bigdump holds -n goroutines blocked at the bottom of a deep
// recursion, so that its debug=2 goroutine dump passes the runtime's 64 MiB
// limit and is cut. It writes the dump to stdout, or with -serve prints the
// URL of its /debug/pprof/goroutine endpoint on 127.0.0.1 and serves until
// stdin is closed.
//
//	bigdump [-n 5000] [-depth 120] [-out debug2|debug1] [-serve]
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	rpprof "runtime/pprof"
	"time"
)

// descendIntoTheVeryDeepRecursionOfTheBigDump recurses to depth 0 and blocks
// there; its long name and many arguments make every frame line long.
func descendIntoTheVeryDeepRecursionOfTheBigDump(depth, a, b, c, d, e, f, g int, ch chan int) int {
	if depth == 0 {
		return <-ch
	}
	return descendIntoTheVeryDeepRecursionOfTheBigDump(depth-1, a+1, b+2, c+3, d+4, e+5, f+6, g+7, ch) + 1
}

func main() {
	n := flag.Int("n", 5000, "goroutines")
	depth := flag.Int("depth", 120, "recursion depth of each goroutine")
	out := flag.String("out", "debug2", "debug2 or debug1")
	serve := flag.Bool("serve", false, "serve /debug/pprof/goroutine instead of writing a dump")
	flag.Parse()
	ch := make(chan int)
	for i := 0; i < *n; i++ {
		go descendIntoTheVeryDeepRecursionOfTheBigDump(*depth, 1<<40, 2<<40, 3<<40, 4<<40, 5<<40, 6<<40, 7<<40, ch)
	}
	for deadline := time.Now().Add(30 * time.Second); runtime.NumGoroutine() < *n+1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "bigdump: goroutines did not start")
			os.Exit(1)
		}
	}
	time.Sleep(200 * time.Millisecond) // let every goroutine reach the bottom and park
	if !*serve {
		debug := 2
		if *out == "debug1" {
			debug = 1
		}
		if err := rpprof.Lookup("goroutine").WriteTo(os.Stdout, debug); err != nil {
			fmt.Fprintln(os.Stderr, "bigdump:", err)
			os.Exit(1)
		}
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigdump:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/goroutine", pprof.Handler("goroutine"))
	go http.Serve(ln, mux)
	fmt.Printf("http://%s/debug/pprof/goroutine\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin) // serve until the parent closes stdin
}

package main

import (
	"context"
	"fmt"
	"io"
)

func runGoroutines(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spindle goroutines: not implemented yet")
	return 1
}

package main

import (
	"context"
	"fmt"
	"io"
)

func runBench(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spindle bench: not implemented yet")
	return 1
}

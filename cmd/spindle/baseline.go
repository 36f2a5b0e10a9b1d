package main

import (
	"context"
	"fmt"
	"io"
)

func runBaseline(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spindle baseline-hub: not implemented yet")
	return 1
}

package main

import (
	"context"
	"fmt"
	"io"
)

func runProxy(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spindle proxy: not implemented yet")
	return 1
}

package main

import (
	"context"
	"fmt"
	"io"
)

func runToken(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spindle token: not implemented yet")
	return 1
}

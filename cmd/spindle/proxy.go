package main

import (
	"context"
	"io"

	"github.com/spindlehq/spindle/proxy"
)

// runProxy runs the fault-injecting TCP proxy; flags and behaviour live in
// package proxy (proxy.Command) so they are tested there.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if wantsHelp(args) {
		// proxy.Command prints its usage to its stderr: asked for, it
		// belongs on stdout.
		return proxy.Command(ctx, []string{"--help"}, stdout, stdout)
	}
	return proxy.Command(ctx, args, stdout, stderr)
}

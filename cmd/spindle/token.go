package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spindlehq/spindle/auth"
)

// runToken mints an HS256 connection token, or a subscription token with --channel.
func runToken(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user ID (the sub claim)")
	secret := fs.String("secret", os.Getenv("SPINDLE_TOKEN_HMAC_SECRET"), "HMAC secret (default $SPINDLE_TOKEN_HMAC_SECRET)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; 0 for a token that never expires")
	channel := fs.String("channel", "", "mint a subscription token for this channel")
	info := fs.String("info", "", `JSON attached to the connection, e.g. '{"name":"Ann"}'`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "spindle token: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *secret == "" {
		fmt.Fprintln(stderr, "spindle token: --secret (or SPINDLE_TOKEN_HMAC_SECRET) is required")
		return 2
	}
	if *ttl < 0 {
		fmt.Fprintln(stderr, "spindle token: --ttl must not be negative")
		return 2
	}
	var raw json.RawMessage
	if *info != "" {
		if !json.Valid([]byte(*info)) {
			fmt.Fprintln(stderr, "spindle token: --info is not valid JSON")
			return 2
		}
		raw = json.RawMessage(*info)
	}
	var tok string
	var err error
	if *channel != "" {
		tok, err = auth.MintSubscribe(*secret, auth.SubscribeClaims{UserID: *user, Channel: *channel, Info: raw}, *ttl)
	} else {
		tok, err = auth.MintConnect(*secret, auth.ConnectClaims{UserID: *user, Info: raw}, *ttl)
	}
	if err != nil {
		fmt.Fprintln(stderr, "spindle token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

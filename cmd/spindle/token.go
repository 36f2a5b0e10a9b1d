package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spindlehq/spindle/auth"
)

// runToken mints an HS256 connection token, or a subscription token with --channel.
func runToken(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("token", "--user ID [--secret S] [flags]", `Mints an HS256 connection token, or with --channel a subscription token.`)
	user := fs.String("user", "", "user ID (the sub claim); required unless --anonymous")
	anonymous := fs.Bool("anonymous", false, `mint a token with an empty sub: it connects as the anonymous user ""`)
	secret := fs.String("secret", os.Getenv("SPINDLE_TOKEN_HMAC_SECRET"), "HMAC secret (default $SPINDLE_TOKEN_HMAC_SECRET)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; 0 for a token that never expires")
	channel := fs.String("channel", "", "mint a subscription token for this channel")
	info := fs.String("info", "", `JSON attached to the connection, e.g. '{"name":"Ann"}'`)
	pos, code, ok := parseFlags(fs, args, false, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "spindle token: unexpected argument %q\n", pos[0])
		return 2
	}
	switch {
	case *anonymous && *user != "":
		fmt.Fprintln(stderr, "spindle token: --anonymous and --user exclude each other")
		return 2
	case !*anonymous && *user == "":
		fmt.Fprintln(stderr, `spindle token: --user is required (the token's sub claim); give --anonymous for a token with an empty sub, which connects as the anonymous user ""`)
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
	if *anonymous {
		fmt.Fprintln(stderr, `spindle token: minted an anonymous token (empty sub): it connects as user ""`)
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

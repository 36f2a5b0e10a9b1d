package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spindlehq/spindle/auth"
)

func TestTokenCommand(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: "s3"})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runToken(context.Background(), []string{"--user", "42", "--secret", "s3", "--info", `{"n":1}`}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	c, err := v.VerifyConnect(strings.TrimSpace(out.String()))
	if err != nil || c.UserID != "42" || string(c.Info) != `{"n":1}` || c.ExpireAt == 0 {
		t.Fatalf("claims %+v err %v", c, err)
	}
	out.Reset()
	if code := runToken(context.Background(), []string{"--user", "42", "--secret", "s3", "--channel", "private:x"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	sc, err := v.VerifySubscribe(strings.TrimSpace(out.String()))
	if err != nil || sc.Channel != "private:x" {
		t.Fatalf("subscription claims %+v err %v", sc, err)
	}
	for _, bad := range [][]string{{"--user", "1"}, {"--user", "1", "--secret", "s", "--info", "{"}, {"--user", "1", "--secret", "s", "extra"}, {"--user", "1", "--secret", "s", "--ttl", "-1s"}} {
		errb.Reset()
		if code := runToken(context.Background(), bad, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", bad, code, errb.String())
		}
	}
}

// A token without --user has no sub: it is refused unless --anonymous says
// that is what the user wants, and then stderr says what was minted.
func TestTokenWithoutUserNeedsAnonymous(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: "s3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"token", "--secret", "s3"},
		{"token", "--secret", "s3", "--channel", "news"},
		{"token", "--secret", "s3", "--user", ""},
	} {
		stdout, stderr, code := runBinary(t, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "--user") || !strings.Contains(stderr, "--anonymous") {
			t.Errorf("spindle %q: exit %d, stdout %q, stderr %q; want exit 2, no token, and a message naming --user and --anonymous",
				args, code, stdout, stderr)
		}
	}
	stdout, stderr, code := runBinary(t, "token", "--secret", "s3", "--anonymous")
	if code != 0 {
		t.Fatalf("--anonymous: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "anonymous") {
		t.Errorf("--anonymous: stderr %q does not say the token is anonymous", stderr)
	}
	c, err := v.VerifyConnect(strings.TrimSpace(stdout))
	if err != nil || c.UserID != "" {
		t.Errorf("--anonymous token: claims %+v, err %v", c, err)
	}
	if _, stderr, code := runBinary(t, "token", "--secret", "s3", "--anonymous", "--user", "42"); code != 2 || stderr == "" {
		t.Errorf("--anonymous with --user: exit %d, stderr %q; want 2 and a message", code, stderr)
	}
}

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
	for _, bad := range [][]string{{"--user", "1"}, {"--secret", "s", "--info", "{"}, {"--secret", "s", "extra"}, {"--secret", "s", "--ttl", "-1s"}} {
		errb.Reset()
		if code := runToken(context.Background(), bad, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", bad, code, errb.String())
		}
	}
}

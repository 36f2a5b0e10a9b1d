package main

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/spindlehq/spindle/config"
)

func TestSelfCommand(t *testing.T) {
	for arg0, want := range map[string]string{
		"spindle":                           "spindle",
		"./spindle":                         "./spindle",
		"/usr/local/bin/spindle":            "/usr/local/bin/spindle",
		"/tmp/go-build123/b001/exe/spindle": "go run ./cmd/spindle",
		"":                                  "spindle",
		"/home/ann/my bin/spindle":          `'/home/ann/my bin/spindle'`,
		"/opt/it's/spindle":                 `'/opt/it'\''s/spindle'`,
	} {
		if got := selfCommand(arg0); got != want {
			t.Errorf("selfCommand(%q) = %q, want %q", arg0, got, want)
		}
	}
}

// serveConfig applies each flag exactly as config.Set applies its key, and
// keeps --allow-anonymous as an alias of --allow-anonymous-connect.
func TestServeConfigFlags(t *testing.T) {
	for key, typ := range scalarKeys() {
		want, err := config.Load("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := want.Set(key, serveFlagValues[key]); err != nil {
			t.Fatalf("Set(%q): %v", key, err)
		}
		args := []string{"--" + dashed(key) + "=" + serveFlagValues[key]}
		if typ.Kind() == reflect.Bool {
			args = []string{"--" + dashed(key)}
		}
		var stderr strings.Builder
		got, code, ok := serveConfig(args, nil, io.Discard, &stderr)
		if !ok {
			t.Errorf("%v: exit %d: %s", args, code, stderr.String())
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v gave\n%+v\nwant\n%+v", args, got, want)
		}
	}
	for _, tt := range []struct {
		args []string
		env  []string
		want bool
	}{
		{[]string{"--allow-anonymous"}, nil, true},
		{[]string{"--allow-anonymous=true"}, nil, true},
		{nil, []string{"SPINDLE_ALLOW_ANONYMOUS_CONNECT=true"}, true},
		{[]string{"--allow-anonymous-connect=false"}, []string{"SPINDLE_ALLOW_ANONYMOUS_CONNECT=true"}, false},
		{[]string{"--allow-anonymous=false"}, []string{"SPINDLE_ALLOW_ANONYMOUS_CONNECT=1"}, false},
	} {
		var stderr strings.Builder
		got, _, ok := serveConfig(tt.args, tt.env, io.Discard, &stderr)
		if !ok || got.AllowAnonymousConnect != tt.want {
			t.Errorf("%v with %v: ok %v, allow_anonymous_connect %v, want %v (%s)", tt.args, tt.env, ok, got.AllowAnonymousConnect, tt.want, stderr.String())
		}
	}
}

// A bad flag value is refused at once, naming the flag; a bad value in the
// environment names the variable.
func TestServeConfigBadValues(t *testing.T) {
	for _, tt := range []struct {
		args, env []string
		want      []string
	}{
		{[]string{"--ping-interval", "soon"}, nil, []string{"-ping-interval", `bad duration "soon"`}},
		{[]string{"--allow-anonymous-connect=maybe"}, nil, []string{"allow-anonymous-connect"}},
		{[]string{"--max-connections", "-1"}, nil, []string{"max_connections"}},
		{nil, []string{"SPINDLE_PING_INTERVAL=soon"}, []string{"SPINDLE_PING_INTERVAL"}},
		{[]string{"extra"}, nil, []string{"unexpected argument"}},
	} {
		var stderr strings.Builder
		_, code, ok := serveConfig(tt.args, tt.env, io.Discard, &stderr)
		if ok || code != 2 {
			t.Errorf("%v %v: ok %v, exit %d; want 2", tt.args, tt.env, ok, code)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%v %v: stderr %q lacks %q", tt.args, tt.env, stderr.String(), w)
			}
		}
	}
}

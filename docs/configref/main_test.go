package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// docs/configuration.md is what the generator makes of the config package
// now: a changed key, default, usage line or channel option fails here
// until the file is generated again.
func TestConfigurationReferenceIsCurrent(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := render(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, Output))
	if err != nil {
		t.Fatalf("%v: generate it with `go run ./docs/configref`", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			g, w := "", ""
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s is stale: regenerate it with `go run ./docs/configref`; first difference at line %d:\n file: %s\n  now: %s", Output, i+1, g, w)
			}
		}
	}
}

// The reference has a row for every key Settings lists, with its flag,
// variable and default, and one for every yaml key of ChannelOptions: the
// generator cannot drop one silently.
func TestReferenceNamesEverySettingAndOption(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := render(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range config.Settings() {
		row := "| `" + s.Key + "` | " + s.Type + " | " + value(s.Default) + " | `--" + s.Flag() + "` | `" + s.Env() + "` |"
		if !bytes.Contains(doc, []byte(row)) {
			t.Errorf("no row %q", row)
		}
	}
	ct := reflect.TypeFor[config.ChannelOptions]()
	for i := range ct.NumField() {
		key, _, _ := strings.Cut(ct.Field(i).Tag.Get("yaml"), ",")
		if !regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(key) + "` \\| \\w+ \\| .+ \\| .+ \\| .+ \\|$").Match(doc) {
			t.Errorf("no channel option row for %s", key)
		}
	}
	if bytes.Contains(doc, []byte(os.TempDir()+"/")) {
		t.Errorf("the reference holds this machine's temporary directory %s: it must read $TMPDIR", os.TempDir())
	}
}

// A ChannelOptions field without a comment stops the generator with a
// message naming it, rather than a row with no meaning.
func TestUndocumentedOptionIsAnError(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, "config", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile("(?m)^(\\s+Presence\\s+bool\\s+`yaml:\"presence\"`)\\s*//.*$")
	if !line.Match(src) {
		t.Fatal("config/config.go has no commented Presence field to remove the comment of")
	}
	file := filepath.Join(t.TempDir(), "config.go")
	if err := os.WriteFile(file, line.ReplaceAll(src, []byte("$1")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := channelOptions(file); err == nil || !strings.Contains(err.Error(), "ChannelOptions.Presence has no comment") {
		t.Errorf("an uncommented option: %v, want an error naming ChannelOptions.Presence", err)
	}
	if _, err := fieldComments(file, "Missing"); err == nil || !strings.Contains(err.Error(), "no struct type Missing") {
		t.Errorf("a missing type: %v", err)
	}
}

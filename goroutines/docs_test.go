package goroutines

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestJSONFieldsDocumented: every JSON field of analyze, diff and watch
// output is named in docs/goroutines.md.
func TestJSONFieldsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/goroutines.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() != reflect.TypeFor[Report]().PkgPath() {
			return
		}
		seen[typ] = true
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !regexp.MustCompile("[`{,.\\s]" + regexp.QuoteMeta(name) + "[`},:\\s]").MatchString(doc) {
				t.Errorf("%s.%s (json %q) is not in docs/goroutines.md", path, f.Name, name)
			}
			walk(f.Type, path+"."+f.Name)
		}
	}
	walk(reflect.TypeFor[Report](), "Report")
	walk(reflect.TypeFor[DiffReport](), "DiffReport")
	walk(reflect.TypeFor[WatchStep](), "WatchStep")
}

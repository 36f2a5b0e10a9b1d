package config

import (
	"reflect"
	"strings"
	"testing"
)

// ---- Settings: the table flags and env are built from ----

func TestSettingsMatchScalarFields(t *testing.T) {
	c := Default()
	fields := c.scalarFields()
	var structKeys []string
	for _, key := range scalarYAMLKeys(t) {
		if _, ok := fields[key]; !ok {
			t.Errorf("top-level key %q is not settable by Set", key)
		}
		structKeys = append(structKeys, key)
	}
	var tableKeys []string
	for _, s := range Settings() {
		tableKeys = append(tableKeys, s.Key)
		if s.Usage == "" || strings.Contains(s.Usage, "\n") {
			t.Errorf("%s: usage %q must be one line", s.Key, s.Usage)
		}
		if s.Flag() != strings.ReplaceAll(s.Key, "_", "-") || s.Env() != "SPINDLE_"+strings.ToUpper(s.Key) {
			t.Errorf("%s: flag %q env %q", s.Key, s.Flag(), s.Env())
		}
		f, ok := fields[s.Key]
		if !ok {
			continue
		}
		var kind string
		switch f.v.Interface().(type) {
		case Duration:
			kind = "duration"
		case []string:
			kind = "list"
		case string:
			kind = "string"
		case bool:
			kind = "bool"
		case int:
			kind = "int"
		case float64:
			kind = "float"
		}
		if s.Type != kind {
			t.Errorf("%s: type %q, want %q", s.Key, s.Type, kind)
		}
		// the default shown is the embedded default, in a form Set takes back
		back := Default()
		if err := back.Set(s.Key, s.Default); err != nil {
			t.Errorf("%s: default %q: %v", s.Key, s.Default, err)
		} else if !reflect.DeepEqual(back, Default()) {
			t.Errorf("%s: default %q is not the embedded default", s.Key, s.Default)
		}
	}
	if !reflect.DeepEqual(tableKeys, structKeys) {
		t.Errorf("Settings() keys\n%q\nwant the Config fields, in order:\n%q", tableKeys, structKeys)
	}
	// a copy: callers cannot change the table
	Settings()[0].Key = "changed"
	if Settings()[0].Key == "changed" {
		t.Error("Settings returns the table itself")
	}
}

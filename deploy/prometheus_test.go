package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const installPromtool = "Debian package prometheus; scripts/deps.sh installs it"

// Every rule file is valid for Prometheus: PromQL parses, templates parse,
// no duplicate rule.
func TestAlertRulesCheck(t *testing.T) {
	promtool := requireTool(t, "promtool", installPromtool)
	files, err := filepath.Glob("prometheus/*.rules.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files under deploy/prometheus: %v", err)
	}
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// The alerts fire on the series they are meant for, after their "for", with
// the labels and annotations the unit tests spell out, and stay quiet
// otherwise (spindle.rules.test.yml).
func TestAlertRulesUnit(t *testing.T) {
	promtool := requireTool(t, "promtool", installPromtool)
	cmd := exec.Command(promtool, "test", "rules", "spindle.rules.test.yml")
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules did not say SUCCESS:\n%s", out)
	}
	// Each alert of the rule file has a unit test.
	for _, name := range alertNames(t) {
		if !fileContains(t, "prometheus/spindle.rules.test.yml", "alertname: "+name+"\n") {
			t.Errorf("alert %s has no unit test in spindle.rules.test.yml", name)
		}
	}
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert string
			Expr  string
		}
	}
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile("prometheus/spindle.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("spindle.rules.yml: %v", err)
	}
	return rf
}

func alertNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("spindle.rules.yml has no alert")
	}
	return names
}

func fileContains(t *testing.T, file, s string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(data), s)
}

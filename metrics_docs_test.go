package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sidetrack/sidetrack/config"
)

var metricName = regexp.MustCompile(`sidetrack_[a-z_]+`)

// sourceMetrics returns every sidetrack_ series name the code registers,
// from the non-test Go sources.
func sourceMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == "bench" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricName.FindAllString(string(b), -1) {
			out[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMetricsDocCoversEveryMetric: docs/metrics.md names every series the
// code exports, and nothing that does not exist.
func TestMetricsDocCoversEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	code := sourceMetrics(t)
	if len(code) < 30 {
		t.Fatalf("found only %d metrics in the sources", len(code))
	}
	documented := map[string]bool{}
	for _, m := range metricName.FindAllString(string(doc), -1) {
		documented[m] = true
	}
	for m := range code {
		if !documented[m] {
			t.Errorf("%s is exported but not in docs/metrics.md", m)
		}
	}
	for m := range documented {
		if !code[m] {
			t.Errorf("docs/metrics.md names %s, which the code does not export", m)
		}
	}
	// The alerts example is a valid config.
	block := regexp.MustCompile("(?s)```yaml\n(alerts:.*?)```").FindSubmatch(doc)
	if block == nil {
		t.Fatal("no alerts example in docs/metrics.md")
	}
	cfg, err := config.Parse(block[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "alerts") {
		t.Errorf("alerts example: %v", err)
	}
	if cfg.Alerts.DLQDepth != 1000 || cfg.Alerts.MinEvents != 100 {
		t.Errorf("alerts example parsed as %+v", cfg.Alerts)
	}
}

// ruleFile is Prometheus' rule file format, strictly.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRulesExample checks docs/examples/alerts.rules.yml: the rule
// file format (unknown keys are errors), durations, templates as
// Prometheus expands them, balanced expressions, and that every series an
// expression reads is one sidetrack exports.
func TestAlertRulesExample(t *testing.T) {
	b, err := os.ReadFile("docs/examples/alerts.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f ruleFile
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	code := sourceMetrics(t)
	seen := map[string]bool{}
	n := 0
	for _, g := range f.Groups {
		if g.Name == "" || seen["group:"+g.Name] {
			t.Errorf("group name %q empty or repeated", g.Name)
		}
		seen["group:"+g.Name] = true
		for _, r := range g.Rules {
			n++
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("rule %q/%q: exactly one of alert and record", r.Alert, r.Record)
			}
			if seen[r.Alert] {
				t.Errorf("alert %s repeated", r.Alert)
			}
			seen[r.Alert] = true
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if !balanced(r.Expr) {
				t.Errorf("%s: unbalanced expression %q", r.Alert, r.Expr)
			}
			names := metricName.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: expression reads no sidetrack series", r.Alert)
			}
			for _, m := range names {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !code[base] {
					t.Errorf("%s: %s is not a sidetrack series", r.Alert, m)
				}
			}
			for k, v := range r.Annotations {
				// Prometheus defines $labels and $value before expanding.
				if _, err := template.New(k).Parse("{{$labels := .Labels}}{{$value := .Value}}" + v); err != nil {
					t.Errorf("%s: annotation %s: %v", r.Alert, k, err)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d rules", n)
	}
	// promtool, when installed, has the last word.
	if p, err := exec.LookPath("promtool"); err == nil {
		if out, err := exec.Command(p, "check", "rules", "docs/examples/alerts.rules.yml").CombinedOutput(); err != nil {
			t.Errorf("promtool: %v\n%s", err, out)
		}
	}
}

// balanced reports whether (), [] and {} nest properly outside quotes.
func balanced(s string) bool {
	var stack []byte
	pairs := map[byte]byte{')': '(', ']': '[', '}': '{'}
	inQuote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote != 0:
			if c == '\\' {
				i++
			} else if c == inQuote {
				inQuote = 0
			}
		case c == '"' || c == '\'':
			inQuote = c
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0 && inQuote == 0
}

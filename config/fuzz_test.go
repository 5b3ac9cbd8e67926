package config

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// FuzzLoad: any YAML (and any env lines) must give a config or an error,
// never a panic; a config must survive Validate and Print.
func FuzzLoad(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	seeds := []struct{ yaml, env string }{
		{defaultsYAML, ""},
		{string(full), "SIDETRACK_DESTINATIONS__HOOK__HEADERS__X=1\nSIDETRACK_SCRIPTS__0__TTL=1d"},
		{"", "SIDETRACK_SPOOL__MAX_BYTES=8GiB\nSIDETRACK_HOSTS=a.com,b.com"},
		{"listen: [\n", ""},
		{"destinations: [{name: a, type: ga4, batch: {max_events: -1}}]\n", "SIDETRACK_DESTINATIONS__A__MODE=mp"},
		{"a: &a [*a, *a]\n", ""},
		{"server: {max_header_bytes: 1.5KiB, read_timeout: 1d}\nspool: {fsync: never}\n", ""},
		{"ingest: {forms: [{path: /c, event: e, success: {status: [200-2x9]}}]}\n", "SIDETRACK_INGEST__FORMS__0__FIELDS__a=b"},
		{"---\n---\n", ""},
		{"consent: {cmp_cookie: {map: {C1: [ads]}}}\n", "SIDETRACK_CONSENT__CMP_COOKIE__MAP__C2=analytics"},
		{"hosts: !!binary aGVsbG8=\n", ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s.yaml), s.env)
	}
	f.Fuzz(func(t *testing.T, data []byte, env string) {
		var vars []string
		for line := range strings.SplitSeq(env, "\n") {
			// _FILE reads would make the target depend on the machine.
			if !strings.Contains(line, "_FILE=") {
				vars = append(vars, line)
			}
		}
		c, err := Parse(data, vars)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		_ = c.Validate()
		if err := c.Print(&bytes.Buffer{}); err != nil {
			t.Fatalf("Print: %v", err)
		}
	})
}

package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// secretValues are every secret in testdata/full.yaml plus those the test
// adds through env; none may appear in any rendering of the config.
var secretValues = []string{
	"admin-token-0123456789", "first-secret-0123456789", "older-secret-0123456789",
	"server-key-0123456789", "webhook-signing-secret", "webhook-header-secret",
	"ga4-api-secret-value", "meta-access-token-value", "kafka-sasl-password",
	"join-redis-pass", "env-write-key", "file-token-value",
}

func loadWithSecrets(t *testing.T) *Config {
	t.Helper()
	file := writeFile(t, "tok", "file-token-value\n")
	c, err := Load("testdata/full.yaml", []string{
		"SIDETRACK_INGEST__SEGMENT__WRITE_KEYS=env-write-key",
		"SIDETRACK_DESTINATIONS__META_CAPI__ACCESS_TOKEN_FILE=" + file,
		"SIDETRACK_DEDUP__REDIS=rediss://user:file-token-value@redis:6380",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertNoSecrets(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range secretValues {
		if strings.Contains(out, s) {
			t.Errorf("%s leaks %q:\n%s", what, s, out)
		}
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	c := loadWithSecrets(t)
	if c.Destinations[3].Options.AccessToken.Reveal() != "file-token-value" {
		t.Fatal("the _FILE secret did not load")
	}
	var buf bytes.Buffer
	if err := c.Print(&buf); err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, "Print", buf.String())
	for _, want := range []string{"token: '[redacted]'", "api_secret: '[redacted]'", "X-Api-Key: '[redacted]'", "redis://[redacted]@redis:6379/0", "rediss://[redacted]@redis:6380"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Print lacks %q", want)
		}
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	// fmt of the config, which also shows join.redis: the redis password is
	// not a Secret, so only the typed secrets are checked here.
	typed := secretValues[:9]
	for _, out := range []string{
		fmt.Sprintf("%v %+v %#v", c, c, c),
		fmt.Sprintf("%v %+v %#v", *c, *c, *c),
		fmt.Sprintf("%v %+v", c.Destinations, c.Ingest),
		string(js),
	} {
		for _, s := range typed {
			if strings.Contains(out, s) {
				t.Errorf("output leaks %q", s)
			}
		}
	}

	// Validation messages name paths, never values, even for bad secrets.
	c.Secrets = append(c.Secrets, "shortsecret")
	c.Ingest.ServerKeys = append(c.Ingest.ServerKeys, "short-key")
	c.Destinations[4].Options.SASL.Mechanism = ""
	err = c.Validate()
	if err == nil {
		t.Fatal("no validation error")
	}
	assertNoSecrets(t, "Validate", err.Error())
	for _, s := range []string{"shortsecret", "short-key"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("Validate leaks %q", s)
		}
	}
}

// TestSecretsNotInLoadErrors: a secret pasted under the wrong key, or set
// through a mistyped env name, must not be echoed back.
func TestSecretsNotInLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
	}{
		{"scalar where a section is", "admin: admin-token-0123456789\n", nil},
		{"scalar where a list is", "destinations: ga4-api-secret-value\n", nil},
		{"secret in a wrong-typed field", "server: {max_conns: meta-access-token-value}\n", nil},
		{"mistyped env name", "", []string{"SIDETRACK_ADMIN__TOKNE=webhook-signing-secret"}},
		{"env into a section", "", []string{"SIDETRACK_ADMIN=kafka-sasl-password"}},
		{"env to unknown destination", "", []string{"SIDETRACK_DESTINATIONS__NOPE__ACCESS_TOKEN=meta-access-token-value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			assertNoSecrets(t, "error", err.Error())
			// yaml.v3 abbreviates long values to 7 characters: none of those either.
			for _, s := range secretValues {
				if strings.Contains(err.Error(), s[:7]) {
					t.Errorf("error leaks a prefix of %q: %v", s, err)
				}
			}
		})
	}
}

// TestPrintRoundTrip: Print's output loads back, and prints the same again
// (secrets come back as the literal mask, which prints as itself). The
// source sets non-default values everywhere, so a key Print dropped would
// revert to its default and show up as a difference.
func TestPrintRoundTrip(t *testing.T) {
	for _, src := range []string{"", "testdata/full.yaml"} {
		c, err := Load(src, nil)
		if err != nil {
			t.Fatal(err)
		}
		var first, second bytes.Buffer
		if err := c.Print(&first); err != nil {
			t.Fatal(err)
		}
		back, err := Parse(first.Bytes(), nil)
		if err != nil {
			t.Fatalf("%q: printed config does not load: %v\n%s", src, err, first.String())
		}
		if err := back.Print(&second); err != nil {
			t.Fatal(err)
		}
		if first.String() != second.String() {
			t.Errorf("%q: print → load → print differs:\n%s\n----\n%s", src, first.String(), second.String())
		}
		if src != "" && !strings.Contains(first.String(), "max_size: 256MiB") {
			t.Errorf("Print lacks adapter options:\n%s", first.String())
		}
	}
}

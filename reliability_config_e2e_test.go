package main

// Bad configuration through the binary (docs/reliability.md): every
// mistake stops the start with exit 1 and a message naming the key, and
// no secret from the file or the environment appears in the output.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReliabilityBadConfig(t *testing.T) {
	// Secrets that must never be echoed, whatever is wrong.
	secrets := []string{"file-secret-0123456789abcdef", "admin-token-secret-0123456789", "hook-secret-0123456789", "env-secret-0123456789abcdef"}
	base := `listen: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0", token: "admin-token-secret-0123456789"}
secrets: ["file-secret-0123456789abcdef"]
destinations:
  - {name: hook, type: webhook, url: "http://127.0.0.1:1/x", secret: "hook-secret-0123456789"}
`
	cases := []struct {
		name, yaml string
		env        []string
		// want must all appear in the output: the key, or for a value the
		// YAML decoder rejects, its line and the value.
		want []string
	}{
		{"unknown key", base + "unknwon_key: 1\n", nil, []string{"unknwon_key"}},
		{"unknown nested key", base + "spool: {max_byte: 1GiB}\n", nil, []string{"max_byte"}},
		{"bad duration", base + "server: {read_timeout: 10 parsecs}\n", nil, []string{"line 6", "10 parsecs"}},
		{"negative duration", base + "shutdown_timeout: -5s\n", nil, []string{"shutdown_timeout"}},
		{"bad size", base + "spool: {max_bytes: 12 XB}\n", nil, []string{"line 6", "12 XB"}},
		{"zero size", base + "spool: {max_bytes: 0}\n", nil, []string{"spool.max_bytes"}},
		{"bad rate", base + "ingest: {rate_limit: {per_client: fast}}\n", nil, []string{"line 6", "fast"}},
		{"bad type", base + "server: {max_conns: many}\n", nil, []string{"line 6", "int"}},
		{"syntax error", base + "hosts: [a, b\n", nil, []string{"line"}},
		{"bad env value", base, []string{"SIDETRACK_SERVER__READ_TIMEOUT=soon"}, []string{"SIDETRACK_SERVER__READ_TIMEOUT", "soon"}},
		{"unknown env var", base, []string{"SIDETRACK_SERVR__READ_TIMEOUT=1s"}, []string{"SIDETRACK_SERVR__READ_TIMEOUT"}},
		{"env secret with bad sibling", base, []string{"SIDETRACK_SECRETS=env-secret-0123456789abcdef", "SIDETRACK_SPOOL__MAX_BYTES=lots"}, []string{"SIDETRACK_SPOOL__MAX_BYTES"}},
		{"missing secret", strings.Replace(base, `secrets: ["file-secret-0123456789abcdef"]`, "secrets: []", 1), nil, []string{"secrets", "SIDETRACK_SECRETS"}},
		{"short secret", strings.Replace(base, `file-secret-0123456789abcdef`, "tiny-secret", 1), nil, []string{"secrets"}},
		{"missing secret file", strings.Replace(base, `secrets: ["file-secret-0123456789abcdef"]`, "secrets: []", 1), []string{"SIDETRACK_SECRETS_FILE=/nonexistent/secret"}, []string{"SIDETRACK_SECRETS_FILE"}},
		{"webhook without url", strings.Replace(base, `url: "http://127.0.0.1:1/x", `, "", 1), nil, []string{"hook", "url"}},
		{"unknown destination type", base + "  - {name: x, type: carrier-pigeon}\n", nil, []string{"carrier-pigeon"}},
	}
	failed := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sidetrack.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runCmd(t, dir, tc.env, "-config", path)
			all := out + errOut
			if code != 1 {
				t.Errorf("exit %d, want 1\n%s", code, all)
			}
			if strings.Contains(all, "sidetrack started") {
				t.Errorf("it started:\n%s", all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
			for _, s := range append(secrets, "tiny-secret") {
				if strings.Contains(all, s) {
					t.Errorf("output shows the secret %q:\n%s", s, all)
				}
			}
			if t.Failed() {
				failed++
			}
			t.Logf("%s: exit %d: %s", tc.name, code, strings.TrimSpace(firstLine(all)))
		})
	}
	t.Logf("bad config: %d cases, %d refused as documented", len(cases), len(cases)-failed)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

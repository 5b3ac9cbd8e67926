package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dockerfileEnv is the environment the Dockerfile's ENV instruction sets,
// so the examples are checked as the image would run them.
func dockerfileEnv(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	in := false
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "ENV ") {
			in, line = true, strings.TrimPrefix(line, "ENV ")
		}
		if !in {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		for kv := range strings.FieldsSeq(strings.TrimSuffix(line, "\\")) {
			k, v, _ := strings.Cut(kv, "=")
			env = append(env, k+"="+strings.Trim(v, `"`))
		}
		in = cont
	}
	if len(env) == 0 {
		t.Fatal("no ENV in the Dockerfile")
	}
	return env
}

// Every example config of docs/ is valid, as is and with the image's
// environment: one image serves both roles.
func TestDeploymentExamples(t *testing.T) {
	image := dockerfileEnv(t)
	for _, path := range []string{"docs/examples/sidetrack.yaml", "docs/examples/edge.yaml", "docs/examples/forwarder.yaml"} {
		for _, env := range []struct {
			name string
			vars []string
		}{{"plain", nil}, {"image", image}} {
			t.Run(path+"/"+env.name, func(t *testing.T) {
				code, out, errOut := runCmd(t, ".", env.vars, "config", "check", path)
				if code != 0 {
					t.Fatalf("exit %d\n%s%s", code, out, errOut)
				}
			})
		}
	}
}

func TestForwardNeedsKafkaSpool(t *testing.T) {
	tests := []struct {
		name, path, want string
	}{
		{"local spool", "docs/examples/sidetrack.yaml", "spool.type must be kafka"},
		{"no destinations", "docs/examples/edge.yaml", "no destinations"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, ".", nil, "forward", "-config", tc.path)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, errOut, tc.want)
			}
		})
	}
}

// The local DLQ CLI points at the Kafka topics instead of showing an empty
// local spool.
func TestDLQCLIWithKafkaSpool(t *testing.T) {
	for _, args := range [][]string{{"dlq", "list"}, {"quarantine", "list"}} {
		code, _, errOut := runCmd(t, t.TempDir(), nil, append(args, "-config", mustAbs(t, "docs/examples/edge.yaml"))...)
		if code != 1 || !strings.Contains(errOut, "sidetrack-events.dlq.<destination>") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

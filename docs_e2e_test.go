package main

import (
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestCollectDocCurlExamples runs every curl example of docs/collect.md
// against a running sidetrack and checks the status each one promises
// (a "→ NNN" comment before it or a "# HTTP/1.1 NNN" line after it).
func TestCollectDocCurlExamples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is required in CI to run the documentation's examples")
		}
		t.Skip("curl is not installed: the documentation's curl examples are not run")
	}
	doc, err := os.ReadFile("docs/collect.md")
	if err != nil {
		t.Fatal(err)
	}
	shop := origin(t, http.NotFoundHandler())
	dir := t.TempDir()
	in := start(t, dir, testConfig(dir, shop, ""))

	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	arrow := regexp.MustCompile(`→ (\d{3})`)
	after := regexp.MustCompile(`^# HTTP/1\.1 (\d{3})`)
	ran := 0
	for _, b := range blocks {
		lines := strings.Split(b[1], "\n")
		want := ""
		for i := 0; i < len(lines); i++ {
			line := lines[i]
			if m := arrow.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "#") {
				want = m[1]
				continue
			}
			if !strings.HasPrefix(line, "curl ") {
				continue
			}
			cmd := line
			for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
				i++
				cmd = strings.TrimSuffix(cmd, "\\") + " " + strings.TrimSpace(lines[i])
			}
			if want == "" && i+1 < len(lines) {
				if m := after.FindStringSubmatch(lines[i+1]); m != nil {
					want = m[1]
				}
			}
			if want == "" {
				t.Errorf("example without a promised status: %s", cmd)
				continue
			}
			cmd = strings.ReplaceAll(cmd, "http://localhost:8080", in.base)
			cmd = strings.ReplaceAll(cmd, "<server key>", "server-key-0123456789")
			cmd = strings.Replace(cmd, "curl -i", `curl -s -o /dev/null -w '%{http_code}'`, 1)
			out, err := exec.Command("bash", "-c", cmd).Output()
			if err != nil {
				t.Errorf("%s: %v", cmd, err)
			} else if string(out) != want {
				t.Errorf("%s\n  answered %s, the doc says %s", cmd, out, want)
			}
			ran++
			want = ""
		}
	}
	if ran < 8 {
		t.Fatalf("ran only %d examples", ran)
	}
	in.stop()
}

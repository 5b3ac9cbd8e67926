package main

// Black-box tests: they build the sidetrack binary once, run it as a child
// process with a config written for the test, and talk to it over loopback
// like a shop, a browser or a server SDK would.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sidetrack-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "sidetrack")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sidetrack:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects a child's output while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// instance is one running sidetrack process.
type instance struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	base   string // http://127.0.0.1:port
	admin  string
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan error
}

// testConfig is a config for a test instance: ephemeral ports, files in
// dir, no rate limit (fixtures come from one address), quick shutdown, and
// one ndjson destination writing to dir/events.
func testConfig(dir, origin, extra string) string {
	return testConfigWith(dir, origin, fmt.Sprintf("  - {name: local, type: ndjson, path: %q}\n", filepath.Join(dir, "events")), extra)
}

// testConfigWith is testConfig with its own destinations list (YAML list
// items, each line indented by two spaces).
func testConfigWith(dir, origin, destinations, extra string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0", token: "admin-token-0123456789"}
origin: %q
secrets: ["test-secret-0123456789abcdef"]
cookies: {secure: false}
ingest:
  rate_limit: {per_client: 0/s}
  server_keys: ["server-key-0123456789"]
consent:
  default: {analytics: granted, ads: granted, ad_user_data: granted, ad_personalization: granted}
spool: {dir: %q}
destinations:
%sdrain_delay: 0s
shutdown_timeout: 5s
%s`, origin, filepath.Join(dir, "spool"), destinations, extra)
}

// startWith runs the binary with args and env and waits until it serves.
func startWith(t *testing.T, dir string, args []string, env []string) *instance {
	t.Helper()
	in := &instance{t: t, dir: dir, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	in.cmd = exec.Command(binPath, args...)
	in.cmd.Dir = dir
	in.cmd.Env = append(cleanEnv(), env...)
	in.cmd.Stdout, in.cmd.Stderr = in.stdout, in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.done <- in.cmd.Wait() }()
	t.Cleanup(func() {
		if in.cmd.ProcessState == nil {
			_ = in.cmd.Process.Kill()
			<-in.done
		}
		if t.Failed() {
			t.Logf("sidetrack stderr:\n%s", in.stderr.String())
		}
	})
	started := regexp.MustCompile(`"msg":"sidetrack started".*"listen":"([^"]+)","admin":"([^"]+)"`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := started.FindStringSubmatch(in.stderr.String()); m != nil {
			in.base, in.admin = "http://"+m[1], "http://"+m[2]
			return in
		}
		select {
		case err := <-in.done:
			t.Fatalf("sidetrack exited before serving: %v\n%s", err, in.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("sidetrack did not start:\n%s", in.stderr.String())
	return nil
}

// start writes cfg to a file and runs sidetrack with it.
func start(t *testing.T, dir, cfg string) *instance {
	t.Helper()
	path := filepath.Join(dir, "sidetrack.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return startWith(t, dir, []string{"-config", path}, nil)
}

// cleanEnv is the test's environment without SIDETRACK_ variables, which
// the binary would read as overrides.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIDETRACK_") {
			env = append(env, kv)
		}
	}
	return env
}

func (in *instance) signal(sig os.Signal) {
	if err := in.cmd.Process.Signal(sig); err != nil {
		in.t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (in *instance) wait(limit time.Duration) int {
	in.t.Helper()
	select {
	case <-in.done:
		return in.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		in.t.Fatalf("sidetrack did not exit within %v", limit)
		return -1
	}
}

// stop shuts the instance down gracefully and checks it exits 0.
func (in *instance) stop() {
	in.t.Helper()
	in.signal(syscall.SIGTERM)
	if code := in.wait(30 * time.Second); code != 0 {
		in.t.Fatalf("exit code %d after SIGTERM\n%s", code, in.stderr.String())
	}
}

// events reads every event the ndjson destination has written.
func (in *instance) events() []map[string]any {
	in.t.Helper()
	f, err := os.Open(filepath.Join(in.dir, "events", "events.ndjson"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		in.t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			in.t.Fatalf("bad ndjson line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// eventsNamed waits until at least n events are written and returns them.
func (in *instance) waitEvents(n int) []map[string]any {
	in.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := in.events()
		if len(evs) >= n || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminGet fetches an admin endpoint with the test token.
func (in *instance) adminGet(path string) []byte {
	in.t.Helper()
	req, _ := http.NewRequest("GET", in.admin+path, nil)
	req.Header.Set("Authorization", "Bearer admin-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		in.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// metricSum adds up every sidetrack_events_total series whose labels
// contain match.
func (in *instance) metricSum(match string) int {
	in.t.Helper()
	req, _ := http.NewRequest("GET", in.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer admin-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "sidetrack_events_total{") && strings.Contains(line, match) {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			sum += int(v)
		}
	}
	return sum
}

// origin starts a plain net/http shop on loopback.
func origin(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func runCmd(t *testing.T, dir string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

func TestConfigCheckAndPrint(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCmd(t, ".", nil, "config", "check", "docs/examples/sidetrack.yaml")
	if code != 0 {
		t.Fatalf("example config: exit %d\n%s%s", code, out, errOut)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`listen: ":8080"
secrets: ["supersecret-value-0123456789"]
server: {read_timeout: 10 parsecs}
destinations:
  - {name: hook, type: webhook}
  - {name: meta, type: metacapi, pixel_id: "1", access_token: "tok-very-secret"}
unknown_key: 1
`), 0o600)
	code, _, errOut = runCmd(t, dir, nil, "config", "check", bad)
	if code != 1 {
		t.Fatalf("bad config: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{"unknown_key", "10 parsecs", "line 3"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("config check output lacks %q:\n%s", want, errOut)
		}
	}

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`secrets: ["supersecret-value-0123456789"]
admin: {token: "admin-secret-0123456789"}
destinations:
  - {name: hook, type: webhook, url: "https://hooks.example/x", secret: "hook-secret-0123456789"}
`), 0o600)
	code, out, errOut = runCmd(t, dir, []string{"SIDETRACK_DESTINATIONS__HOOK__HEADERS__X_TOKEN=env-secret-0123456789"}, "config", "print", "-config", good)
	if code != 0 {
		t.Fatalf("config print: exit %d\n%s", code, errOut)
	}
	for _, secret := range []string{"supersecret-value", "admin-secret", "hook-secret", "env-secret"} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("config print shows secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "hooks.example") {
		t.Errorf("config print lacks non-secret values:\n%s", out)
	}
}

func TestRefusesToStartWithoutSecrets(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n"), 0o600)
	code, _, errOut := runCmd(t, dir, nil, "-config", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut, "secrets") || !strings.Contains(errOut, "SIDETRACK_SECRETS") {
		t.Errorf("error does not say how to set a secret:\n%s", errOut)
	}
}

func TestGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	inFlight := make(chan struct{}, 1)
	shop := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			inFlight <- struct{}{}
			<-release
		}
		io.WriteString(w, "shop:"+r.URL.Path)
	}))
	dir := t.TempDir()
	in := start(t, dir, strings.Replace(testConfig(dir, shop, ""), "drain_delay: 0s", "drain_delay: 300ms", 1))

	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get(in.base + "/slow")
		if err != nil {
			slow <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	<-inFlight
	in.signal(syscall.SIGTERM)

	// Readiness turns 503 while the process keeps serving.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(in.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never turned 503 after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if got := <-slow; got != "200 shop:/slow" {
		t.Fatalf("in-flight request during shutdown: %s", got)
	}
	if code := in.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, in.stderr.String())
	}
	if _, err := http.Get(in.base + "/"); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	shop := origin(t, http.NotFoundHandler())
	dir := t.TempDir()
	in := start(t, dir, strings.Replace(testConfig(dir, shop, ""), "drain_delay: 0s", "drain_delay: 1h", 1))
	in.signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(in.stderr.String(), "shutting down") {
		if time.Now().After(deadline) {
			t.Fatal("no shutdown log line")
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.signal(syscall.SIGINT)
	if code := in.wait(10 * time.Second); code == 0 {
		t.Fatal("second signal: exit code 0, want non-zero (interrupted)")
	}
}

func TestHealthcheckCommand(t *testing.T) {
	shop := origin(t, http.NotFoundHandler())
	dir := t.TempDir()
	in := start(t, dir, testConfig(dir, shop, ""))
	addr := strings.TrimPrefix(in.admin, "http://")
	if code, out, errOut := runCmd(t, dir, nil, "healthcheck", "-addr", addr); code != 0 {
		t.Fatalf("healthy instance: exit %d %s %s", code, out, errOut)
	}
	in.stop()
	if code, _, _ := runCmd(t, dir, nil, "healthcheck", "-addr", addr, "-timeout", "2s"); code != 1 {
		t.Fatalf("stopped instance: exit %d, want 1", code)
	}
}

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	in := startDemo(t, dir)
	resp, err := http.Get(in.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("Demo shop")) {
		t.Fatalf("demo home: %d %s", resp.StatusCode, body)
	}
	// The contact form: the shop answers 303, sidetrack emits a lead.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", in.base+"/contact", strings.NewReader("email=jane%40example.com&message=hi"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/thanks" {
		t.Fatalf("form post: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	evs := in.waitEvents(1)
	if len(evs) != 1 || evs[0]["name"] != "lead_submitted" || evs[0]["source"] != "form" {
		t.Fatalf("events: %v", evs)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "events", "events.ndjson"))
	if bytes.Contains(raw, []byte("jane")) {
		t.Fatal("raw email written to the event log")
	}
	in.stop()
}

// startDemo runs `sidetrack -demo` with its ports and files moved into the
// test's own space by env overrides, as a user could.
func startDemo(t *testing.T, dir string) *instance {
	t.Helper()
	in := &instance{t: t, dir: dir, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	in.cmd = exec.Command(binPath, "-demo")
	in.cmd.Dir = dir
	in.cmd.Env = append(cleanEnv(),
		"SIDETRACK_LISTEN=127.0.0.1:0", "SIDETRACK_ADMIN__LISTEN=127.0.0.1:0",
		"SIDETRACK_SPOOL__DIR="+filepath.Join(dir, "spool"),
		"SIDETRACK_DESTINATIONS__LOCAL__PATH="+filepath.Join(dir, "events"),
		"SIDETRACK_DRAIN_DELAY=0s")
	in.cmd.Stdout, in.cmd.Stderr = in.stdout, in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.done <- in.cmd.Wait() }()
	t.Cleanup(func() {
		if in.cmd.ProcessState == nil {
			_ = in.cmd.Process.Kill()
			<-in.done
		}
	})
	shopLine := regexp.MustCompile(`Shop \(through sidetrack\): (http://\S+)/`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := shopLine.FindStringSubmatch(in.stdout.String()); m != nil {
			in.base = m[1]
			return in
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("demo did not print its URL:\n%s\n%s", in.stdout.String(), in.stderr.String())
	return nil
}

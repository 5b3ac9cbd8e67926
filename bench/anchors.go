package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// nginxConf is a minimal reverse proxy in front of the fake origin, the
// way a shop runs nginx today: proxy_pass with upstream keepalive, one
// worker (the §8 layout gives the server one core), no access log. Every
// path lives under the prefix, so it runs without root.
const nginxConf = `daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream origin {
        server %[2]s;
        keepalive 128;
    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
}
`

// findNginx is the nginx binary to use as the pass-through anchor: the
// -nginx flag, else nginx on PATH or in /usr/sbin (often not on a user's
// PATH). "" means none.
func findNginx(flagValue string) string {
	switch flagValue {
	case "off":
		return ""
	case "", "auto":
	default:
		return flagValue
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// startNginx runs nginx in the foreground as a child, proxying to origin
// (host:port), with its config and temp paths under dir.
func startNginx(bin, dir, origin string, cpu int) (*child, string, error) {
	dir = filepath.Join(dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	// Started as root, nginx workers run as nobody and must reach the prefix.
	_ = os.Chmod(dir, 0o755)
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, origin, addr)), 0o644); err != nil {
		return nil, "", err
	}
	ch, err := startChild(bin, []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}, nil, cpu, filepath.Join(dir, "stderr.log"))
	if err != nil {
		return nil, "", err
	}
	if err := waitListening(ch, addr, filepath.Join(dir, "error.log")); err != nil {
		return nil, "", fmt.Errorf("nginx: %w", err)
	}
	return ch, "http://" + addr, nil
}

// benthosConf is a minimal Benthos pipeline: events POSTed to /post,
// dropped. It is the least Benthos can do per event, so the ratio to it is
// generous to Benthos.
const benthosConf = `http:
  enabled: true
  address: %q
input:
  http_server:
    path: /post
    allowed_verbs: [POST]
output:
  drop: {}
logger:
  level: WARN
metrics:
  none: {}
`

// benthosVersion is the Benthos the bench builds when asked to; it is
// cached per version in the user cache dir.
const benthosVersion = "v4.60.0"

const benthosMain = `package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() { service.RunCLI(context.Background()) }
`

// findBenthos is the Benthos binary for the anchor: -benthos PATH; with
// "cached" the one an earlier run built (or benthos on PATH); with "auto"
// that, else it is built once (github.com/redpanda-data/benthos/v4 at
// benthosVersion with its io and pure components, ≈ 45 s) and cached in
// the user cache dir. "" and the reason when there is none.
func findBenthos(ctx context.Context, flagValue string, logf func(string, ...any)) (string, string) {
	if flagValue == "off" {
		return "", "skipped (-benthos off)"
	}
	if flagValue != "" && flagValue != "auto" && flagValue != "cached" {
		return flagValue, ""
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", "no user cache dir: " + err.Error()
	}
	dir := filepath.Join(cache, "sidetrack-bench", "benthos-"+benthosVersion)
	bin := filepath.Join(dir, "benthos")
	if _, err := os.Stat(bin); err == nil {
		return bin, ""
	}
	if p, err := exec.LookPath("benthos"); err == nil {
		return p, ""
	}
	if flagValue == "cached" {
		return "", "no cached Benthos binary (-benthos auto builds one)"
	}
	logf("building Benthos %s into %s (once; needs the Go module proxy)", benthosVersion, dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err.Error()
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(benthosMain), 0o644); err != nil {
		return "", err.Error()
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module benchbenthos\n\ngo 1.26\n"), 0o644); err != nil {
		return "", err.Error()
	}
	for _, args := range [][]string{
		{"get", "github.com/redpanda-data/benthos/v4/public/service@" + benthosVersion},
		{"mod", "tidy"},
		{"build", "-o", bin, "."},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Sprintf("building Benthos failed (go %s): %v: %s", strings.Join(args, " "), err, tail(out))
		}
	}
	return bin, ""
}

// startBenthos runs the pipeline of benthosConf on a free port.
func startBenthos(bin, dir string, cpu int) (*child, string, error) {
	dir = filepath.Join(dir, "benthos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	conf := filepath.Join(dir, "benthos.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(benthosConf, addr)), 0o644); err != nil {
		return nil, "", err
	}
	logPath := filepath.Join(dir, "benthos.log")
	ch, err := startChild(bin, []string{"-c", conf}, nil, cpu, logPath)
	if err != nil {
		return nil, "", err
	}
	if err := waitListening(ch, addr, logPath); err != nil {
		return nil, "", fmt.Errorf("benthos: %w", err)
	}
	return ch, "http://" + addr, nil
}

// freePort is a loopback address with a port that was free a moment ago,
// for servers that cannot report the port they bound.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitListening waits until addr accepts connections, or the child exits
// (its log then says why).
func waitListening(ch *child, addr, logPath string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-ch.done:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("exited before listening: %v\n%s", err, tail(b))
		case <-time.After(50 * time.Millisecond):
		}
	}
	ch.kill()
	b, _ := os.ReadFile(logPath)
	return fmt.Errorf("not listening on %s after 30s\n%s", addr, tail(b))
}

// procTree is pid and its descendants (nginx's workers), from /proc.
func procTree(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 {
			pp, _ := strconv.Atoi(f[1])
			parent[p] = pp
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for p, pp := range parent {
			if pp == out[i] {
				out = append(out, p)
			}
		}
	}
	return out
}

// treeCPU is the CPU time of pids together.
func treeCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	var errs []error
	for _, p := range pids {
		c, err := procCPU(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sum += c
	}
	if len(errs) == len(pids) {
		return 0, errors.Join(errs...)
	}
	return sum, nil
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// child is a process the bench started: sidetrack or the ceiling.
type child struct {
	cmd    *exec.Cmd
	stdout io.Reader // nil when output goes to a log file
	done   chan error
}

// startChild runs exe with args, adding env to the bench's environment
// minus SIDETRACK_ overrides (which sidetrack would read). With cpu ≥ 0 it
// runs under `taskset -c cpu`. With logPath, stdout and stderr go to that file;
// otherwise stdout is a pipe and stderr is the bench's.
func startChild(exe string, args, env []string, cpu int, logPath string) (*child, error) {
	if cpu >= 0 {
		args = append([]string{"-c", strconv.Itoa(cpu), exe}, args...)
		exe = "taskset"
	}
	cmd := exec.Command(exe, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIDETRACK_") && !strings.HasPrefix(kv, childEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	ch := &child{cmd: cmd, done: make(chan error, 1)}
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		ch.stdout = out
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { ch.done <- cmd.Wait() }()
	return ch, nil
}

// pid is the child's process id (taskset execs the program, so the pid is
// the program's).
func (c *child) pid() int { return c.cmd.Process.Pid }

// kill stops the child at once and waits for it.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop asks the child to shut down (SIGTERM) and kills it after grace.
func (c *child) stop(grace time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.kill()
	}
}

// moduleRoot is the directory of sidetrack's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the sidetrack module (run from the repository)")
	}
	return filepath.Dir(mod), nil
}

// buildSidetrack builds the binary into dir.
func buildSidetrack(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "sidetrack")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building sidetrack: %v\n%s", err, out)
	}
	return bin, nil
}

// benchConfig is sidetrack's config for a bench: ephemeral ports, no rate
// limit (all load comes from one address), consent granted (so every
// event is routed), one webhook destination to the counting fake.
func benchConfig(dir, origin, hook string, dedupCap int) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0"}
origin: %q
secrets: ["bench-secret-0123456789abcdef"]
cookies: {secure: false}
ingest:
  rate_limit: {per_client: 0/s}
  forms:
    - {path: %q, event: lead_submitted, fields: {email: email, phone: phone, bench_id: bench_id}}
consent:
  default: {analytics: granted, ads: granted, ad_user_data: granted, ad_personalization: granted}
dedup: {capacity: %d}
spool: {dir: %q}
destinations:
  - {name: hook, type: webhook, url: %q, batch: {max_events: 500, max_wait: 50ms}}
drain_delay: 0s
shutdown_timeout: 10s
`, origin, formPath, dedupCap, filepath.Join(dir, "spool"), hook+"/hook")
}

var startedLine = regexp.MustCompile(`"msg":"sidetrack started".*"listen":"([^"]+)","admin":"([^"]+)"`)

// startSidetrack writes the config, runs the binary and waits for its
// "sidetrack started" log line, which names the ports it bound.
func startSidetrack(bin, dir, cfg string, cpu int) (ch *child, base, admin string, err error) {
	path := filepath.Join(dir, "sidetrack.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", "", err
	}
	logPath := filepath.Join(dir, "sidetrack.log")
	ch, err = startChild(bin, []string{"-config", path}, nil, cpu, logPath)
	if err != nil {
		return nil, "", "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if m := startedLine.FindSubmatch(b); m != nil {
			return ch, "http://" + string(m[1]), "http://" + string(m[2]), nil
		}
		select {
		case err := <-ch.done:
			return nil, "", "", fmt.Errorf("sidetrack exited before serving: %v\n%s", err, tail(b))
		case <-time.After(20 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(logPath)
	ch.kill()
	return nil, "", "", fmt.Errorf("sidetrack did not start in 30s:\n%s", tail(b))
}

// tail is the end of a log, enough to show why something failed.
func tail(b []byte) []byte {
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return b
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// USER_HZ is 100 on every Linux the bench runs on.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// procMem reads VmHWM (peak RSS) and RssAnon, in bytes, from /proc/<pid>/status.
func procMem(pid int) (hwm, anon int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			hwm = kb << 10
		case "RssAnon":
			anon = kb << 10
		}
	}
	return hwm, anon, nil
}

// mallocs is go_memstats_mallocs_total from sidetrack's admin /metrics
// (VictoriaMetrics' process metrics): Go heap allocations since start.
func mallocs(admin string) (int64, error) {
	code, body, err := fasthttp.GetTimeout(nil, admin+"/metrics", 5*time.Second)
	if err != nil {
		return 0, err
	}
	if code != fasthttp.StatusOK {
		return 0, fmt.Errorf("admin /metrics: %d", code)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_mallocs_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, errors.New("admin /metrics has no go_memstats_mallocs_total")
}

// deliveryMetrics is the delivery-related part of sidetrack's /metrics,
// attached to the report when deliveries stall so the cause is visible.
func deliveryMetrics(admin string) []string {
	code, body, err := fasthttp.GetTimeout(nil, admin+"/metrics", 5*time.Second)
	if err != nil || code != fasthttp.StatusOK {
		return []string{fmt.Sprintf("admin /metrics: %d %v", code, err)}
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "sidetrack_deliveries_total") || strings.HasPrefix(line, "sidetrack_retries_total") ||
			strings.HasPrefix(line, "sidetrack_dlq_events") || strings.HasPrefix(line, "sidetrack_spool_events") ||
			strings.HasPrefix(line, "sidetrack_events_total") || strings.HasPrefix(line, "sidetrack_dedup_checks_total") {
			out = append(out, "metric: "+line)
		}
	}
	return out
}

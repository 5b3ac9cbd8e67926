package main

// Storage faults through the binary (docs/reliability.md): a spool file
// that is garbage or torn at start, and a file system that refuses to let
// the spool grow (a file-size limit set on the process).

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// startCmd runs cmd (the binary, maybe wrapped) and waits until it serves.
func startCmd(t *testing.T, dir string, cmd *exec.Cmd) *instance {
	t.Helper()
	in := &instance{t: t, dir: dir, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1), cmd: cmd}
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = in.stdout, in.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-in.done
		}
		if t.Failed() {
			t.Logf("sidetrack stderr:\n%s", in.stderr.String())
		}
	})
	started := regexp.MustCompile(`"msg":"sidetrack started".*"listen":"([^"]+)","admin":"([^"]+)"`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
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

func TestReliabilityStorage(t *testing.T) {
	// spoolWith writes a real spool holding n undelivered events and
	// returns their ids.
	spoolWith := func(t *testing.T, dir string, n int) []string {
		s := newSink()
		s.setAnswer(func(int) (int, string) { return 503, "" })
		in := start(t, dir, hookConfig(dir, origin(t, s), ""))
		acked, _ := collect(t, in.base, "old", n, 4)
		if len(acked) != n {
			t.Fatalf("%d of %d acked before the damage", len(acked), n)
		}
		in.stop()
		return acked
	}
	for _, tc := range []struct {
		name string
		// damage breaks dir's spool file and returns the ids of events in
		// it that must still be delivered.
		damage func(t *testing.T, dir, path string) []string
		aside  bool
	}{
		{"garbage spool file", func(t *testing.T, _, path string) []string {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a spool ", 5000)), 0o640); err != nil {
				t.Fatal(err)
			}
			return nil
		}, true},
		{"torn inside the data", func(t *testing.T, dir, path string) []string {
			spoolWith(t, dir, 200)
			if err := os.Truncate(path, 40<<10+123); err != nil {
				t.Fatal(err)
			}
			return nil // set aside for forensics, not replayed
		}, true},
		{"torn in the preallocated tail", func(t *testing.T, dir, path string) []string {
			old := spoolWith(t, dir, 200)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			// bbolt grows the file 16 MiB ahead of its data; losing part
			// of that loses nothing.
			if err := os.Truncate(path, fi.Size()/2+123); err != nil {
				t.Fatal(err)
			}
			return old
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spoolDir := filepath.Join(dir, "spool")
			if err := os.MkdirAll(spoolDir, 0o750); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(spoolDir, "spool.db")
			old := tc.damage(t, dir, path)
			s := newSink()
			in := start(t, dir, hookConfig(dir, origin(t, s), ""))
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if (len(aside) == 1) != tc.aside {
				entries, _ := os.ReadDir(spoolDir)
				t.Fatalf("set aside: %v, want %v: %v", aside, tc.aside, entries)
			}
			if tc.aside && !strings.Contains(in.stderr.String(), "SPOOL FILE IS CORRUPT") {
				t.Errorf("no loud log line about the corrupt spool:\n%s", in.stderr.String())
			}
			acked, other := collect(t, in.base, "fresh", 20, 2)
			if len(acked) != 20 {
				t.Fatalf("after start on a damaged spool: %d acked, other answers %v", len(acked), other)
			}
			balance(t, in, s, tc.name, append(old, acked...), 0, false)
			t.Logf("%s: started (set aside: %v), %d earlier events delivered, new events flow", tc.name, tc.aside, len(old))
			in.stop()
		})
	}

	t.Run("file size limit", func(t *testing.T) {
		dir := t.TempDir()
		s := newSink()
		s.setAnswer(func(int) (int, string) { return 503, "" })
		hook := origin(t, s)
		cfgPath := filepath.Join(dir, "sidetrack.yaml")
		cfg := hookConfig(dir, hook, "")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		// A limit below the spool's first growth (16 MiB past its data)
		// stops the start with a clear error.
		tooSmall := exec.Command("/bin/sh", "-c", `ulimit -f 2048 && exec "$0" "$@"`, binPath, "-config", cfgPath)
		tooSmall.Dir, tooSmall.Env = dir, cleanEnv()
		out, err := tooSmall.CombinedOutput()
		if code := tooSmall.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(string(out), "spool.db") {
			t.Errorf("start under a 1–2 MiB file-size limit: exit %d, output %q; want exit 1 naming the spool file", code, out)
		}
		if err := os.RemoveAll(filepath.Join(dir, "spool")); err != nil {
			t.Fatal(err)
		}
		// ulimit -f counts 512- or 1024-byte blocks depending on the
		// shell: the spool may grow to 20–40 MiB.
		in := startCmd(t, dir, exec.Command("/bin/sh", "-c", `ulimit -f 40000 && exec "$0" "$@"`, binPath, "-config", cfgPath))
		var (
			mu            sync.Mutex
			acked         []string
			full, noRetry int
			wg            sync.WaitGroup
		)
		client := &http.Client{Timeout: 30 * time.Second}
		pad := strings.Repeat("x", 8000)
		for g := range 8 {
			wg.Go(func() {
				for i := 0; i < 5000; i++ {
					mu.Lock()
					done := full >= 20
					mu.Unlock()
					if done {
						return
					}
					id := fmt.Sprintf("fsz-%d-%05d", g, i)
					req, _ := http.NewRequest("POST", in.base+"/collect",
						strings.NewReader(`{"name":"reliability_probe","event_id":"`+id+`","properties":{"pad":"`+pad+`"}}`))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer server-key-0123456789")
					resp, err := client.Do(req)
					if err != nil {
						t.Errorf("after %d acked: %v (did the process die?)", len(acked), err)
						return
					}
					resp.Body.Close()
					mu.Lock()
					switch resp.StatusCode {
					case http.StatusNoContent:
						acked = append(acked, id)
					case http.StatusTooManyRequests:
						full++
						if resp.Header.Get("Retry-After") == "" {
							noRetry++
						}
					default:
						t.Errorf("answer %d on a full file system, want 204 or 429", resp.StatusCode)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if full == 0 {
			t.Fatalf("the spool never hit the file-size limit (%d acked)", len(acked))
		}
		if noRetry > 0 {
			t.Errorf("%d answers 429 without Retry-After", noRetry)
		}
		s.setAnswer(nil)
		balance(t, in, s, "file size limit", acked, 0, false)
		// Delivered events free pages the spool reuses: new ones fit again.
		var after []string
		for deadline := time.Now().Add(60 * time.Second); len(after) < 20 && time.Now().Before(deadline); {
			a, _ := collect(t, in.base, fmt.Sprintf("fsz-after-%d", len(after)), 20-len(after), 1)
			after = append(after, a...)
			time.Sleep(50 * time.Millisecond)
		}
		balance(t, in, s, "after the limit", after, 0, false)
		t.Logf("file size limit: %d acked until the spool hit it, then %d answered 429 + Retry-After; %d accepted after the drain",
			len(acked), full, len(after))
		in.stop()
	})
}

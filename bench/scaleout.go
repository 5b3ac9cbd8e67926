package main

// The scale-out topology of docs/deployment.md under load: N edge
// replicas append to Kafka (an in-process kfake cluster on loopback, so
// figures measure sidetrack, not a broker's disks), M `sidetrack forward`
// processes drain the topic to a counting webhook. Two phases: ingest
// (edges only, closed loop, events acknowledged per second), then drain
// (forwarders started on the full topic, events delivered per second per
// forwarder). Accounting checks that every acknowledged event arrived.
//
// This file is self-contained (its own child processes, load and webhook)
// so that it does not depend on the rest of the suite's internals.

import (
	"context"
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
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// ScaleOutOptions are the settings of one scale-out run.
type ScaleOutOptions struct {
	Edges       int           // edge replicas (spool.type kafka)
	Forwarders  int           // `sidetrack forward` processes
	Partitions  int           // partitions of the spool topic
	Connections int           // closed-loop connections, spread over the edges
	Duration    time.Duration // ingest phase length
	DrainMax    time.Duration // longest wait for the drain phase
	// Binary is a built sidetrack; empty builds one from ModuleRoot (or
	// the module found by `go env GOMOD`).
	Binary     string
	ModuleRoot string
}

// ScaleOutReport is what one run measured.
type ScaleOutReport struct {
	Edges, Forwarders, Partitions int
	Acked                         int64   // events answered 204
	Refused                       int64   // answers other than 204 (429, 503)
	IngestSeconds                 float64 // ingest phase length
	IngestPerSecond               float64 // acknowledged events per second, all edges
	DrainSeconds                  float64 // first forwarder start to last delivery
	DeliveredPerSecond            float64 // during the drain, all forwarders
	PerForwarder                  float64 // DeliveredPerSecond / Forwarders
	Lost, Duplicates              int64
}

// Failed reports a broken delivery promise: an acknowledged event lost.
func (r *ScaleOutReport) Failed() bool { return r.Lost > 0 }

// WriteText prints the report.
func (r *ScaleOutReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "scale-out: %d edges → kafka (kfake, %d partitions) → %d forwarders → webhook\n", r.Edges, r.Partitions, r.Forwarders)
	fmt.Fprintf(w, "  ingest  %8.0f events/s acknowledged (%d in %.1fs, %d refused)\n", r.IngestPerSecond, r.Acked, r.IngestSeconds, r.Refused)
	fmt.Fprintf(w, "  drain   %8.0f events/s delivered, %.0f per forwarder (%.1fs)\n", r.DeliveredPerSecond, r.PerForwarder, r.DrainSeconds)
	fmt.Fprintf(w, "  lost %d, duplicates %d\n", r.Lost, r.Duplicates)
}

// soCounter is the webhook: deliveries per event id.
type soCounter struct {
	mu   sync.Mutex
	seen map[string]int
	last atomic.Int64 // unix ns of the last delivery
}

func (c *soCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, e := range body.Events {
		c.seen[e.EventID]++
	}
	c.mu.Unlock()
	c.last.Store(time.Now().UnixNano())
	w.WriteHeader(http.StatusOK)
}

func (c *soCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// soProc is one sidetrack child process.
type soProc struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func (p *soProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

var (
	soEdgeLine = regexp.MustCompile(`"msg":"sidetrack started".*"listen":"([^"]+)"`)
	soFwdLine  = regexp.MustCompile(`"msg":"sidetrack forwarder started"`)
)

// soStart runs bin with args, logging to dir/name.log, and waits for want.
func soStart(bin, dir, name string, args []string, want *regexp.Regexp) (*soProc, []string, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, nil, err
	}
	p := &soProc{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		b, _ := os.ReadFile(logPath)
		if m := want.FindStringSubmatch(string(b)); m != nil {
			return p, m, nil
		}
		select {
		case err := <-p.done:
			return nil, nil, fmt.Errorf("%s exited: %v\n%s", name, err, b)
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.stop()
	return nil, nil, fmt.Errorf("%s did not start", name)
}

// soConfig is the config both roles share.
func soConfig(hook string, brokers []string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0"}
origin: %q
secrets: ["bench-secret-0123456789abcdef"]
cookies: {secure: false}
ingest:
  rate_limit: {per_client: 0/s}
  server_keys: ["bench-server-key-0123456789"]
consent:
  default: {analytics: granted, ads: granted, ad_user_data: granted, ad_personalization: granted}
spool: {type: kafka, brokers: [%s], topic: sidetrack-events, session_timeout: 6s}
destinations:
  - {name: hook, type: webhook, url: %q, batch: {max_events: 500, max_wait: 50ms}}
drain_delay: 0s
shutdown_timeout: 10s
`, hook, strings.Join(brokers, ", "), hook+"/hook")
}

// RunScaleOut runs the scale-out topology once; log receives progress.
func RunScaleOut(ctx context.Context, o ScaleOutOptions, log io.Writer) (*ScaleOutReport, error) {
	o.Edges, o.Forwarders = max(o.Edges, 1), max(o.Forwarders, 1)
	o.Partitions, o.Connections = max(o.Partitions, o.Forwarders), max(o.Connections, o.Edges)
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.DrainMax <= 0 {
		o.DrainMax = 60 * time.Second
	}
	dir, err := os.MkdirTemp("", "sidetrack-scaleout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := o.Binary
	if bin == "" {
		root := o.ModuleRoot
		if root == "" {
			out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
			if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
				return nil, fmt.Errorf("not inside the sidetrack module: %v", err)
			}
			root = filepath.Dir(strings.TrimSpace(string(out)))
		}
		bin = filepath.Join(dir, "sidetrack")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building sidetrack: %v\n%s", err, out)
		}
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(int32(o.Partitions), "sidetrack-events"),
		kfake.AllowAutoTopicCreation())
	if err != nil {
		return nil, err
	}
	defer cluster.Close()
	hook := &soCounter{seen: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: hook, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	cfgPath := filepath.Join(dir, "sidetrack.yaml")
	if err := os.WriteFile(cfgPath, []byte(soConfig("http://"+ln.Addr().String(), cluster.ListenAddrs())), 0o600); err != nil {
		return nil, err
	}

	var procs []*soProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	var bases []string
	for i := range o.Edges {
		p, m, err := soStart(bin, dir, fmt.Sprintf("edge%d", i), []string{"-config", cfgPath}, soEdgeLine)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		bases = append(bases, "http://"+m[1])
	}

	// Ingest: closed loop, one event per request, edges round robin.
	rep := &ScaleOutReport{Edges: o.Edges, Forwarders: o.Forwarders, Partitions: o.Partitions}
	fmt.Fprintf(log, "scale-out: ingest %s on %d edges, %d connections\n", o.Duration, o.Edges, o.Connections)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.Connections}}
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	lctx, cancel := context.WithTimeout(ctx, o.Duration)
	start := time.Now()
	for c := range o.Connections {
		wg.Go(func() {
			var mine []string
			for n := 0; lctx.Err() == nil; n++ {
				id := fmt.Sprintf("so-%d-%d", c, n)
				req, _ := http.NewRequestWithContext(lctx, "POST", bases[c%len(bases)]+"/collect",
					strings.NewReader(`{"name":"page_viewed","event_id":"`+id+`","user_id":"u-`+fmt.Sprint(n%97)+`"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer bench-server-key-0123456789")
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					mine = append(mine, id)
				} else {
					atomic.AddInt64(&rep.Refused, 1)
				}
			}
			mu.Lock()
			acked = append(acked, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	cancel()
	rep.IngestSeconds = time.Since(start).Seconds()
	rep.Acked = int64(len(acked))
	rep.IngestPerSecond = float64(rep.Acked) / rep.IngestSeconds

	// Drain: forwarders start on the full topic.
	fmt.Fprintf(log, "scale-out: draining %d events with %d forwarders\n", rep.Acked, o.Forwarders)
	drainStart := time.Now()
	for i := range o.Forwarders {
		p, _, err := soStart(bin, dir, fmt.Sprintf("forward%d", i), []string{"forward", "-config", cfgPath}, soFwdLine)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	for deadline := time.Now().Add(o.DrainMax); hook.count() < len(acked) && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	rep.DrainSeconds = time.Unix(0, hook.last.Load()).Sub(drainStart).Seconds()
	if rep.DrainSeconds > 0 {
		rep.DeliveredPerSecond = float64(hook.count()) / rep.DrainSeconds
		rep.PerForwarder = rep.DeliveredPerSecond / float64(o.Forwarders)
	}
	hook.mu.Lock()
	for _, id := range acked {
		switch n := hook.seen[id]; {
		case n == 0:
			rep.Lost++
		case n > 1:
			rep.Duplicates += int64(n - 1)
		}
	}
	hook.mu.Unlock()
	return rep, nil
}

package main

// The scale-out topology of docs/deployment.md, with the real binary: two
// edge replicas append to an in-process Kafka cluster (kfake, over
// loopback), two `sidetrack forward` processes deliver to two webhook
// destinations, and a real redis-server shares dedup and the join. Every
// acknowledged event must reach every destination; duplicates are counted
// (none without faults).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const scaleTopic = "sidetrack-events"

// fleetReceiver is a webhook endpoint that counts deliveries per event_id
// and keeps the last copy of each event.
type fleetReceiver struct {
	crashReceiver
	events map[string]map[string]any
	reject map[string]bool // ids answered 400
}

func newFleetReceiver() *fleetReceiver {
	return &fleetReceiver{crashReceiver: crashReceiver{delivered: map[string]int{}}, events: map[string]map[string]any{}, reject: map[string]bool{}}
}

func (r *fleetReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Events []map[string]any `json:"events"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range body.Events {
		if id, _ := e["event_id"].(string); r.reject[id] {
			http.Error(w, "rejected", http.StatusBadRequest) // permanent: dead-lettered
			return
		}
	}
	for _, e := range body.Events {
		id, _ := e["event_id"].(string)
		r.delivered[id]++
		r.events[id] = e
	}
	w.WriteHeader(http.StatusOK)
}

// event returns the last delivered copy of id.
func (r *fleetReceiver) event(id string) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[id]
}

// scaleRedis starts a redis-server on a loopback port, or skips when it is
// not installed (fails when REQUIRE_REDIS_TESTS is set).
func scaleRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("REQUIRE_REDIS_TESTS") != "" {
			t.Fatal("redis-server is required (REQUIRE_REDIS_TESTS is set) but not installed")
		}
		t.Skip("redis-server is not installed: the scale-out topology is not tested")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + port
	for guard := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return addr
			}
		}
		if time.Now().After(guard) {
			t.Fatal("redis-server did not answer PING")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kafkaCluster starts kfake on loopback with the spool topic seeded.
func kafkaCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, scaleTopic),
		kfake.AllowAutoTopicCreation(), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// scaleEnv points a process at the cluster and Redis.
func scaleEnv(c *kfake.Cluster, redis string) []string {
	return []string{
		"SIDETRACK_SPOOL__TYPE=kafka",
		"SIDETRACK_SPOOL__BROKERS=" + strings.Join(c.ListenAddrs(), ","),
		"SIDETRACK_SPOOL__TOPIC=" + scaleTopic,
		"SIDETRACK_SPOOL__SESSION_TIMEOUT=1s",
		"SIDETRACK_SPOOL__TIMEOUT=1s",
		"SIDETRACK_DEDUP__REDIS=" + redis,
		"SIDETRACK_JOIN__REDIS=" + redis,
	}
}

// startForward runs `sidetrack forward` with the config at path and waits
// for its admin port.
func startForward(t *testing.T, dir, path string, env []string) *instance {
	t.Helper()
	in := &instance{t: t, dir: dir, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	in.cmd = exec.Command(binPath, "forward", "-config", path)
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
			t.Logf("forwarder stderr:\n%s", in.stderr.String())
		}
	})
	started := regexp.MustCompile(`"msg":"sidetrack forwarder started".*"admin":"([^"]+)"`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if m := started.FindStringSubmatch(in.stderr.String()); m != nil {
			in.admin = "http://" + m[1]
			return in
		}
		select {
		case err := <-in.done:
			t.Fatalf("forwarder exited before serving: %v\n%s", err, in.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("forwarder did not start:\n%s", in.stderr.String())
	return nil
}

// scaleLoad posts n distinct events round-robin to the edges from 4
// goroutines and returns the acknowledged ids.
func scaleLoad(t *testing.T, edges []*instance, prefix string, n int) []string {
	t.Helper()
	client := &http.Client{Timeout: 15 * time.Second}
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for s := range 4 {
		wg.Go(func() {
			for i := s; i < n; i += 4 {
				id := fmt.Sprintf("%s-%d", prefix, i)
				// Fifty visitors: a visitor's events share a partition
				// (their order is kept), and every partition gets some.
				body := fmt.Sprintf(`{"name":"scale_probe","event_id":%q,"user_id":"u-%d"}`, id, i%50)
				req, _ := http.NewRequest("POST", edges[i%len(edges)].base+"/collect", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer server-key-0123456789")
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return acked
}

// waitDelivered waits until every id reached every receiver.
func waitDelivered(t *testing.T, acked []string, rs ...*fleetReceiver) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, r := range rs {
			missing += len(r.missing(acked))
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			for i, r := range rs {
				m := r.missing(acked)
				t.Errorf("destination %d: %d of %d acknowledged events never delivered (first: %v)", i, len(m), len(acked), m[:min(len(m), 5)])
			}
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestScaleOut(t *testing.T) {
	redis := scaleRedis(t)
	cluster := kafkaCluster(t)
	env := scaleEnv(cluster, redis)
	a, b := newFleetReceiver(), newFleetReceiver()
	hookA, hookB := origin(t, a), origin(t, b)
	dests := fmt.Sprintf("  - {name: a, type: webhook, url: %q, batch: {max_events: 50, max_wait: 20ms}}\n", hookA) +
		fmt.Sprintf("  - {name: b, type: webhook, url: %q, batch: {max_events: 50, max_wait: 20ms}}\n", hookB)

	var edges []*instance
	for range 2 {
		dir := t.TempDir()
		edges = append(edges, startWithConfig(t, dir, testConfigWith(dir, hookA, dests, ""), env))
	}
	fdir := t.TempDir()
	fcfg := filepath.Join(fdir, "sidetrack.yaml")
	if err := os.WriteFile(fcfg, []byte(testConfigWith(fdir, hookA, dests, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	fwd := []*instance{startForward(t, fdir, fcfg, env), startForward(t, fdir, fcfg, env)}

	n := 400
	if testing.Short() {
		n = 120
	}
	// No faults: every acknowledged event once at each destination.
	acked := scaleLoad(t, edges, "calm", n)
	if len(acked) != n {
		t.Fatalf("%d of %d events acknowledged without any fault", len(acked), n)
	}
	waitDelivered(t, acked, a, b)
	for i, r := range []*fleetReceiver{a, b} {
		if distinct, dups := r.round("calm-"); distinct != n || dups != 0 {
			t.Errorf("destination %d without faults: %d distinct, %d duplicates; want %d, 0", i, distinct, dups, n)
		}
	}

	// One event sent to both replicas: Redis dedup forwards it once.
	for _, e := range edges {
		if got := scaleLoad(t, []*instance{e}, "twice", 1); len(got) != 1 {
			t.Fatal("the duplicate was not acknowledged")
		}
	}
	marker := scaleLoad(t, edges, "after-twice", 8)
	waitDelivered(t, append(marker, "twice-0"), a, b)
	for i, r := range []*fleetReceiver{a, b} {
		if distinct, dups := r.round("twice-"); distinct != 1 || dups != 0 {
			t.Errorf("destination %d: the event sent to two replicas arrived %d+%d times; want once", i, distinct, dups)
		}
	}
	if d := edges[0].metricSum("") + edges[1].metricSum(""); d == 0 {
		t.Error("the edges counted no events")
	}

	// A browser event on one replica, the backend's confirmation on the
	// other: the join through Redis gives the backend event the browser's
	// device.
	post := func(base, body string, server bool) {
		req, _ := http.NewRequest("POST", base+"/collect", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if server {
			req.Header.Set("Authorization", "Bearer server-key-0123456789")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %s: %d", body, resp.StatusCode)
		}
	}
	post(edges[0].base, `{"name":"purchase","event_id":"join-browser","transaction_id":"ORDER-77","value":5,"currency":"EUR"}`, false)
	waitDelivered(t, []string{"join-browser"}, a)
	post(edges[1].base, `{"name":"order_paid","event_id":"join-server","transaction_id":"ORDER-77","value":5,"currency":"EUR"}`, true)
	waitDelivered(t, []string{"join-server"}, a)
	browser, server := a.event("join-browser"), a.event("join-server")
	if dev, _ := browser["device_id"].(string); dev == "" || server["device_id"] != dev {
		t.Errorf("the backend event on the other replica did not join: browser device %v, backend device %v", browser["device_id"], server["device_id"])
	}
	if q, _ := server["quality"].([]any); !slices.Contains(q, any("joined")) {
		t.Errorf("backend event quality %v, want joined", server["quality"])
	}
	if hits := int(edges[1].metric("sidetrack_join_redis_hits_total")); hits != 1 {
		t.Errorf("the second replica counted %d joins through Redis, want 1", hits)
	}

	// Kafka refusing every append: the edge answers 429 with Retry-After,
	// never 2xx, and the event reaches no destination.
	refuse := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: scaleTopic, Err: kerr.NotEnoughReplicas, Count: -1})
	req, _ := http.NewRequest("POST", edges[1].base+"/collect", strings.NewReader(`{"name":"scale_probe","event_id":"refused-0"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer server-key-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	refuse.Remove()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("append Kafka never acknowledged: %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// An event destination a refuses goes to a's dead-letter topic, and
	// only there: b gets it, and a's group commits past it.
	a.mu.Lock()
	a.reject["poison-0"] = true
	a.mu.Unlock()
	if got := scaleLoad(t, edges[:1], "poison", 1); len(got) != 1 {
		t.Fatal("the poison event was not acknowledged")
	}
	waitDelivered(t, []string{"poison-0"}, b)
	dl := readTopic(t, cluster, scaleTopic+".dlq.a", 1)
	if len(dl) != 1 || !strings.Contains(string(dl[0].Value), `"poison-0"`) {
		t.Fatalf("dead-letter topic holds %d records: %v", len(dl), dl)
	}
	for _, h := range dl[0].Headers {
		if h.Key == "status" && string(h.Value) != "400" {
			t.Errorf("dead letter status %q, want 400", h.Value)
		}
	}

	// Faults: a forwarder killed mid-stream (its partitions move to the
	// survivor), a new one joining (a rebalance), and a broker failing
	// produce and offset-commit requests for a while.
	stop := make(chan struct{})
	var (
		chaos  sync.WaitGroup
		faults *kfake.FaultHandle
	)
	chaos.Go(func() {
		for a.count("storm-")+b.count("storm-") < n/4 {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		if err := fwd[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Error(err)
		}
		faults = cluster.Fault(
			kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: scaleTopic, Err: kerr.NotLeaderForPartition, Count: 20},
			kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorLoadInProgress, Count: 5},
		)
	})
	storm := scaleLoad(t, edges, "storm", 2*n)
	fwd = append(fwd, startForward(t, fdir, fcfg, env))
	// The newcomer takes over partitions of both groups (a rebalance)
	// before the last events are sent.
	owns := func(dest string) bool {
		return fwd[2].metric(`sidetrack_kafka_partitions{destination="`+dest+`"}`) > 0
	}
	for guard := time.Now().Add(30 * time.Second); !owns("a") || !owns("b"); {
		if time.Now().After(guard) {
			t.Fatal("the forwarder that joined was never given partitions")
		}
		time.Sleep(20 * time.Millisecond)
	}
	late := scaleLoad(t, edges, "late", n/2)
	close(stop)
	chaos.Wait()
	<-fwd[0].done
	if faults == nil || faults.Hits() == 0 {
		t.Fatal("the load ended before the faults were injected: the test proved nothing about them")
	}
	t.Logf("broker faults answered %d requests", faults.Hits())
	if len(storm) < n {
		t.Fatalf("only %d of %d events acknowledged under faults", len(storm), 2*n)
	}
	waitDelivered(t, append(storm, late...), a, b)
	for i, r := range []*fleetReceiver{a, b} {
		d1, dup1 := r.round("storm-")
		d2, dup2 := r.round("late-")
		t.Logf("destination %d: %d+%d distinct events delivered, %d duplicates after a forwarder was killed and the group rebalanced", i, d1, d2, dup1+dup2)
	}
	redelivered := 0
	for _, f := range fwd[1:] {
		redelivered += int(f.metric("sidetrack_kafka_redelivered_total"))
		if got := f.metric("sidetrack_kafka_consumed_total"); got == 0 {
			t.Errorf("forwarder %s consumed nothing", f.admin)
		}
	}
	t.Logf("forwarders counted %d redelivered records", redelivered)
	for i, r := range []*fleetReceiver{a, b} {
		if n := r.count("refused-"); n != 0 {
			t.Errorf("destination %d got the event Kafka refused %d times", i, n)
		}
	}
	// Everything is resolved: no lag left on the surviving forwarders.
	for guard := time.Now().Add(30 * time.Second); ; {
		lag := 0
		for _, f := range fwd[1:] {
			lag += int(f.metric("sidetrack_kafka_lag"))
		}
		if lag == 0 {
			break
		}
		if time.Now().After(guard) {
			t.Fatalf("forwarders report a lag of %d records after every event was delivered", lag)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range fwd[1:] {
		f.stop()
	}
	for _, e := range edges {
		e.stop()
	}
}

// count is the number of deliveries of ids with prefix.
func (r *crashReceiver) count(prefix string) int {
	d, dups := r.round(prefix)
	return d + dups
}

// startWithConfig writes cfg into dir and runs the proxy with env.
func startWithConfig(t *testing.T, dir, cfg string, env []string) *instance {
	t.Helper()
	path := filepath.Join(dir, "sidetrack.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return startWith(t, dir, []string{"-config", path}, env)
}

// readTopic reads want records of topic from its start.
func readTopic(t *testing.T, c *kfake.Cluster, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), want, topic)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

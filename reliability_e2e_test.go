package main

// The end-to-end reliability set (docs/reliability.md): the real binary,
// a webhook destination behind an in-process toxiproxy, and the one
// invariant of DESIGN §5 checked after every fault: per destination,
// accepted = delivered + dead-lettered + still spooled, duplicates only
// where an answer was lost, and new events flow once the fault is gone.
// RELIABILITY_LONG=1 turns on the long variants (a soak).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// reliabilityLong reports whether the long (soak) variants run.
func reliabilityLong() bool { return os.Getenv("RELIABILITY_LONG") == "1" }

// sink is a webhook receiver that counts deliveries per event id; answer
// (when set) may refuse a request with a status and a Retry-After.
type sink struct {
	mu     sync.Mutex
	got    map[string]int
	calls  int
	answer func(call int) (code int, retryAfter string)
}

func newSink() *sink { return &sink{got: map[string]int{}} }

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		// A malformed batch is sidetrack's bug: 400 sends it to the DLQ,
		// where the invariant sees it.
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.calls++
	call, answer := s.calls, s.answer
	s.mu.Unlock()
	if answer != nil {
		if code, ra := answer(call); code != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			w.WriteHeader(code)
			return
		}
	}
	s.mu.Lock()
	for _, e := range body.Events {
		s.got[e.EventID]++
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *sink) setAnswer(f func(call int) (int, string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = f
}

// count returns how many of ids were delivered and the extra copies.
func (s *sink) count(ids []string) (delivered, duplicates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if n := s.got[id]; n > 0 {
			delivered++
			duplicates += n - 1
		}
	}
	return delivered, duplicates
}

// metric adds up the admin /metrics series that start with prefix (a
// name, or a name and the start of its labels).
func (in *instance) metric(prefix string) float64 {
	in.t.Helper()
	req, _ := http.NewRequest("GET", in.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer admin-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			sum += v
		}
	}
	return sum
}

// collect posts one event per request with a server key from senders
// goroutines and returns the ids answered 204 and the other answers.
func collect(t *testing.T, base, prefix string, n, senders int) (acked []string, other map[int]int) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	var mu sync.Mutex
	var wg sync.WaitGroup
	other = map[int]int{}
	next := make(chan int)
	go func() {
		for i := range n {
			next <- i
		}
		close(next)
	}()
	for range senders {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("%s-%05d", prefix, i)
				code := postEvent(client, base, id)
				mu.Lock()
				if code == http.StatusNoContent {
					acked = append(acked, id)
				} else {
					other[code]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked, other
}

// postEvent sends one server-side /collect event and returns the status
// (0 for a transport error).
func postEvent(client *http.Client, base, id string) int {
	req, _ := http.NewRequest("POST", base+"/collect",
		strings.NewReader(`{"name":"reliability_probe","event_id":"`+id+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer server-key-0123456789")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// balance waits until every accepted id is delivered, dead-lettered or
// spooled for the hook destination with nothing left in flight, checks
// accepted = delivered + dead-lettered + spooled, and logs the counts.
// dlqBefore is the DLQ size before these ids were sent.
func balance(t *testing.T, in *instance, s *sink, phase string, accepted []string, dlqBefore float64, wantDLQ bool) (delivered, dups int) {
	t.Helper()
	var dlq, spooled float64
	deadline := time.Now().Add(60 * time.Second)
	for {
		delivered, dups = s.count(accepted)
		dlq = in.metric(`sidetrack_dlq_events{destination="hook"}`) - dlqBefore
		spooled = in.metric(`sidetrack_backlog_events{destination="hook"}`)
		if delivered+int(dlq) == len(accepted) && spooled == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s: accepted %d = delivered %d + dead-lettered %d + spooled %d; duplicates %d",
		phase, len(accepted), delivered, int(dlq), int(spooled), dups)
	if delivered+int(dlq)+int(spooled) != len(accepted) || spooled != 0 {
		t.Errorf("%s: accepted %d != delivered %d + dead-lettered %d + spooled %d",
			phase, len(accepted), delivered, int(dlq), int(spooled))
	}
	if (dlq > 0) != wantDLQ {
		t.Errorf("%s: %d dead-lettered, want dead letters: %v", phase, int(dlq), wantDLQ)
	}
	return delivered, dups
}

// e2eToxiproxy starts an in-process toxiproxy in front of target.
func e2eToxiproxy(t *testing.T, target string) *toxiproxy.Proxy {
	t.Helper()
	// Some toxics log through zerolog's global logger at trace level.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "hook", "127.0.0.1:0", target)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func e2eToxic(t *testing.T, p *toxiproxy.Proxy, js string) {
	t.Helper()
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("toxic %s: %v", js, err)
	}
}

// hookConfig is a test config whose only destination is a webhook at url
// with quick retries.
func hookConfig(dir, url, extra string) string {
	return testConfigWith(dir, url, fmt.Sprintf(
		"  - {name: hook, type: webhook, url: %q, batch: {max_events: 20, max_wait: 20ms}, retry: {max_attempts: 1000000, max_backoff: 200ms}, timeout: 1s}\n",
		url+"/hook"), extra)
}

// TestReliabilityDestinationFaults runs the binary against a webhook
// behind toxiproxy and goes through network faults and refusing answers
// one phase at a time.
func TestReliabilityDestinationFaults(t *testing.T) {
	perPhase := 40
	outage := 0 * time.Second
	if reliabilityLong() {
		perPhase, outage = 1000, time.Minute
	}
	s := newSink()
	target := strings.TrimPrefix(origin(t, s), "http://")
	p := e2eToxiproxy(t, target)
	dir := t.TempDir()
	in := start(t, dir, hookConfig(dir, "http://"+p.Listen, ""))

	retries := func() float64 { return in.metric(`sidetrack_retries_total{destination="hook"}`) }
	waitRetries := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for retries() < n {
			if time.Now().After(deadline) {
				t.Fatalf("retries stayed at %v, want %v", retries(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	refuse := func(code int, times int, ra string) func() {
		return func() {
			s.mu.Lock()
			base := s.calls
			s.mu.Unlock()
			s.setAnswer(func(call int) (int, string) {
				if times < 0 || call-base <= times {
					return code, ra
				}
				return 0, ""
			})
		}
	}
	phases := []struct {
		name string
		on   func()
		// bite: wait for failed attempts before lifting the fault.
		bite    bool
		off     func()
		wantDLQ bool
	}{
		{name: "outage", bite: true, on: p.Stop, off: func() {
			time.Sleep(outage) // long variant only; the wait itself is not asserted
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "latency-300ms", on: func() { e2eToxic(t, p, `{"type":"latency","attributes":{"latency":300}}`) }},
		{name: "bandwidth-1KBps", on: func() { e2eToxic(t, p, `{"type":"bandwidth","stream":"upstream","attributes":{"rate":1}}`) }},
		{name: "blackhole", bite: true, on: func() { e2eToxic(t, p, `{"type":"timeout","attributes":{"timeout":0}}`) }},
		{name: "reset-peer", bite: true, on: func() {
			e2eToxic(t, p, `{"type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`)
		}},
		{name: "truncated-answers", bite: true, on: func() { e2eToxic(t, p, `{"type":"limit_data","attributes":{"bytes":12}}`) }},
		{name: "sliced", on: func() {
			e2eToxic(t, p, `{"type":"slicer","stream":"upstream","attributes":{"average_size":5,"size_variation":2,"delay":50}}`)
		}},
		{name: "503-three-times", bite: true, on: refuse(503, 3, "")},
		{name: "429-retry-after-seconds", bite: true, on: refuse(429, 1, "1")},
		{name: "503-retry-after-date", bite: true, on: func() {
			refuse(503, 1, time.Now().Add(time.Second).UTC().Format(http.TimeFormat))()
		}},
		{name: "400-dead-letters", on: refuse(400, -1, ""), wantDLQ: true},
	}
	var totalAcked, totalDelivered, totalDups, totalDLQ int
	for _, ph := range phases {
		dlqBefore := in.metric(`sidetrack_dlq_events{destination="hook"}`)
		before := retries()
		ph.on()
		acked, other := collect(t, in.base, ph.name, perPhase, 4)
		if len(other) > 0 {
			t.Errorf("%s: ingest answered %v while a destination failed (want 204: the spool absorbs it)", ph.name, other)
		}
		if ph.bite {
			waitRetries(before + 1)
		}
		for deadline := time.Now().Add(30 * time.Second); ph.wantDLQ && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if int(in.metric(`sidetrack_dlq_events{destination="hook"}`)-dlqBefore) >= len(acked) {
				break
			}
		}
		if ph.off != nil {
			ph.off()
		}
		p.Toxics.ResetToxics(t.Context())
		s.setAnswer(nil)
		// New events flow once the fault is gone.
		after, _ := collect(t, in.base, ph.name+"-after", 5, 1)
		delivered, dups := balance(t, in, s, ph.name, append(acked, after...), dlqBefore, ph.wantDLQ)
		if dups > 0 && !strings.Contains("blackhole truncated-answers", ph.name) {
			t.Errorf("%s: %d duplicates though every answer was complete or absent", ph.name, dups)
		}
		totalAcked += len(acked) + len(after)
		totalDelivered += delivered
		totalDups += dups
		totalDLQ += int(in.metric(`sidetrack_dlq_events{destination="hook"}`) - dlqBefore)
	}
	t.Logf("destination faults: %d phases, accepted %d, delivered %d, dead-lettered %d (the 400 phase), duplicates %d, lost %d",
		len(phases), totalAcked, totalDelivered, totalDLQ, totalDups, totalAcked-totalDelivered-totalDLQ)
	in.stop()
}

// reliabilitySeed is RELIABILITY_SEED or a fresh seed, logged so that a
// failing round can be replayed.
func reliabilitySeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("RELIABILITY_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("RELIABILITY_SEED: %v", err)
		}
		seed = n
	}
	t.Logf("seed %d (rerun with RELIABILITY_SEED=%d)", seed, seed)
	return seed
}

// ndjsonIDs reads the event ids of every complete line in dir's ndjson
// files, the current one and the rotated ones.
func ndjsonIDs(t *testing.T, dir string) map[string]int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	out := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				break // a torn final line was never acknowledged by the adapter
			}
			var e struct {
				ID string `json:"event_id"`
			}
			if err := json.Unmarshal(b[:i], &e); err != nil {
				t.Fatalf("%s: bad line %q: %v", f, b[:i], err)
			}
			out[e.ID]++
			b = b[i+1:]
		}
	}
	return out
}

// spawn starts the binary with cfgPath without waiting for it to serve,
// so that a test can kill it during start-up.
func spawn(t *testing.T, dir, cfgPath string) *instance {
	t.Helper()
	in := &instance{t: t, dir: dir, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	in.cmd = exec.Command(binPath, "-config", cfgPath)
	in.cmd.Dir = dir
	in.cmd.Env = cleanEnv()
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
	return in
}

// TestReliabilityCrash SIGKILLs the binary at seeded random moments: under
// load (the ndjson destination rotates every few KiB, so kills land around
// rotations too) and during start-up while a backlog is replayed. After
// every kill it must start again (no crash loop) and, in the end, every
// acknowledged event reaches both destinations. The last step is a SIGTERM
// under load: it must exit 0 with everything delivered, without a restart.
func TestReliabilityCrash(t *testing.T) {
	rounds := 3
	if reliabilityLong() {
		rounds = 40
	}
	rng := rand.New(rand.NewPCG(reliabilitySeed(t), 12))
	s := newSink()
	hook := origin(t, s)
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	cfg := testConfigWith(dir, hook, fmt.Sprintf(
		"  - {name: hook, type: webhook, url: %q, batch: {max_events: 50, max_wait: 20ms}, retry: {max_attempts: 1000000, max_backoff: 100ms}}\n"+
			"  - {name: local, type: ndjson, path: %q, max_size: 16KiB, batch: {max_events: 50, max_wait: 20ms}}\n",
		hook+"/hook", events), "")
	cfgPath := filepath.Join(dir, "sidetrack.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var acked []string
	others := map[int]int{}
	kills, startupKills := 0, 0
	for round := range rounds {
		mode := []string{"load", "startup"}[round%2]
		if round > 1 {
			mode = []string{"load", "startup"}[rng.IntN(2)]
		}
		if mode == "startup" {
			// Build a backlog for the webhook, then kill a fresh process
			// while it starts and replays it.
			s.setAnswer(func(int) (int, string) { return 503, "" })
		}
		in := start(t, dir, cfg)
		stop := make(chan struct{})
		type result struct {
			acked []string
			other map[int]int
		}
		res := make(chan result, 1)
		go func() {
			a, o := crashLoad(in.base, 1000+round, 8, stop)
			res <- result{a, o}
		}()
		load := time.Duration(100+rng.IntN(500)) * time.Millisecond
		time.Sleep(load)
		_ = in.cmd.Process.Kill()
		in.wait(10 * time.Second)
		kills++
		r := <-res
		acked = append(acked, r.acked...)
		for c, n := range r.other {
			others[c] += n
		}
		detail := fmt.Sprintf("killed under load after %v, %d acked", load, len(r.acked))
		if mode == "startup" {
			s.setAnswer(nil)
			at := time.Duration(rng.IntN(300)) * time.Millisecond
			sp := spawn(t, dir, cfgPath)
			time.Sleep(at)
			_ = sp.cmd.Process.Kill()
			sp.wait(10 * time.Second)
			kills++
			startupKills++
			detail += fmt.Sprintf(", then killed %v into start-up", at)
		}
		t.Logf("round %d (%s): %s", round, mode, detail)
	}
	if len(acked) == 0 {
		t.Fatal("no event acknowledged")
	}

	// SIGTERM under load: it stops taking events, drains, exits 0.
	in := start(t, dir, cfg)
	stop := make(chan struct{})
	done := make(chan []string, 1)
	go func() {
		a, _ := crashLoad(in.base, 9999, 4, stop)
		done <- a
	}()
	time.Sleep(200 * time.Millisecond)
	in.signal(syscall.SIGTERM)
	if code := in.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, in.stderr.String())
	}
	close(stop)
	termAcked := <-done
	acked = append(acked, termAcked...)

	// Everything acknowledged is in both destinations, after one more
	// start only if the drain left a backlog.
	check := func() (hookMissing, fileMissing int, fileIDs map[string]int) {
		fileIDs = ndjsonIDs(t, events)
		for _, id := range acked {
			if d, _ := s.count([]string{id}); d == 0 {
				hookMissing++
			}
			if fileIDs[id] == 0 {
				fileMissing++
			}
		}
		return hookMissing, fileMissing, fileIDs
	}
	hm, fm, _ := check()
	leftHook, leftFile := hm, fm
	// The webhook keeps up, so the drain must empty it. The ndjson
	// destination, rotating a 16 KiB file per batch, may still hold a
	// backlog from the rounds when shutdown_timeout ends the drain: it stays
	// in the spool for the next start.
	if hm > 0 {
		t.Errorf("after SIGTERM %d acknowledged events were not delivered to the webhook (shutdown must drain)", hm)
	}
	if hm+fm > 0 {
		again := start(t, dir, cfg)
		deadline := time.Now().Add(60 * time.Second)
		for hm+fm > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			hm, fm, _ = check()
		}
		again.stop()
	}
	hm, fm, fileIDs := check()
	_, hookDups := s.count(acked)
	fileDups := 0
	for _, id := range acked {
		if n := fileIDs[id]; n > 1 {
			fileDups += n - 1
		}
	}
	rotated, _ := filepath.Glob(filepath.Join(events, "events-*.ndjson"))
	t.Logf("crash: %d rounds, %d kills (%d during start-up), %d files rotated, acked %d (%d during the SIGTERM drain; left in the spool after it: webhook %d, ndjson %d), "+
		"lost webhook %d ndjson %d, duplicates webhook %d ndjson %d, other answers %v",
		rounds, kills, startupKills, len(rotated), len(acked), len(termAcked), leftHook, leftFile, hm, fm, hookDups, fileDups, others)
	if hm+fm > 0 {
		t.Fatalf("lost acknowledged events: webhook %d, ndjson %d", hm, fm)
	}
	if len(rotated) == 0 {
		t.Error("the ndjson file never rotated: the kills did not hit rotation")
	}
}

// memBudget is DESIGN §8's peak memory budget; the overload test holds
// the Go runtime's own figure (go_memstats_sys_bytes: everything the
// runtime took from the OS) to it.
const memBudget = 160 << 20

// TestReliabilityOverload offers about ten times what a slow destination
// drains: the spool fills to spool.max_bytes, ingest answers 429 with
// Retry-After (counted in /metrics), memory stays under the budget, every
// 204 is delivered and, once the load stops, events are accepted again.
func TestReliabilityOverload(t *testing.T) {
	overload := 4 * time.Second
	if reliabilityLong() {
		overload = time.Minute
	}
	s := newSink()
	fast := make(chan struct{})
	hook := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-fast:
		default:
			time.Sleep(100 * time.Millisecond)
		}
		s.ServeHTTP(w, r)
	}))
	dir := t.TempDir()
	// Drains at most 4 senders × 5 events / 100ms = 200 events/s.
	const drainRate = 200
	in := start(t, dir, strings.Replace(testConfigWith(dir, hook, fmt.Sprintf(
		"  - {name: hook, type: webhook, url: %q, batch: {max_events: 5, max_wait: 5ms}, retry: {max_attempts: 1000000, max_backoff: 100ms}}\n",
		hook+"/hook"), ""), `spool: {dir: `, `spool: {max_bytes: 1MiB, dir: `, 1))

	var (
		mu         sync.Mutex
		acked      []string
		codes      = map[int]int{}
		noRetry    int
		peakSys    float64
		peakHeap   float64
		wg         sync.WaitGroup
		stopLoad   = make(chan struct{})
		client     = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		sampleDone = make(chan struct{})
	)
	go func() {
		defer close(sampleDone)
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(100 * time.Millisecond):
			}
			sys, heap := in.metric("go_memstats_sys_bytes"), in.metric("go_memstats_heap_inuse_bytes")
			mu.Lock()
			peakSys, peakHeap = max(peakSys, sys), max(peakHeap, heap)
			mu.Unlock()
		}
	}()
	for g := range 16 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				id := fmt.Sprintf("ov-%02d-%06d", g, n)
				req, _ := http.NewRequest("POST", in.base+"/collect",
					strings.NewReader(`{"name":"reliability_probe","event_id":"`+id+`","properties":{"pad":"`+strings.Repeat("x", 200)+`"}}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer server-key-0123456789")
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					codes[0]++
					mu.Unlock()
					continue
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				switch resp.StatusCode {
				case http.StatusNoContent:
					acked = append(acked, id)
				case http.StatusTooManyRequests:
					if resp.Header.Get("Retry-After") == "" {
						noRetry++
					}
				}
				mu.Unlock()
			}
		})
	}
	// Hold the load for the planned time and until the spool has turned
	// requests away for a while, so a slow machine still reaches the bound.
	began := time.Now()
	for {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		refused := codes[http.StatusTooManyRequests]
		mu.Unlock()
		if time.Since(began) >= overload && refused >= 100 || time.Since(began) > overload+time.Minute {
			break
		}
	}
	overload = time.Since(began)
	close(stopLoad)
	wg.Wait()
	<-sampleDone
	offered := 0
	for _, n := range codes {
		offered += n
	}
	full := in.metric("sidetrack_spool_full_total")
	counted429 := in.metric(`sidetrack_requests_total{route="collect",code="429"}`)
	t.Logf("overload: offered %d requests in %.1fs (%.0f/s, %.1f× the destination's %d/s), answers %v, spool-full count %v, 429s in /metrics %v, peak go_memstats_sys_bytes %.1f MiB, heap in use %.1f MiB",
		offered, overload.Seconds(), float64(offered)/overload.Seconds(), float64(offered)/overload.Seconds()/drainRate, drainRate,
		codes, full, counted429, peakSys/(1<<20), peakHeap/(1<<20))
	if codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("no 429 under overload: answers %v", codes)
	}
	if noRetry > 0 {
		t.Errorf("%d answers 429 without Retry-After", noRetry)
	}
	if full == 0 || int(counted429) != codes[http.StatusTooManyRequests] {
		t.Errorf("429s not counted: spool-full %v, requests_total code 429 %v, clients saw %d", full, counted429, codes[http.StatusTooManyRequests])
	}
	if codes[0] > 0 || len(codes) > 2 {
		t.Errorf("answers other than 204/429 under overload: %v", codes)
	}
	if peakSys > memBudget {
		t.Errorf("memory under overload: %.1f MiB from the OS, budget %d MiB", peakSys/(1<<20), memBudget>>20)
	}

	// Recovery: the destination is fast again, the backlog drains and new
	// events are accepted.
	close(fast)
	after, other := collect(t, in.base, "ov-after", 50, 2)
	for len(after) < 50 && len(other) > 0 {
		more, o := collect(t, in.base, fmt.Sprintf("ov-after%d", len(after)), 50-len(after), 2)
		after, other = append(after, more...), o
		time.Sleep(100 * time.Millisecond)
	}
	all := append(acked, after...)
	balance(t, in, s, "overload", all, 0, false)
	in.stop()
}

package main

// DESIGN §5 promises that kill -9 loses nothing that was acknowledged: the
// proxy answers 2xx only after the group commit that wrote the events. This
// test holds the real binary to it: it kills sidetrack mid-load, restarts it
// on the same spool and checks that every acknowledged event reaches the
// webhook receiver.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashReceiver is a webhook endpoint that counts deliveries per event_id.
type crashReceiver struct {
	mu        sync.Mutex
	delivered map[string]int
}

func (r *crashReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		// A malformed batch is a bug in sidetrack; 400 is permanent, so the
		// events end in the DLQ and the test reports them as lost.
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, e := range body.Events {
		r.delivered[e.EventID]++
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// missing returns the acknowledged ids not delivered yet.
func (r *crashReceiver) missing(acked []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range acked {
		if r.delivered[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// round counts the deliveries of one round's ids: distinct ids and the
// extra copies at-least-once delivery sent after the crash.
func (r *crashReceiver) round(prefix string) (distinct, duplicates int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.delivered {
		if strings.HasPrefix(id, prefix) {
			distinct++
			duplicates += n - 1
		}
	}
	return distinct, duplicates
}

// crashConfig is testConfig with a webhook to the receiver as its only
// destination, so delivery is observable across restarts.
func crashConfig(dir, hook string) string {
	return testConfigWith(dir, hook,
		fmt.Sprintf("  - {name: hook, type: webhook, url: %q, batch: {max_events: 100, max_wait: 50ms}}\n", hook+"/hook"), "")
}

// crashLoad posts distinct events from senders goroutines until each gets
// a transport error (the process died) or stop closes, and returns the
// ids answered 204.
func crashLoad(base string, round, senders int, stop <-chan struct{}) (acked []string, other map[int]int) {
	client := &http.Client{Timeout: 10 * time.Second}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	other = map[int]int{}
	for s := range senders {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r%d-s%d-%d", round, s, n)
				req, _ := http.NewRequest("POST", base+"/collect",
					strings.NewReader(`{"name":"crash_probe","event_id":"`+id+`"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer server-key-0123456789")
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == http.StatusNoContent {
					acked = append(acked, id)
				} else {
					other[resp.StatusCode]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked, other
}

func TestCrashKeepsAcknowledgedEvents(t *testing.T) {
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	recv := &crashReceiver{delivered: map[string]int{}}
	hook := origin(t, recv)
	dir := t.TempDir()
	cfg := crashConfig(dir, hook)

	for round := range rounds {
		load := time.Duration(200+rng.IntN(401)) * time.Millisecond

		in := start(t, dir, cfg)
		stop := make(chan struct{})
		type result struct {
			acked []string
			other map[int]int
		}
		res := make(chan result, 1)
		go func() {
			a, o := crashLoad(in.base, round, 8, stop)
			res <- result{a, o}
		}()
		time.Sleep(load)
		if err := in.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		in.wait(10 * time.Second)
		var r result
		select {
		case r = <-res:
		case <-time.After(30 * time.Second):
			close(stop)
			t.Fatal("senders did not stop after the process was killed")
		}
		if len(r.acked) == 0 {
			t.Fatalf("round %d: no event acknowledged in %v of load (other answers %v)\n%s",
				round, load, r.other, in.stderr.String())
		}

		again := start(t, dir, cfg)
		deadline := time.Now().Add(30 * time.Second)
		missing := recv.missing(r.acked)
		for len(missing) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			missing = recv.missing(r.acked)
		}
		again.stop()

		distinct, dups := recv.round(fmt.Sprintf("r%d-", round))
		t.Logf("round %d: killed after %v: acked %d, delivered %d distinct (%d unacked), duplicates %d, other answers %v",
			round, load, len(r.acked), distinct, distinct-(len(r.acked)-len(missing)), dups, r.other)
		if len(missing) > 0 {
			show := missing
			if len(show) > 10 {
				show = show[:10]
			}
			t.Fatalf("round %d: lost %d of %d acknowledged events, e.g. %v\nrestarted sidetrack stderr:\n%s",
				round, len(missing), len(r.acked), show, again.stderr.String())
		}
	}
}

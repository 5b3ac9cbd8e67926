package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// immediate makes batches due as soon as they have an event, so tests on
// a fake clock need not advance it for batching.
func immediate(cfg *config.Config) *config.Config {
	for i := range cfg.Destinations {
		cfg.Destinations[i].Batch.MaxWait = 0
	}
	return cfg
}

func TestRetryAfterIsHonouredAndNotAnAttempt(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "retry: {max_attempts: 1}")}, ""))
	clk := newFakeClock()
	a := newFakeDest("a")
	a.setBehave(func(call int, ids []string) ([]error, error) {
		if call == 1 {
			return nil, &testErr{kind: "retry", wait: 30 * time.Second, code: 429}
		}
		return nil, nil
	})
	s, pool := openTest(t, cfg, clk, a)
	t0 := clk.Now()
	appendIDs(t, s, pool, "x1", "x2", "x3")
	waitFor(t, "the deliverer to wait for Retry-After", func() bool { return clk.hasWaiter(t0.Add(30 * time.Second)) })
	clk.Advance(29 * time.Second)
	if n := a.sendCount(); n != 1 || !clk.hasWaiter(t0.Add(30*time.Second)) {
		t.Fatalf("after 29s: %d sends (want 1) and still waiting for 30s: %v", n, clk.hasWaiter(t0.Add(30*time.Second)))
	}
	clk.Advance(time.Second)
	waitFor(t, "delivery after Retry-After", func() bool { return a.count() == 3 })
	closeSpool(t, s)
	if n := dlqCount(t, s2(t, cfg), "a"); n != 0 {
		t.Errorf("%d events dead-lettered: a Retry-After wait was counted as an attempt (max_attempts 1)", n)
	}
}

// s2 reopens the spool of cfg without delivery, closing it at the end.
func s2(t *testing.T, cfg *config.Config) *Spool {
	s, _ := openTest(t, cfg, nil)
	t.Cleanup(func() { closeSpool(t, s) })
	return s
}

func TestBackoffGrowsAndMaxAttemptsDeadLetters(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never",
		[]string{dest("a", "retry: {max_attempts: 4, max_backoff: 1500ms}")}, ""))
	clk := newFakeClock()
	a := newFakeDest("a")
	a.setBehave(func(int, []string) ([]error, error) { return nil, &testErr{kind: "retry", code: 503} })
	s, pool := openTest(t, cfg, clk, a)
	appendIDs(t, s, pool, "b1")
	// Full jitter drawn at its maximum: 500ms, 1s, then capped at 1.5s.
	for i, wait := range []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond} {
		at := clk.Now().Add(wait)
		waitFor(t, fmt.Sprintf("backoff %d of %s", i+1, wait), func() bool { return clk.hasWaiter(at) })
		clk.Advance(wait)
	}
	waitFor(t, "the event to reach the DLQ after 4 attempts", func() bool { return dlqCount(t, s, "a") == 1 })
	if n := a.sendCount(); n != 4 {
		t.Errorf("%d sends, want 4 (max_attempts)", n)
	}
	var out bytes.Buffer
	if err := s.DLQShow("a", 10, &out); err != nil {
		t.Fatal(err)
	}
	var dl DeadLetterJSON
	if err := json.Unmarshal(out.Bytes(), &dl); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if dl.Reason != reasonMaxAttempts || dl.Attempts != 4 || dl.Status != 503 {
		t.Errorf("dead letter %+v: want reason max_attempts, 4 attempts, status 503", dl)
	}
	var ev enrich.Event
	if err := json.Unmarshal(dl.Event, &ev); err != nil || ev.EventID != "b1" {
		t.Errorf("dead letter event %s (%v)", dl.Event, err)
	}
	if got := s.byName["a"].m.deadLettered.Get(); got != 1 {
		t.Errorf("dead_lettered = %d", got)
	}
	closeSpool(t, s)
}

func TestPartialFailureRetriesOnlyFailedEventsWithoutBlockingCursor(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, ""))
	clk := newFakeClock()
	a := newFakeDest("a")
	var flaky atomic.Int32
	a.setBehave(func(call int, ids []string) ([]error, error) {
		per := make([]error, len(ids))
		for i, id := range ids {
			switch {
			case id == "p-bad":
				per[i] = &testErr{kind: "permanent", code: 422}
			case id == "p-flaky" && flaky.Add(1) <= 2:
				per[i] = &testErr{kind: "retry", code: 500}
			}
		}
		return per, nil
	})
	s, pool := openTest(t, cfg, clk, a)
	appendIDs(t, s, pool, "p1", "p-flaky", "p-bad", "p2")
	waitFor(t, "the good events", func() bool { return a.times("p1") == 1 && a.times("p2") == 1 })
	waitFor(t, "p-bad in the DLQ", func() bool { return dlqCount(t, s, "a") == 1 })
	// p-flaky waits in the retry set; later events still flow.
	appendIDs(t, s, pool, "p3")
	waitFor(t, "p3 delivered while p-flaky waits", func() bool { return a.times("p3") == 1 })
	if a.times("p-flaky") != 0 {
		t.Fatal("p-flaky delivered before its backoff")
	}
	for a.times("p-flaky") == 0 {
		clk.Advance(time.Second)
		time.Sleep(time.Millisecond)
		if flaky.Load() > 10 {
			t.Fatal("p-flaky retried too often")
		}
	}
	for _, id := range []string{"p1", "p2", "p3"} {
		if n := a.times(id); n != 1 {
			t.Errorf("%s delivered %d times: a partial failure re-sent delivered events", id, n)
		}
	}
	waitFor(t, "the spool to empty", func() bool { return s.events.Load() == 0 })
	closeSpool(t, s)
}

func TestPausedDestinationIsProbedAndResumes(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", ""), dest("b", "")}, ""))
	clk := newFakeClock()
	a, b := newFakeDest("a"), newFakeDest("b")
	var authOK atomic.Bool
	a.setBehave(func(int, []string) ([]error, error) {
		if !authOK.Load() {
			return nil, &testErr{kind: "pause", code: 401}
		}
		return nil, nil
	})
	s, pool := openTest(t, cfg, clk, a, b)
	t0 := clk.Now()
	appendIDs(t, s, pool, ids("q", 20)...)
	waitFor(t, "a paused", func() bool { return s.byName["a"].paused.Load() })
	waitFor(t, "the probe timer", func() bool { return clk.hasWaiter(t0.Add(15 * time.Second)) })
	waitFor(t, "b unaffected", func() bool { return b.count() == 20 })
	appendIDs(t, s, pool, ids("late", 5)...)
	waitFor(t, "b still unaffected", func() bool { return b.count() == 25 })
	if n := a.sendCount(); n != 1 {
		t.Fatalf("%d sends to a paused destination before its probe", n)
	}
	// A failed probe doubles the interval.
	clk.Advance(15 * time.Second)
	waitFor(t, "the second probe timer", func() bool { return clk.hasWaiter(t0.Add(45 * time.Second)) })
	authOK.Store(true)
	clk.Advance(30 * time.Second)
	waitFor(t, "a resumed and caught up", func() bool { return a.count() == 25 })
	if s.byName["a"].paused.Load() {
		t.Error("still paused after a successful probe")
	}
	if n := dlqCount(t, s, "a"); n != 0 {
		t.Errorf("%d events dead-lettered while paused", n)
	}
	closeSpool(t, s)
}

func TestTooLargeSplitsAndDeadLettersSingleEvent(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "batch: {max_events: 8}")}, ""))
	a := newFakeDest("a")
	a.setBehave(func(_ int, ids []string) ([]error, error) {
		if len(ids) > 2 || slices.Contains(ids, "huge") {
			return nil, &testErr{kind: "large", code: 413}
		}
		return nil, nil
	})
	a.gate = make(chan struct{})
	s, pool := openTest(t, cfg, nil, a)
	all := append(ids("t", 7), "huge")
	appendIDs(t, s, pool, all...)
	close(a.gate)
	waitFor(t, "the 7 normal events", func() bool { return a.count() == 7 })
	waitFor(t, "huge in the DLQ", func() bool { return dlqCount(t, s, "a") == 1 })
	for _, b := range a.batches {
		if len(b) > 8 {
			t.Errorf("batch of %d", len(b))
		}
	}
	var out bytes.Buffer
	_ = s.DLQShow("a", 0, &out)
	if !strings.Contains(out.String(), `"reason":"too_large"`) || !strings.Contains(out.String(), `"huge"`) {
		t.Errorf("DLQ: %s", out.String())
	}
	closeSpool(t, s)
}

func TestPermanentFailureThenReplayDelivers(t *testing.T) {
	dir := t.TempDir()
	cfg := immediate(testConfig(t, dir, "never", []string{dest("a", ""), dest("b", "")}, ""))
	a, b := newFakeDest("a"), newFakeDest("b")
	var fixed atomic.Bool
	a.setBehave(func(int, []string) ([]error, error) {
		if !fixed.Load() {
			return nil, &testErr{kind: "permanent", code: 400}
		}
		return nil, nil
	})
	s, pool := openTest(t, cfg, nil, a, b)
	appendIDs(t, s, pool, ids("r", 10)...)
	waitFor(t, "10 dead letters", func() bool { return dlqCount(t, s, "a") == 10 })
	waitFor(t, "b delivered", func() bool { return b.count() == 10 })
	waitFor(t, "the spool to empty", func() bool { return s.events.Load() == 0 })
	fixed.Store(true)
	n, err := s.DLQReplay("a", 0)
	if err != nil || n != 10 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	waitFor(t, "replayed events delivered", func() bool { return a.count() == 10 })
	if dlqCount(t, s, "a") != 0 {
		t.Error("replayed entries still in the DLQ")
	}
	closeSpool(t, s)
	for _, id := range ids("r", 10) {
		if b.times(id) != 1 {
			t.Errorf("%s delivered %d times to b: replay must go to a only", id, b.times(id))
		}
	}
}

func TestReplaySinceAndPurge(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, ""))
	clk := newFakeClock()
	a := newFakeDest("a")
	a.setBehave(func(int, []string) ([]error, error) { return nil, &testErr{kind: "permanent", code: 404} })
	s, pool := openTest(t, cfg, clk, a)
	appendIDs(t, s, pool, "old1", "old2")
	waitFor(t, "2 dead letters", func() bool { return dlqCount(t, s, "a") == 2 })
	clk.Advance(48 * time.Hour)
	appendIDs(t, s, pool, "new1")
	waitFor(t, "3 dead letters", func() bool { return dlqCount(t, s, "a") == 3 })
	closeSpool(t, s)

	s, _ = openTest(t, cfg, clk) // no delivery: replayed events stay spooled
	n, err := s.DLQReplay("a", 24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("replay -since 24h = %d, %v; want 1", n, err)
	}
	if s.events.Load() != 1 || s.byName["a"].backlogEvents.Load() != 1 {
		t.Errorf("spool %d events, backlog %d after replaying 1", s.events.Load(), s.byName["a"].backlogEvents.Load())
	}
	n, err = s.DLQPurge("a")
	if err != nil || n != 2 {
		t.Fatalf("purge = %d, %v; want 2", n, err)
	}
	if m, _ := s.DLQList(); m["a"] != 0 || s.byName["a"].dlq.events.Load() != 0 {
		t.Errorf("after purge: list %v, gauge %d", m, s.byName["a"].dlq.events.Load())
	}
	if _, err := s.DLQReplay("nope", 0); err == nil {
		t.Error("replay of an unknown destination succeeded")
	}
	closeSpool(t, s)
}

func TestPrepareRejectionAndMaxAgeDeadLetterAtOnce(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "retry: {max_age: 1h}")}, ""))
	clk := newFakeClock()
	a := newFakeDest("a")
	a.prepare = func(e *enrich.Event) error {
		if e.EventID == "stale" {
			return &testErr{kind: "permanent"}
		}
		return nil
	}
	a.gate = make(chan struct{})
	s, pool := openTest(t, cfg, clk, a)
	appendIDs(t, s, pool, "stale", "ok1")
	waitFor(t, "stale rejected by Prepare", func() bool { return dlqCount(t, s, "a") == 1 })
	close(a.gate)
	waitFor(t, "ok1", func() bool { return a.times("ok1") == 1 })
	a.setBehave(func(int, []string) ([]error, error) { return nil, &testErr{kind: "retry", code: 502} })
	appendIDs(t, s, pool, "aging")
	waitFor(t, "aging retried", func() bool { return a.sendCount() >= 2 })
	clk.Advance(2 * time.Hour)
	waitFor(t, "aging past retry.max_age", func() bool { return dlqCount(t, s, "a") == 2 })
	var out bytes.Buffer
	_ = s.DLQShow("a", 0, &out)
	if !strings.Contains(out.String(), `"reason":"prepare"`) || !strings.Contains(out.String(), `"reason":"max_age"`) {
		t.Errorf("DLQ: %s", out.String())
	}
	closeSpool(t, s)
}

func TestBacklogCapMovesOldestToDLQ(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never",
		[]string{dest("dead", "backlog: {max_bytes: 8KiB}, batch: {max_events: 1}"), dest("ok", "")}, ""))
	dead, ok := newFakeDest("dead"), newFakeDest("ok")
	dead.gate = make(chan struct{}) // blackholed: never answers
	s, pool := openTest(t, cfg, nil, dead, ok)
	for i := 0; i < 40; i++ {
		appendIDs(t, s, pool, ids(fmt.Sprintf("k%02d-", i), 5)...)
	}
	waitFor(t, "ok to get everything", func() bool { return ok.count() == 200 })
	d := s.byName["dead"]
	waitFor(t, "dead's backlog under its cap", func() bool { return d.backlogBytes.Load() <= 8<<10 })
	if n := d.m.backlogOverflow.Get(); n == 0 {
		t.Error("backlog overflow not counted")
	}
	if n := dlqCount(t, s, "dead"); n == 0 || uint64(n) != d.m.backlogOverflow.Get() {
		t.Errorf("%d dead letters, %d counted overflows", n, d.m.backlogOverflow.Get())
	}
	// The oldest went (those in flight excepted), not the newest.
	var out bytes.Buffer
	_ = s.DLQShow("dead", 1000, &out)
	if first, _, _ := strings.Cut(out.String(), "\n"); !strings.Contains(first, `"event_id":"k0`) {
		t.Errorf("oldest dead letter: %s", first)
	}
	if strings.Contains(out.String(), `"k39-0004"`) {
		t.Error("the newest event was dead-lettered")
	}
	closeSoon(t, s)
}

func TestDLQBoundsDropOldest(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, "dlq: {max_bytes: 4KiB, max_age: 14d}\n"))
	a := newFakeDest("a")
	a.setBehave(func(int, []string) ([]error, error) { return nil, &testErr{kind: "permanent", code: 400} })
	s, pool := openTest(t, cfg, nil, a)
	for i := 0; i < 50; i++ {
		appendIDs(t, s, pool, fmt.Sprintf("z%02d", i))
	}
	d := s.byName["a"]
	waitFor(t, "50 dead letters or drops", func() bool { return d.m.deadLettered.Get() == 50 })
	if d.dlq.bytes.Load() > 4<<10 {
		t.Errorf("DLQ holds %d bytes, max 4KiB", d.dlq.bytes.Load())
	}
	if d.m.dropped.Get() == 0 || int(d.m.dropped.Get())+dlqCount(t, s, "a") != 50 {
		t.Errorf("dropped %d + kept %d != 50", d.m.dropped.Get(), dlqCount(t, s, "a"))
	}
	closeSpool(t, s)
}

func TestGroupKeyAndDryRun(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never",
		[]string{dest("g", "batch: {max_events: 100}"), dest("dry", "dry_run: true")}, ""))
	g, dry := newFakeDest("g"), newFakeDest("dry")
	g.group = func(e *enrich.Event) string { return e.EventID[:2] }
	g.gate = make(chan struct{})
	s, pool := openTest(t, cfg, nil, g, dry)
	appendIDs(t, s, pool, "aa1", "bb1", "aa2", "bb2", "aa3")
	close(g.gate)
	waitFor(t, "g delivered", func() bool { return g.count() == 5 })
	for _, b := range g.batches {
		for _, id := range b {
			if id[:2] != b[0][:2] {
				t.Errorf("batch %v mixes groups", b)
			}
		}
	}
	waitFor(t, "dry run counted", func() bool { return s.byName["dry"].m.dryRun.Get() == 5 })
	if dry.sendCount() != 0 {
		t.Error("dry_run destination got a Send")
	}
	closeSpool(t, s)
}

func TestBlackholedDestinationDoesNotSlowAnother(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("hole", "timeout: 1h"), dest("fine", "")}, ""))
	hole, fine := newFakeDest("hole"), newFakeDest("fine")
	hole.gate = make(chan struct{}) // accepts the request and never answers
	s, pool := openTest(t, cfg, nil, hole, fine)
	const n = 500
	for i := 0; i < n; i += 50 {
		appendIDs(t, s, pool, ids(fmt.Sprintf("h%03d-", i), 50)...)
	}
	waitFor(t, "fine to get everything", func() bool { return fine.count() == n })
	if hole.count() != 0 {
		t.Fatal("the blackholed destination delivered")
	}
	closeSoon(t, s)
	// What hole did not get is still spooled for the next start.
	if got := s.byName["hole"].backlogEvents.Load(); got != n {
		t.Errorf("hole backlog %d after close, want %d", got, n)
	}
}

var errBoom = errors.New("boom")

func TestUnclassifiedErrorsAndPanicsAreRetried(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, ""))
	clk := newFakeClock()
	a := newFakeDest("a")
	a.setBehave(func(call int, _ []string) ([]error, error) {
		switch call {
		case 1:
			return nil, errBoom
		case 2:
			panic("adapter bug")
		}
		return nil, nil
	})
	s, pool := openTest(t, cfg, clk, a)
	appendIDs(t, s, pool, "u1")
	for a.count() == 0 {
		waitFor(t, "a send or delivery", func() bool { return a.count() == 1 || a.sendCount() >= 1 })
		clk.Advance(time.Second)
		time.Sleep(time.Millisecond)
		if a.sendCount() > 10 {
			t.Fatal("too many sends")
		}
	}
	closeSpool(t, s)
}

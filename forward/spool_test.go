package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sidetrack/sidetrack/enrich"
)

func TestAppendDeliversToEveryDestination(t *testing.T) {
	dir := t.TempDir()
	cfg := immediate(testConfig(t, dir, "50ms", []string{dest("a", "batch: {max_events: 7}"), dest("b", "")}, ""))
	a, b := newFakeDest("a"), newFakeDest("b")
	s, pool := openTest(t, cfg, nil, a, b)
	want := ids("e", 100)
	for i := 0; i < len(want); i += 10 {
		appendIDs(t, s, pool, want[i:i+10]...)
	}
	waitFor(t, "a and b to get 100 events", func() bool { return a.count() == 100 && b.count() == 100 })
	closeSpool(t, s)
	for _, id := range want {
		if a.times(id) != 1 || b.times(id) != 1 {
			t.Errorf("%s delivered %d/%d times, want once to each", id, a.times(id), b.times(id))
		}
	}
	for _, batch := range a.batches {
		if len(batch) > 7 {
			t.Errorf("batch of %d events, max_events is 7", len(batch))
		}
	}
	if !a.closed || !b.closed {
		t.Error("adapters not closed by Close")
	}
}

func TestGroupCommitSharesTransactions(t *testing.T) {
	for _, fsync := range []string{"always", "50ms"} {
		t.Run(fsync, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir, fsync, []string{dest("a", "")}, "")
			const appenders, each = 32, 20
			var s *Spool
			first := true
			// Hold the first commit until many appenders queued up, so
			// the test does not depend on timing to see sharing.
			hook := withBeforeCommit(func() error {
				if first {
					// Not waitFor: t.Fatal must not run on the writer.
					first = false
					for end := time.Now().Add(guard); len(s.w.reqs) < appenders/2 && time.Now().Before(end); {
						time.Sleep(time.Millisecond)
					}
				}
				return nil
			})
			pool := &enrich.EventPool{}
			var err error
			s, err = Open(cfg, nil, testLogger(t), pool, hook)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for g := 0; g < appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						appendIDs(t, s, pool, fmt.Sprintf("g%d-%d", g, i))
					}
				}()
			}
			wg.Wait()
			commits := s.met.commits.Get()
			if s.events.Load() != appenders*each {
				t.Fatalf("spool holds %d events, want %d", s.events.Load(), appenders*each)
			}
			if commits >= appenders*each {
				t.Errorf("%d commits for %d appends: no group commit", commits, appenders*each)
			}
			t.Logf("%d appends in %d commits", appenders*each, commits)
			closeSpool(t, s)
		})
	}
}

func TestAppendAcksOnlyAfterCommit(t *testing.T) {
	dir := t.TempDir()
	cfg := immediate(testConfig(t, dir, "always", []string{dest("a", "")}, ""))
	inCommit := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	hook := withBeforeCommit(func() error {
		once.Do(func() {
			close(inCommit)
			<-release
		})
		return nil
	})
	pool := &enrich.EventPool{}
	s, err := Open(cfg, nil, testLogger(t), pool, hook)
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Bool
	done := make(chan error, 1)
	go func() {
		err := s.Append(context.Background(), []*enrich.Event{newEvent(pool, "x1")})
		acked.Store(true)
		done <- err
	}()
	<-inCommit
	// The transaction holding x1 is being committed and Append must not
	// have returned: a 2xx now could lose the event.
	if acked.Load() {
		t.Fatal("Append returned before its commit")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	closeSpool(t, s)
	// Reopen: x1 is there.
	a := newFakeDest("a")
	s2, _ := openTest(t, cfg, nil, a)
	waitFor(t, "x1 delivered after restart", func() bool { return a.times("x1") == 1 })
	closeSpool(t, s2)
}

func TestRestartKeepsUndeliveredEventsAndCursors(t *testing.T) {
	dir := t.TempDir()
	cfg := immediate(testConfig(t, dir, "50ms", []string{dest("a", ""), dest("b", "")}, ""))
	a, b := newFakeDest("a"), newFakeDest("b")
	b.setBehave(func(int, []string) ([]error, error) { return nil, &testErr{kind: "pause", code: 401} })
	s, pool := openTest(t, cfg, nil, a, b)
	want := ids("r", 50)
	appendIDs(t, s, pool, want...)
	waitFor(t, "a to get 50", func() bool { return a.count() == 50 })
	waitFor(t, "b to pause", func() bool { return s.byName["b"].paused.Load() })
	closeSpool(t, s)
	if s.events.Load() != 50 {
		t.Fatalf("spool holds %d events after a got all and b none, want 50", s.events.Load())
	}

	a2, b2 := newFakeDest("a"), newFakeDest("b")
	s2, _ := openTest(t, cfg, nil, a2, b2)
	// a's cursor was kept (its re-delivery is also prevented by the
	// pending mask; the cursor spares re-reading the backlog).
	if c := s2.byName["a"].cursor; c != 50 {
		t.Errorf("a's cursor after restart = %d, want 50", c)
	}
	waitFor(t, "b to get the 50 after restart", func() bool { return b2.count() == 50 })
	waitFor(t, "the spool to empty", func() bool { return s2.events.Load() == 0 })
	closeSpool(t, s2)
	if n := a2.count(); n != 0 {
		t.Errorf("a got %d events again after a clean restart; its cursor was not kept", n)
	}
}

func TestSpoolFullThenAcceptedAfterDrain(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "50ms", []string{dest("a", "batch: {max_wait: 1ms}")}, "")
	cfg.Spool.MaxBytes = 4 << 10
	a := newFakeDest("a")
	gate := make(chan struct{})
	a.gate = gate
	s, pool := openTest(t, cfg, nil, a)
	var full *FullError
	n := 0
	for ; n < 1000; n++ {
		err := s.Append(context.Background(), []*enrich.Event{newEvent(pool, fmt.Sprintf("f%d", n))})
		if errors.As(err, &full) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if full == nil {
		t.Fatal("the spool never said it was full")
	}
	if full.RetryAfter() <= 0 || full.DiskFull {
		t.Errorf("full error %v: want a positive RetryAfter and not disk full", full)
	}
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(error(full), &ra) {
		t.Error("FullError does not satisfy the proxy's RetryAfter contract")
	}
	close(gate) // the destination takes events again
	waitFor(t, "delivery to drain the spool", func() bool { return a.count() == n })
	if err := s.Append(context.Background(), []*enrich.Event{newEvent(pool, "after")}); err != nil {
		t.Fatalf("append after drain: %v", err)
	}
	waitFor(t, "the late event", func() bool { return a.times("after") == 1 })
	closeSpool(t, s)
}

func TestDrainingAfterClose(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, "")
	s, pool := openTest(t, cfg, nil)
	closeSpool(t, s)
	err := s.Append(context.Background(), []*enrich.Event{newEvent(pool, "late")})
	var d interface{ Draining() bool }
	if !errors.As(err, &d) || !d.Draining() {
		t.Fatalf("Append after Close: %v, want a draining error", err)
	}
	if err := s.Quarantine(context.Background(), []*enrich.Event{newEvent(pool, "late")}, []string{"x"}); !errors.Is(err, ErrDraining) {
		t.Fatalf("Quarantine after Close: %v", err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, "")
	s, _ := openTest(t, cfg, nil)
	defer closeSpool(t, s)
	_, err := Open(cfg, nil, testLogger(t), nil, WithLockTimeout(50*time.Millisecond))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestReliabilityCorruptFileIsSetAside(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a bbolt file ", 2000)), 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("x"), 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{"bad record", func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o640, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists(bucketEvents)
				if err != nil {
					return err
				}
				if err := b.SetSequence(1); err != nil {
					return err
				}
				return b.Put(seqKey(nil, 1), []byte{9, 9, 9})
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{"smashed pages", func(t *testing.T, path string) {
			cfg := testConfig(t, filepath.Dir(path), "always", []string{dest("a", "")}, "")
			s, pool := openTest(t, cfg, nil)
			for i := 0; i < 20; i++ {
				appendIDs(t, s, pool, ids(fmt.Sprintf("c%d-", i), 50)...)
			}
			closeSpool(t, s)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			junk := []byte(strings.Repeat("\xff\x00junk", 1024))
			for off := int64(4 * 4096); off < fi.Size(); off += 3 * 4096 {
				if _, err := f.WriteAt(junk, off); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			tc.write(t, path)
			cfg := immediate(testConfig(t, dir, "always", []string{dest("a", "")}, ""))
			a := newFakeDest("a")
			s, pool := openTest(t, cfg, nil, a)
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("corrupt file not set aside: %v", aside)
			}
			appendIDs(t, s, pool, "fresh")
			waitFor(t, "the fresh spool to deliver", func() bool { return a.times("fresh") == 1 })
			closeSpool(t, s)
		})
	}
}

func TestSeenAcrossRestartAndWindow(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "50ms", []string{dest("a", "")}, "dedup: {window: 2h}\n")
	clk := newFakeClock()
	s, pool := openTest(t, cfg, clk)
	e := newEvent(pool, "d1")
	key := [16]byte{1, 2, 3}
	e.DedupKey = key
	if err := s.Append(context.Background(), []*enrich.Event{e}); err != nil {
		t.Fatal(err)
	}
	if seen, err := s.Seen(key); err != nil || !seen {
		t.Fatalf("Seen after append = %v, %v", seen, err)
	}
	if seen, _ := s.Seen([16]byte{9}); seen {
		t.Fatal("an unknown key was seen")
	}
	closeSpool(t, s)

	s, pool = openTest(t, cfg, clk)
	if seen, err := s.Seen(key); err != nil || !seen {
		t.Fatalf("Seen after restart = %v, %v", seen, err)
	}
	clk.Advance(4 * time.Hour)
	// A commit in a new hour prunes buckets past the window.
	appendIDs(t, s, pool, "later")
	if seen, _ := s.Seen(key); seen {
		t.Fatal("a key older than dedup.window is still seen")
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketIDs).Stats().BucketN; n > 2 {
			return fmt.Errorf("%d id buckets after pruning", n-1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	closeSpool(t, s)
}

func TestEventWithoutDestinationIsAckedNotStored(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "never", []string{dest("ads", "consent: [ads]"), dest("orders", "events: {include: [order_*]}")}, "")
	s, pool := openTest(t, cfg, nil)
	e := newEvent(pool, "n1")
	e.Consent.Ads = enrich.Denied
	e.DedupKey = [16]byte{7}
	if err := s.Append(context.Background(), []*enrich.Event{e}); err != nil {
		t.Fatal(err)
	}
	if s.events.Load() != 0 {
		t.Errorf("an event for no destination was stored")
	}
	if got := s.byName["ads"].m.consentBlocked.Get(); got != 1 {
		t.Errorf("consent_blocked{ads} = %d, want 1", got)
	}
	if got := s.byName["orders"].m.consentBlocked.Get(); got != 0 {
		t.Errorf("consent_blocked{orders} = %d, want 0 (filtered by name, not consent)", got)
	}
	if seen, _ := s.Seen([16]byte{7}); !seen {
		t.Error("the dedup key of an unrouted event was not committed")
	}
	closeSpool(t, s)
}

func TestWithCommittedReportsDurableKeys(t *testing.T) {
	var got [][16]byte
	dir := t.TempDir()
	cfg := testConfig(t, dir, "always", []string{dest("local", "")}, "")
	s, err := Open(cfg, nil, nil, nil, WithCommitted(func(keys [][16]byte) {
		got = append(got, keys...)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	e1, e2 := &enrich.Event{Name: "a"}, &enrich.Event{Name: "b"}
	e1.DedupKey = [16]byte{1}
	e2.DedupKey = [16]byte{2}
	if err := s.Append(context.Background(), []*enrich.Event{e1, e2}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != [16]byte{1} || got[1] != [16]byte{2} {
		t.Fatalf("committed keys %v", got)
	}
	for _, k := range got {
		if seen, err := s.Seen(k); err != nil || !seen {
			t.Fatalf("key %v reported before the index has it: %v %v", k, seen, err)
		}
	}
}

package enrich

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/config"
)

// ddNoLeaks checks, after the test's cleanups (which close the stages),
// that the test left no goroutine behind.
func ddNoLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// ddClock is a settable clock.
type ddClock struct {
	mu sync.Mutex
	t  time.Time
}

func newDDClock() *ddClock { return &ddClock{t: ddT0} }

func (c *ddClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *ddClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ddIndex is an exact IDIndex, as the spool's: keys committed within the
// window.
type ddIndex struct {
	mu     sync.Mutex
	m      map[[16]byte]time.Time
	now    func() time.Time
	window time.Duration
	err    error
	seen   atomic.Int64 // Seen calls
}

func newDDIndex(now func() time.Time, window time.Duration) *ddIndex {
	return &ddIndex{m: make(map[[16]byte]time.Time), now: now, window: window}
}

func (x *ddIndex) Seen(key [16]byte) (bool, error) {
	x.seen.Add(1)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return false, x.err
	}
	at, ok := x.m[key]
	return ok && x.now().Sub(at) < x.window, nil
}

func (x *ddIndex) commit(events []*Event) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range events {
		if e.DedupKey != ([16]byte{}) {
			x.m[e.DedupKey] = x.now()
		}
	}
}

// ddReplayIndex adds IDReplayer.
type ddReplayIndex struct{ *ddIndex }

func (x ddReplayIndex) ReplayIDs(since time.Time, fn func([16]byte)) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for k, at := range x.m {
		if !at.Before(since) {
			fn(k)
		}
	}
	return nil
}

// ddEnv is a dedup stage in a pipeline with a sink that stores accepted
// events into the index (when there is one) and commits them, as the
// proxy and the spool do.
type ddEnv struct {
	d     *Dedup
	p     *Pipeline
	clock *ddClock
	index *ddIndex
}

func newDDEnv(t testing.TB, withIndex bool, tweak func(*config.Config, *DedupOptions)) *ddEnv {
	t.Helper()
	clock := newDDClock()
	cfg := &config.Config{}
	cfg.Dedup.Window = config.Duration(48 * time.Hour)
	cfg.Dedup.Capacity = 100_000
	cfg.Dedup.FalsePositiveRate = 1e-4
	env := &ddEnv{clock: clock}
	opts := DedupOptions{Now: clock.Now}
	if withIndex {
		env.index = newDDIndex(clock.Now, 48*time.Hour)
		opts.Index = env.index
	}
	if tweak != nil {
		tweak(cfg, &opts)
	}
	d, err := NewDedup(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	env.d = d
	env.p = NewPipeline(clock.Now, d)
	return env
}

// send processes one request and stores its accepted events unless fail;
// a failed store releases them, as the proxy does on a sink error.
func (env *ddEnv) send(fail bool, events ...*Event) []Outcome {
	var res Result
	env.p.Process(&Request{}, events, &res)
	var keep []*Event
	out := make([]Outcome, len(events))
	for i := range events {
		out[i] = res.Events[i].Outcome
		if out[i] == Accepted {
			keep = append(keep, events[i])
		}
	}
	if fail {
		env.p.Release(keep)
		return out
	}
	if env.index != nil {
		env.index.commit(keep)
	}
	env.d.Commit(ddKeys(keep))
	return out
}

// ddKeys collects the keys of stored events, as the spool does for Commit.
func ddKeys(events []*Event) [][16]byte {
	var keys [][16]byte
	for _, e := range events {
		keys = append(keys, e.DedupKey)
	}
	return keys
}

func ddOutcomes(o ...Outcome) string { return fmt.Sprint(o) }

func ev(src Source, name, id string) *Event {
	return ddEv{src: src, name: name, id: id}.event()
}

func order(src Source, name, tx, id string) *Event {
	e := ddEv{src: src, name: name, id: id, tx: tx}.event()
	e.Commerce.Value, e.Commerce.Currency = Some(59.97), "USD"
	return e
}

func TestDedupDuplicates(t *testing.T) {
	for _, withIndex := range []bool{false, true} {
		t.Run(fmt.Sprintf("index=%v", withIndex), func(t *testing.T) {
			env := newDDEnv(t, withIndex, nil)
			steps := []struct {
				name   string
				events []*Event
				want   []Outcome
			}{
				{"same messageId twice in one batch", []*Event{ev(SourceSegment, "product_added", "m-1"), ev(SourceSegment, "product_added", "m-1")}, []Outcome{Accepted, Duplicate}},
				{"again in a later batch", []*Event{ev(SourceSegment, "product_added", "m-2"), ev(SourceSegment, "product_added", "m-1")}, []Outcome{Accepted, Duplicate}},
				{"same id on another route is another event", []*Event{ev(SourceCollect, "product_added", "m-1")}, []Outcome{Accepted}},
				{"and then a duplicate there", []*Event{ev(SourceCollect, "product_added", "m-1")}, []Outcome{Duplicate}},
				{"GA4 hit resent", []*Event{ddEv{src: SourceGA4, name: "scroll", cid: "1.2", pageLoad: "9", seq: 4}.event()}, []Outcome{Accepted}},
				{"GA4 hit resent (2)", []*Event{ddEv{src: SourceGA4, name: "scroll", cid: "1.2", pageLoad: "9", seq: 4}.event()}, []Outcome{Duplicate}},
				{"events without ids are never duplicates", []*Event{ev(SourceForm, "lead_submitted", ""), ev(SourceForm, "lead_submitted", "")}, []Outcome{Accepted, Accepted}},
			}
			for _, s := range steps {
				if got := env.send(false, s.events...); ddOutcomes(got...) != ddOutcomes(s.want...) {
					t.Errorf("%s: %v, want %v", s.name, got, s.want)
				}
			}
			st := env.d.Stats()
			if st.Duplicate != 4 || st.NoID != 2 || st.New+st.BloomFalsePositive != 4 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestDedupCrossSourceOrders(t *testing.T) {
	env := newDDEnv(t, true, nil)
	// gtag's purchase (naming made it order_completed), analytics.js's
	// Order Completed, and the backend's: one event.
	gtag := ddEv{src: SourceGA4, name: "order_completed", orig: "purchase", tx: "T1", cid: "585712067.1795442481", pageLoad: "7", seq: 5}.event()
	seg := order(SourceSegment, "order_completed", "T1", "ajs-msg-1")
	backend := order(SourceBackend, "order_completed", "T1", "")
	if got := env.send(false, gtag); got[0] != Accepted {
		t.Fatalf("first report: %v", got)
	}
	if got := env.send(false, seg); got[0] != Duplicate {
		t.Errorf("analytics.js report: %v", got)
	}
	if got := env.send(false, backend); got[0] != Duplicate {
		t.Errorf("backend report: %v", got)
	}
	// A purchase, its payment and its refund are three events, and each is
	// deduplicated on its own.
	paid, refunded := order(SourceBackend, "order_paid", "T1", ""), order(SourceBackend, "order_refunded", "T1", "")
	if got := env.send(false, paid, refunded); ddOutcomes(got...) != ddOutcomes(Accepted, Accepted) {
		t.Errorf("paid, refunded: %v", got)
	}
	again := []*Event{order(SourceBackend, "order_completed", "T1", ""), order(SourceBackend, "order_paid", "T1", ""), order(SourceBackend, "order_refunded", "T1", "")}
	if got := env.send(false, again...); ddOutcomes(got...) != ddOutcomes(Duplicate, Duplicate, Duplicate) {
		t.Errorf("resent: %v", got)
	}
	// Another order is another event.
	if got := env.send(false, order(SourceBackend, "order_completed", "T2", "")); got[0] != Accepted {
		t.Errorf("order T2: %v", got)
	}
}

func TestDedupReleaseRetry(t *testing.T) {
	for _, withIndex := range []bool{false, true} {
		t.Run(fmt.Sprintf("index=%v", withIndex), func(t *testing.T) {
			env := newDDEnv(t, withIndex, nil)
			// The spool refuses the batch (429): the events are released.
			first := []*Event{ev(SourceSegment, "x", "r-1"), ev(SourceSegment, "x", "r-2"), ev(SourceSegment, "x", "r-1")}
			if got := env.send(true, first...); ddOutcomes(got...) != ddOutcomes(Accepted, Accepted, Duplicate) {
				t.Fatalf("first attempt: %v", got)
			}
			for _, e := range first {
				if e.DedupKey != ([16]byte{}) {
					t.Error("key still set after Release")
				}
			}
			env.d.hot.Wait() // the hot cache's Set and Del are applied
			env.clock.Advance(3 * time.Second)
			// The client's retry is accepted (the Bloom filter and the hot
			// cache still remember the keys; the release overrides them).
			if got := env.send(false, ev(SourceSegment, "x", "r-1"), ev(SourceSegment, "x", "r-2"), ev(SourceSegment, "x", "r-1")); ddOutcomes(got...) != ddOutcomes(Accepted, Accepted, Duplicate) {
				t.Fatalf("retry: %v", got)
			}
			// And once stored, a further retry is a duplicate.
			if got := env.send(false, ev(SourceSegment, "x", "r-1")); got[0] != Duplicate {
				t.Errorf("after storing: %v", got)
			}
			// Past the tombstone's life, the retry is still accepted after a
			// release: nothing but the Bloom filter remembers the key.
			e := ev(SourceSegment, "x", "r-3")
			env.send(true, e)
			env.d.hot.Wait()
			env.clock.Advance(time.Minute)
			if got := env.send(false, ev(SourceSegment, "x", "r-3")); got[0] != Accepted {
				t.Errorf("late retry: %v", got)
			}
			if st := env.d.Stats(); st.Released != 3 {
				t.Errorf("released %d, want 3", st.Released)
			}
		})
	}
}

// Releasing a duplicate must not free the original's reservation.
func TestDedupReleaseOnlyOwn(t *testing.T) {
	env := newDDEnv(t, false, nil)
	var res EventResult
	a, b := ev(SourceCollect, "x", "own"), ev(SourceCollect, "x", "own")
	env.d.Apply(&Request{}, a, &res)
	var resB EventResult
	env.d.Apply(&Request{}, b, &resB)
	if res.Outcome != Accepted || resB.Outcome != Duplicate {
		t.Fatalf("%v %v", res.Outcome, resB.Outcome)
	}
	env.d.Release([]*Event{b})
	var resC EventResult
	env.d.Apply(&Request{}, ev(SourceCollect, "x", "own"), &resC)
	if resC.Outcome != Duplicate {
		t.Error("releasing a duplicate freed the original's key")
	}
	if st := env.d.Stats(); st.Released != 0 {
		t.Errorf("released %d", st.Released)
	}
}

func TestDedupWindow(t *testing.T) {
	for _, withIndex := range []bool{false, true} {
		t.Run(fmt.Sprintf("index=%v", withIndex), func(t *testing.T) {
			env := newDDEnv(t, withIndex, nil)
			window := 48 * time.Hour
			env.send(false, ev(SourceCollect, "x", "w-1"))
			env.d.hot.Wait()
			// Within the window, after the reservation itself expired.
			env.clock.Advance(window - time.Minute)
			if got := env.send(false, ev(SourceCollect, "x", "w-1")); got[0] != Duplicate {
				t.Errorf("within the window: %v", got)
			}
			// Once the window and one generation have passed, every layer
			// has forgotten the key.
			env.clock.Advance(time.Minute + window/(bloomGenerations-1) + time.Second)
			if got := env.send(false, ev(SourceCollect, "x", "w-1")); got[0] != Accepted {
				t.Errorf("after the window: %v", got)
			}
			st := env.d.Stats()
			if st.New != 2 || st.Duplicate != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestDedupConcurrentDuplicates(t *testing.T) {
	env := newDDEnv(t, true, nil)
	const workers = 16
	keys := 200
	if testing.Short() {
		keys = 50
	}
	for k := range keys {
		id := "c-" + strconv.Itoa(k)
		var accepted atomic.Int32
		var start, done sync.WaitGroup
		start.Add(1)
		for range workers {
			done.Add(1)
			go func() {
				defer done.Done()
				e := ev(SourceSegment, "product_added", id)
				start.Wait()
				var res EventResult
				env.d.Apply(&Request{}, e, &res)
				if res.Outcome == Accepted {
					accepted.Add(1)
					env.index.commit([]*Event{e})
					env.d.Commit(ddKeys([]*Event{e}))
				}
			}()
		}
		start.Done()
		done.Wait()
		if n := accepted.Load(); n != 1 {
			t.Fatalf("key %d: %d accepted, want exactly 1", k, n)
		}
	}
	if st := env.d.Stats(); st.Duplicate != uint64(keys*(workers-1)) || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The property that matters most: whatever the Bloom filter says, a new
// event is never dropped. Random ids, many repeats, a deliberately
// overloaded filter (capacity a tenth of the distinct ids, so it answers
// "maybe" constantly), random store failures and clock steps. With an
// exact index the stage is also exact the other way: no duplicate passes.
func TestDedupNeverDropsNew(t *testing.T) {
	n := 2_000_000
	if testing.Short() {
		n = 100_000
	}
	for _, withIndex := range []bool{true, false} {
		t.Run(fmt.Sprintf("index=%v", withIndex), func(t *testing.T) {
			env := newDDEnv(t, withIndex, func(c *config.Config, o *DedupOptions) {
				c.Dedup.Capacity = int64(n / 20)
				c.Dedup.FalsePositiveRate = 0.01
				o.HotKeys = 1000
			})
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			distinct := n / 2
			stored := make([]bool, distinct)
			var pool EventPool
			var res Result
			batch := make([]*Event, 0, 4)
			ids := make([]int, 0, 4)
			var buf []byte
			missed := 0
			for sent := 0; sent < n; {
				batch, ids = batch[:0], ids[:0]
				for range 1 + rng.IntN(4) {
					id := rng.IntN(distinct)
					e := pool.Get()
					e.Source, e.Name = SourceSegment, "product_added"
					buf = strconv.AppendInt(append(buf[:0], "id-"...), int64(id), 10)
					e.EventID = e.Intern(buf)
					batch, ids = append(batch, e), append(ids, id)
				}
				sent += len(batch)
				env.p.Process(&Request{}, batch, &res)
				inBatch := map[int]bool{}
				var keep []*Event
				for i, e := range batch {
					id := ids[i]
					switch res.Events[i].Outcome {
					case Duplicate:
						if !stored[id] && !inBatch[id] {
							t.Fatalf("event %d: id %d dropped as a duplicate but never stored", sent, id)
						}
					case Accepted:
						if stored[id] || inBatch[id] {
							if withIndex {
								t.Fatalf("event %d: id %d stored before, accepted again", sent, id)
							}
							missed++
						}
						inBatch[id] = true
						keep = append(keep, e)
					default:
						t.Fatalf("outcome %v", res.Events[i].Outcome)
					}
				}
				if rng.IntN(100) == 0 {
					env.p.Release(keep) // the spool said 429
				} else {
					for _, e := range keep {
						stored[ids[indexOf(batch, e)]] = true
					}
					if env.index != nil {
						env.index.commit(keep)
					}
					env.d.Commit(ddKeys(keep))
				}
				for _, e := range batch {
					pool.Put(e)
				}
				if rng.IntN(1000) == 0 {
					env.clock.Advance(time.Duration(rng.IntN(30)) * time.Second)
				}
			}
			st := env.d.Stats()
			t.Logf("%d events: %+v; duplicates missed without an index: %d", n, st, missed)
			if st.BloomFalsePositive < uint64(n/100) {
				t.Errorf("only %d Bloom false positives: the test does not exercise the confirm path", st.BloomFalsePositive)
			}
		})
	}
}

func indexOf(events []*Event, e *Event) int {
	for i := range events {
		if events[i] == e {
			return i
		}
	}
	return -1
}

func TestDedupNoID(t *testing.T) {
	env := newDDEnv(t, false, nil)
	e := ev(SourceForm, "lead_submitted", "")
	if got := env.send(false, e); got[0] != Accepted {
		t.Fatalf("%v", got)
	}
	if e.EventID == "" || e.DedupKey != ([16]byte{}) {
		t.Errorf("id %q key %x", e.EventID, e.DedupKey)
	}
	if st := env.d.Stats(); st.NoID != 1 || st.New != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestDedupIndexError(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	env := newDDEnv(t, true, func(_ *config.Config, o *DedupOptions) { o.Log = zap.New(core) })
	env.send(false, ev(SourceCollect, "x", "ie-1"))
	env.clock.Advance(time.Minute) // past the reservation
	env.index.mu.Lock()
	env.index.err = errors.New("bbolt: disk I/O error")
	env.index.mu.Unlock()
	// The hot cache could confirm the duplicate; empty it so the index is
	// asked.
	env.d.hot.Clear()
	if got := env.send(false, ev(SourceCollect, "x", "ie-1")); got[0] != Accepted {
		t.Errorf("with a failing index: %v (an event must never be dropped on doubt)", got)
	}
	if st := env.d.Stats(); st.IndexErrors != 1 || st.BloomFalsePositive != 1 {
		t.Errorf("stats %+v", st)
	}
	if logs.FilterMessageSnippet("id index lookup failed").Len() != 1 {
		t.Errorf("logs %v", logs.All())
	}
}

func TestDedupCommitFreesPending(t *testing.T) {
	env := newDDEnv(t, true, nil)
	env.send(false, ev(SourceCollect, "x", "p-1"), ev(SourceCollect, "x", "p-2"))
	if st := env.d.Stats(); st.Pending != 0 || st.Committed != 2 {
		t.Errorf("after commit: %+v", st)
	}
	// Without Commit (a lead that forgot it) reservations expire.
	var res Result
	env.p.Process(&Request{}, []*Event{ev(SourceCollect, "x", "p-3")}, &res)
	if st := env.d.Stats(); st.Pending != 1 {
		t.Errorf("reserved: %+v", st)
	}
	env.clock.Advance(11 * time.Second)
	env.p.Process(&Request{}, []*Event{ev(SourceCollect, "x", "p-4")}, &res) // sweeps the shard it touches
	for i := range env.d.shards {
		sh := &env.d.shards[i]
		sh.mu.Lock()
		sh.sweep(env.clock.Now().UnixNano(), env.d.pendingTTL)
		sh.mu.Unlock()
	}
	if st := env.d.Stats(); st.Pending != 1 {
		t.Errorf("after expiry: %+v (p-4 only)", st)
	}
}

func TestDedupDebugSample(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	env := newDDEnv(t, false, func(_ *config.Config, o *DedupOptions) { o.Log = zap.New(core) })
	for range 3 {
		env.send(false, ev(SourceCollect, "x", "dbg"))
	}
	got := logs.FilterMessageSnippet("duplicate event").All()
	if len(got) != 1 || got[0].ContextMap()["event_id"] != "dbg" {
		t.Errorf("sampled logs %v", got)
	}
}

// Restart inside the window: the Bloom snapshot (written on Close) and the
// index together recognise a duplicate of an event stored before.
func TestDedupRestart(t *testing.T) {
	ddNoLeaks(t)
	dir := t.TempDir()
	clock := newDDClock()
	index := newDDIndex(clock.Now, 48*time.Hour)
	cfg := &config.Config{}
	cfg.Spool.Dir = dir
	cfg.Dedup.Capacity = 100_000
	open := func(ix IDIndex) *Dedup {
		d, err := NewDedup(cfg, DedupOptions{Now: clock.Now, Index: ix})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	apply := func(d *Dedup, id string) Outcome {
		var res EventResult
		e := ev(SourceSegment, "x", id)
		d.Apply(&Request{}, e, &res)
		if res.Outcome == Accepted {
			index.commit([]*Event{e})
			d.Commit(ddKeys([]*Event{e}))
		}
		return res.Outcome
	}

	d := open(index)
	apply(d, "before-1")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dedup.bloom")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(6 * time.Hour)
	d = open(index)
	if got := apply(d, "before-1"); got != Duplicate {
		t.Errorf("after a clean restart: %v", got)
	}
	if got := apply(d, "after-1"); got != Accepted {
		t.Errorf("new event after restart: %v", got)
	}

	// A crash: the last snapshot predates some keys. An index that can
	// replay its keys fills the gap.
	if err := d.snapshot(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	apply(d, "after-snapshot")
	d.snapPath = "" // crash: no snapshot on the way down
	d.Close()
	clock.Advance(time.Minute)
	d = open(ddReplayIndex{index})
	for _, id := range []string{"before-1", "after-1", "after-snapshot"} {
		if got := apply(d, id); got != Duplicate {
			t.Errorf("%s after a crash: %v", id, got)
		}
	}
	d.Close()

	// Beyond the window the restarted stage forgets, as the running one.
	clock.Advance(72 * time.Hour)
	d = open(index)
	defer d.Close()
	if got := apply(d, "before-1"); got != Accepted {
		t.Errorf("after the window: %v", got)
	}
}

func TestDedupCorruptSnapshot(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dedup.bloom"), []byte("STKBLOOM\x00\x00\x00\x01garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	// And the temporary file of a write cut short by a crash.
	if err := os.WriteFile(filepath.Join(dir, ".dedup.bloom-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := &config.Config{}
	cfg.Spool.Dir = dir
	cfg.Dedup.Capacity = 1000
	d, err := NewDedup(cfg, DedupOptions{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	var res EventResult
	d.Apply(&Request{}, ev(SourceCollect, "x", "1"), &res)
	if res.Outcome != Accepted {
		t.Error(res.Outcome)
	}
	if logs.FilterMessageSnippet("ignoring Bloom snapshot").Len() != 1 {
		t.Errorf("no warning: %v", logs.All())
	}
	if _, err := os.Stat(filepath.Join(dir, ".dedup.bloom-123")); !os.IsNotExist(err) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	// Close replaces it with a good one.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b := newRotatingBloom(1000, 1e-4, 48*time.Hour, time.Now().UnixNano())
	if _, err := b.readSnapshot(filepath.Join(dir, "dedup.bloom"), time.Now().UnixNano()); err != nil {
		t.Errorf("snapshot after Close: %v", err)
	}
}

// Memory of the whole stage at the design's 10 M-key setting, with every
// Bloom generation present and the hot cache full (DESIGN §8 budgets RssAnon at peak with 10 M-key dedup).
func TestDedupMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~50 MiB")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	clock := newDDClock()
	cfg := &config.Config{}
	cfg.Dedup.Capacity = 10_000_000
	cfg.Dedup.FalsePositiveRate = 1e-4
	cfg.Dedup.Window = config.Duration(48 * time.Hour)
	// No index: then every reserved key goes to the hot cache, the most
	// it can hold.
	d, err := NewDedup(cfg, DedupOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	span := 16 * time.Hour
	e := &Event{}
	for g := range bloomGenerations {
		if g > 0 {
			clock.Advance(span)
		}
		for i := range dedupDefaultHotKeys / 2 {
			e.Reset()
			e.Source, e.Name, e.EventID = SourceSegment, "x", "m-"+strconv.Itoa(g<<20|i)
			var res EventResult
			d.Apply(&Request{}, e, &res)
			d.Commit(ddKeys([]*Event{e}))
		}
	}
	d.hot.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	got := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	bloomMiB := float64(d.Stats().BloomBytes) / (1 << 20)
	t.Logf("stage heap %.1f MiB (Bloom %.1f MiB, hot cache of %d keys and the rest %.1f MiB)", got, bloomMiB, dedupDefaultHotKeys, got-bloomMiB)
	if got > bloomMiB+25 {
		t.Errorf("stage uses %.1f MiB", got)
	}
	runtime.KeepAlive(d)
}

// Benchmarks: one check per op, -benchmem reports allocations.

// ddNeverIndex never has a key (a miss costs what a bbolt miss would not,
// but keeps the benchmark about the stage).
type ddNeverIndex struct{}

func (ddNeverIndex) Seen([16]byte) (bool, error) { return false, nil }

func benchDedup(b *testing.B) *Dedup {
	cfg := &config.Config{}
	cfg.Dedup.Capacity = 10_000_000
	cfg.Dedup.FalsePositiveRate = 1e-4
	var ns atomic.Int64
	now := func() time.Time { return ddT0.Add(time.Duration(ns.Add(100))) }
	d, err := NewDedup(cfg, DedupOptions{Now: now, Index: ddNeverIndex{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

func BenchmarkDedupApply(b *testing.B) {
	b.Run("new", func(b *testing.B) {
		d := benchDedup(b)
		e := &Event{}
		e.Intern(make([]byte, 512))
		keys := make([][16]byte, 1)
		var res EventResult
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			e.Reset()
			e.Source, e.Name, e.OriginalName, e.AnonymousID, e.PageLoadID, e.HitSeq = SourceGA4, "page_viewed", "page_view", "585712067.1795442481", "1234567", int64(i)
			res = EventResult{}
			d.Apply(nil, e, &res)
			keys[0] = e.DedupKey
			d.Commit(keys)
		}
	})
	b.Run("duplicate", func(b *testing.B) {
		d := benchDedup(b)
		e := &Event{}
		e.Intern(make([]byte, 512))
		fill := func() {
			e.Reset()
			e.Source, e.Name, e.EventID = SourceSegment, "product_added", "ajs-next-1700000000000-1234"
		}
		fill()
		d.Apply(nil, e, &EventResult{})
		var res EventResult
		b.ReportAllocs()
		for b.Loop() {
			fill()
			res = EventResult{}
			d.Apply(nil, e, &res)
		}
		if res.Outcome != Duplicate {
			b.Fatal(res.Outcome)
		}
	})
	b.Run("parallel-new", func(b *testing.B) {
		d := benchDedup(b)
		var worker atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := strconv.FormatInt(worker.Add(1), 10)
			e := &Event{}
			e.Intern(make([]byte, 512))
			keys := make([][16]byte, 1)
			var res EventResult
			for i := int64(0); pb.Next(); i++ {
				e.Reset()
				e.Source, e.Name, e.OriginalName, e.AnonymousID, e.PageLoadID, e.HitSeq = SourceGA4, "page_viewed", "page_view", "585712067.1795442481", w, i
				res = EventResult{}
				d.Apply(nil, e, &res)
				keys[0] = e.DedupKey
				d.Commit(keys)
			}
		})
	})
}

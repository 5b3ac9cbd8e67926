package forward

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	// toxiproxy (the reliability tests) can leave a toxic's pipe blocked
	// on a link it already closed; that goroutine is its own.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"))
}

// guard bounds every wait in these tests. It is a failure guard, never an
// assertion about speed.
const guard = 20 * time.Second

// waitFor polls cond until it holds or the guard expires.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// testConfig builds a config with the named destinations (type ndjson:
// the spool only matches names) and the spool in dir. extra is YAML
// appended to the document (e.g. "dlq: {max_bytes: 1KiB}").
func testConfig(t testing.TB, dir string, fsync string, destYAML []string, extra string) *config.Config {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "spool: {dir: %q, fsync: %s, max_bytes: 1GiB}\n", dir, fsync)
	b.WriteString("destinations:\n")
	for _, d := range destYAML {
		fmt.Fprintf(&b, "  - %s\n", d)
	}
	b.WriteString(extra)
	cfg, err := config.Parse([]byte(b.String()), nil)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, b.String())
	}
	return cfg
}

// dest is the YAML of an ndjson destination named name with extra keys.
func dest(name string, extra string) string {
	s := fmt.Sprintf("{name: %s, type: ndjson, path: /nonexistent/%s", name, name)
	if extra != "" {
		s += ", " + extra
	}
	return s + "}"
}

// newEvent returns a pooled event with id, granted consent and name
// page_viewed.
func newEvent(pool *enrich.EventPool, id string) *enrich.Event {
	e := pool.Get()
	e.EventID = e.InternString(id)
	e.Name = "page_viewed"
	e.Source = enrich.SourceCollect
	e.ReceivedAt = time.Unix(1700000000, 0).UTC()
	e.OccurredAt = e.ReceivedAt
	e.Consent.Analytics = enrich.Granted
	e.Consent.Ads = enrich.Granted
	e.Consent.AdUserData = enrich.Granted
	e.Consent.AdPersonalization = enrich.Granted
	return e
}

func appendIDs(t testing.TB, s *Spool, pool *enrich.EventPool, ids ...string) {
	t.Helper()
	evs := make([]*enrich.Event, len(ids))
	for i, id := range ids {
		evs[i] = newEvent(pool, id)
	}
	if err := s.Append(context.Background(), evs); err != nil {
		t.Fatalf("append: %v", err)
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

func testLogger(t testing.TB) *zap.Logger {
	if testing.Verbose() {
		return zaptest.NewLogger(t)
	}
	return zap.NewNop()
}

func closeSpool(t testing.TB, s *Spool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// closeSoon closes s giving destinations 50ms to flush: for tests with a
// destination that never answers.
func closeSoon(t testing.TB, s *Spool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &fakeWaiter{at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		w.c <- c.now
		return w.c, func() {}
	}
	c.waiters = append(c.waiters, w)
	return w.c, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.waiters = slices.DeleteFunc(c.waiters, func(x *fakeWaiter) bool { return x == w })
	}
}

// Advance moves the clock and fires the waiters that fell due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waiters = slices.DeleteFunc(c.waiters, func(w *fakeWaiter) bool {
		if w.at.After(c.now) {
			return false
		}
		w.c <- c.now
		return true
	})
}

// hasWaiter reports whether someone waits for exactly at.
func (c *fakeClock) hasWaiter(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		if w.at.Equal(at) {
			return true
		}
	}
	return false
}

// zeroJitter is a rand.Source whose draws make full-jitter backoff its
// maximum (Int64N(n) of a source returning all ones is n-1).
type zeroJitter struct{}

func (zeroJitter) Uint64() uint64 { return ^uint64(0) }

var _ rand.Source = zeroJitter{}

// fakeDest is an in-process Destination recording what it got.
type fakeDest struct {
	name   string
	limits Limits

	mu        sync.Mutex
	delivered map[string]int // event id → times delivered
	sends     int
	batches   [][]string
	// behave decides a Send's outcome; nil delivers everything.
	behave func(call int, ids []string) ([]error, error)
	// gate, when set, makes Send wait for a value (or ctx).
	gate    chan struct{}
	prepare func(*enrich.Event) error
	group   func(*enrich.Event) string
	closed  bool
}

func newFakeDest(name string) *fakeDest {
	return &fakeDest{name: name, delivered: map[string]int{}}
}

func (f *fakeDest) Name() string   { return f.name }
func (f *fakeDest) Limits() Limits { return f.limits }
func (f *fakeDest) GroupKey(e *enrich.Event) string {
	if f.group != nil {
		return f.group(e)
	}
	return ""
}

func (f *fakeDest) Prepare(e *enrich.Event) error {
	if f.prepare != nil {
		return f.prepare(e)
	}
	return nil
}

func (f *fakeDest) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	batchIDs := make([]string, len(batch))
	for i, e := range batch {
		batchIDs[i] = strings.Clone(e.EventID) // events are released after Send
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	f.batches = append(f.batches, batchIDs)
	var per []error
	var err error
	if f.behave != nil {
		per, err = f.behave(f.sends, batchIDs)
	}
	if err != nil {
		return nil, err
	}
	for i, id := range batchIDs {
		if i < len(per) && per[i] != nil {
			continue
		}
		f.delivered[id]++
	}
	return per, nil
}

func (f *fakeDest) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeDest) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.delivered)
}

func (f *fakeDest) times(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delivered[id]
}

func (f *fakeDest) sendCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sends
}

func (f *fakeDest) setBehave(b func(call int, ids []string) ([]error, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.behave = b
}

// testErr is an adapter error with every behaviour method.
type testErr struct {
	kind string // retry, permanent, pause, large
	wait time.Duration
	code int
}

func (e *testErr) Error() string             { return fmt.Sprintf("test %s (HTTP %d)", e.kind, e.code) }
func (e *testErr) Retryable() bool           { return e.kind == "retry" }
func (e *testErr) RetryAfter() time.Duration { return e.wait }
func (e *testErr) Permanent() bool           { return e.kind == "permanent" }
func (e *testErr) Paused() bool              { return e.kind == "pause" }
func (e *testErr) TooLarge() bool            { return e.kind == "large" }
func (e *testErr) StatusCode() int           { return e.code }

// openTest opens a spool over dests with cfg and a fake clock, and starts
// delivery.
func openTest(t testing.TB, cfg *config.Config, clk Clock, dests ...Destination) (*Spool, *enrich.EventPool) {
	t.Helper()
	pool := &enrich.EventPool{}
	opts := []Option{WithRandom(zeroJitter{}), WithLockTimeout(200 * time.Millisecond)}
	if clk != nil {
		opts = append(opts, WithClock(clk))
	}
	var ds []Destination
	if len(dests) > 0 {
		ds = dests
	}
	s, err := Open(cfg, ds, testLogger(t), pool, opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if ds != nil {
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("start: %v", err)
		}
	}
	return s, pool
}

// dlqCount is the number of dead letters of dest.
func dlqCount(t testing.TB, s *Spool, dest string) int {
	t.Helper()
	m, err := s.DLQList()
	if err != nil {
		t.Fatalf("dlq list: %v", err)
	}
	return m[dest]
}

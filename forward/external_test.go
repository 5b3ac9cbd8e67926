package forward

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// memLog is an in-memory Log: records handed out stay pending until
// resolved, as a Kafka partition's uncommitted tail does.
type memLog struct {
	mu       sync.Mutex
	recs     [][]byte
	next     int
	pending  map[uint64][]byte
	done     []uint64
	dead     []status.DeadLetter
	failDead int // Resolve calls with dead letters to fail first
	// sent, when set, tells whether a record resolved as done was sent;
	// early counts those that were not.
	sent  func(event []byte) bool
	early int
	wake  func()
}

func newMemLog() *memLog { return &memLog{pending: map[uint64][]byte{}, wake: func() {}} }

func (l *memLog) add(evs ...*enrich.Event) {
	l.mu.Lock()
	for _, e := range evs {
		l.recs = append(l.recs, e.AppendJSON(nil))
	}
	wake := l.wake
	l.mu.Unlock()
	wake()
}

func (l *memLog) Read(limit int, fn func(uint64, time.Time, []byte)) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ; n < limit && l.next < len(l.recs); n++ {
		seq := uint64(l.next + 1)
		l.pending[seq] = l.recs[l.next]
		fn(seq, time.Now(), l.recs[l.next])
		l.next++
	}
	return n, nil
}

func (l *memLog) Lookup(seq uint64) (time.Time, []byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.pending[seq]
	return time.Now(), v, ok
}

func (l *memLog) Resolve(_ context.Context, done []uint64, dead []status.DeadLetter) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(dead) > 0 && l.failDead > 0 {
		l.failDead--
		return &testErr{kind: "retry"}
	}
	for _, s := range done {
		if v, ok := l.pending[s]; ok {
			if l.sent != nil && !l.sent(v) {
				l.early++
			}
			delete(l.pending, s)
			l.done = append(l.done, s)
		}
	}
	for _, d := range dead {
		if _, ok := l.pending[d.Seq]; ok {
			delete(l.pending, d.Seq)
			l.dead = append(l.dead, d)
		}
	}
	return nil
}

func (l *memLog) SetWake(w func()) {
	l.mu.Lock()
	l.wake = w
	l.mu.Unlock()
}

// unresolved counts records handed out or still unread.
func (l *memLog) unresolved() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending) + len(l.recs) - l.next
}

func TestFeedOverExternalLog(t *testing.T) {
	tests := []struct {
		name string
		// behave decides sends (nil delivers all).
		behave   func(call int, ids []string) ([]error, error)
		failDead int
		destYAML string
		events   []string
		// want: delivered ids, dead-lettered reasons by id.
		delivered []string
		dead      map[string]string
	}{
		{name: "all delivered", events: []string{"e1", "e2", "e3"}, delivered: []string{"e1", "e2", "e3"}},
		{
			name:   "a retried event stays pending until delivered",
			events: []string{"e1", "e2"},
			behave: func(call int, ids []string) ([]error, error) {
				per := make([]error, len(ids))
				for i, id := range ids {
					if id == "e2" && call < 3 {
						per[i] = &testErr{kind: "retry", code: 503}
					}
				}
				return per, nil
			},
			delivered: []string{"e1", "e2"},
		},
		{
			name:   "a rejected event goes to the log's dead letters, retried while the log refuses",
			events: []string{"e1", "bad"},
			behave: func(_ int, ids []string) ([]error, error) {
				per := make([]error, len(ids))
				for i, id := range ids {
					if id == "bad" {
						per[i] = &testErr{kind: "permanent", code: 400}
					}
				}
				return per, nil
			},
			failDead:  1,
			delivered: []string{"e1"},
			dead:      map[string]string{"bad": reasonRejected},
		},
		{
			name:     "an excluded event is resolved without a send",
			destYAML: `events: {exclude: [page_viewed]}`,
			events:   []string{"e1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			extra := "batch: {max_wait: 1ms}"
			if tc.destYAML != "" {
				extra += ", " + tc.destYAML
			}
			cfg := testConfig(t, t.TempDir(), "50ms", []string{dest("d", extra)}, "")
			fd := newFakeDest("d")
			fd.setBehave(tc.behave)
			l := newMemLog()
			l.failDead = tc.failDead
			if tc.destYAML == "" {
				var p fastjson.Parser
				l.sent = func(v []byte) bool {
					var e enrich.Event
					return e.DecodeJSON(&p, v) == nil && fd.times(e.EventID) > 0
				}
			}
			pool := &enrich.EventPool{}
			f, err := NewFeed(cfg, []Destination{fd}, []Log{l}, testLogger(t), pool,
				WithRandom(zeroJitter{}), WithBackoff(time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), guard)
				defer cancel()
				if err := f.Close(ctx); err != nil {
					t.Error(err)
				}
			}()
			var evs []*enrich.Event
			for _, id := range tc.events {
				evs = append(evs, newEvent(pool, id))
			}
			l.add(evs...)
			waitFor(t, "every record resolved", func() bool { return l.unresolved() == 0 })
			for _, id := range tc.delivered {
				if n := fd.times(id); n != 1 {
					t.Errorf("%s delivered %d times, want once", id, n)
				}
			}
			if got := fd.count(); got != len(tc.delivered) {
				t.Errorf("%d events delivered, want %d", got, len(tc.delivered))
			}
			// A feed has no spool file: its series must not be exported
			// (they would always read 0); the destination's are.
			var m strings.Builder
			f.Metrics().WritePrometheus(&m)
			if strings.Contains(m.String(), "sidetrack_spool_bytes") || strings.Contains(m.String(), "sidetrack_spool_commits_total") || !strings.Contains(m.String(), "sidetrack_deliveries_total") {
				t.Errorf("feed metrics:\n%s", m.String())
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.dead) != len(tc.dead) {
				t.Fatalf("%d dead letters, want %d", len(l.dead), len(tc.dead))
			}
			for _, d := range l.dead {
				var (
					e enrich.Event
					p fastjson.Parser
				)
				if err := e.DecodeJSON(&p, d.Event); err != nil {
					t.Fatal(err)
				}
				if want := tc.dead[e.EventID]; d.Reason != want || d.Status != 400 {
					t.Errorf("dead letter %s: reason %q status %d, want %q 400", e.EventID, d.Reason, d.Status, want)
				}
			}
			if l.early != 0 {
				t.Errorf("%d records resolved as delivered before they were (a crash would lose them)", l.early)
			}
			if slices.Contains(l.done, 0) {
				t.Error("resolved a record the log never handed out")
			}
		})
	}
}

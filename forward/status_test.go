package forward

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/enrich"
)

// TestStatus delivers a known mix and checks every per-destination figure
// the status page shows, and the failure log's sampling: 60 events
// rejected one by one, in batches, make one line per class.
func TestStatus(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "never",
		[]string{dest("a", "batch: {max_events: 5}"), dest("b", "dry_run: true")}, ""))
	cfg.Destinations[1].Type = "ga4" // only the type matters to Status
	a, b := newFakeDest("a"), newFakeDest("b")
	a.setBehave(func(_ int, ids []string) ([]error, error) {
		per := make([]error, len(ids))
		for i, id := range ids {
			switch {
			case strings.HasPrefix(id, "bad"):
				per[i] = &testErr{kind: "permanent", code: 422}
			case strings.HasPrefix(id, "gone"):
				per[i] = &testErr{kind: "permanent", code: 404}
			}
		}
		return per, nil
	})
	core, logs := observer.New(zapcore.InfoLevel)
	pool := &enrich.EventPool{}
	s, err := Open(cfg, []Destination{a, b}, zap.New(core), pool, WithRandom(zeroJitter{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendIDs(t, s, pool, ids("ok", 10)...)
	appendIDs(t, s, pool, ids("bad", 50)...)
	appendIDs(t, s, pool, ids("gone", 10)...)
	orders := []*enrich.Event{newEvent(pool, "ok-order-1"), newEvent(pool, "ok-order-2"), newEvent(pool, "bad-order")}
	for _, e := range orders {
		e.Name = "order_completed"
	}
	if err := s.Append(context.Background(), orders); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "73 outcomes at a", func() bool {
		st := s.Status().Destinations[0]
		return st.Delivered+st.DeadLettered == 73
	})
	waitFor(t, "b done", func() bool { return s.Status().Destinations[1].BacklogEvents == 0 })

	q := []*enrich.Event{newEvent(pool, "q1"), newEvent(pool, "q2"), newEvent(pool, "q3")}
	q[0].Name = "purchase"
	q[1].Name = strings.Repeat("n", 100)
	q[2].Name = "line\nbreak"
	if err := s.Quarantine(context.Background(), q, []string{"invalid:currency", "decode:en", "invalid"}); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	sa, sb := st.Destinations[0], st.Destinations[1]
	if sa.Name != "a" || sa.Type != "ndjson" || !sa.Verified || sa.Delivered != 12 || sa.DeadLettered != 61 ||
		sa.DLQEvents != 61 || sa.DLQBytes == 0 || sa.BacklogEvents != 0 || sa.Paused ||
		sa.OrdersDelivered != 2 || sa.OrdersDeadLettered != 1 {
		t.Errorf("a: %+v", sa)
	}
	if sb.Name != "b" || sb.Verified || !sb.DryRun || sb.DLQEvents != 0 {
		t.Errorf("b: %+v", sb)
	}
	if st.QuarantineEvents != 3 || s.DLQDepth() != 61 {
		t.Errorf("quarantine %d, dlq depth %d", st.QuarantineEvents, s.DLQDepth())
	}
	recent, err := s.RecentQuarantine(2)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]string{"line?break collect invalid", strings.Repeat("n", 64) + " collect decode:en"})
	var got []string
	for _, r := range recent {
		got = append(got, r.Name+" "+r.Source+" "+r.Reason)
		if r.At.IsZero() {
			t.Error("no time")
		}
	}
	if fmt.Sprint(got) != want {
		t.Errorf("recent quarantine %q, want %q", got, want)
	}
	closeSpool(t, s)

	lines := logs.FilterMessage("delivery failed").All()
	byStatus := map[int64]int64{}
	for _, l := range lines {
		f := l.ContextMap()
		byStatus[f["status"].(int64)] += f["events"].(int64)
		if f["class"] != "rejected" || f["destination"] != "a" {
			t.Errorf("line %v", f)
		}
	}
	// One line per class within the sampling interval: the first
	// failure of each; the rest are counted into the next line.
	if len(lines) != 2 || byStatus[422] != 1 || byStatus[404] != 1 {
		t.Errorf("%d failure lines %v, want one per class", len(lines), byStatus)
	}
}

func TestFailLogSamples(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	var f failLog
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	retry503 := classified{kind: failRetry, status: 503, excerpt: "busy"}
	steps := []struct {
		at     time.Duration
		c      classified
		events int
		logged bool
		// wantEvents is the line's event count when logged.
		wantEvents int64
	}{
		{0, retry503, 100, true, 100},
		{time.Second, retry503, 100, false, 0},
		{2 * time.Second, classified{kind: failPermanent, status: 400}, 1, true, 1},
		{29 * time.Second, retry503, 100, false, 0},
		{30 * time.Second, retry503, 100, true, 300},
		{31 * time.Second, retry503, 5, false, 0},
	}
	for i, s := range steps {
		before := logs.Len()
		f.note(log, t0.Add(s.at), s.c, s.events)
		if logged := logs.Len() > before; logged != s.logged {
			t.Fatalf("step %d: logged %v", i, logged)
		}
		if s.logged {
			all := logs.All()
			if got := all[len(all)-1].ContextMap()["events"]; got != s.wantEvents {
				t.Errorf("step %d: events %v, want %d", i, got, s.wantEvents)
			}
		}
	}
	for i := range 200 {
		f.note(log, t0, classified{kind: failPermanent, status: 1000 + i}, 1)
	}
	if len(f.classes) > 65 {
		t.Errorf("%d classes kept", len(f.classes))
	}
}

func TestRedactAnswer(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{`{"error":"invalid token","code":190}`, `{"error":"invalid token","code":190}`},
		{`bad email jane.doe@example.com in field em`, `bad email [redacted] in field em`},
		{`{"em":"Jane@Example.com"}`, `{"em":"[redacted]"}`},
		{`phone +49 30 1234567 rejected`, `phone [redacted] rejected`},
		{`call (415) 555-0123.`, `call [redacted].`},
		{`HTTP 400 at 2026-01-02`, `HTTP 400 at 2026-01-02`},
		{`trace AbC123xyz`, `trace AbC123xyz`},
	}
	for _, tc := range tests {
		if got := redactAnswer(tc.in); got != tc.want {
			t.Errorf("redactAnswer(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRedactAnswer: any answer, no panic, and no '@' word survives.
func FuzzRedactAnswer(f *testing.F) {
	f.Add(`{"error":"bad em a@b.c"}`)
	f.Add("+1 (415) 555-0123")
	f.Add("2026-01-02 12345678")
	f.Fuzz(func(t *testing.T, s string) {
		if out := redactAnswer(s); strings.Contains(out, "@") {
			t.Fatalf("redactAnswer(%q) = %q", s, out)
		}
	})
}

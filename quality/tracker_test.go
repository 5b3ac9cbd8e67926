package quality

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// clock is a hand-moved clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 3, 2, 12, 0, 30, 0, time.UTC)} }
func newTracker(c *clock, a config.Alerts, opts ...Option) *Tracker {
	return New(&config.Config{Alerts: a}, append([]Option{WithClock(c.now)}, opts...)...)
}

// ev builds an event; mods adjust it.
func ev(name string, mods ...func(*enrich.Event)) *enrich.Event {
	e := &enrich.Event{Name: name, Source: enrich.SourceGA4}
	for _, m := range mods {
		m(e)
	}
	return e
}

func click(e *enrich.Event)   { e.Attribution.ClickIDs.GCLID = "g1" }
func touch(e *enrich.Event)   { e.Attribution.LastTouch.ClickIDKind = "fbclid" }
func granted(e *enrich.Event) { e.Consent.Analytics = enrich.Granted }
func email(e *enrich.Event)   { e.UserData.EM = strings.Repeat("a", 64) }
func gemail(e *enrich.Event)  { e.UserData.Google.EM = strings.Repeat("b", 64) }
func joined(e *enrich.Event)  { e.Quality.Add(enrich.FlagJoined) }
func direct(e *enrich.Event) {
	e.Attribution.Source, e.Attribution.Medium = enrich.DirectSource, "(none)"
}
func google(e *enrich.Event)  { e.Attribution.Source, e.Attribution.Medium = "google", "cpc" }
func notSet(e *enrich.Event)  { e.Attribution.Source, e.Attribution.Medium = "newsletter", "(not set)" }
func backend(e *enrich.Event) { e.Source = enrich.SourceBackend }
func tx(id string) func(*enrich.Event) {
	return func(e *enrich.Event) { e.Commerce.TransactionID = id }
}
func unknown(orig string) func(*enrich.Event) {
	return func(e *enrich.Event) { e.OriginalName = orig; e.Quality.Add(enrich.FlagUnknownEvent) }
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestCoverage feeds a known mix and checks every ratio, in the snapshot
// and on /metrics.
func TestCoverage(t *testing.T) {
	c := newClock()
	tr := newTracker(c, config.Alerts{})
	mix := []struct {
		e   *enrich.Event
		o   enrich.Outcome
		why string
	}{
		{ev("page_view", click, granted, direct), enrich.Accepted, ""},
		{ev("page_view", touch, granted, google), enrich.Accepted, ""},
		{ev("page_view", granted, notSet), enrich.Accepted, ""},
		{ev("page_view"), enrich.Accepted, ""}, // no source: not in the direct share
		{ev("page_view", direct), enrich.Duplicate, ""},
		{ev("page_view", direct), enrich.Bot, ""},
		{ev("page_view"), enrich.Quarantined, "decode:en"},
		{ev("order_completed", email, joined, backend), enrich.Accepted, ""},
		{ev("order_completed", gemail, backend), enrich.Accepted, ""},
		{ev("order_completed"), enrich.Invalid, "invalid"},
		{ev("order_completed"), enrich.Quarantined, "invalid:currency"},
		{ev("order_completed"), enrich.Quarantined, "invalid:currency"},
	}
	for _, m := range mix {
		tr.ObserveEvent(m.e, m.o, m.why)
	}
	want := map[string]map[string]float64{
		"page_view":       {"click_id": 0.5, "consent": 0.75, "hashed_email": 0, "source_medium": 0.5, "joined": 0, "direct": 1.0 / 3},
		"order_completed": {"click_id": 0, "consent": 0, "hashed_email": 1, "source_medium": 0, "joined": 0.5},
	}
	s := tr.Snapshot()
	seen := 0
	for _, nc := range s.Coverage {
		if nc.Window != "1h" && nc.Window != "5m" {
			t.Errorf("window %q", nc.Window)
		}
		w := want[nc.Name]
		if w == nil {
			t.Errorf("unexpected row %q", nc.Name)
			continue
		}
		seen++
		if len(nc.Ratios) != len(w) {
			t.Errorf("%s: ratios %v, want %v", nc.Name, nc.Ratios, w)
		}
		for k, v := range w {
			if got, ok := nc.Ratios[k]; !ok || !near(got, v) {
				t.Errorf("%s %s %s = %v, want %v", nc.Window, nc.Name, k, got, v)
			}
		}
	}
	if seen != 4 {
		t.Errorf("%d coverage rows, want 2 names × 2 windows", seen)
	}
	if pv := s.Coverage[0]; pv.Name != "page_view" || pv.Accepted != 4 || pv.Failed != 1 || pv.Attributed != 3 {
		t.Errorf("first row %+v", pv)
	}
	tot := s.Totals["1h"]
	if tot != (Totals{Observed: 10, Accepted: 6, Failed: 4, Direct: 1, Attributed: 3}) {
		t.Errorf("totals %+v", tot)
	}
	wantV := []Violation{{"order_completed", "currency", 2}, {"order_completed", "unspecified", 1}, {"page_view", "en", 1}}
	if fmt.Sprint(s.Violations) != fmt.Sprint(wantV) {
		t.Errorf("violations %v, want %v", s.Violations, wantV)
	}

	var b bytes.Buffer
	tr.Metrics().WritePrometheus(&b)
	for _, line := range []string{
		`sidetrack_coverage_ratio{name="page_view",dimension="consent"} 0.75`,
		`sidetrack_coverage_ratio{name="page_view",dimension="click_id"} 0.5`,
		`sidetrack_coverage_ratio{name="page_view",dimension="direct"} 0.3333333333333333`,
		`sidetrack_coverage_ratio{name="order_completed",dimension="hashed_email"} 1`,
		`sidetrack_coverage_ratio{name="order_completed",dimension="joined"} 0.5`,
		`sidetrack_coverage_ratio{name="other",dimension="consent"} 0`,
	} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("metrics lack %s\n%s", line, b.String())
		}
	}
}

// TestWindowsSlide checks that figures leave the 5m and 1h windows as
// time passes, and that a bucket reused a day later starts from zero.
func TestWindowsSlide(t *testing.T) {
	c := newClock()
	tr := newTracker(c, config.Alerts{})
	tr.ObserveEvent(ev("page_view", granted), enrich.Accepted, "")
	c.add(10 * time.Minute)
	tr.ObserveEvent(ev("page_view"), enrich.Accepted, "")
	rows := func() map[string]NameCoverage {
		out := map[string]NameCoverage{}
		for _, nc := range tr.Snapshot().Coverage {
			out[nc.Window] = nc
		}
		return out
	}
	r := rows()
	if r["5m"].Accepted != 1 || r["5m"].Ratios["consent"] != 0 || r["1h"].Accepted != 2 || r["1h"].Ratios["consent"] != 0.5 {
		t.Errorf("after 10m: %+v", r)
	}
	c.add(55 * time.Minute)
	r = rows()
	if _, ok := r["5m"]; ok || r["1h"].Accepted != 1 {
		t.Errorf("after 65m: %+v", r)
	}
	c.add(24 * time.Hour)
	if r = rows(); len(r) != 0 {
		t.Errorf("a day later: %+v", r)
	}
	if tot := tr.Snapshot().Totals["1h"]; tot.Accepted != 0 {
		t.Errorf("totals a day later %+v", tot)
	}
}

// TestNamesBounded: past MaxNames, names fold into "other", and odd names
// never become labels.
func TestNamesBounded(t *testing.T) {
	c := newClock()
	tr := newTracker(c, config.Alerts{})
	for i := range MaxNames + 20 {
		tr.ObserveEvent(ev(fmt.Sprintf("custom_%d", i)), enrich.Accepted, "")
	}
	tr.ObserveEvent(ev("bad\"name"), enrich.Accepted, "")
	tr.ObserveEvent(ev(strings.Repeat("x", 65)), enrich.Accepted, "")
	var other uint64
	names := 0
	for _, nc := range tr.Snapshot().Coverage {
		if nc.Window != "1h" {
			continue
		}
		names++
		if nc.Name == Other {
			other = nc.Accepted
		}
	}
	if names != MaxNames+1 || other != 22 {
		t.Errorf("%d rows, other %d; want %d rows, other 22", names, other, MaxNames+1)
	}
	var b bytes.Buffer
	tr.Metrics().WritePrometheus(&b)
	if n := strings.Count(b.String(), "sidetrack_coverage_ratio{"); n != (MaxNames+1)*6 {
		t.Errorf("%d coverage series, want %d", n, (MaxNames+1)*6)
	}
}

func TestDrift(t *testing.T) {
	c := newClock()
	tr := newTracker(c, config.Alerts{})
	for range 3 {
		tr.ObserveEvent(ev("Checkout Step", unknown("Checkout Step")), enrich.Accepted, "")
	}
	tr.ObserveEvent(ev("promo_seen", unknown("")), enrich.Accepted, "")
	for i := range maxDrift + 5 {
		tr.ObserveEvent(ev("x", unknown(fmt.Sprintf("n%03d", i))), enrich.Accepted, "")
	}
	d := tr.Snapshot().Drift
	if d.UnknownEvents != uint64(4+maxDrift+5) || d.DistinctNames != maxDrift || d.Overflow != 7 {
		t.Errorf("drift %+v", d)
	}
	if len(d.Top) != 10 || d.Top[0].Name != "Checkout Step" || d.Top[0].Count != 3 || d.Top[1].Name != "n000" {
		t.Errorf("top %+v", d.Top)
	}
}

func TestReconciliation(t *testing.T) {
	c := newClock()
	tr := newTracker(c, config.Alerts{}, WithReconciliation(time.Hour, 4))
	obs := func(o enrich.Outcome, mods ...func(*enrich.Event)) {
		tr.ObserveEvent(ev("order_completed", mods...), o, "")
	}
	obs(enrich.Accepted, tx("T1"))                                                // browser
	obs(enrich.Duplicate, tx("T1"), backend)                                      // backend, taken for the browser's by dedup
	obs(enrich.Accepted, tx("T2"), backend)                                       // backend only
	obs(enrich.Accepted, tx("T3"))                                                // browser only
	obs(enrich.Accepted, tx("T3"))                                                // the same purchase again: counted once
	obs(enrich.Accepted)                                                          // no transaction id
	tr.ObserveEvent(ev("order_refunded", tx("T3"), backend), enrich.Accepted, "") // not an order
	tr.ObserveEvent(ev("order_paid", tx("T4"), backend), enrich.Accepted, "")
	r := tr.Reconciliation()
	if r.BackendOrders != 3 || r.BrowserPurchases != 2 || r.Matched != 1 || !near(r.BackendMatchedRatio, 1.0/3) || !near(r.BrowserMatchedRatio, 0.5) {
		t.Errorf("reconciliation %+v", r)
	}
	var b bytes.Buffer
	tr.Metrics().WritePrometheus(&b)
	for _, line := range []string{`sidetrack_reconciliation_ratio{kind="backend_matched"} 0.3333333333333333`, `sidetrack_reconciliation_ratio{kind="browser_matched"} 0.5`} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
	// The table holds 4 ids: a fifth evicts T1 (the only match).
	obs(enrich.Accepted, tx("T5"))
	if r = tr.Reconciliation(); r.Matched != 0 || r.Evicted != 1 || r.BackendOrders != 2 || r.BrowserPurchases != 2 {
		t.Errorf("after eviction %+v", r)
	}
	// Out of the window everything expires; totals stay.
	c.add(61 * time.Minute)
	if r = tr.Reconciliation(); r.BackendOrders != 0 || r.BrowserPurchases != 0 || r.BackendOrdersTotal != 3 || r.BrowserPurchasesTotal != 3 || r.MatchedTotal != 1 {
		t.Errorf("after the window %+v", r)
	}
	obs(enrich.Accepted, tx("T2"))
	if r = tr.Reconciliation(); r.BrowserPurchases != 1 || r.Matched != 0 {
		t.Errorf("T2 after its window %+v", r)
	}
}

func TestAlerts(t *testing.T) {
	type step struct {
		at       time.Duration // from the start
		n        int
		o        enrich.Outcome
		mods     []func(*enrich.Event)
		dlq      int64
		want     map[string]bool
		wantVals map[string]float64
	}
	thresholds := config.Alerts{DirectShareJump: 0.2, VolumeDrop: 0.5, ValidationFailRate: 0.1, DLQDepth: 10, MinEvents: 10}
	tests := []struct {
		name  string
		a     config.Alerts
		steps []step
	}{
		{"quiet below min_events", thresholds, []step{
			{n: 9, o: enrich.Quarantined, want: map[string]bool{}},
		}},
		{"validation failures", thresholds, []step{
			{n: 9, o: enrich.Accepted},
			{n: 1, o: enrich.Quarantined, want: map[string]bool{AlertValidationFailRate: true}, wantVals: map[string]float64{AlertValidationFailRate: 0.1}},
			// 15 minutes later the failure is out of the window.
			{at: 16 * time.Minute, n: 10, o: enrich.Accepted, want: map[string]bool{}},
		}},
		{"disabled alerts never fire", config.Alerts{MinEvents: 1}, []step{
			{n: 5, o: enrich.Quarantined, dlq: 100, want: map[string]bool{}, wantVals: map[string]float64{AlertValidationFailRate: 1, AlertDLQDepth: 100}},
		}},
		{"dlq depth", thresholds, []step{
			{dlq: 9, want: map[string]bool{}},
			{dlq: 10, want: map[string]bool{AlertDLQDepth: true}},
		}},
		{"volume drop against the same hour yesterday", thresholds, []step{
			{n: 100, o: enrich.Accepted},
			{at: 24 * time.Hour, n: 51, o: enrich.Accepted, want: map[string]bool{}, wantVals: map[string]float64{AlertVolumeDrop: 0.49}},
			{at: 24*time.Hour + 2*time.Minute, n: 0, want: map[string]bool{}},
		}},
		{"volume drop fires", thresholds, []step{
			{n: 100, o: enrich.Accepted},
			{at: 24 * time.Hour, n: 50, o: enrich.Accepted, want: map[string]bool{AlertVolumeDrop: true}, wantVals: map[string]float64{AlertVolumeDrop: 0.5}},
		}},
		{"direct share jump", thresholds, []step{
			{n: 10, o: enrich.Accepted, mods: []func(*enrich.Event){direct}},
			{n: 30, o: enrich.Accepted, mods: []func(*enrich.Event){google}},
			{at: 24 * time.Hour, n: 10, o: enrich.Accepted, mods: []func(*enrich.Event){direct}},
			{n: 10, o: enrich.Accepted, mods: []func(*enrich.Event){google}, want: map[string]bool{AlertDirectShareJump: true, AlertVolumeDrop: true},
				wantVals: map[string]float64{AlertDirectShareJump: 0.25, AlertVolumeDrop: 0.5}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			start := c.t
			var dlq int64
			tr := newTracker(c, tc.a, WithDLQDepth(func() int64 { return dlq }))
			for i, s := range tc.steps {
				if s.at > 0 {
					c.t = start.Add(s.at)
				}
				dlq = s.dlq
				for range s.n {
					tr.ObserveEvent(ev("page_view", s.mods...), s.o, "invalid:value")
				}
				if s.want == nil {
					continue
				}
				var b bytes.Buffer
				tr.Metrics().WritePrometheus(&b)
				for _, a := range tr.Alerts() {
					if a.Firing != s.want[a.Name] {
						t.Errorf("step %d: %s firing %v (%s)", i, a.Name, a.Firing, a.Message)
					}
					if v, ok := s.wantVals[a.Name]; ok && !near(a.Value, v) {
						t.Errorf("step %d: %s value %v, want %v", i, a.Name, a.Value, v)
					}
					line := fmt.Sprintf("sidetrack_alert_firing{alert=%q} %d\n", a.Name, map[bool]int{false: 0, true: 1}[a.Firing])
					if !strings.Contains(b.String(), line) {
						t.Errorf("step %d: metrics lack %s", i, line)
					}
				}
			}
		})
	}
}

func TestObserveAllocs(t *testing.T) {
	tr := newTracker(newClock(), config.Alerts{})
	e := ev("page_view", click, granted, direct, tx("T9"))
	tr.ObserveEvent(e, enrich.Accepted, "")
	q := ev("page_view")
	tr.ObserveEvent(q, enrich.Quarantined, "invalid:currency")
	if n := testing.AllocsPerRun(1000, func() {
		tr.ObserveEvent(e, enrich.Accepted, "")
		tr.ObserveEvent(q, enrich.Quarantined, "invalid:currency")
	}); n != 0 {
		t.Errorf("%v allocations per observed pair", n)
	}
}

func BenchmarkObserveEvent(b *testing.B) {
	tr := New(nil)
	e := ev("page_view", click, granted, direct)
	o := ev("order_completed", email, tx("T1"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if i++; i%8 == 0 {
				tr.ObserveEvent(o, enrich.Accepted, "")
			} else {
				tr.ObserveEvent(e, enrich.Accepted, "")
			}
		}
	})
}

// TestReconcilerModel runs random adds and clock moves against a plain
// slice model of the same rules (expiry by first sighting, FIFO eviction
// at capacity), through the ring's growing and wrapping phases.
func TestReconcilerModel(t *testing.T) {
	type entry struct {
		tx    string
		at    int64
		sides side
	}
	for seed := range 20 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		const capacity = 16
		window := time.Hour
		r := newReconciler(capacity, window, maphash.MakeSeed())
		var model []entry
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for step := range 400 {
			now = now.Add(time.Duration(rng.IntN(30)) * time.Minute)
			if rng.IntN(8) == 0 {
				now = now.Add(2 * window) // everything expires
			}
			tx := fmt.Sprint("T", rng.IntN(40))
			s := side(1 + rng.IntN(2))
			r.add(tx, s, now)
			// The model.
			cut := now.Add(-window).Unix()
			for len(model) > 0 && model[0].at < cut {
				model = model[1:]
			}
			found := false
			for i := range model {
				if model[i].tx == tx {
					model[i].sides |= s
					found = true
				}
			}
			if !found {
				if len(model) == capacity {
					model = model[1:]
				}
				model = append(model, entry{tx, now.Unix(), s})
			}
			var backend, browser, both int64
			for _, e := range model {
				if e.sides&sideBackend != 0 {
					backend++
				}
				if e.sides&sideBrowser != 0 {
					browser++
				}
				if e.sides == sideBackend|sideBrowser {
					both++
				}
			}
			if r.backend != backend || r.browser != browser || r.both != both || r.n != len(model) || len(r.index) != len(model) {
				t.Fatalf("seed %d step %d: ring %d/%d/%d n=%d index=%d, model %d/%d/%d n=%d", seed, step,
					r.backend, r.browser, r.both, r.n, len(r.index), backend, browser, both, len(model))
			}
			if len(r.ring) > capacity {
				t.Fatalf("ring grew to %d", len(r.ring))
			}
		}
	}
}

package forward

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// TestExplain checks every reason Explain gives against the destinations'
// rules, and that Append routes the same events exactly as Explain said:
// both read one admission code.
func TestExplain(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "never", []string{
		dest("meta", "consent: [ads, ad_user_data]"),
		dest("orders", "events: {include: [order_*]}"),
		dest("noview", "events: {exclude: [page_viewed]}"),
		dest("dry", "dry_run: true"),
		dest("strict", ""),
		dest("paused", ""),
	}, "")
	fakes := []Destination{newFakeDest("meta"), newFakeDest("orders"), newFakeDest("noview"),
		newFakeDest("dry"), newFakeDest("strict"), newFakeDest("paused")}
	fakes[4].(*fakeDest).prepare = func(e *enrich.Event) error {
		if e.Name == "order_completed" && !e.Commerce.Value.Set {
			return errors.New("a Purchase needs value and a currency code")
		}
		return nil
	}
	s, pool := openTest(t, cfg, nil, fakes...)
	defer closeSpool(t, s)
	s.byName["paused"].paused.Store(true)

	type want struct{ reason, detail string }
	ok := want{ReasonAdmitted, ""}
	cases := []struct {
		name  string
		event func(e *enrich.Event)
		want  map[string]want
	}{
		{"page view, all granted", func(e *enrich.Event) {}, map[string]want{
			"meta": ok, "orders": {ReasonNotIncluded, `"page_viewed" is not in events.include`},
			"noview": {ReasonExcluded, `"page_viewed" is in events.exclude`},
			"dry":    {ReasonDryRun, "never sent"}, "strict": ok, "paused": {ReasonPaused, "paused"},
		}},
		{"order, ads denied by gcs", func(e *enrich.Event) {
			e.Name = "order_completed"
			e.Commerce.Value = enrich.Some(10)
			e.Consent.Ads, e.Consent.Source = enrich.Denied, "gcs"
		}, map[string]want{
			"meta": {ReasonConsent, "needs ads consent; it is denied (consent source: gcs)"}, "orders": ok,
			"noview": ok, "dry": {ReasonDryRun, ""}, "strict": ok, "paused": {ReasonPaused, ""},
		}},
		{"order, ad_user_data unknown", func(e *enrich.Event) {
			e.Name = "order_completed"
			e.Commerce.Value = enrich.Some(10)
			e.Consent.AdUserData, e.Consent.Source = enrich.Unknown, "default"
		}, map[string]want{
			"meta": {ReasonConsent, "needs ad_user_data consent; it is unknown"}, "orders": ok,
		}},
		{"order without value", func(e *enrich.Event) { e.Name = "order_completed" }, map[string]want{
			"meta": ok, "orders": ok,
			"strict": {ReasonPrepare, "the adapter will dead-letter it: a Purchase needs value"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEvent(pool, "explain-"+tc.name)
			tc.event(e)
			before := s.byName["meta"].m.consentBlocked.Get()
			got := s.Explain(e, nil)
			if len(got) != len(cfg.Destinations) {
				t.Fatalf("%d admissions for %d destinations", len(got), len(cfg.Destinations))
			}
			var admittedTo []string
			for i, a := range got {
				if a.Destination != cfg.Destinations[i].Name {
					t.Errorf("admission %d is for %q, want config order (%q)", i, a.Destination, cfg.Destinations[i].Name)
				}
				if a.Admitted {
					admittedTo = append(admittedTo, a.Destination)
				}
				w, ok := tc.want[a.Destination]
				if !ok {
					continue
				}
				if a.Reason != w.reason || !strings.Contains(a.Detail, w.detail) {
					t.Errorf("%s: %s %q, want %s containing %q", a.Destination, a.Reason, a.Detail, w.reason, w.detail)
				}
				notAdmitted := w.reason == ReasonNotIncluded || w.reason == ReasonExcluded || w.reason == ReasonConsent
				if a.Admitted == notAdmitted {
					t.Errorf("%s: admitted = %v with reason %s", a.Destination, a.Admitted, a.Reason)
				}
			}
			if len(e.Destinations) != 0 || s.byName["meta"].m.consentBlocked.Get() != before {
				t.Error("Explain changed the event or a counter")
			}
			// Append's routing (not committed here) must send the event
			// exactly where Explain said.
			op := s.getAppendOp()
			op.add(s, e, time.Now())
			s.putAppendOp(op)
			if !slices.Equal(e.Destinations, admittedTo) {
				t.Errorf("Append routes to %v, Explain admitted %v", e.Destinations, admittedTo)
			}
			pool.Put(e)
		})
	}
}

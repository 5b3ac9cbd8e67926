package quality

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// FuzzObserve feeds client-controlled names, original names, reasons and
// transaction ids: nothing may panic, no label may carry an odd byte, and
// the series count stays bounded.
func FuzzObserve(f *testing.F) {
	f.Add("page_view", "", "invalid:currency", "T1", uint8(0), false)
	f.Add("a\"b", "x\ny", "decode:", "", uint8(3), true)
	f.Add(strings.Repeat("n", 70), "\\", ":", "T\x00", uint8(2), true)
	f.Fuzz(func(t *testing.T, name, orig, reason, tx string, outcome uint8, unknown bool) {
		c := newClock()
		tr := newTracker(c, config.Alerts{ValidationFailRate: 0.1, MinEvents: 1})
		e := &enrich.Event{Name: name, OriginalName: orig, Source: enrich.SourceGA4}
		e.Commerce.TransactionID = tx
		if unknown {
			e.Quality.Add(enrich.FlagUnknownEvent)
		}
		for i := range 3 {
			if i == 1 {
				e.Source = enrich.SourceBackend
			}
			tr.ObserveEvent(e, enrich.Outcome(outcome%7), reason)
		}
		s := tr.Snapshot()
		for _, nc := range s.Coverage {
			if !labelSafe(nc.Name) {
				t.Fatalf("row name %q", nc.Name)
			}
		}
		for _, v := range s.Violations {
			if !labelSafe(v.Name) || !labelSafe(v.Field) {
				t.Fatalf("violation %q %q", v.Name, v.Field)
			}
		}
		for _, d := range s.Drift.Top {
			if !labelSafe(d.Name) {
				t.Fatalf("drift name %q", d.Name)
			}
		}
		var b bytes.Buffer
		tr.Metrics().WritePrometheus(&b)
		if n := strings.Count(b.String(), "\n"); n > 2*6+2+4+10 {
			t.Fatalf("%d series for one name", n)
		}
	})
}

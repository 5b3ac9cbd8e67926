package proxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/enrich"
)

// TestEventCountersFoldNames floods the counters with more distinct names
// than the label limit, and names that are unsafe as labels: the series
// stay bounded, the rest count as "other", and the per-outcome totals the
// status page reads still add up to every event.
func TestEventCountersFoldNames(t *testing.T) {
	c := newEventCounters(NewMetrics())
	var want [outcomes]uint64
	add := func(name string, o enrich.Outcome) {
		e := &enrich.Event{Source: enrich.SourceCollect, Name: name}
		c.add(e, o)
		want[o]++
	}
	for i := range maxEventNames + 100 {
		add("event_"+strconv.Itoa(i), enrich.Accepted)
	}
	for range 3 {
		add("bad\"name", enrich.Duplicate)
		add("", enrich.Invalid)
		add("event_0", enrich.Accepted)
	}
	if got := c.byOutcome(); got != want {
		t.Errorf("byOutcome = %v, want %v", got, want)
	}
	var b strings.Builder
	c.set.WritePrometheus(&b)
	text := b.String()
	if n := strings.Count(text, "sidetrack_events_total{"); n != maxEventNames+3 {
		t.Errorf("%d series, want %d named + 3 other", n, maxEventNames)
	}
	for _, s := range []string{
		`sidetrack_events_total{source="collect",name="other",outcome="accepted"} 100`,
		`sidetrack_events_total{source="collect",name="other",outcome="duplicate"} 3`,
		`sidetrack_events_total{source="collect",name="other",outcome="invalid"} 3`,
		`sidetrack_events_total{source="collect",name="event_0",outcome="accepted"} 4`,
	} {
		if !strings.Contains(text, s+"\n") {
			t.Errorf("missing %s in\n%s", s, text)
		}
	}
}

// BenchmarkEventCountersOther measures counting an event whose name is
// folded into "other" (a flood of random names must not cost more than a
// known name).
func BenchmarkEventCountersOther(b *testing.B) {
	c := newEventCounters(NewMetrics())
	for i := range maxEventNames {
		c.add(&enrich.Event{Source: enrich.SourceGA4, Name: "n" + strconv.Itoa(i)}, enrich.Accepted)
	}
	e := &enrich.Event{Source: enrich.SourceGA4, Name: "random_name_past_the_limit"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.add(e, enrich.Accepted)
		}
	})
}

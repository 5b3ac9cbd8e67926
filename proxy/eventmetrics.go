package proxy

import (
	"strconv"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/sidetrack/sidetrack/enrich"
)

// maxEventNames bounds the name label of sidetrack_events_total: names
// come from clients, so past this many distinct ones the rest count as
// "other" and a flood of random names cannot blow up the series count.
const maxEventNames = 200

// eventCounters counts sidetrack_events_total{source,name,outcome}.
type eventCounters struct {
	set *metrics.Set

	mu    sync.RWMutex
	byKey map[eventKey]*metrics.Counter
	names map[string]struct{}
	// other holds the "other" counter per source and outcome, for names
	// past the limit or unfit as labels; those names are not remembered.
	other map[eventKey]*metrics.Counter
}

// outcomes is the number of enrich.Outcome values.
const outcomes = 6

type eventKey struct {
	source  enrich.Source
	name    string
	outcome enrich.Outcome
}

func newEventCounters(m *Metrics) *eventCounters {
	return &eventCounters{set: m.Set(), byKey: map[eventKey]*metrics.Counter{}, names: map[string]struct{}{}, other: map[eventKey]*metrics.Counter{}}
}

// add counts one event. The event's name is only read, never kept: a new
// series gets its own copy.
func (c *eventCounters) add(e *enrich.Event, o enrich.Outcome) {
	k := eventKey{source: e.Source, name: e.Name, outcome: o}
	c.mu.RLock()
	ctr := c.byKey[k]
	if ctr == nil && !c.canName(k.name) {
		ctr = c.other[eventKey{source: k.source, outcome: o}]
	}
	c.mu.RUnlock()
	if ctr == nil {
		ctr = c.create(k)
	}
	ctr.Inc()
}

// canName reports whether a name not seen yet would get its own label.
// Caller holds mu.
func (c *eventCounters) canName(name string) bool {
	return len(c.names) < maxEventNames && name != "" && labelSafe(name)
}

// byOutcome sums the counters per outcome, whatever the source and name,
// for the status page's throughput. It is read every few seconds, so the
// sum is taken then rather than kept per event.
func (c *eventCounters) byOutcome() (n [outcomes]uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, m := range [...]map[eventKey]*metrics.Counter{c.byKey, c.other} {
		for k, ctr := range m {
			if int(k.outcome) < outcomes {
				n[k.outcome] += ctr.Get()
			}
		}
	}
	return n
}

func (c *eventCounters) create(k eventKey) *metrics.Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ctr := c.byKey[k]; ctr != nil {
		return ctr
	}
	label := "other"
	if _, ok := c.names[k.name]; ok {
		label = k.name
	} else if c.canName(k.name) {
		label = strings.Clone(k.name)
		c.names[label] = struct{}{}
	}
	if label == "other" {
		ok := eventKey{source: k.source, outcome: k.outcome}
		if ctr := c.other[ok]; ctr != nil {
			return ctr
		}
		ctr := c.counter(k.source, label, k.outcome)
		c.other[ok] = ctr
		return ctr
	}
	ctr := c.counter(k.source, label, k.outcome)
	k.name = label
	c.byKey[k] = ctr
	return ctr
}

func (c *eventCounters) counter(source enrich.Source, name string, o enrich.Outcome) *metrics.Counter {
	return c.set.GetOrCreateCounter(`sidetrack_events_total{source=` + strconv.Quote(string(source)) +
		`,name=` + strconv.Quote(name) + `,outcome=` + strconv.Quote(o.String()) + `}`)
}

// labelSafe keeps odd bytes out of metric labels.
func labelSafe(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

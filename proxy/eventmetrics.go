package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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

	// totals count events per outcome whatever their name, for the
	// status page's throughput.
	totals [outcomes]atomic.Uint64
}

// outcomes is the number of enrich.Outcome values.
const outcomes = 6

type eventKey struct {
	source  enrich.Source
	name    string
	outcome enrich.Outcome
}

func newEventCounters(m *Metrics) *eventCounters {
	return &eventCounters{set: m.Set(), byKey: map[eventKey]*metrics.Counter{}, names: map[string]struct{}{}}
}

// add counts one event. The event's name is only read, never kept: a new
// series gets its own copy.
func (c *eventCounters) add(e *enrich.Event, o enrich.Outcome) {
	k := eventKey{source: e.Source, name: e.Name, outcome: o}
	c.mu.RLock()
	ctr := c.byKey[k]
	c.mu.RUnlock()
	if ctr == nil {
		ctr = c.create(k)
	}
	ctr.Inc()
	if int(o) < outcomes {
		c.totals[o].Add(1)
	}
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
	} else if len(c.names) < maxEventNames && k.name != "" && labelSafe(k.name) {
		label = strings.Clone(k.name)
		c.names[label] = struct{}{}
	}
	ctr := c.set.GetOrCreateCounter(`sidetrack_events_total{source=` + strconv.Quote(string(k.source)) +
		`,name=` + strconv.Quote(label) + `,outcome=` + strconv.Quote(k.outcome.String()) + `}`)
	if label == "other" {
		// Unknown names beyond the limit share one counter per source and
		// outcome; do not remember each of them.
		return ctr
	}
	k.name = label
	c.byKey[k] = ctr
	return ctr
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

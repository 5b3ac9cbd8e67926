package quality

import (
	"sort"
	"time"
)

// Snapshot is everything the tracker knows, for /status.json. Coverage
// ratios are present only for dimensions that had events.
type Snapshot struct {
	At time.Time `json:"at"`
	// Totals are process-wide counts over the last 5 minutes and hour.
	Totals         map[string]Totals `json:"totals"`
	Coverage       []NameCoverage    `json:"coverage"`
	Violations     []Violation       `json:"violations"`
	Drift          Drift             `json:"drift"`
	Reconciliation Reconciliation    `json:"reconciliation"`
	Alerts         []Alert           `json:"alerts"`
}

// Totals are event counts over one window. Observed excludes duplicates
// and bots.
type Totals struct {
	Observed uint64 `json:"observed"`
	Accepted uint64 `json:"accepted"`
	Failed   uint64 `json:"failed"`
	Unknown  uint64 `json:"unknown_names"`
	Direct   uint64 `json:"direct"`
	// Attributed events carry a source; Direct is a part of them.
	Attributed uint64 `json:"attributed"`
}

// NameCoverage is one event name's coverage over one window.
type NameCoverage struct {
	Name   string `json:"name"`
	Window string `json:"window"`
	// Accepted is the ratios' denominator (direct: Attributed).
	Accepted   uint64             `json:"accepted"`
	Attributed uint64             `json:"attributed"`
	Failed     uint64             `json:"failed"`
	Ratios     map[string]float64 `json:"ratios"`
}

// Violation counts schema violations of one field of one event name over
// the last hour.
type Violation struct {
	Name  string `json:"name"`
	Field string `json:"field"`
	Count uint64 `json:"count"`
}

// Drift is the tracking plan's drift: names the naming stage did not know,
// since start.
type Drift struct {
	// UnknownEvents counts events with an unknown name.
	UnknownEvents uint64 `json:"unknown_events"`
	// DistinctNames is how many distinct unknown names the table holds
	// (at most 100); Overflow counts events whose name did not fit.
	DistinctNames int          `json:"distinct_names"`
	Overflow      uint64       `json:"overflow"`
	Top           []DriftEntry `json:"top"`
}

// DriftEntry is one unknown name.
type DriftEntry struct {
	Name     string    `json:"name"`
	Count    uint64    `json:"count"`
	LastSeen time.Time `json:"last_seen"`
}

// windows of the snapshot.
var windows = []struct {
	name    string
	minutes int
}{{"5m", 5}, {"1h", 60}}

// Snapshot returns the current figures. Coverage rows are sorted by
// accepted events, most first; names without events in a window are left
// out of it.
func (t *Tracker) Snapshot() Snapshot {
	recon := t.Reconciliation()
	alerts := t.Alerts()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	minute := now.Unix() / 60
	s := Snapshot{At: now.UTC(), Totals: map[string]Totals{}, Reconciliation: recon, Alerts: alerts,
		Coverage: []NameCoverage{}, Violations: []Violation{}}
	for _, w := range windows {
		g := t.sumGlobal(minute, w.minutes)
		s.Totals[w.name] = Totals{Observed: g[gObserved], Accepted: g[gAccepted], Failed: g[gFailed],
			Unknown: g[gUnknown], Direct: g[gDirect], Attributed: g[gAttributed]}
		var rows []NameCoverage
		for r, name := range t.rows {
			c := t.sumName(r, minute, w.minutes)
			if c[dAccepted] == 0 && c[dFailed] == 0 {
				continue
			}
			nc := NameCoverage{Name: name, Window: w.name, Accepted: c[dAccepted], Attributed: c[dAttributed],
				Failed: c[dFailed], Ratios: map[string]float64{}}
			for i, d := range dims {
				if v, ok := ratio(c, d); ok {
					nc.Ratios[dimensionNames[i]] = v
				}
			}
			rows = append(rows, nc)
		}
		sort.SliceStable(rows, func(i, j int) bool {
			if rows[i].Accepted != rows[j].Accepted {
				return rows[i].Accepted > rows[j].Accepted
			}
			return rows[i].Name < rows[j].Name
		})
		s.Coverage = append(s.Coverage, rows...)
	}
	var counts [maxPairs + 1]uint64
	for m := minute - nameMinutes + 1; m <= minute; m++ {
		b := &t.byPair[m%nameMinutes]
		if b.minute != m {
			continue
		}
		for i := range counts {
			counts[i] += uint64(b.counts[i])
		}
	}
	for i, p := range t.pairList {
		if counts[i] == 0 {
			continue
		}
		s.Violations = append(s.Violations, Violation{Name: t.rows[p.name], Field: p.field, Count: counts[i]})
	}
	sort.Slice(s.Violations, func(i, j int) bool {
		a, b := s.Violations[i], s.Violations[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Field < b.Field
	})
	s.Drift = Drift{UnknownEvents: t.unknownTotal, DistinctNames: len(t.drift), Overflow: t.driftOverflow, Top: []DriftEntry{}}
	for name, d := range t.drift {
		s.Drift.Top = append(s.Drift.Top, DriftEntry{Name: name, Count: d.count, LastSeen: d.lastSeen.UTC()})
	}
	sort.Slice(s.Drift.Top, func(i, j int) bool {
		if s.Drift.Top[i].Count != s.Drift.Top[j].Count {
			return s.Drift.Top[i].Count > s.Drift.Top[j].Count
		}
		return s.Drift.Top[i].Name < s.Drift.Top[j].Name
	})
	if len(s.Drift.Top) > 10 {
		s.Drift.Top = s.Drift.Top[:10]
	}
	return s
}

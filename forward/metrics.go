package forward

import (
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// spoolMetrics are the spool-wide series (DESIGN §7), in a set the Spool
// owns; the process merges it into /metrics.
type spoolMetrics struct {
	set *metrics.Set
	// commits and fsyncs let the group commit be observed (and counted by
	// tests and benchmarks): with fsync "always" each commit is an fsync.
	commits     *metrics.Counter
	commitFails *metrics.Counter
	fsyncs      *metrics.Counter
	unrouted    *metrics.Counter
	full        *metrics.Counter
	quarantined *metrics.Counter
	quarDropped *metrics.Counter
}

// destMetrics are one destination's series.
type destMetrics struct {
	delivered       *metrics.Counter
	retried         *metrics.Counter
	deadLettered    *metrics.Counter
	dropped         *metrics.Counter
	retries         *metrics.Counter
	consentBlocked  *metrics.Counter
	backlogOverflow *metrics.Counter
	dryRun          *metrics.Counter
	duration        *metrics.PrometheusHistogram
}

// durationBuckets suit destination round trips: a local file in
// microseconds, vendor APIs in tens to hundreds of milliseconds, a
// blackholed endpoint at its timeout.
func durationBuckets() []float64 {
	return []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
}

// newSpoolMetrics creates the spool's metrics. With local false (Feed:
// the events live in an external log, not the spool file) the spool-file
// series are kept out of the exported set, so a forwarder's /metrics does
// not show a spool that is always empty.
func newSpoolMetrics(s *Spool, local bool) *spoolMetrics {
	set := metrics.NewSet()
	file := set
	if !local {
		file = metrics.NewSet() // never written out
	}
	m := &spoolMetrics{
		set:         set,
		commits:     file.NewCounter("sidetrack_spool_commits_total"),
		commitFails: file.NewCounter("sidetrack_spool_commit_errors_total"),
		fsyncs:      file.NewCounter("sidetrack_spool_fsyncs_total"),
		unrouted:    file.NewCounter("sidetrack_spool_unrouted_total"),
		full:        file.NewCounter("sidetrack_spool_full_total"),
		quarantined: file.NewCounter("sidetrack_quarantine_total"),
		quarDropped: file.NewCounter("sidetrack_quarantine_dropped_total"),
	}
	file.NewGauge("sidetrack_spool_bytes", func() float64 { return float64(s.bytes.Load()) })
	file.NewGauge("sidetrack_spool_events", func() float64 { return float64(s.events.Load()) })
	file.NewGauge("sidetrack_quarantine_events", func() float64 { return float64(s.quarantine.events.Load()) })
	return m
}

// register adds d's series to the set.
func (m *spoolMetrics) register(d *destState, now func() time.Time) destMetrics {
	l := `{destination="` + d.name + `"`
	out := func(o string) *metrics.Counter {
		return m.set.NewCounter(`sidetrack_deliveries_total` + l + `,outcome="` + o + `"}`)
	}
	dm := destMetrics{
		delivered:       out("delivered"),
		retried:         out("retried"),
		deadLettered:    out("dead_lettered"),
		dropped:         out("dropped"),
		retries:         m.set.NewCounter(`sidetrack_retries_total` + l + `}`),
		consentBlocked:  m.set.NewCounter(`sidetrack_consent_blocked_total` + l + `}`),
		backlogOverflow: m.set.NewCounter(`sidetrack_backlog_overflow_total` + l + `}`),
		dryRun:          m.set.NewCounter(`sidetrack_dry_run_events_total` + l + `}`),
		duration:        m.set.NewPrometheusHistogramExt(`sidetrack_delivery_duration_seconds`+l+`}`, durationBuckets()),
	}
	m.set.NewGauge(`sidetrack_dlq_events`+l+`}`, func() float64 { return float64(d.dlq.events.Load()) })
	m.set.NewGauge(`sidetrack_dlq_bytes`+l+`}`, func() float64 { return float64(d.dlq.bytes.Load()) })
	m.set.NewGauge(`sidetrack_backlog_events`+l+`}`, func() float64 { return float64(d.backlogEvents.Load()) })
	m.set.NewGauge(`sidetrack_backlog_bytes`+l+`}`, func() float64 { return float64(d.backlogBytes.Load()) })
	m.set.NewGauge(`sidetrack_destination_paused`+l+`}`, func() float64 {
		if d.paused.Load() {
			return 1
		}
		return 0
	})
	m.set.NewGauge(`sidetrack_spool_oldest_age_seconds`+l+`}`, func() float64 {
		ms := d.oldestMs.Load()
		if ms == 0 {
			return 0
		}
		return max(0, now().Sub(time.UnixMilli(ms)).Seconds())
	})
	return dm
}

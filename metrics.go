package main

import (
	"github.com/VictoriaMetrics/metrics"

	"github.com/sidetrack/sidetrack/enrich"
)

// dedupMetrics exposes the dedup stage's counters as
// sidetrack_dedup_checks_total{result} (DESIGN §7), read when scraped.
func dedupMetrics(d *enrich.Dedup) *metrics.Set {
	set := metrics.NewSet()
	counter := func(result string, read func(enrich.DedupStats) uint64) {
		set.NewGauge(`sidetrack_dedup_checks_total{result="`+result+`"}`, func() float64 {
			return float64(read(d.Stats()))
		})
	}
	counter("new", func(s enrich.DedupStats) uint64 { return s.New })
	counter("bloom_false_positive", func(s enrich.DedupStats) uint64 { return s.BloomFalsePositive })
	counter("duplicate", func(s enrich.DedupStats) uint64 { return s.Duplicate })
	counter("redis_fallback", func(s enrich.DedupStats) uint64 { return s.RedisFallback })
	set.NewGauge(`sidetrack_dedup_no_id_total`, func() float64 { return float64(d.Stats().NoID) })
	set.NewGauge(`sidetrack_dedup_pending`, func() float64 { return float64(d.Stats().Pending) })
	set.NewGauge(`sidetrack_dedup_bloom_bytes`, func() float64 { return float64(d.Stats().BloomBytes) })
	return set
}

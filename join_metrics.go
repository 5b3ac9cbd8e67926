package main

import (
	"github.com/VictoriaMetrics/metrics"

	"github.com/sidetrack/sidetrack/enrich"
)

// joinMetrics exposes the join stage's counters, read when scraped:
// sidetrack_join_total{result} and, with join.redis, how sharing fares.
func joinMetrics(j *enrich.Join) *metrics.Set {
	set := metrics.NewSet()
	gauge := func(name string, read func(enrich.JoinStats) uint64) {
		set.NewGauge(name, func() float64 { return float64(read(j.Stats())) })
	}
	gauge(`sidetrack_join_total{result="matched"}`, func(s enrich.JoinStats) uint64 { return s.Matched })
	gauge(`sidetrack_join_total{result="unmatched"}`, func(s enrich.JoinStats) uint64 { return s.Unmatched })
	gauge(`sidetrack_join_total{result="no_key"}`, func(s enrich.JoinStats) uint64 { return s.NoKey })
	gauge(`sidetrack_join_remembered_total`, func(s enrich.JoinStats) uint64 { return s.Remembered })
	gauge(`sidetrack_join_redis_hits_total`, func(s enrich.JoinStats) uint64 { return s.SharedHits })
	gauge(`sidetrack_join_redis_errors_total`, func(s enrich.JoinStats) uint64 { return s.SharedErrors })
	gauge(`sidetrack_join_redis_dropped_total`, func(s enrich.JoinStats) uint64 { return s.SharedDropped })
	return set
}

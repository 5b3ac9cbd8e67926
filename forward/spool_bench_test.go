package forward

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// BenchmarkSpoolAppend measures the group commit: many goroutines append
// one event each (like concurrent beacons) and every Append waits for its
// commit. It reports events/s and fsyncs/s per fsync policy, with and
// without dedup keys (the id index is a B+tree of random keys: most of
// the commit's cost); no delivery runs, so only ingest is measured.
func BenchmarkSpoolAppend(b *testing.B) {
	for _, bc := range []struct {
		fsync string
		dedup bool
	}{{"always", true}, {"50ms", true}, {"50ms", false}, {"never", false}} {
		fsync := bc.fsync
		b.Run(fmt.Sprintf("fsync=%s/dedup=%v", bc.fsync, bc.dedup), func(b *testing.B) {
			cfg := testConfig(b, b.TempDir(), fsync, []string{dest("a", "")}, "")
			pool := &enrich.EventPool{}
			s, err := Open(cfg, nil, nil, pool)
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.SetParallelism(16) // 16 × GOMAXPROCS appenders
			b.ReportAllocs()
			start := time.Now()
			fs0 := s.met.fsyncs.Get()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				evs := make([]*enrich.Event, 1)
				for pb.Next() {
					i := n.Add(1)
					e := newEvent(pool, "bench")
					if bc.dedup { // hashed keys: random positions in the index
						e.DedupKey[0], e.DedupKey[1], e.DedupKey[2] = byte(i), byte(i>>8), byte(i>>16)
					}
					evs[0] = e
					if err := s.Append(context.Background(), evs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(n.Load())/el, "events/s")
			b.ReportMetric(float64(s.met.fsyncs.Get()-fs0)/el, "fsyncs/s")
			b.ReportMetric(float64(n.Load())/float64(max(s.met.commits.Get(), 1)), "events/commit")
			closeSpool(b, s)
		})
	}
}

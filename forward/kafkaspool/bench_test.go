package kafkaspool_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/sidetrack/sidetrack/enrich"
)

// BenchmarkSinkAppend measures one edge request's append (encode, produce,
// wait for acks=all) against an in-process cluster: the figure is
// sidetrack's cost plus kfake's, not a real broker's.
func BenchmarkSinkAppend(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			c := cluster(b)
			s := newSinkB(b, c)
			pool := &enrich.EventPool{}
			b.ReportAllocs()
			b.SetParallelism(8)
			var worker atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				w := worker.Add(1)
				evs := make([]*enrich.Event, n)
				for i := 0; pb.Next(); i++ {
					for j := range evs {
						e := pool.Get()
						e.EventID = e.InternString(fmt.Sprintf("b-%d-%d-%d", w, i, j))
						e.Name, e.DeviceID = "page_viewed", e.InternString(fmt.Sprintf("dev-%d", i%64))
						evs[j] = e
					}
					if err := s.Append(context.Background(), evs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

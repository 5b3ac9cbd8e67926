package forward

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// countingDest counts delivered events and does nothing else.
type countingDest struct{ n atomic.Int64 }

func (c *countingDest) Name() string                  { return "count" }
func (c *countingDest) Limits() Limits                { return Limits{} }
func (c *countingDest) GroupKey(*enrich.Event) string { return "" }
func (c *countingDest) Prepare(*enrich.Event) error   { return nil }
func (c *countingDest) Close() error                  { return nil }
func (c *countingDest) Send(_ context.Context, b []*enrich.Event) ([]error, error) {
	c.n.Add(int64(len(b)))
	return nil, nil
}

// storedCountingDest counts like countingDest and takes light events
// (storedJSONSender), as the webhook and ndjson adapters do.
type storedCountingDest struct{ countingDest }

func (c *storedCountingDest) SendsStoredJSON() bool { return true }

// BenchmarkDeliver measures the read side: b.N spooled events read,
// decoded (in full, or light for an adapter that sends them as stored),
// batched, sent to a destination that only counts, and their outcomes
// recorded. It reports delivered events/s.
func BenchmarkDeliver(b *testing.B) {
	b.Run("decode", func(b *testing.B) {
		cd := &countingDest{}
		benchDeliver(b, cd, &cd.n)
	})
	b.Run("stored", func(b *testing.B) {
		cd := &storedCountingDest{}
		benchDeliver(b, cd, &cd.n)
	})
}

func benchDeliver(b *testing.B, cd Destination, delivered *atomic.Int64) {
	cfg := testConfig(b, b.TempDir(), "50ms", []string{dest("count", "batch: {max_events: 500, max_wait: 1ms}")}, "")
	pool := &enrich.EventPool{}
	s, err := Open(cfg, []Destination{cd}, nil, pool)
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]*enrich.Event, 0, 100)
	for i := 0; i < b.N; i++ {
		e := newEvent(pool, "bench-event-id-0123456789")
		e.URL = e.InternString("https://shop.example/products/blue-shoes?utm_source=news")
		e.Title = e.InternString("Blue shoes – Shop")
		e.UserID = e.InternString("user-42")
		evs = append(evs, e)
		if len(evs) == cap(evs) || i == b.N-1 {
			if err := s.Append(context.Background(), evs); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for delivered.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	closeSpool(b, s)
}

package proxy

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.ObserveRequest(RoutePass, 200, 3*time.Millisecond)
	m.ObserveRequest(RoutePass, 200, 700*time.Microsecond)
	m.ObserveRequest(RouteGA4, 204, 100*time.Microsecond)
	m.ObserveRequest("custom", 200, time.Millisecond)  // outside the fixed table
	m.ObserveRequest(RoutePass, 999, time.Millisecond) // odd status
	m.Reject(RouteSegment, "body_too_large")
	m.Reject(RouteSegment, "body_too_large")
	m.Reject(RouteCollect, "bad_json")
	m.upstreamError(upstreamTimeout)
	m.upstreamError("unknown kind")

	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	text := buf.String()
	want := map[string]string{
		`sidetrack_requests_total{route="pass",code="200"}`:                          "2",
		`sidetrack_requests_total{route="ga4",code="204"}`:                           "1",
		`sidetrack_requests_total{route="custom",code="200"}`:                        "1",
		`sidetrack_requests_total{route="pass",code="999"}`:                          "1",
		`sidetrack_request_duration_seconds_count{route="pass"}`:                     "3",
		`sidetrack_request_duration_seconds_bucket{route="pass",le="0.001"}`:         "2",
		`sidetrack_request_duration_seconds_bucket{route="pass",le="0.005"}`:         "3",
		`sidetrack_request_duration_seconds_bucket{route="pass",le="+Inf"}`:          "3",
		`sidetrack_ingest_rejected_total{route="segment",reason="body_too_large"}`:   "2",
		`sidetrack_ingest_rejected_total{route="collect",reason="bad_json"}`:         "1",
		`sidetrack_upstream_errors_total{kind="timeout"}`:                            "1",
		`sidetrack_upstream_errors_total{kind="other"}`:                              "1",
		`sidetrack_upstream_errors_total{kind="connect"}`:                            "0",
		`sidetrack_upstream_errors_total{kind="reset"}`:                              "0",
		`sidetrack_request_duration_seconds_bucket{route="custom",le="0.001"}`:       "1",
		`sidetrack_request_duration_seconds_bucket{route="ga4",le="0.0005"}`:         "1",
		`sidetrack_request_duration_seconds_sum{route="ga4"}`:                        "0.0001",
		`sidetrack_requests_total{route="segment",code="200"}`:                       "",
		`sidetrack_ingest_rejected_total{route="segment",reason="host_not_allowed"}`: "",
	}
	for series, v := range want {
		if got := metricValue(text, series); got != v {
			t.Errorf("%s = %q, want %q", series, got, v)
		}
	}
	// Prometheus-compatible histogram (le buckets), not VictoriaMetrics' vmrange.
	if strings.Contains(text, "vmrange") {
		t.Error("histogram uses vmrange buckets")
	}
	if m.Set() == nil {
		t.Error("Set() is nil")
	}
}

func TestMetricsHotPathDoesNotAllocate(t *testing.T) {
	m := NewMetrics()
	m.ObserveRequest(RoutePass, 200, time.Millisecond)
	m.Reject(RouteGA4, "rate_limited")
	if n := testing.AllocsPerRun(1000, func() {
		m.ObserveRequest(RoutePass, 200, time.Millisecond)
		m.Reject(RouteGA4, "rate_limited")
		m.upstreamError(upstreamConnect)
	}); n != 0 {
		t.Errorf("recording allocates %.1f times per request", n)
	}
}

func TestMetricsConcurrentFirstUse(t *testing.T) {
	m := NewMetrics()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for code := 200; code < 210; code++ {
				m.ObserveRequest(RouteCollect, code, time.Microsecond)
				m.ObserveRequest("other", code, time.Microsecond)
				m.Reject(RouteCollect, "x")
			}
		}()
	}
	wg.Wait()
	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	if got := metricValue(buf.String(), `sidetrack_requests_total{route="collect",code="205"}`); got != "8" {
		t.Errorf("concurrent counts: %q, want 8", got)
	}
	if got := metricValue(buf.String(), `sidetrack_ingest_rejected_total{route="collect",reason="x"}`); got != "80" {
		t.Errorf("concurrent rejections: %q, want 80", got)
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	m := NewMetrics()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveRequest(RoutePass, 200, time.Millisecond)
		}
	})
}

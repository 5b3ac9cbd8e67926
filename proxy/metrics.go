package proxy

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Route label values of sidetrack_requests_total and friends (DESIGN §7).
const (
	RouteGA4     = "ga4"
	RouteSegment = "segment"
	RouteCollect = "collect"
	RouteForm    = "form"
	RouteScript  = "script"
	RoutePass    = "pass"
	// routeTracking labels dispatcher-level rejections on a tracking path
	// registered without a route label.
	routeTracking = "tracking"
)

// Upstream error kinds of sidetrack_upstream_errors_total.
const (
	upstreamConnect = "connect"
	upstreamTimeout = "timeout"
	upstreamReset   = "reset"
	upstreamOther   = "other"
)

// knownRoutes are the routes with a lock-free counter table; anything else
// goes through a mutex-guarded map.
var knownRoutes = [...]string{RouteGA4, RouteSegment, RouteCollect, RouteForm, RouteScript, RoutePass, routeTracking}

const (
	minCode = 100
	maxCode = 599
)

// durationBuckets suit sidetrack: beacons answer in well under a
// millisecond, pass-through follows the shop (tens of ms to seconds).
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Metrics owns the proxy's metrics in its own metrics.Set (never the
// library's global set). Recording never allocates once a (route, code) or
// (route, reason) pair has been seen: counters are created on first use and
// cached in fixed tables read with atomic loads.
type Metrics struct {
	set *metrics.Set

	mu       sync.Mutex // serialises counter creation only
	requests [len(knownRoutes)][maxCode - minCode + 1]atomic.Pointer[metrics.Counter]
	duration [len(knownRoutes)]atomic.Pointer[metrics.PrometheusHistogram]

	otherMu       sync.RWMutex
	otherRequests map[routeCode]*metrics.Counter
	otherDuration map[string]*metrics.PrometheusHistogram

	rejectMu sync.RWMutex
	rejected map[routeReason]*metrics.Counter

	upstream map[string]*metrics.Counter // fixed at construction, read-only
}

type routeCode struct {
	route string
	code  int
}

type routeReason struct {
	route, reason string
}

// NewMetrics returns an empty Metrics with its own set. The upstream error
// kinds are registered at zero so rate() alerts work before the first
// failure.
func NewMetrics() *Metrics {
	m := &Metrics{
		set:           metrics.NewSet(),
		otherRequests: make(map[routeCode]*metrics.Counter),
		otherDuration: make(map[string]*metrics.PrometheusHistogram),
		rejected:      make(map[routeReason]*metrics.Counter),
		upstream:      make(map[string]*metrics.Counter, 4),
	}
	for _, k := range []string{upstreamConnect, upstreamTimeout, upstreamReset, upstreamOther} {
		m.upstream[k] = m.set.NewCounter(`sidetrack_upstream_errors_total{kind="` + k + `"}`)
	}
	return m
}

// Set is the underlying metrics.Set, so main can register other parts'
// metrics (delivery, spool) in the same exposition.
func (m *Metrics) Set() *metrics.Set { return m.set }

func routeIndex(route string) int {
	switch route {
	case RouteGA4:
		return 0
	case RouteSegment:
		return 1
	case RouteCollect:
		return 2
	case RouteForm:
		return 3
	case RouteScript:
		return 4
	case RoutePass:
		return 5
	case routeTracking:
		return 6
	}
	return -1
}

// ObserveRequest records one answered request: sidetrack_requests_total
// {route,code} and sidetrack_request_duration_seconds{route}. The public
// dispatcher calls it for pass-through and for its own rejections; tracking
// handlers call it for the requests they answer.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	m.countRequest(route, code)
	m.histogram(route).Update(d.Seconds())
}

// countRequest counts a request that has no meaningful duration (rejected
// by fasthttp before a handler ran).
func (m *Metrics) countRequest(route string, code int) {
	ri := routeIndex(route)
	if ri < 0 || code < minCode || code > maxCode {
		m.otherCounter(route, code).Inc()
		return
	}
	slot := &m.requests[ri][code-minCode]
	c := slot.Load()
	if c == nil {
		m.mu.Lock()
		if c = slot.Load(); c == nil {
			c = m.set.GetOrCreateCounter(requestsName(route, code))
			slot.Store(c)
		}
		m.mu.Unlock()
	}
	c.Inc()
}

func requestsName(route string, code int) string {
	return fmt.Sprintf(`sidetrack_requests_total{route=%q,code="%d"}`, route, code)
}

func durationName(route string) string {
	return fmt.Sprintf(`sidetrack_request_duration_seconds{route=%q}`, route)
}

func (m *Metrics) otherCounter(route string, code int) *metrics.Counter {
	k := routeCode{route, code}
	m.otherMu.RLock()
	c := m.otherRequests[k]
	m.otherMu.RUnlock()
	if c != nil {
		return c
	}
	m.otherMu.Lock()
	defer m.otherMu.Unlock()
	if c = m.otherRequests[k]; c == nil {
		c = m.set.GetOrCreateCounter(requestsName(route, code))
		m.otherRequests[k] = c
	}
	return c
}

func (m *Metrics) histogram(route string) *metrics.PrometheusHistogram {
	if ri := routeIndex(route); ri >= 0 {
		slot := &m.duration[ri]
		h := slot.Load()
		if h == nil {
			m.mu.Lock()
			if h = slot.Load(); h == nil {
				h = m.set.GetOrCreatePrometheusHistogramExt(durationName(route), durationBuckets)
				slot.Store(h)
			}
			m.mu.Unlock()
		}
		return h
	}
	m.otherMu.RLock()
	h := m.otherDuration[route]
	m.otherMu.RUnlock()
	if h != nil {
		return h
	}
	m.otherMu.Lock()
	defer m.otherMu.Unlock()
	if h = m.otherDuration[route]; h == nil {
		h = m.set.GetOrCreatePrometheusHistogramExt(durationName(route), durationBuckets)
		m.otherDuration[route] = h
	}
	return h
}

// Reject counts one rejected request in sidetrack_ingest_rejected_total
// {route,reason}. reason is a short snake_case constant (body_too_large,
// bad_gzip, host_not_allowed, …), never request data: label values must stay
// bounded.
func (m *Metrics) Reject(route, reason string) {
	k := routeReason{route, reason}
	m.rejectMu.RLock()
	c := m.rejected[k]
	m.rejectMu.RUnlock()
	if c == nil {
		m.rejectMu.Lock()
		if c = m.rejected[k]; c == nil {
			c = m.set.GetOrCreateCounter(fmt.Sprintf(`sidetrack_ingest_rejected_total{route=%q,reason=%q}`, route, reason))
			m.rejected[k] = c
		}
		m.rejectMu.Unlock()
	}
	c.Inc()
}

// upstreamError counts one failed exchange with the origin by kind.
func (m *Metrics) upstreamError(kind string) {
	c := m.upstream[kind]
	if c == nil {
		c = m.upstream[upstreamOther]
	}
	c.Inc()
}

// WritePrometheus writes the set in Prometheus text format.
func (m *Metrics) WritePrometheus(w io.Writer) { m.set.WritePrometheus(w) }

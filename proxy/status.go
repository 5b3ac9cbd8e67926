package proxy

import (
	_ "embed"
	"encoding/json"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// statusPage is the self-contained status page: inline CSS, JS and SVG,
// no external asset. It holds no data; its script fetches status.json.
//
//go:embed status.html
var statusPage []byte

// StatusFunc returns one part of /status.json: any JSON-marshalable value.
type StatusFunc func() (any, error)

// StatusSources are the parts of /status.json that other packages own;
// main wires them (proxy imports neither delivery nor quality). A nil
// part is left out of the page.
type StatusSources struct {
	// Delivery is the spool and per-destination health (forward).
	Delivery StatusFunc
	// Quality is coverage, reconciliation, drift and alerts (quality).
	Quality StatusFunc
	// Quarantine is the most recent quarantined events, PII-free.
	Quarantine StatusFunc
}

// Throughput sampling: a sample every statusInterval, kept for
// statusSamples intervals (10 minutes), enough for a sparkline and the
// 1m/5m/10m rates.
const (
	statusInterval = 5 * time.Second
	statusSamples  = 121
)

// throughputSample is the counters at one moment.
type throughputSample struct {
	at       time.Time
	requests uint64 // every answered request, all routes
	tracking uint64 // requests on tracking routes (not pass-through)
	events   [outcomes]uint64
}

// statusState is the status endpoints' state.
type statusState struct {
	s     *Server
	src   StatusSources
	now   func() time.Time
	start time.Time

	mu      sync.Mutex
	samples [statusSamples]throughputSample
	n, head int // head: the oldest sample

	stop chan struct{}
	once sync.Once
}

// HandleStatus adds /status (the page) and /status.json (its data) to the
// admin port and starts sampling throughput until ShutdownAdmin. The page
// is a static shell with no data in it and is served without the token;
// /status.json follows /metrics: it needs admin.token when one is set (the
// page asks for it and keeps it in the tab's session storage).
func (s *Server) HandleStatus(src StatusSources) {
	now := s.opts.Now
	if now == nil {
		now = time.Now
	}
	st := &statusState{s: s, src: src, now: now, start: now(), stop: make(chan struct{})}
	st.sample()
	s.adminMu.Lock()
	s.status = st
	s.adminMu.Unlock()
	s.HandleAdmin("/status", st.page, false)
	s.HandleAdmin("/status.json", st.json, true)
	go st.run()
}

// stopStatus ends the sampler (ShutdownAdmin).
func (s *Server) stopStatus() {
	s.adminMu.RLock()
	st := s.status
	s.adminMu.RUnlock()
	if st != nil {
		st.once.Do(func() { close(st.stop) })
	}
}

func (st *statusState) run() {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-st.stop:
			return
		case <-t.C:
			st.sample()
		}
	}
}

// read takes the counters now.
func (st *statusState) read() throughputSample {
	x := throughputSample{at: st.now()}
	m := st.s.metrics
	for ri := range m.requests {
		var sum uint64
		for ci := range m.requests[ri] {
			if c := m.requests[ri][ci].Load(); c != nil {
				sum += c.Get()
			}
		}
		x.requests += sum
		if knownRoutes[ri] != RoutePass {
			x.tracking += sum
		}
	}
	m.otherMu.RLock()
	for _, c := range m.otherRequests {
		x.requests += c.Get()
	}
	m.otherMu.RUnlock()
	if tr := st.s.tracker; tr != nil {
		x.events = tr.counts.byOutcome()
	}
	return x
}

func (st *statusState) sample() {
	x := st.read()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.n == statusSamples {
		st.head = (st.head + 1) % statusSamples
		st.n--
	}
	st.samples[(st.head+st.n)%statusSamples] = x
	st.n++
}

// Rate is a throughput over a window, per second.
type Rate struct {
	Requests float64 `json:"requests_per_second"`
	Tracking float64 `json:"tracking_requests_per_second"`
	Events   float64 `json:"events_per_second"`
	Accepted float64 `json:"accepted_per_second"`
}

// ThroughputPoint is one interval of the sparkline.
type ThroughputPoint struct {
	At time.Time `json:"at"`
	Rate
}

// Throughput is the status page's traffic part.
type Throughput struct {
	IntervalSeconds float64           `json:"interval_seconds"`
	Windows         map[string]Rate   `json:"windows"`
	Series          []ThroughputPoint `json:"series"`
	// Totals since start: requests, and events per outcome.
	Requests uint64            `json:"requests_total"`
	Events   map[string]uint64 `json:"events_total"`
}

func rate(a, b throughputSample) Rate {
	d := b.at.Sub(a.at).Seconds()
	if d <= 0 {
		return Rate{}
	}
	var ev, bev uint64
	for i := range a.events {
		ev += a.events[i]
		bev += b.events[i]
	}
	return Rate{
		Requests: float64(b.requests-a.requests) / d,
		Tracking: float64(b.tracking-a.tracking) / d,
		Events:   float64(bev-ev) / d,
		Accepted: float64(b.events[0]-a.events[0]) / d,
	}
}

// throughput computes rates from the samples and the counters now.
func (st *statusState) throughput() Throughput {
	cur := st.read()
	st.mu.Lock()
	samples := make([]throughputSample, st.n)
	for i := range samples {
		samples[i] = st.samples[(st.head+i)%statusSamples]
	}
	st.mu.Unlock()
	out := Throughput{IntervalSeconds: statusInterval.Seconds(), Windows: map[string]Rate{},
		Series: []ThroughputPoint{}, Requests: cur.requests, Events: map[string]uint64{}}
	for i, n := range outcomeLabels {
		out.Events[n] = cur.events[i]
	}
	for _, w := range []struct {
		name string
		d    time.Duration
	}{{"1m", time.Minute}, {"5m", 5 * time.Minute}, {"10m", 10 * time.Minute}} {
		// The newest sample at least w old, else the oldest there is.
		from := samples[0]
		for _, x := range samples {
			if cur.at.Sub(x.at) < w.d {
				break
			}
			from = x
		}
		out.Windows[w.name] = rate(from, cur)
	}
	for i := 1; i < len(samples); i++ {
		out.Series = append(out.Series, ThroughputPoint{At: samples[i].at.UTC(), Rate: rate(samples[i-1], samples[i])})
	}
	return out
}

// outcomeLabels name the outcomes in events_total (enrich.Outcome order).
var outcomeLabels = [outcomes]string{"accepted", "duplicate", "invalid", "quarantined", "bot", "no_id"}

// StatusJSON is /status.json.
type StatusJSON struct {
	At            time.Time  `json:"at"`
	UptimeSeconds float64    `json:"uptime_seconds"`
	Ready         bool       `json:"ready"`
	Draining      bool       `json:"draining"`
	Throughput    Throughput `json:"throughput"`
	Delivery      any        `json:"delivery,omitempty"`
	Quality       any        `json:"quality,omitempty"`
	Quarantine    any        `json:"quarantine,omitempty"`
	// Notes are caveats the page shows as they are.
	Notes []string `json:"notes"`
	// Errors name the parts that could not be read, and why.
	Errors map[string]string `json:"errors,omitempty"`
}

// ga4Note is the caveat of DESIGN §7: a GA4 2xx does not mean accepted.
const ga4Note = "GA4 (relay and Measurement Protocol) answers 2xx even to malformed hits: its deliveries are sent, not verified as accepted."

func (st *statusState) build() StatusJSON {
	now := st.now()
	out := StatusJSON{At: now.UTC(), UptimeSeconds: now.Sub(st.start).Seconds(), Draining: st.s.draining.Load(),
		Throughput: st.throughput(), Notes: []string{}}
	out.Ready = !out.Draining
	if r := st.s.opts.Ready; r != nil && r.Ready() != nil {
		out.Ready = false
	}
	part := func(name string, f StatusFunc, dst *any) {
		if f == nil {
			return
		}
		v, err := f()
		if err != nil {
			if out.Errors == nil {
				out.Errors = map[string]string{}
			}
			out.Errors[name] = err.Error()
			return
		}
		*dst = v
	}
	part("delivery", st.src.Delivery, &out.Delivery)
	part("quality", st.src.Quality, &out.Quality)
	part("quarantine", st.src.Quarantine, &out.Quarantine)
	for _, d := range st.s.cfg.Destinations {
		if d.Type == "ga4" {
			out.Notes = append(out.Notes, ga4Note)
			break
		}
	}
	return out
}

func (st *statusState) json(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		plainAnswer(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed\n")
		return
	}
	b, err := json.Marshal(st.build())
	if err != nil {
		plainAnswer(ctx, fasthttp.StatusInternalServerError, "status: "+err.Error()+"\n")
		return
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(b)
}

func (st *statusState) page(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		plainAnswer(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed\n")
		return
	}
	h := &ctx.Response.Header
	h.SetContentType("text/html; charset=utf-8")
	h.Set(fasthttp.HeaderCacheControl, "no-store")
	// The page loads nothing from elsewhere, and the policy makes sure
	// of it: only its own inline code and same-origin fetches.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	ctx.SetBody(statusPage)
}

package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is the result of one bench run; it is printed as text and, with
// -json, written as JSON with the same fields.
type Report struct {
	Scenario    string    `json:"scenario"`
	Target      string    `json:"target"` // "child" when the bench started sidetrack
	Duration    string    `json:"duration"`
	Connections int       `json:"connections"`
	Pinned      bool      `json:"pinned"`
	Rounds      int       `json:"rounds"`
	Generator   string    `json:"generator"`
	Method      string    `json:"method"`
	Started     time.Time `json:"started"`
	// Phases are the throughput phases, each with its per-round figures
	// and their medians.
	Phases []*PhaseSummary `json:"phases"`
	// Sidetrack and Ceiling are the medians of those two phases.
	Sidetrack Phase  `json:"sidetrack"`
	Ceiling   *Phase `json:"ceiling,omitempty"`
	// Ratios of sidetrack to the ceiling, as DESIGN §8 states its budgets.
	ReqRatio float64 `json:"req_per_s_ratio,omitempty"`
	CPURatio float64 `json:"cpu_per_request_ratio,omitempty"`
	// Pass-through (sidetrack-pass) relative to nginx.
	PassReqRatio   float64 `json:"pass_req_per_s_vs_nginx,omitempty"`
	PassCPURatio   float64 `json:"pass_cpu_per_request_vs_nginx,omitempty"`
	PassP99DeltaUs int64   `json:"pass_p99_minus_nginx_us,omitempty"`
	// Sidetrack's events/s relative to Benthos'.
	BenthosRatio float64 `json:"events_per_s_vs_benthos,omitempty"`
	// PeakRequestsPerSec is the closed-loop median the latency fractions refer to.
	PeakRequestsPerSec float64        `json:"peak_requests_per_s"`
	Latency            []LatencyPoint `json:"latency,omitempty"`
	LatencyDuration    string         `json:"latency_duration,omitempty"`
	SVG                string         `json:"svg,omitempty"`
	// AllocsPerEvent is sidetrack's Go heap allocations
	// (go_memstats_mallocs_total) over the scenario phases divided by the
	// events in requests answered 2xx, duplicates included: ingest and
	// delivery together.
	AllocsPerEvent float64    `json:"allocs_per_event,omitempty"`
	PeakRSSBytes   int64      `json:"peak_rss_bytes,omitempty"`
	RssAnonBytes   int64      `json:"rss_anon_bytes,omitempty"`
	Budgets        []Budget   `json:"budgets"`
	Accounting     Accounting `json:"accounting"`
	Notes          []string   `json:"notes"`
}

// PhaseSummary is one throughput phase over all rounds.
type PhaseSummary struct {
	Name   string  `json:"name"`
	What   string  `json:"what"`
	Median Phase   `json:"median"`
	Rounds []Phase `json:"rounds"`
	// Spread of requests/s and server CPU µs/request over the rounds.
	ReqPerSecMin float64 `json:"requests_per_s_min"`
	ReqPerSecMax float64 `json:"requests_per_s_max"`
	CPUUsReqMin  float64 `json:"server_cpu_us_per_request_min"`
	CPUUsReqMax  float64 `json:"server_cpu_us_per_request_max"`
	// Median requests/s and CPU/request as multiples of the ceiling's, so
	// figures compare across machines (0 without a ceiling).
	ReqVsCeiling float64 `json:"requests_per_s_vs_ceiling,omitempty"`
	CPUVsCeiling float64 `json:"cpu_per_request_vs_ceiling,omitempty"`
}

// Phase is one measured load phase against one server.
type Phase struct {
	Requests        int64            `json:"requests"`
	Seconds         float64          `json:"seconds"`
	RequestsPerSec  float64          `json:"requests_per_s"`
	EventsPerSec    float64          `json:"events_per_s"`
	Latency         Latency          `json:"latency_us"`
	ServerCPUUsReq  float64          `json:"server_cpu_us_per_request"` // 0 when unknown (-target)
	ServerCPUSec    float64          `json:"server_cpu_s"`
	PeakRSSBytes    int64            `json:"peak_rss_bytes,omitempty"`
	RssAnonBytes    int64            `json:"rss_anon_bytes,omitempty"`
	GeneratorCPUSec float64          `json:"generator_cpu_s"`
	GeneratorUsReq  float64          `json:"generator_cpu_us_per_request"`
	Non2xx          map[string]int64 `json:"non_2xx,omitempty"`
	Errors          int64            `json:"errors"`
	FirstError      string           `json:"first_error,omitempty"`
}

// Latency holds per-request latency percentiles in microseconds.
type Latency struct {
	P50  int64 `json:"p50"`
	P90  int64 `json:"p90"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p99_9"`
	Max  int64 `json:"max"`
}

// LatencyPoint is one open-loop run at a fixed offered rate.
type LatencyPoint struct {
	Fraction     float64 `json:"fraction_of_peak,omitempty"` // 0 when the rate was given
	OfferedRate  float64 `json:"offered_requests_per_s"`
	AchievedRate float64 `json:"achieved_requests_per_s"`
	Scheduled    int64   `json:"scheduled"`
	Sent         int64   `json:"sent"`
	// Missed were scheduled but never sent: their lane was still waiting
	// for an answer when the phase ended (latency recorded as a lower bound).
	Missed  int64   `json:"missed"`
	Latency Latency `json:"latency_us"`
	// LagP99 is how late requests left compared with their schedule (p99,
	// µs): their lane was still waiting for an earlier answer, or the
	// generator itself was late. Near zero when the server keeps up and the
	// generator has CPU to spare.
	LagP99         int64   `json:"generator_lag_p99_us"`
	ServerCPUUsReq float64 `json:"server_cpu_us_per_request"`
	Errors         int64   `json:"errors"`
	Non2xx         int64   `json:"non_2xx"`
}

// Accounting compares what was acknowledged with what was delivered.
type Accounting struct {
	Checked           bool     `json:"checked"` // false with -target: only answers are known
	Sent              int64    `json:"sent"`
	Answered2xx       int64    `json:"answered_2xx"`
	DuplicatesSent    int64    `json:"duplicates_sent"`
	PassThroughSent   int64    `json:"pass_through_sent"`
	UniqueEventsAcked int64    `json:"unique_events_acked"`
	DeliveredDistinct int64    `json:"delivered_distinct"`
	DeliveredTotal    int64    `json:"delivered_total"`
	WebhookRequests   int64    `json:"webhook_requests"`
	Lost              int64    `json:"lost"`
	DoubleDelivered   int64    `json:"double_delivered"`
	Extra             int64    `json:"extra_delivered"`
	DrainSeconds      float64  `json:"drain_s"`
	DrainComplete     bool     `json:"drain_complete"`
	LostSample        []string `json:"lost_sample,omitempty"`
}

// add counts one sidetrack phase.
func (a *Accounting) add(res *loadResult) {
	a.Sent += res.Sent
	a.Answered2xx += res.OK
	a.DuplicatesSent += res.DupsSent
	a.PassThroughSent += res.PassSent
	a.UniqueEventsAcked += res.EventsOK
}

// Budget is one row of DESIGN §8 with this run's value.
type Budget struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Must   string `json:"must"`
	Target string `json:"target"`
	Status string `json:"status"` // "target met", "must met, target not met", "NOT MET", or "not measured: why"
}

// Failed reports whether the run broke delivery guarantees.
func (r *Report) Failed() bool {
	return r.Accounting.Checked && (r.Accounting.Lost > 0 || r.Accounting.DoubleDelivered > 0)
}

// phase is the summary of the named phase, nil when the run had none.
func (r *Report) phase(name string) *PhaseSummary {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// phaseFrom fills a Phase from a load result.
func phaseFrom(res *loadResult) Phase {
	sec := res.Elapsed.Seconds()
	p := Phase{
		Requests:       res.Sent,
		Seconds:        round(sec, 3),
		RequestsPerSec: round(float64(res.Sent)/sec, 0),
		EventsPerSec:   round(float64(res.EventsOK)/sec, 0),
		Latency:        latencyOf(res.Hist),
		Errors:         res.Errors,
		FirstError:     res.FirstError,
	}
	if res.Lat != nil {
		p.Latency = *res.Lat
	}
	for code, n := range res.Non2xx {
		if p.Non2xx == nil {
			p.Non2xx = map[string]int64{}
		}
		p.Non2xx[strconv.Itoa(code)] = n
	}
	return p
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	return Latency{P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max()}
}

// summarize takes the medians of each figure over the rounds (memory: the
// largest; errors: the sum).
func summarize(name, what string, rounds []Phase) *PhaseSummary {
	s := &PhaseSummary{Name: name, What: what, Rounds: rounds}
	if len(rounds) == 0 {
		return s
	}
	medF := func(f func(p *Phase) float64) float64 {
		v := make([]float64, len(rounds))
		for i := range rounds {
			v[i] = f(&rounds[i])
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	medI := func(f func(p *Phase) int64) int64 {
		return int64(medF(func(p *Phase) float64 { return float64(f(p)) }))
	}
	m := &s.Median
	m.Requests = medI(func(p *Phase) int64 { return p.Requests })
	m.Seconds = round(medF(func(p *Phase) float64 { return p.Seconds }), 3)
	m.RequestsPerSec = round(medF(func(p *Phase) float64 { return p.RequestsPerSec }), 0)
	m.EventsPerSec = round(medF(func(p *Phase) float64 { return p.EventsPerSec }), 0)
	m.Latency = Latency{
		P50:  medI(func(p *Phase) int64 { return p.Latency.P50 }),
		P90:  medI(func(p *Phase) int64 { return p.Latency.P90 }),
		P99:  medI(func(p *Phase) int64 { return p.Latency.P99 }),
		P999: medI(func(p *Phase) int64 { return p.Latency.P999 }),
		Max:  medI(func(p *Phase) int64 { return p.Latency.Max }),
	}
	m.ServerCPUUsReq = round(medF(func(p *Phase) float64 { return p.ServerCPUUsReq }), 1)
	m.ServerCPUSec = round(medF(func(p *Phase) float64 { return p.ServerCPUSec }), 2)
	m.GeneratorCPUSec = round(medF(func(p *Phase) float64 { return p.GeneratorCPUSec }), 2)
	m.GeneratorUsReq = round(medF(func(p *Phase) float64 { return p.GeneratorUsReq }), 1)
	s.ReqPerSecMin, s.ReqPerSecMax = rounds[0].RequestsPerSec, rounds[0].RequestsPerSec
	s.CPUUsReqMin, s.CPUUsReqMax = rounds[0].ServerCPUUsReq, rounds[0].ServerCPUUsReq
	for _, p := range rounds {
		m.PeakRSSBytes = max(m.PeakRSSBytes, p.PeakRSSBytes)
		m.RssAnonBytes = max(m.RssAnonBytes, p.RssAnonBytes)
		m.Errors += p.Errors
		if m.FirstError == "" {
			m.FirstError = p.FirstError
		}
		for k, v := range p.Non2xx {
			if m.Non2xx == nil {
				m.Non2xx = map[string]int64{}
			}
			m.Non2xx[k] += v
		}
		s.ReqPerSecMin, s.ReqPerSecMax = min(s.ReqPerSecMin, p.RequestsPerSec), max(s.ReqPerSecMax, p.RequestsPerSec)
		s.CPUUsReqMin, s.CPUUsReqMax = min(s.CPUUsReqMin, p.ServerCPUUsReq), max(s.CPUUsReqMax, p.ServerCPUUsReq)
	}
	return s
}

// latencyTarget is one open-loop point to run.
type latencyTarget struct {
	fraction float64 // of the closed-loop peak; 0 when rate was given
	rate     float64
}

// latencyPlan lists the open-loop points: -rates, else -rate, else the
// -sweep fractions (or with no sweep half peak and peak, the two points
// §8 judges) of the measured closed-loop peak.
func latencyPlan(o options, peak float64) []latencyTarget {
	var out []latencyTarget
	switch {
	case o.LatencyDuration <= 0:
	case len(o.Rates) > 0:
		for _, r := range o.Rates {
			out = append(out, latencyTarget{rate: r})
		}
	case o.Rate > 0:
		out = append(out, latencyTarget{rate: o.Rate})
	case peak > 0:
		fr := o.Fractions
		if !o.Sweep {
			fr = []float64{0.5, 1}
		}
		for _, f := range fr {
			out = append(out, latencyTarget{fraction: f, rate: max(1, round(f*peak, 0))})
		}
	}
	return out
}

// latencyPoint makes the report row of one open-loop run.
func latencyPoint(t latencyTarget, m *measured) LatencyPoint {
	res := m.res
	var non2xx int64
	for _, n := range res.Non2xx {
		non2xx += n
	}
	return LatencyPoint{
		Fraction: t.fraction, OfferedRate: t.rate,
		AchievedRate: round(float64(res.Sent)/res.Elapsed.Seconds(), 0),
		Scheduled:    res.Scheduled, Sent: res.Sent, Missed: res.Missed,
		Latency: latencyOf(res.Hist), LagP99: res.Lag.ValueAtQuantile(99),
		ServerCPUUsReq: m.phase.ServerCPUUsReq, Errors: res.Errors, Non2xx: non2xx,
	}
}

// ratios fills the ratios to the anchors from the phase medians.
func (r *Report) ratios() {
	if r.Ceiling != nil && r.Ceiling.RequestsPerSec > 0 {
		for _, p := range r.Phases {
			p.ReqVsCeiling = round(p.Median.RequestsPerSec/r.Ceiling.RequestsPerSec, 2)
			if r.Ceiling.ServerCPUUsReq > 0 {
				p.CPUVsCeiling = round(p.Median.ServerCPUUsReq/r.Ceiling.ServerCPUUsReq, 2)
			}
		}
	}
	if r.Ceiling != nil && r.Ceiling.RequestsPerSec > 0 {
		r.ReqRatio = round(r.Sidetrack.RequestsPerSec/r.Ceiling.RequestsPerSec, 2)
		if r.Ceiling.ServerCPUUsReq > 0 && r.Sidetrack.ServerCPUUsReq > 0 {
			r.CPURatio = round(r.Sidetrack.ServerCPUUsReq/r.Ceiling.ServerCPUUsReq, 2)
		}
	}
	ng, ps := r.phase(phNginx), r.phase(phPass)
	if ng != nil && ps != nil && ng.Median.RequestsPerSec > 0 {
		r.PassReqRatio = round(ps.Median.RequestsPerSec/ng.Median.RequestsPerSec, 2)
		if ng.Median.ServerCPUUsReq > 0 {
			r.PassCPURatio = round(ps.Median.ServerCPUUsReq/ng.Median.ServerCPUUsReq, 2)
		}
		r.PassP99DeltaUs = ps.Median.Latency.P99 - ng.Median.Latency.P99
	}
	if b := r.phase(phBenthos); b != nil && b.Median.EventsPerSec > 0 {
		r.BenthosRatio = round(r.Sidetrack.EventsPerSec/b.Median.EventsPerSec, 2)
	}
}

func round(v float64, digits int) float64 {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// budgets states every row of DESIGN §8 with this run's value and verdict.
func (r *Report) budgets(dedupCap int) {
	beacon := r.Scenario == "mix"
	notMix := "not measured: the budget is for -scenario mix (value shown for reference)"
	add := func(name, value, must, target, status string) {
		r.Budgets = append(r.Budgets, Budget{name, value, must, target, status})
	}

	// Beacon mix ingest.
	switch {
	case r.Ceiling == nil || r.ReqRatio == 0:
		add("beacon mix req/s vs ceiling", "-", "≥ 0.45×", "≥ 0.55×", "not measured: no ceiling in this run (-baseline=false or -target)")
	default:
		st := judge(r.ReqRatio >= 0.55, r.ReqRatio >= 0.45)
		if !beacon {
			st = notMix
		}
		add("beacon mix req/s vs ceiling", fmt.Sprintf("%.2f×", r.ReqRatio), "≥ 0.45×", "≥ 0.55×", st)
	}
	if r.CPURatio > 0 {
		st := judge(r.CPURatio <= 1.8, r.CPURatio <= 2.3)
		if !beacon {
			st = notMix
		}
		add("beacon mix CPU/request vs ceiling", fmt.Sprintf("%.2f×", r.CPURatio), "≤ 2.3×", "≤ 1.8×", st)
	} else {
		add("beacon mix CPU/request vs ceiling", "-", "≤ 2.3×", "≤ 1.8×", "not measured: needs the ceiling and sidetrack's pid (not with -target)")
	}

	// Benthos.
	if r.BenthosRatio > 0 {
		st := judge(r.BenthosRatio >= 5, r.BenthosRatio >= 3)
		if !beacon {
			st = notMix
		}
		add("events/s vs Benthos", fmt.Sprintf("%.2f×", r.BenthosRatio), "≥ 3×", "≥ 5×", st)
	} else {
		add("events/s vs Benthos", "-", "≥ 3×", "≥ 5×", "not measured: no Benthos anchor in this run (-baseline=false, -target, or see the notes)")
	}

	// Pass-through vs nginx.
	passRows := []struct{ name, must, target string }{
		{"pass-through req/s vs nginx", "≥ 0.85×", "≥ 1.0×"},
		{"pass-through CPU/request vs nginx", "≤ 1.15×", "≤ 1.05×"},
		{"pass-through p99 vs nginx (closed loop)", "≤ nginx + 1 ms", "-"},
	}
	if r.PassReqRatio > 0 {
		add(passRows[0].name, fmt.Sprintf("%.2f×", r.PassReqRatio), passRows[0].must, passRows[0].target, judge(r.PassReqRatio >= 1, r.PassReqRatio >= 0.85))
		if r.PassCPURatio > 0 {
			add(passRows[1].name, fmt.Sprintf("%.2f×", r.PassCPURatio), passRows[1].must, passRows[1].target, judge(r.PassCPURatio <= 1.05, r.PassCPURatio <= 1.15))
		} else {
			add(passRows[1].name, "-", passRows[1].must, passRows[1].target, "not measured: no CPU figure for nginx")
		}
		d := float64(r.PassP99DeltaUs) / 1000
		add(passRows[2].name, fmt.Sprintf("%+.2f ms", d), passRows[2].must, passRows[2].target, judgeMust(d <= 1))
	} else {
		for _, row := range passRows {
			add(row.name, "-", row.must, row.target, "not measured: no nginx anchor in this run (-baseline=false, -target, or see the notes)")
		}
	}

	// Open-loop latency: at peak (fraction 1) and half peak (0.5).
	var atPeak, atHalf *LatencyPoint
	for i := range r.Latency {
		switch r.Latency[i].Fraction {
		case 1:
			atPeak = &r.Latency[i]
		case 0.5:
			atHalf = &r.Latency[i]
		}
	}
	latBudget := func(name string, p *LatencyPoint, mustUs, targetUs int64, target string) {
		if p == nil {
			add(name, "-", fmt.Sprintf("p99 ≤ %d ms", mustUs/1000), target, "not measured: no open-loop point at this fraction of the peak (see -sweep, -latency-duration)")
			return
		}
		st := judge(targetUs > 0 && p.Latency.P99 <= targetUs, p.Latency.P99 <= mustUs)
		if targetUs == 0 {
			st = judgeMust(p.Latency.P99 <= mustUs)
		}
		if !beacon {
			st = notMix
		}
		add(name, fmt.Sprintf("%.2f ms", float64(p.Latency.P99)/1000), fmt.Sprintf("p99 ≤ %d ms", mustUs/1000), target, st)
	}
	latBudget("beacon latency p99 at peak (open loop)", atPeak, 5000, 0, "-")
	latBudget("beacon latency p99 at half peak (open loop)", atHalf, 2000, 1000, "p99 ≤ 1 ms")

	// Memory.
	if r.RssAnonBytes > 0 {
		mib := float64(r.RssAnonBytes) / (1 << 20)
		st := judge(mib <= 128, mib <= 160)
		switch {
		case dedupCap < 10_000_000 && mib > 160:
			st = fmt.Sprintf("NOT MET even with a %d-key dedup (budget assumes 10 M)", dedupCap)
		case dedupCap < 10_000_000:
			st = fmt.Sprintf("not measured: budget assumes a 10 M-key dedup, this run %d (use -dedup-capacity 10000000)", dedupCap)
		}
		add("memory (RssAnon) at peak, 10 M-key dedup", fmt.Sprintf("%.0f MiB", mib), "≤ 160 MiB", "≤ 128 MiB", st)
	} else {
		add("memory (RssAnon) at peak, 10 M-key dedup", "-", "≤ 160 MiB", "≤ 128 MiB", "not measured: sidetrack's pid is unknown (-target)")
	}

	// Allocations per event.
	if r.AllocsPerEvent > 0 {
		add("allocations per event", fmt.Sprintf("%.1f", r.AllocsPerEvent), "≤ 2 (decode → spool append)", "0",
			"not judged here: the whole process (ingest, delivery, webhook encoding, runtime) per event; the budget covers decode → spool append and is held by proxy's *_alloc_test.go")
	} else {
		add("allocations per event", "-", "≤ 2 (decode → spool append)", "0", "not measured: no admin /metrics (the *_alloc_test.go tests hold the budget)")
	}
}

func judge(target, must bool) string {
	switch {
	case target:
		return "target met"
	case must:
		return "must met, target not met"
	default:
		return "NOT MET"
	}
}

// judgeMust is the verdict of a row with no target.
func judgeMust(must bool) string {
	if must {
		return "met (no target)"
	}
	return "NOT MET"
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "sidetrack bench — scenario %s, %d connections, %s per phase, %d round(s), generator %s, target %s, pinned %v\n",
		r.Scenario, r.Connections, r.Duration, r.Rounds, r.Generator, r.Target, r.Pinned)
	fmt.Fprintf(w, "method: %s\n\n", r.Method)

	fmt.Fprintf(w, "throughput (closed loop; medians over rounds, spread min–max):\n")
	fmt.Fprintf(w, "  %-15s %9s %15s %9s %9s %9s %9s %19s %8s %10s %14s\n", "phase", "req/s", "spread", "events/s", "p50 µs", "p99 µs", "max µs", "server CPU µs/req", "gen µs", "err/non2xx", "× ceiling r/c")
	for _, p := range r.Phases {
		m := &p.Median
		cpu := "-"
		if m.ServerCPUUsReq > 0 {
			cpu = fmt.Sprintf("%.1f (%.1f–%.1f)", m.ServerCPUUsReq, p.CPUUsReqMin, p.CPUUsReqMax)
		}
		vs := "-"
		if p.ReqVsCeiling > 0 {
			vs = fmt.Sprintf("%.2f/%.2f", p.ReqVsCeiling, p.CPUVsCeiling)
		}
		fmt.Fprintf(w, "  %-15s %9.0f %15s %9.0f %9d %9d %9d %19s %8.1f %10s %14s\n", p.Name, m.RequestsPerSec,
			fmt.Sprintf("%.0f–%.0f", p.ReqPerSecMin, p.ReqPerSecMax), m.EventsPerSec, m.Latency.P50, m.Latency.P99, m.Latency.Max,
			cpu, m.GeneratorUsReq, fmt.Sprintf("%d/%d", m.Errors, sum(m.Non2xx)), vs)
	}
	for _, p := range r.Phases {
		fmt.Fprintf(w, "  %s: %s\n", p.Name, p.What)
	}
	if r.PeakRSSBytes > 0 {
		fmt.Fprintf(w, "sidetrack peak RSS (VmHWM): %.1f MiB, RssAnon (largest reading): %.1f MiB\n",
			float64(r.PeakRSSBytes)/(1<<20), float64(r.RssAnonBytes)/(1<<20))
	}
	if r.AllocsPerEvent > 0 {
		fmt.Fprintf(w, "sidetrack allocations per event (whole process, go_memstats_mallocs_total): %.1f\n", r.AllocsPerEvent)
	}
	for _, p := range r.Phases {
		if p.Median.FirstError != "" {
			fmt.Fprintf(w, "%s first error: %s\n", p.Name, p.Median.FirstError)
		}
	}
	var ratios []string
	if r.ReqRatio > 0 {
		ratios = append(ratios, fmt.Sprintf("sidetrack/ceiling req/s %.2f×, CPU/request %.2f×", r.ReqRatio, r.CPURatio))
	}
	if r.PassReqRatio > 0 {
		ratios = append(ratios, fmt.Sprintf("pass-through/nginx req/s %.2f×, CPU/request %.2f×, p99 %+d µs", r.PassReqRatio, r.PassCPURatio, r.PassP99DeltaUs))
	}
	if r.BenthosRatio > 0 {
		ratios = append(ratios, fmt.Sprintf("sidetrack/Benthos events/s %.2f×", r.BenthosRatio))
	}
	if len(ratios) > 0 {
		fmt.Fprintf(w, "ratios: %s\n", strings.Join(ratios, "; "))
	}

	if len(r.Latency) > 0 {
		fmt.Fprintf(w, "\nlatency (open loop, sidetrack, from scheduled send time; closed-loop peak %.0f req/s):\n", r.PeakRequestsPerSec)
		fmt.Fprintf(w, "  %8s %9s %9s %8s %9s %9s %9s %9s %9s %8s %10s %11s\n", "of peak", "offered", "achieved", "missed", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "lag p99", "err/non2xx", "CPU µs/req")
		for _, p := range r.Latency {
			fr := "-"
			if p.Fraction > 0 {
				fr = fmt.Sprintf("%.2f", p.Fraction)
			}
			fmt.Fprintf(w, "  %8s %9.0f %9.0f %8d %9d %9d %9d %9d %9d %8d %10s %11s\n", fr, p.OfferedRate, p.AchievedRate, p.Missed,
				p.Latency.P50, p.Latency.P90, p.Latency.P99, p.Latency.P999, p.Latency.Max, p.LagP99, fmt.Sprintf("%d/%d", p.Errors, p.Non2xx),
				orDash(p.ServerCPUUsReq > 0, fmt.Sprintf("%.1f", p.ServerCPUUsReq)))
		}
		if r.SVG != "" {
			fmt.Fprintf(w, "  chart: %s\n", r.SVG)
		}
	}

	fmt.Fprintf(w, "\nbudgets (docs/design.md §8):\n")
	for _, b := range r.Budgets {
		fmt.Fprintf(w, "  %-44s %-10s must %-28s target %-12s %s\n", b.Name, b.Value, b.Must, b.Target, b.Status)
	}
	a := r.Accounting
	fmt.Fprintf(w, "\naccounting (the sidetrack scenario phases of all rounds and the latency points):\n")
	fmt.Fprintf(w, "  sent %d, answered 2xx %d, duplicates sent %d, pass-through sent %d, unique events acked %d\n",
		a.Sent, a.Answered2xx, a.DuplicatesSent, a.PassThroughSent, a.UniqueEventsAcked)
	if a.Checked {
		fmt.Fprintf(w, "  delivered distinct %d (total %d in %d webhook requests, %d not acked by the bench), drain %.1fs complete=%v\n",
			a.DeliveredDistinct, a.DeliveredTotal, a.WebhookRequests, a.Extra, a.DrainSeconds, a.DrainComplete)
		fmt.Fprintf(w, "  lost %d (must be 0), double-delivered %d (must be 0)", a.Lost, a.DoubleDelivered)
		if len(a.LostSample) > 0 {
			fmt.Fprintf(w, ", e.g. %s", strings.Join(a.LostSample, " "))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "  delivery not checked (-target): only answers are known\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if r.Failed() {
		fmt.Fprintf(w, "FAIL: events lost or delivered twice\n")
	}
}

// orDash shows "-" for values the run could not measure (-target).
func orDash(known bool, s string) string {
	if known {
		return s
	}
	return "-"
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

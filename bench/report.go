package main

import (
	"fmt"
	"io"
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
	Method      string    `json:"method"`
	Started     time.Time `json:"started"`
	Sidetrack   Phase     `json:"sidetrack"`
	Ceiling     *Phase    `json:"ceiling,omitempty"`
	// Ratios of sidetrack to the ceiling, as DESIGN §8 states its budgets.
	ReqRatio   float64    `json:"req_per_s_ratio,omitempty"`
	CPURatio   float64    `json:"cpu_per_request_ratio,omitempty"`
	Budgets    []Budget   `json:"budgets"`
	Accounting Accounting `json:"accounting"`
	Notes      []string   `json:"notes"`
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
	ServerCPUDrain  float64          `json:"server_cpu_s_incl_drain,omitempty"`
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
	P50 int64 `json:"p50"`
	P90 int64 `json:"p90"`
	P99 int64 `json:"p99"`
	Max int64 `json:"max"`
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

// Budget is one row of DESIGN §8 with this run's value.
type Budget struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Must   string `json:"must"`
	Target string `json:"target"`
	Status string `json:"status"` // "target met", "must met", "NOT MET", or why it does not apply
}

// Failed reports whether the run broke delivery guarantees.
func (r *Report) Failed() bool {
	return r.Accounting.Checked && (r.Accounting.Lost > 0 || r.Accounting.DoubleDelivered > 0)
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
	for code, n := range res.Non2xx {
		if p.Non2xx == nil {
			p.Non2xx = map[string]int64{}
		}
		p.Non2xx[strconv.Itoa(code)] = n
	}
	return p
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	return Latency{P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99), Max: h.Max()}
}

func round(v float64, digits int) float64 {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// budgets evaluates the rows of DESIGN §8 this run can speak to.
func (r *Report) budgets(dedupCap int) {
	beacon := r.Scenario == "mix"
	if r.Ceiling != nil && r.ReqRatio > 0 {
		st := judge(r.ReqRatio >= 0.55, r.ReqRatio >= 0.45)
		if !beacon {
			st = "n/a (budget is for -scenario mix; shown for reference)"
		}
		r.Budgets = append(r.Budgets, Budget{"beacon mix req/s vs ceiling", fmt.Sprintf("%.2f×", r.ReqRatio), "≥ 0.45×", "≥ 0.55×", st})
	}
	if r.Ceiling != nil && r.CPURatio > 0 {
		st := judge(r.CPURatio <= 1.8, r.CPURatio <= 2.3)
		if !beacon {
			st = "n/a (budget is for -scenario mix; shown for reference)"
		}
		r.Budgets = append(r.Budgets, Budget{"beacon mix CPU/request vs ceiling", fmt.Sprintf("%.2f×", r.CPURatio), "≤ 2.3×", "≤ 1.8×", st})
	}
	if r.Sidetrack.RssAnonBytes > 0 {
		mib := float64(r.Sidetrack.RssAnonBytes) / (1 << 20)
		st := judge(mib <= 128, mib <= 160)
		switch {
		case dedupCap < 10_000_000 && mib > 160:
			st = fmt.Sprintf("NOT MET even with a %d-key dedup (budget assumes 10 M)", dedupCap)
		case dedupCap < 10_000_000:
			st = fmt.Sprintf("n/a (budget assumes a 10 M-key dedup; this run: %d; use -dedup-capacity 10000000)", dedupCap)
		}
		r.Budgets = append(r.Budgets, Budget{"memory (RssAnon) at peak", fmt.Sprintf("%.0f MiB", mib), "≤ 160 MiB", "≤ 128 MiB", st})
	}
	r.Budgets = append(r.Budgets,
		Budget{"beacon latency (open loop)", "-", "p99 ≤ 5 ms at peak", "p99 ≤ 1 ms at half peak", "not measured: this generator is closed loop"},
		Budget{"pass-through vs nginx, vs Benthos", "-", "see DESIGN §8", "", "not measured: no nginx/Benthos anchors in this suite yet"})
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

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "sidetrack bench — scenario %s, %d connections, %s per phase, target %s, pinned %v\n",
		r.Scenario, r.Connections, r.Duration, r.Target, r.Pinned)
	fmt.Fprintf(w, "method: %s\n\n", r.Method)
	fmt.Fprintf(w, "%-28s %14s %14s\n", "", "sidetrack", "ceiling")
	row := func(name string, f func(p *Phase) string) {
		c := "-"
		if r.Ceiling != nil {
			c = f(r.Ceiling)
		}
		fmt.Fprintf(w, "%-28s %14s %14s\n", name, f(&r.Sidetrack), c)
	}
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	row("requests", func(p *Phase) string { return strconv.FormatInt(p.Requests, 10) })
	row("requests/s", func(p *Phase) string { return num(p.RequestsPerSec) })
	row("events/s (unique, 2xx)", func(p *Phase) string { return num(p.EventsPerSec) })
	row("latency p50 µs", func(p *Phase) string { return strconv.FormatInt(p.Latency.P50, 10) })
	row("latency p90 µs", func(p *Phase) string { return strconv.FormatInt(p.Latency.P90, 10) })
	row("latency p99 µs", func(p *Phase) string { return strconv.FormatInt(p.Latency.P99, 10) })
	row("latency max µs", func(p *Phase) string { return strconv.FormatInt(p.Latency.Max, 10) })
	row("server CPU µs/request", func(p *Phase) string { return orDash(p.ServerCPUUsReq > 0, fmt.Sprintf("%.1f", p.ServerCPUUsReq)) })
	row("server CPU s (load)", func(p *Phase) string { return orDash(p.ServerCPUSec > 0, fmt.Sprintf("%.2f", p.ServerCPUSec)) })
	row("generator CPU µs/request", func(p *Phase) string { return fmt.Sprintf("%.1f", p.GeneratorUsReq) })
	row("errors / non-2xx", func(p *Phase) string { return fmt.Sprintf("%d / %d", p.Errors, sum(p.Non2xx)) })
	if r.Sidetrack.ServerCPUDrain > 0 {
		fmt.Fprintf(w, "sidetrack CPU s incl. drain: %.2f\n", r.Sidetrack.ServerCPUDrain)
	}
	if r.Sidetrack.PeakRSSBytes > 0 {
		fmt.Fprintf(w, "sidetrack peak RSS (VmHWM): %.1f MiB, RssAnon after load: %.1f MiB\n",
			float64(r.Sidetrack.PeakRSSBytes)/(1<<20), float64(r.Sidetrack.RssAnonBytes)/(1<<20))
	}
	if len(r.Sidetrack.Non2xx) > 0 {
		fmt.Fprintf(w, "sidetrack non-2xx by status: %v\n", r.Sidetrack.Non2xx)
	}
	if r.Sidetrack.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.Sidetrack.FirstError)
	}
	if r.Ceiling != nil {
		fmt.Fprintf(w, "\nratios to ceiling: req/s %.2f×, CPU/request %.2f×\n", r.ReqRatio, r.CPURatio)
	}
	fmt.Fprintf(w, "\nbudgets (docs/design.md §8):\n")
	for _, b := range r.Budgets {
		fmt.Fprintf(w, "  %-36s %-10s must %-20s target %-24s %s\n", b.Name, b.Value, b.Must, b.Target, b.Status)
	}
	a := r.Accounting
	fmt.Fprintf(w, "\naccounting:\n")
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

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// orDash shows "-" for values the run could not measure (-target).
func orDash(known bool, s string) string {
	if known {
		return s
	}
	return "-"
}

package main

import (
	"encoding/base64"
	"regexp"
	"sync"

	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"github.com/valyala/fasthttp"
	"io"
	"os"
	"slices"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the bench binary as the
// ceiling child (startCeilingChild re-executes os.Executable).
func TestMain(m *testing.M) {
	if kind := os.Getenv(childEnv); kind != "" {
		serveChild(kind)
		return
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole bench in-process, short and small: it builds
// and starts sidetrack, drives the mix scenario (one round of every
// throughput phase, then two open-loop points charted to an SVG), drains
// and accounts. It asserts delivery guarantees and the report's shape,
// never speed.
func TestSmoke(t *testing.T) {
	d := 2 * time.Second
	if testing.Short() {
		d = time.Second
	}
	svg := t.TempDir() + "/latency.svg"
	var logs bytes.Buffer
	rep, err := run(context.Background(), options{
		Duration: d, Connections: 4, Scenario: "mix", Baseline: true, Rounds: 1,
		DedupCap: 100000, DrainMax: 30 * time.Second,
		Generator: "auto", Nginx: "auto", Benthos: "off",
		Rates: []float64{50, 100}, LatencyDuration: d / 2, SVGPath: svg,
	}, &logs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Log(text.String())
	a := rep.Accounting
	if !a.Checked || a.Sent == 0 || a.UniqueEventsAcked == 0 || a.DuplicatesSent == 0 {
		t.Fatalf("no load was accounted: %+v", a)
	}
	if a.Lost != 0 || a.DoubleDelivered != 0 || !a.DrainComplete {
		t.Fatalf("lost %d, double-delivered %d, drain complete %v", a.Lost, a.DoubleDelivered, a.DrainComplete)
	}
	if rep.Failed() {
		t.Fatal("report says failed")
	}
	if rep.Ceiling == nil || rep.Ceiling.Requests == 0 || rep.ReqRatio <= 0 {
		t.Fatalf("no baseline: %+v", rep.Ceiling)
	}
	if rep.phase(phOrigin) == nil {
		t.Error("no origin baseline phase")
	}
	if findNginx("auto") != "" && (rep.phase(phNginx) == nil || rep.PassReqRatio <= 0) {
		t.Errorf("nginx is installed but the report has no nginx anchor: %v", rep.Notes)
	}

	// Open loop: both points ran at their rate and recorded latencies.
	if len(rep.Latency) != 2 {
		t.Fatalf("latency points: %+v", rep.Latency)
	}
	for _, p := range rep.Latency {
		if p.Sent == 0 || p.Scheduled < p.Sent || p.Latency.P50 <= 0 || p.Latency.Max < p.Latency.P99 {
			t.Errorf("open-loop point %+v", p)
		}
	}
	if rep.Latency[1].Scheduled <= rep.Latency[0].Scheduled {
		t.Errorf("twice the rate scheduled no more requests: %d vs %d", rep.Latency[1].Scheduled, rep.Latency[0].Scheduled)
	}
	chart, err := os.ReadFile(svg)
	if err != nil {
		t.Fatalf("no chart: %v", err)
	}
	checkSVG(t, chart, len(latencySeries))
	for _, b := range rep.Budgets {
		if b.Status == "" {
			t.Errorf("budget %q has no verdict", b.Name)
		}
	}

	path := t.TempDir() + "/report.json"
	if err := writeJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	for _, k := range []string{"scenario", "sidetrack", "ceiling", "accounting", "budgets", "req_per_s_ratio"} {
		if _, ok := got[k]; !ok {
			t.Errorf("report JSON lacks %q", k)
		}
	}
	acc, _ := got["accounting"].(map[string]any)
	for _, k := range []string{"lost", "double_delivered", "delivered_distinct", "unique_events_acked"} {
		if _, ok := acc[k]; !ok {
			t.Errorf("accounting lacks %q", k)
		}
	}
	st, _ := got["sidetrack"].(map[string]any)
	for _, k := range []string{"requests_per_s", "latency_us", "server_cpu_us_per_request", "peak_rss_bytes"} {
		if _, ok := st[k]; !ok {
			t.Errorf("sidetrack phase lacks %q", k)
		}
	}
}

// TestWorkloadScenarios checks each scenario's request mix on the
// generator alone: unique ids are unique, duplicates repeat an earlier
// request byte for byte, pass-through only in passmix.
func TestWorkloadScenarios(t *testing.T) {
	root, err := moduleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scenario           string
		ga4, collect, pass bool
		dups               bool
	}{
		{"collect", false, true, false, false},
		{"ga4", true, false, false, false},
		{"mix", true, true, false, true},
		{"passmix", true, true, true, true},
		{"pass", false, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			wl, err := newWorkload(root, tt.scenario, "t")
			if err != nil {
				t.Fatal(err)
			}
			ws := &workerState{w: 1, rng: newRNG(1)}
			seen := map[string]bool{}
			kinds := map[int]int{}
			dups := 0
			for range 2000 {
				s := wl.next(ws)
				kinds[s.kind]++
				if s.dup {
					dups++
					if s.id != ws.last.id || !bytes.Equal(s.uri, ws.last.uri) || !bytes.Equal(s.body, ws.last.body) {
						t.Fatal("duplicate is not an exact copy of the last request")
					}
					continue
				}
				if s.kind == kindPass {
					continue
				}
				if seen[s.id] {
					t.Fatalf("id %s sent twice as unique", s.id)
				}
				seen[s.id] = true
				if !bytes.Contains(append(append([]byte{}, s.uri...), s.body...), []byte(s.id)) {
					t.Fatalf("request does not carry its id %s", s.id)
				}
				ws.remember(s)
			}
			if tt.scenario == "segment" || tt.scenario == "forms" {
				return // kinds of their own, checked in TestWorkloadSegmentForms
			}
			if (kinds[kindGA4] > 0) != tt.ga4 || (kinds[kindCollect] > 0) != tt.collect || (kinds[kindPass] > 0) != tt.pass || (dups > 0) != tt.dups {
				t.Errorf("kinds %v dups %d, want ga4 %v collect %v pass %v dups %v", kinds, dups, tt.ga4, tt.collect, tt.pass, tt.dups)
			}
		})
	}
	if _, err := newWorkload(root, "nope", "t"); err == nil {
		t.Error("unknown scenario accepted")
	}
}

// checkSVG parses the chart as XML and counts its series and axes.
func checkSVG(t *testing.T, b []byte, series int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	elems := map[string]int{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			elems[se.Name.Local]++
		}
	}
	if elems["svg"] != 1 || elems["polyline"] != series || elems["circle"] == 0 {
		t.Errorf("chart elements %v, want one svg and %d polylines with points", elems, series)
	}
	for _, want := range []string{"offered rate (requests/s)", "latency (log scale)", "p99.9", "§8 p99 budget"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

// TestWorkloadSegmentForms checks the segment and forms requests: every
// event id of a request is in it, batches carry several, forms post to the
// form route with the bench id field.
func TestWorkloadSegmentForms(t *testing.T) {
	root, err := moduleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scenario string
		paths    []string
		batches  bool
		dups     bool
	}{
		{"segment", []string{"/v1/t", "/v1/p", "/v1/batch"}, true, true},
		{"forms", []string{formPath}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			wl, err := newWorkload(root, tt.scenario, "t")
			if err != nil {
				t.Fatal(err)
			}
			ws := &workerState{w: 1, rng: newRNG(1)}
			paths := map[string]int{}
			batches, dups := 0, 0
			seen := map[string]bool{}
			for range 1000 {
				s := wl.next(ws)
				paths[string(s.uri)]++
				if s.dup {
					dups++
					continue
				}
				if s.events > 1 {
					batches++
					if s.auth == "" {
						t.Error("server SDK batch without a write key")
					}
				}
				for _, id := range s.eventIDs(nil) {
					if seen[id] || !bytes.Contains(s.body, []byte(id)) {
						t.Fatalf("id %s reused or not in %s", id, s.body)
					}
					seen[id] = true
				}
				var v map[string]any
				if s.ctype != "application/x-www-form-urlencoded" && json.Unmarshal(s.body, &v) != nil {
					t.Fatalf("not JSON: %s", s.body)
				}
				ws.remember(s)
			}
			for _, p := range tt.paths {
				if paths[p] == 0 {
					t.Errorf("no request to %s: %v", p, paths)
				}
			}
			if (batches > 0) != tt.batches || (dups > 0) != tt.dups {
				t.Errorf("batches %d dups %d", batches, dups)
			}
		})
	}
}

// TestLatencyPlan: explicit rates win, then -rate, then the sweep
// fractions, else half peak and peak.
func TestLatencyPlan(t *testing.T) {
	fr := []float64{0.25, 1}
	tests := []struct {
		name string
		o    options
		want []latencyTarget
	}{
		{"default", options{LatencyDuration: time.Second, Fractions: fr}, []latencyTarget{{0.5, 500}, {1, 1000}}},
		{"sweep", options{LatencyDuration: time.Second, Fractions: fr, Sweep: true}, []latencyTarget{{0.25, 250}, {1, 1000}}},
		{"rate", options{LatencyDuration: time.Second, Rate: 42, Sweep: true}, []latencyTarget{{0, 42}}},
		{"rates", options{LatencyDuration: time.Second, Rate: 42, Rates: []float64{10, 20}}, []latencyTarget{{0, 10}, {0, 20}}},
		{"off", options{Rate: 42}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := latencyPlan(tt.o, 1000); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSummarize: medians per figure, spread from the extremes, memory the
// largest reading.
func TestSummarize(t *testing.T) {
	rounds := []Phase{
		{RequestsPerSec: 100, ServerCPUUsReq: 9, Latency: Latency{P99: 30}, RssAnonBytes: 5},
		{RequestsPerSec: 300, ServerCPUUsReq: 7, Latency: Latency{P99: 10}, RssAnonBytes: 9},
		{RequestsPerSec: 200, ServerCPUUsReq: 8, Latency: Latency{P99: 20}, RssAnonBytes: 7},
	}
	s := summarize("x", "", rounds)
	if s.Median.RequestsPerSec != 200 || s.Median.ServerCPUUsReq != 8 || s.Median.Latency.P99 != 20 || s.Median.RssAnonBytes != 9 {
		t.Errorf("median %+v", s.Median)
	}
	if s.ReqPerSecMin != 100 || s.ReqPerSecMax != 300 || s.CPUUsReqMin != 7 || s.CPUUsReqMax != 9 {
		t.Errorf("spread %+v", s)
	}
	if got := summarize("x", "", rounds[:2]).Median.RequestsPerSec; got != 200 {
		t.Errorf("even count median %v, want 200", got)
	}
}

// TestLatencySVG draws a chart from a synthetic sweep.
func TestLatencySVG(t *testing.T) {
	rep := &Report{Scenario: "mix", PeakRequestsPerSec: 1000, LatencyDuration: "1s"}
	for i, f := range []float64{0.5, 1, 1.2} {
		rep.Latency = append(rep.Latency, LatencyPoint{Fraction: f, OfferedRate: f * 1000,
			Latency: Latency{P50: int64(100 * (i + 1)), P90: 400, P99: 900 * int64(i+1), P999: 4000, Max: 90000}})
	}
	checkSVG(t, latencySVG(rep), len(latencySeries))
}

// idServer is a loopback server answering 204 that records every bench id
// it sees in a request line or body, as a destination would record
// deliveries: the generators' acknowledged ids must be a subset.
type idServer struct {
	mu   sync.Mutex
	seen map[string]int
	srv  *server
}

var benchID = regexp.MustCompile(`bzz-[A-Za-z0-9-]+`)

func startIDServer(t *testing.T) *idServer {
	t.Helper()
	s := &idServer{seen: map[string]int{}}
	srv, err := startServer(func(ctx *fasthttp.RequestCtx) {
		s.mu.Lock()
		for _, id := range benchID.FindAll(append(append([]byte{}, ctx.RequestURI()...), ctx.PostBody()...), -1) {
			s.seen[string(id)]++
		}
		s.mu.Unlock()
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	s.srv = srv
	return s
}

// TestGeneratorsAccounting drives a recording server with each generator
// (wrk only when installed) and checks the ids they call acknowledged: all
// reached the server, ids of batches included, and what reached the server
// without being acknowledged is at most the requests in flight at the end.
func TestGeneratorsAccounting(t *testing.T) {
	root, err := moduleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	gens := []generator{fasthttpGen{}}
	if w, _ := newWrkGen(false); w != nil {
		gens = append(gens, w)
	}
	const conns = 4
	scenarios := []string{"segment", "mix"} // segment: batches and duplicates
	if testing.Short() {
		scenarios = scenarios[:1] // the smoke test runs mix
	}
	for _, g := range gens {
		for _, sc := range scenarios {
			t.Run(g.name()+"/"+sc, func(t *testing.T) {
				wl, err := newWorkload(root, sc, "zz")
				if err != nil {
					t.Fatal(err)
				}
				is := startIDServer(t)
				res, _, err := g.run(context.Background(), is.srv.URL(), wl, load{conns: conns, d: time.Second, tag: "t", keepIDs: true})
				if err != nil {
					t.Fatal(err)
				}
				acked := map[string]bool{}
				for _, ids := range res.Acked {
					for _, id := range ids {
						if acked[id] {
							t.Fatalf("id %s acknowledged twice", id)
						}
						acked[id] = true
					}
				}
				if len(acked) == 0 || int64(len(acked)) != res.EventsOK || res.DupsSent == 0 || res.Partial != "" {
					t.Fatalf("acked %d, events %d, dups %d, partial %q", len(acked), res.EventsOK, res.DupsSent, res.Partial)
				}
				is.mu.Lock()
				defer is.mu.Unlock()
				for id := range acked {
					if is.seen[id] == 0 {
						t.Fatalf("acknowledged id %s never reached the server", id)
					}
				}
				// In flight at the end: at most one request per connection, a
				// Segment batch carrying three events.
				if extra := len(is.seen) - len(acked); extra > conns*3 {
					t.Errorf("%d ids reached the server without being acknowledged", extra)
				}
			})
		}
	}
}

// TestSegAuth: the constant header is the write key as the Basic user.
func TestSegAuth(t *testing.T) {
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte(segWriteKey+":")); segAuth != want {
		t.Errorf("segAuth %q, want %q", segAuth, want)
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Request kinds of a scenario.
const (
	kindGA4 = iota
	kindCollect
	kindPass
	kindSegment
	kindForm
)

// ga4Hit is one hit shape from proxy/testdata/ga4/gtag.ndjson with its
// ids removed: the generator adds a unique ep.event_id (and a unique
// ep.transaction_id for purchases, whose dedup key is the transaction).
type ga4Hit struct {
	method string
	uri    string
	hasTx  bool
}

// workload makes the requests of a scenario.
type workload struct {
	scenario string
	runID    string
	ga4      []ga4Hit
	// collect body around its event_id, and where it is posted.
	collectHead, collectTail []byte
	collectPath              string
	passPaths                []string
}

// validScenarios lists what -scenario accepts. "pass" (only pass-through
// pages) is also what the nginx anchor and the origin baseline serve.
var validScenarios = []string{"collect", "ga4", "mix", "passmix", "segment", "forms", "pass"}

// newWorkload loads the GA4 shapes from the module's testdata.
func newWorkload(root, scenario, runID string) (*workload, error) {
	ok := false
	for _, s := range validScenarios {
		ok = ok || s == scenario
	}
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q (want one of %s)", scenario, strings.Join(validScenarios, ", "))
	}
	w := &workload{scenario: scenario, runID: runID, collectPath: "/collect",
		passPaths: []string{"/", "/shop/spring-sale", "/products/linen-shirt", "/cart", "/assets/shop.css"}}
	head, tail, _ := strings.Cut(collectBody, "{{ID}}")
	w.collectHead, w.collectTail = []byte(head), []byte(tail)
	hits, err := loadGA4(filepath.Join(root, "proxy", "testdata", "ga4", "gtag.ndjson"))
	if err != nil {
		return nil, err
	}
	w.ga4 = hits
	return w, nil
}

// loadGA4 reads the captured gtag hits that carry one event each (no
// body) and whose consent is not denied (gcs=G100), so each request is
// exactly one routed event.
func loadGA4(path string) ([]ga4Hit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hits []ga4Hit
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Method    string            `json:"method"`
			URL       string            `json:"url"`
			Query     map[string]string `json:"query"`
			BodyBytes int               `json:"body_bytes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if rec.BodyBytes != 0 || rec.Query["gcs"] == "G100" || rec.Query["en"] == "" {
			continue
		}
		p, q, _ := strings.Cut(rec.URL, "?")
		var keep []string
		h := ga4Hit{method: rec.Method}
		for _, kv := range strings.Split(q, "&") {
			k, _, _ := strings.Cut(kv, "=")
			switch k {
			case "ep.event_id":
				continue
			case "ep.transaction_id":
				h.hasTx = true
				continue
			}
			keep = append(keep, kv)
		}
		h.uri = p + "?" + strings.Join(keep, "&")
		hits = append(hits, h)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(hits) == 0 {
		return nil, fmt.Errorf("%s: no usable GA4 hits", path)
	}
	return hits, nil
}

// collectBody is a ~1 KB /collect event; {{ID}} becomes a unique event_id.
// No transaction_id: orders are deduplicated by transaction, which would
// merge the bench's events.
const collectBody = `{"name":"product_added","event_id":"{{ID}}","url":"https://shop.example/products/linen-shirt?utm_source=newsletter&utm_medium=email&utm_campaign=spring",` +
	`"referrer":"https://shop.example/shop/spring-sale","title":"Linen shirt - Example Shop","value":79.98,"currency":"EUR",` +
	`"items":[{"id":"SKU-1001","name":"Linen shirt","brand":"Northwind","category":"Apparel","variant":"blue / M","price":39.99,"quantity":2,"coupon":"SPRING10","discount":4.00},` +
	`{"id":"SKU-2040","name":"Canvas tote","brand":"Northwind","category":"Bags","price":19.98,"quantity":1}],` +
	`"user_id":"cust-77812","consent":{"analytics":"granted","ads":"granted","ad_user_data":"granted","ad_personalization":"granted"},` +
	`"properties":{"list":"spring-sale","position":3,"cart_size":3,"logged_in":true,"experiment":"checkout-b","page_type":"product","ab_bucket":"treatment-2","stock":"in_stock","shipping_estimate":"2-3 days","recommendation_source":"also-bought"},` +
	`"user":{"email":"jane.doe@example.com","phone":"+49 30 1234567","first_name":"Jane","last_name":"Doe","city":"Berlin","zip":"10115","country":"DE"}}`

// spec is one request to send.
type spec struct {
	kind   int
	dup    bool
	method string
	uri    []byte // path and query
	body   []byte
	ctype  string
	auth   string // Authorization header, "" for none
	id     string // the event id (batches: the prefix of their ids), "" for pass-through
	events int    // events the request carries (batches: more than one)
}

// eventIDs appends the ids of the events s carries: its id, or for a
// batch id-0 … id-(n-1).
func (s *spec) eventIDs(dst []string) []string {
	if s.events <= 1 {
		return append(dst, s.id)
	}
	for i := range s.events {
		dst = append(dst, s.id+"-"+strconv.Itoa(i))
	}
	return dst
}

// workerState is one connection's generator state; it is used by one
// goroutine only.
type workerState struct {
	w    int
	tag  string // phase tag in ids, so phases never share an id
	n    int64
	rng  *rand.Rand
	last spec // last unique event request, resent as an exact duplicate
	cur  spec
}

// next fills ws.cur with the next request of the scenario.
func (wl *workload) next(ws *workerState) *spec {
	s := &ws.cur
	if wl.scenario == "pass" {
		wl.pass(ws, s)
		return s
	}
	r := ws.rng.IntN(100)
	if wl.scenario == "passmix" {
		if r < 30 {
			wl.pass(ws, s)
			return s
		}
		r = ws.rng.IntN(100)
	}
	if (wl.scenario == "mix" || wl.scenario == "passmix" || wl.scenario == "segment") && r < 10 && ws.last.id != "" {
		s.kind, s.dup, s.method, s.ctype, s.auth, s.id, s.events = ws.last.kind, true, ws.last.method, ws.last.ctype, ws.last.auth, ws.last.id, ws.last.events
		s.uri = append(s.uri[:0], ws.last.uri...)
		s.body = append(s.body[:0], ws.last.body...)
		return s
	}
	kind := kindCollect
	switch wl.scenario {
	case "ga4":
		kind = kindGA4
	case "segment":
		kind = kindSegment
	case "forms":
		kind = kindForm
	case "mix", "passmix":
		if ws.rng.IntN(100) < 60 {
			kind = kindGA4
		}
	}
	ws.n++
	id := "b" + wl.runID + "-" + ws.tag + strconv.Itoa(ws.w) + "-" + strconv.FormatInt(ws.n, 10)
	s.kind, s.dup, s.id, s.events, s.auth = kind, false, id, 1, ""
	switch kind {
	case kindGA4:
		h := wl.ga4[ws.rng.IntN(len(wl.ga4))]
		s.method, s.ctype = h.method, "text/plain;charset=UTF-8"
		s.uri = append(append(append(s.uri[:0], h.uri...), "&ep.event_id="...), id...)
		if h.hasTx {
			s.uri = append(append(s.uri, "&ep.transaction_id=T"...), id...)
		}
		s.body = s.body[:0]
	case kindSegment:
		wl.segment(ws, s)
	case kindForm:
		s.method, s.ctype = "POST", "application/x-www-form-urlencoded"
		s.uri = append(s.uri[:0], formPath...)
		s.body = append(append(append(s.body[:0], formHead...), id...), formTail...)
	default:
		s.method, s.ctype = "POST", "application/json"
		s.uri = append(s.uri[:0], wl.collectPath...)
		s.body = append(append(append(s.body[:0], wl.collectHead...), id...), wl.collectTail...)
	}
	return s
}

// pass fills s with a pass-through page request.
func (wl *workload) pass(ws *workerState, s *spec) {
	*s = spec{kind: kindPass, method: "GET", uri: append(s.uri[:0], wl.passPaths[ws.rng.IntN(len(wl.passPaths))]...), body: s.body[:0]}
}

// newRNG is a worker's deterministic random source.
func newRNG(w int) *rand.Rand { return rand.New(rand.NewPCG(uint64(w), 0x5eed)) }

// remember keeps s as the request a later duplicate resends.
func (ws *workerState) remember(s *spec) {
	ws.last.kind, ws.last.method, ws.last.ctype, ws.last.auth, ws.last.id, ws.last.events = s.kind, s.method, s.ctype, s.auth, s.id, s.events
	ws.last.uri = append(ws.last.uri[:0], s.uri...)
	ws.last.body = append(ws.last.body[:0], s.body...)
}

// loadResult is what one load phase measured.
type loadResult struct {
	Elapsed    time.Duration
	Sent       int64
	OK         int64 // 2xx answers
	Non2xx     map[int]int64
	Errors     int64
	FirstError string
	DupsSent   int64
	PassSent   int64
	EventsOK   int64 // unique events in requests answered 2xx
	Hist       *hdrhistogram.Histogram
	Acked      [][]string // per worker, unique event ids answered 2xx
	// Open loop only: requests scheduled before the end that were never
	// sent because their lane was still busy (their latency is recorded as
	// at least end − scheduled time), and how late sends left compared
	// with their schedule (the generator's own lag, µs).
	Scheduled int64
	Missed    int64
	Lag       *hdrhistogram.Histogram
	// Partial says what this result cannot tell (wrk: which requests were
	// answered); "" when it is complete.
	Partial string
	// Lat, when set, replaces the percentiles of Hist (wrk reports its own).
	Lat *Latency
}

const userAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"

// newHist records latencies in microseconds, 1 µs to 60 s, 3 digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// load says how to drive one phase.
type load struct {
	conns   int
	d       time.Duration
	rate    float64 // requests/s over all connections; 0 = closed loop
	tag     string  // phase tag in event ids
	keepIDs bool
}

// drive runs one phase against base: closed loop (l.rate 0: conns
// goroutines, each with one request in flight on its own connection; a
// slow answer delays the next request, so percentiles understate what an
// open-loop client would see: coordinated omission), or open loop at
// l.rate requests/s (each connection a lane with its own fixed schedule;
// latency runs from the scheduled send time, so a stall shows in full).
func drive(ctx context.Context, base string, wl *workload, l load) (*loadResult, error) {
	addr := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
	addr = strings.TrimSuffix(addr, "/")
	if strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("-target must be http://")
	}
	hc := &fasthttp.HostClient{
		Addr:                addr,
		MaxConns:            l.conns,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
		MaxIdleConnDuration: time.Minute,
		MaxResponseBodySize: 16 << 20,
	}
	// Closed loop stops at the deadline; open-loop lanes stop by their
	// schedule (the deadline only guards against a hung server).
	limit := l.d
	if l.rate > 0 {
		limit += 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	results := make([]*loadResult, l.conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range l.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = worker(ctx, hc, addr, wl, i, l, start)
		}()
	}
	wg.Wait()
	total := &loadResult{Elapsed: time.Since(start), Non2xx: map[int]int64{}, Hist: newHist(), Lag: newHist()}
	if l.rate > 0 {
		total.Elapsed = l.d
	}
	for _, r := range results {
		total.Sent += r.Sent
		total.OK += r.OK
		total.Errors += r.Errors
		if total.FirstError == "" {
			total.FirstError = r.FirstError
		}
		total.DupsSent += r.DupsSent
		total.PassSent += r.PassSent
		total.EventsOK += r.EventsOK
		total.Scheduled += r.Scheduled
		total.Missed += r.Missed
		for k, v := range r.Non2xx {
			total.Non2xx[k] += v
		}
		total.Hist.Merge(r.Hist)
		total.Lag.Merge(r.Lag)
		total.Acked = append(total.Acked, r.Acked...)
	}
	return total, nil
}

// worker is one connection: closed loop, or an open-loop lane when l.rate
// is set.
func worker(ctx context.Context, hc *fasthttp.HostClient, addr string, wl *workload, w int, l load, start time.Time) *loadResult {
	res := &loadResult{Non2xx: map[int]int64{}, Hist: newHist(), Lag: newHist()}
	ws := &workerState{w: w, tag: l.tag, rng: newRNG(w)}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	var ids []string
	url := []byte("http://" + addr)
	prefix := len(url)

	var interval time.Duration
	var due time.Time
	end := start.Add(l.d)
	if l.rate > 0 {
		interval = time.Duration(float64(l.conns) / l.rate * float64(time.Second))
		due = start.Add(interval * time.Duration(w) / time.Duration(l.conns))
	}
	for ctx.Err() == nil {
		if l.rate > 0 {
			if !due.Before(end) || time.Now().After(end) {
				break
			}
			if wait := time.Until(due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
				case <-t.C:
				}
				if ctx.Err() != nil {
					break
				}
			}
			res.Scheduled++
			_ = res.Lag.RecordValue(max(time.Since(due).Microseconds(), 1))
		}
		s := wl.next(ws)
		req.Reset()
		req.Header.SetMethod(s.method)
		url = append(url[:prefix], s.uri...)
		req.SetRequestURIBytes(url)
		req.Header.Set("User-Agent", userAgent)
		if s.auth != "" {
			req.Header.Set("Authorization", s.auth)
		}
		if s.kind == kindForm {
			req.Header.Set("Referer", "https://shop.example"+formPath)
		}
		if len(s.body) > 0 || s.method == "POST" {
			req.Header.SetContentType(s.ctype)
			req.SetBody(s.body)
		}
		t0 := time.Now()
		if l.rate > 0 {
			t0 = due
			due = due.Add(interval)
		}
		err := hc.Do(req, resp)
		_ = res.Hist.RecordValue(max(time.Since(t0).Microseconds(), 1))
		res.Sent++
		if s.dup {
			res.DupsSent++
		}
		if s.kind == kindPass {
			res.PassSent++
		}
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			continue
		}
		code := resp.StatusCode()
		if code < 200 || code > 299 {
			res.Non2xx[code]++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("%d %s %s: %s", code, s.method, bytes.TrimSpace(s.uri[:min(len(s.uri), 60)]), tail(resp.Body()))
			}
			continue
		}
		res.OK++
		if s.kind != kindPass && !s.dup {
			res.EventsOK += int64(max(s.events, 1))
			ws.remember(s)
			if l.keepIDs {
				ids = s.eventIDs(ids)
			}
		}
	}
	if l.rate > 0 {
		// Requests whose time came before the end but which the lane never
		// sent: the server (or the lane's connection) was still busy. Their
		// latency is at least end − due; leaving them out would be the very
		// coordinated omission the open loop exists to avoid.
		for ; due.Before(end); due = due.Add(interval) {
			res.Scheduled++
			res.Missed++
			_ = res.Hist.RecordValue(max(end.Sub(due).Microseconds(), 1))
		}
	}
	res.Acked = [][]string{ids}
	return res
}

package forward

// The reliability set of the spool (docs/reliability.md): destinations
// under network faults injected by an in-process toxiproxy, the retry
// table answer by answer, Retry-After forms and events that go stale in a
// long outage. Each test checks the delivery invariant of DESIGN §5: per
// destination, accepted = delivered + dead-lettered + still spooled, with
// duplicates counted. RELIABILITY_LONG=1 makes the rounds larger.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/sidetrack/sidetrack/enrich"
)

// reliabilityLong reports whether the long (soak) variants run.
func reliabilityLong() bool { return os.Getenv("RELIABILITY_LONG") == "1" }

// toxicProxy starts an in-process toxiproxy in front of target.
func toxicProxy(t *testing.T, target string) *toxiproxy.Proxy {
	t.Helper()
	// Some toxics log through zerolog's global logger at trace level.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "dest", "127.0.0.1:0", target)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// addToxic installs a toxic given as toxiproxy's JSON.
func addToxic(t *testing.T, p *toxiproxy.Proxy, js string) {
	t.Helper()
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("toxic %s: %v", js, err)
	}
}

// invariant checks accepted = delivered + dead-lettered + spooled for
// destination name, logs the counts and returns the duplicates (extra
// copies the receiver saw), which at-least-once bounds by the attempts.
func invariant(t *testing.T, s *Spool, rcv *receiver, name string, accepted []string) int {
	t.Helper()
	rcv.mu.Lock()
	delivered, dups := 0, 0
	for _, id := range accepted {
		if n := rcv.got[id]; n > 0 {
			delivered++
			dups += n - 1
		}
	}
	rcv.mu.Unlock()
	dlq := dlqCount(t, s, name)
	spooled := int(s.byName[name].backlogEvents.Load())
	t.Logf("accepted %d = delivered %d + dead-lettered %d + spooled %d; duplicates %d; requests %d",
		len(accepted), delivered, dlq, spooled, dups, rcv.callCount())
	if delivered+dlq+spooled != len(accepted) {
		t.Errorf("invariant broken: %d accepted, %d delivered + %d dead-lettered + %d spooled",
			len(accepted), delivered, dlq, spooled)
	}
	if dups > rcv.callCount()*len(accepted) {
		t.Errorf("%d duplicates from %d requests", dups, rcv.callCount())
	}
	return dups
}

// reliableSpool opens a spool over dests with fast retries and probes on
// the wall clock (clk nil) or a fake one.
func reliableSpool(t *testing.T, yaml []string, clk Clock, dests ...Destination) (*Spool, *enrich.EventPool) {
	t.Helper()
	cfg := immediate(testConfig(t, t.TempDir(), "50ms", yaml, ""))
	pool := &enrich.EventPool{}
	opts := []Option{WithRandom(zeroJitter{}), WithBackoff(time.Millisecond), WithProbeInterval(5 * time.Millisecond)}
	if clk != nil {
		opts = append(opts, WithClock(clk))
	}
	s, err := Open(cfg, dests, testLogger(t), pool, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, pool
}

// TestReliabilityNetworkFaults sends events through toxiproxy while a
// fault is on, lifts it, and checks that every accepted event arrives
// and that new events flow again.
func TestReliabilityNetworkFaults(t *testing.T) {
	perPhase := 60
	if reliabilityLong() {
		perPhase = 600
	}
	type probe struct {
		s   *Spool
		rcv *receiver
	}
	failed := func(n int) func(p probe) bool {
		return func(p probe) bool { return p.s.byName["hook"].m.retries.Get() >= uint64(n) }
	}
	served := func(n int) func(p probe) bool {
		return func(p probe) bool { return p.rcv.count() >= n }
	}
	cases := []struct {
		name string
		// on starts the fault; off (optional) ends it before the toxics
		// are removed.
		on  func(t *testing.T, p *toxiproxy.Proxy)
		off func(t *testing.T, p *toxiproxy.Proxy)
		// until holds the fault until it has bitten: so many failed
		// attempts, or so many events delivered through a slow link.
		until func(p probe) bool
		// dest is the destination's batch/timeout YAML.
		dest string
		// dupsOK: an answer lost after the receiver took the batch makes
		// the retry a duplicate (at-least-once); elsewhere none is allowed.
		dupsOK bool
		// fresh: one connection per request, so a per-connection toxic
		// with toxicity < 1 hits some requests and spares others.
		fresh bool
	}{
		{name: "outage", until: failed(3), on: func(t *testing.T, p *toxiproxy.Proxy) { p.Stop() },
			off: func(t *testing.T, p *toxiproxy.Proxy) {
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "latency", until: served(40), on: func(t *testing.T, p *toxiproxy.Proxy) {
			addToxic(t, p, `{"type":"latency","attributes":{"latency":150,"jitter":50}}`)
		}},
		{name: "bandwidth-1KBps", until: served(4), dest: "batch: {max_events: 2}", on: func(t *testing.T, p *toxiproxy.Proxy) {
			addToxic(t, p, `{"type":"bandwidth","stream":"upstream","attributes":{"rate":1}}`)
		}},
		{name: "blackhole-timeout", until: failed(3), dest: "batch: {max_events: 20}, timeout: 300ms", dupsOK: true,
			on: func(t *testing.T, p *toxiproxy.Proxy) {
				addToxic(t, p, `{"type":"timeout","attributes":{"timeout":0}}`)
			}},
		{name: "reset-peer", until: failed(3), on: func(t *testing.T, p *toxiproxy.Proxy) {
			addToxic(t, p, `{"type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`)
		}},
		{name: "flapping-30pct-resets", fresh: true, until: func(p probe) bool { return failed(1)(p) && served(20)(p) },
			on: func(t *testing.T, p *toxiproxy.Proxy) {
				addToxic(t, p, `{"type":"reset_peer","stream":"upstream","toxicity":0.3,"attributes":{"timeout":0}}`)
			}},
		{name: "truncated-answers", until: failed(3), dupsOK: true, on: func(t *testing.T, p *toxiproxy.Proxy) {
			addToxic(t, p, `{"type":"limit_data","attributes":{"bytes":20}}`)
		}},
		{name: "sliced", until: served(40), on: func(t *testing.T, p *toxiproxy.Proxy) {
			addToxic(t, p, `{"type":"slicer","attributes":{"average_size":7,"size_variation":3,"delay":100}}`)
			addToxic(t, p, `{"type":"slicer","stream":"upstream","attributes":{"average_size":7,"size_variation":3,"delay":100}}`)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newReceiver(t)
			p := toxicProxy(t, rcv.srv.Listener.Addr().String())
			d := newHTTPDest("hook", "http://"+p.Listen+"/", time.Now)
			d.c.Transport.(*http.Transport).DisableKeepAlives = tc.fresh
			yaml := "retry: {max_attempts: 1000000, max_backoff: 20ms}, "
			if tc.dest != "" {
				yaml += tc.dest
			} else {
				yaml += "batch: {max_events: 10}"
			}
			s, pool := reliableSpool(t, []string{dest("hook", yaml)}, nil, d)
			tc.on(t, p)
			var accepted []string
			for i := 0; i < perPhase; i += 10 {
				batch := ids(fmt.Sprintf("%s-%03d-", tc.name, i), 10)
				appendIDs(t, s, pool, batch...)
				accepted = append(accepted, batch...)
			}
			// A fault that hits only some connections may spare the first
			// ones: keep sending until it has bitten.
			waitFor(t, "the fault to bite", func() bool {
				if tc.until(probe{s, rcv}) {
					return true
				}
				if rcv.count() >= len(accepted) {
					more := ids(fmt.Sprintf("%s-more%03d-", tc.name, len(accepted)), 10)
					appendIDs(t, s, pool, more...)
					accepted = append(accepted, more...)
				}
				return false
			})
			underFault := rcv.count()
			if tc.off != nil {
				tc.off(t, p)
			}
			p.Toxics.ResetToxics(context.Background())
			d.c.CloseIdleConnections()
			after := ids(tc.name+"-after-", 10)
			appendIDs(t, s, pool, after...)
			accepted = append(accepted, after...)
			waitFor(t, "every accepted event delivered", func() bool { return rcv.count() == len(accepted) })
			closeSpool(t, s)
			t.Logf("%s: %d delivered under the fault, %d failed attempts", tc.name, underFault, s.byName["hook"].m.retries.Get())
			dups := invariant(t, s2(t, s.cfg), rcv, "hook", accepted)
			if dups > 0 && !tc.dupsOK {
				t.Errorf("%d duplicates where every answer was either complete or absent", dups)
			}
		})
	}
}

// TestReliabilityStatusMatrix answers each status code to the first
// request and 204 afterwards, and checks where the events end up.
func TestReliabilityStatusMatrix(t *testing.T) {
	const (
		delivered = "delivered" // retried, then delivered
		dlq       = "dead-lettered"
		split     = "split"  // 413: halves retried, a lone event dead-lettered
		paused    = "paused" // paused, probed, resumed
	)
	cases := []struct {
		code int
		want string
	}{
		{408, delivered}, {425, delivered}, {429, delivered},
		{500, delivered}, {502, delivered}, {503, delivered}, {504, delivered}, {507, delivered}, {599, delivered},
		{501, dlq}, {505, dlq},
		{400, dlq}, {404, dlq}, {405, dlq}, {409, dlq}, {410, dlq}, {418, dlq}, {422, dlq}, {451, dlq},
		{413, split},
		{401, paused}, {403, paused},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			rcv := newReceiver(t)
			var answered atomic.Int32
			rcv.setAnswer(func(_ int, ids []string, w http.ResponseWriter) bool {
				// 413 keeps refusing batches of more than 2; others fail once.
				if tc.code == 413 && len(ids) > 2 || tc.code != 413 && answered.Add(1) == 1 {
					w.WriteHeader(tc.code)
					return true
				}
				return false
			})
			d := newHTTPDest("hook", rcv.srv.URL, time.Now)
			gate := make(chan struct{})
			s, pool := reliableSpool(t, []string{dest("hook", "retry: {max_backoff: 10ms}, batch: {max_events: 8}")}, nil,
				&gatedDest{Destination: d, gate: gate})
			first := ids(fmt.Sprintf("m%d-", tc.code), 8)
			appendIDs(t, s, pool, first...)
			close(gate)
			switch tc.want {
			case dlq:
				waitFor(t, "the batch dead-lettered", func() bool { return dlqCount(t, s, "hook") == len(first) })
			case split:
				waitFor(t, "the halves delivered", func() bool { return rcv.count() == len(first) })
				if rcv.callCount() < 3 {
					t.Errorf("413: %d requests, want the batch split", rcv.callCount())
				}
			case paused:
				waitFor(t, "delivered after the probe", func() bool { return rcv.count() == len(first) })
			default:
				waitFor(t, "delivered after the retry", func() bool { return rcv.count() == len(first) })
				if s.byName["hook"].m.retries.Get() == 0 {
					t.Errorf("%d: delivered without a retry", tc.code)
				}
			}
			after := ids(fmt.Sprintf("m%d-after-", tc.code), 3)
			appendIDs(t, s, pool, after...)
			waitFor(t, "new events flow", func() bool { return rcv.times(after) })
			closeSpool(t, s)
			invariant(t, s2(t, s.cfg), rcv, "hook", append(first, after...))
		})
	}
}

// times reports whether every id in want was delivered.
func (r *receiver) times(want []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range want {
		if r.got[id] == 0 {
			return false
		}
	}
	return true
}

// TestReliabilityRetryAfterForms checks that each form of Retry-After
// schedules the next try where DESIGN §5 says: seconds, an HTTP-date,
// capped at retry.max_backoff, and ignored (plain backoff) when invalid.
func TestReliabilityRetryAfterForms(t *testing.T) {
	cases := []struct {
		name  string
		value func(now time.Time) string
		wait  time.Duration
	}{
		{"seconds", func(time.Time) string { return "7" }, 7 * time.Second},
		{"http-date", func(now time.Time) string { return now.Add(42 * time.Second).Format(http.TimeFormat) }, 42 * time.Second},
		{"capped", func(time.Time) string { return "86400" }, time.Minute},
		{"date-capped", func(now time.Time) string { return now.Add(48 * time.Hour).Format(http.TimeFormat) }, time.Minute},
		// Invalid or past values fall back to the backoff: 1ms base.
		{"garbage", func(time.Time) string { return "soon" }, time.Millisecond},
		{"negative", func(time.Time) string { return "-5" }, time.Millisecond},
		{"past-date", func(now time.Time) string { return now.Add(-time.Hour).Format(http.TimeFormat) }, time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			rcv := newReceiver(t)
			rcv.setAnswer(func(call int, _ []string, w http.ResponseWriter) bool {
				if call == 1 {
					w.Header().Set("Retry-After", tc.value(clk.Now()))
					w.WriteHeader(http.StatusServiceUnavailable)
					return true
				}
				return false
			})
			d := newHTTPDest("hook", rcv.srv.URL, clk.Now)
			s, pool := reliableSpool(t, []string{dest("hook", "retry: {max_backoff: 1m}")}, clk, d)
			t0 := clk.Now()
			appendIDs(t, s, pool, "ra1", "ra2")
			waitFor(t, fmt.Sprintf("a wait of %v", tc.wait), func() bool { return clk.hasWaiter(t0.Add(tc.wait)) })
			if rcv.callCount() != 1 {
				t.Fatalf("%d requests before the wait elapsed", rcv.callCount())
			}
			clk.Advance(tc.wait)
			waitFor(t, "delivered after the wait", func() bool { return rcv.count() == 2 })
			closeSpool(t, s)
			invariant(t, s2(t, s.cfg), rcv, "hook", []string{"ra1", "ra2"})
		})
	}
}

// TestReliabilityStaleAfterLongOutage keeps a destination down for longer
// than retry.max_age on a fake clock: the events it held are dead-lettered
// as max_age (not lost, not delivered late), and once it is back new
// events flow.
func TestReliabilityStaleAfterLongOutage(t *testing.T) {
	clk := newFakeClock()
	rcv := newReceiver(t)
	var down atomic.Bool
	down.Store(true)
	rcv.setAnswer(func(_ int, _ []string, w http.ResponseWriter) bool {
		if down.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return true
		}
		return false
	})
	d := newHTTPDest("hook", rcv.srv.URL, clk.Now)
	s, pool := reliableSpool(t, []string{dest("hook", "retry: {max_attempts: 1000000, max_age: 1h, max_backoff: 1m}")}, clk, d)
	stale := ids("stale-", 25)
	appendIDs(t, s, pool, stale...)
	waitFor(t, "a failed attempt", func() bool { return s.byName["hook"].m.retries.Get() > 0 })
	// An hour and a bit in one-minute steps: each backoff timer fires.
	for range 62 {
		clk.Advance(time.Minute)
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "stale events dead-lettered", func() bool { return dlqCount(t, s, "hook") == len(stale) })
	down.Store(false)
	fresh := ids("fresh-", 5)
	appendIDs(t, s, pool, fresh...)
	waitFor(t, "new events flow", func() bool { return rcv.times(fresh) })
	if rcv.count() != len(fresh) {
		t.Errorf("%d delivered, want only the %d fresh ones (stale ones go to the DLQ)", rcv.count(), len(fresh))
	}
	closeSpool(t, s)
	invariant(t, s2(t, s.cfg), rcv, "hook", append(stale, fresh...))
}

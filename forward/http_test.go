package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// httpDest is a minimal webhook-like adapter for these tests: it POSTs a
// JSON array and classifies the answer with forward/status, the retry
// table the real adapters use.
type httpDest struct {
	name string
	url  string
	c    *http.Client
	now  func() time.Time
}

func newHTTPDest(name, url string, now func() time.Time) *httpDest {
	return &httpDest{name: name, url: url, now: now, c: &http.Client{Transport: &http.Transport{}}}
}

func (d *httpDest) Name() string                  { return d.name }
func (d *httpDest) Limits() Limits                { return Limits{} }
func (d *httpDest) GroupKey(*enrich.Event) string { return "" }
func (d *httpDest) Prepare(*enrich.Event) error   { return nil }
func (d *httpDest) Close() error                  { d.c.CloseIdleConnections(); return nil }

func (d *httpDest) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	body := []byte{'['}
	for i, e := range batch {
		if i > 0 {
			body = append(body, ',')
		}
		body = e.AppendJSON(body)
	}
	body = append(body, ']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return nil, status.Permanent(err)
	}
	resp, err := d.c.Do(req)
	if err != nil {
		return nil, status.Network(err)
	}
	defer resp.Body.Close()
	ex, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return nil, status.FromHTTP(resp.StatusCode, resp.Header.Get("Retry-After"), d.now(), string(ex))
}

// receiver is a loopback HTTP destination recording event ids; answer
// decides the status for each request (nil = 204).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    map[string]int
	calls  int
	answer func(call int, ids []string, w http.ResponseWriter) bool // true = answered
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var evs []struct {
			ID string `json:"event_id"`
		}
		if err := json.NewDecoder(req.Body).Decode(&evs); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		ids := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.ID
		}
		r.mu.Lock()
		r.calls++
		call, answer := r.calls, r.answer
		r.mu.Unlock()
		if answer != nil && answer(call, ids, w) {
			return
		}
		r.mu.Lock()
		for _, id := range ids {
			r.got[id]++
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setAnswer(f func(call int, ids []string, w http.ResponseWriter) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = f
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *receiver) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// tcpProxy sits between an adapter and its receiver to fake network
// faults: pass, refuse (accept and close at once) or blackhole (accept,
// swallow, never answer). A small custom proxy, in-process; toxiproxy
// would do the same with more machinery.
type tcpProxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

const (
	proxyPass int32 = iota
	proxyRefuse
	proxyBlackhole
)

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) url() string { return "http://" + p.ln.Addr().String() + "/" }

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			switch p.mode.Load() {
			case proxyRefuse:
				return
			case proxyBlackhole:
				_, _ = io.Copy(io.Discard, c)
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			if !p.track(up) {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(up, c)
				close(done)
			}()
			_, _ = io.Copy(c, up)
			c.Close()
			<-done
		}()
	}
}

func (p *tcpProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// dropConns closes every connection (so keep-alive ones see the new mode).
func (p *tcpProxy) dropConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func openHTTP(t *testing.T, yaml []string, clk Clock, dests ...Destination) (*Spool, *enrich.EventPool) {
	cfg := immediate(testConfig(t, t.TempDir(), "50ms", yaml, ""))
	pool := &enrich.EventPool{}
	opts := []Option{WithRandom(zeroJitter{}), WithBackoff(time.Millisecond)}
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

func TestHTTPDestinationDownThenBack(t *testing.T) {
	rcv := newReceiver(t)
	px := newTCPProxy(t, rcv.srv.Listener.Addr().String())
	px.mode.Store(proxyRefuse)
	d := newHTTPDest("hook", px.url(), time.Now)
	s, pool := openHTTP(t, []string{dest("hook", "retry: {max_attempts: 1000000, max_backoff: 20ms}")}, nil, d)
	want := ids("dn", 300)
	for i := 0; i < len(want); i += 30 {
		appendIDs(t, s, pool, want[i:i+30]...)
	}
	waitFor(t, "failed attempts while down", func() bool { return s.byName["hook"].m.retries.Get() >= 3 })
	if rcv.count() != 0 {
		t.Fatal("delivered while down")
	}
	px.mode.Store(proxyPass)
	px.dropConns()
	waitFor(t, "every acked event delivered", func() bool { return rcv.count() == len(want) })
	closeSpool(t, s)
	if n := dlqCount(t, s2(t, s.cfg), "hook"); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

func TestHTTP401PausesAndProbeResumes(t *testing.T) {
	rcv := newReceiver(t)
	var ok atomic.Bool
	rcv.setAnswer(func(_ int, _ []string, w http.ResponseWriter) bool {
		if ok.Load() {
			return false
		}
		http.Error(w, `{"error":"invalid token"}`, http.StatusUnauthorized)
		return true
	})
	clk := newFakeClock()
	d := newHTTPDest("hook", rcv.srv.URL, clk.Now)
	s, pool := openHTTP(t, []string{dest("hook", "")}, clk, d)
	t0 := clk.Now()
	appendIDs(t, s, pool, ids("au", 10)...)
	waitFor(t, "paused", func() bool { return s.byName["hook"].paused.Load() })
	waitFor(t, "the probe timer", func() bool { return clk.hasWaiter(t0.Add(15 * time.Second)) })
	if n := rcv.callCount(); n != 1 {
		t.Fatalf("%d requests before the probe", n)
	}
	var paused bytes.Buffer
	s.Metrics().WritePrometheus(&paused)
	if !strings.Contains(paused.String(), `sidetrack_destination_paused{destination="hook"} 1`) {
		t.Errorf("paused gauge not 1:\n%s", paused.String())
	}
	ok.Store(true)
	clk.Advance(15 * time.Second)
	waitFor(t, "resumed and delivered", func() bool { return rcv.count() == 10 })
	closeSpool(t, s)
}

func TestHTTP413SplitsBatches(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(_ int, ids []string, w http.ResponseWriter) bool {
		if len(ids) > 3 || slices.Contains(ids, "sz-huge") {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return true
		}
		return false
	})
	d := newHTTPDest("hook", rcv.srv.URL, time.Now)
	cfg := []string{dest("hook", "batch: {max_events: 16}")}
	gate := make(chan struct{})
	s, pool := openHTTP(t, cfg, nil, &gatedDest{Destination: d, gate: gate})
	appendIDs(t, s, pool, append(ids("sz", 12), "sz-huge")...)
	close(gate)
	waitFor(t, "12 delivered", func() bool { return rcv.count() == 12 })
	waitFor(t, "sz-huge dead-lettered", func() bool { return dlqCount(t, s, "hook") == 1 })
	closeSpool(t, s)
}

// gatedDest holds Sends until gate is closed, so a test can append a
// whole batch before the first request.
type gatedDest struct {
	Destination
	gate chan struct{}
}

func (g *gatedDest) Send(ctx context.Context, b []*enrich.Event) ([]error, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Destination.Send(ctx, b)
}

func TestHTTP4xxDeadLettersThenReplayDelivers(t *testing.T) {
	rcv := newReceiver(t)
	var fixed atomic.Bool
	rcv.setAnswer(func(_ int, _ []string, w http.ResponseWriter) bool {
		if fixed.Load() {
			return false
		}
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"error":"schema mismatch"}`)
		return true
	})
	d := newHTTPDest("hook", rcv.srv.URL, time.Now)
	s, pool := openHTTP(t, []string{dest("hook", "")}, nil, d)
	appendIDs(t, s, pool, ids("4x", 8)...)
	waitFor(t, "8 dead letters", func() bool { return dlqCount(t, s, "hook") == 8 })
	var out bytes.Buffer
	if err := s.DLQShow("hook", 1, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"reason":"rejected"`) || !strings.Contains(out.String(), "schema mismatch") {
		t.Errorf("dead letter lacks reason or excerpt: %s", out.String())
	}
	fixed.Store(true)
	if n, err := s.DLQReplay("hook", 0); err != nil || n != 8 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	waitFor(t, "replayed events delivered", func() bool { return rcv.count() == 8 })
	closeSpool(t, s)
}

func TestHTTP429RetryAfterHeader(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(call int, _ []string, w http.ResponseWriter) bool {
		if call == 1 {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		return false
	})
	clk := newFakeClock()
	d := newHTTPDest("hook", rcv.srv.URL, clk.Now)
	s, pool := openHTTP(t, []string{dest("hook", "")}, clk, d)
	t0 := clk.Now()
	appendIDs(t, s, pool, "ra1", "ra2")
	waitFor(t, "a 7s wait", func() bool { return clk.hasWaiter(t0.Add(7 * time.Second)) })
	if rcv.callCount() != 1 {
		t.Fatalf("%d calls before Retry-After elapsed", rcv.callCount())
	}
	clk.Advance(7 * time.Second)
	waitFor(t, "delivered after the wait", func() bool { return rcv.count() == 2 })
	closeSpool(t, s)
}

func TestHTTPBlackholeDoesNotSlowAnother(t *testing.T) {
	holeRcv, fineRcv := newReceiver(t), newReceiver(t)
	px := newTCPProxy(t, holeRcv.srv.Listener.Addr().String())
	px.mode.Store(proxyBlackhole)
	hole := newHTTPDest("hole", px.url(), time.Now)
	fine := newHTTPDest("fine", fineRcv.srv.URL, time.Now)
	s, pool := openHTTP(t, []string{dest("hole", "timeout: 1h"), dest("fine", "")}, nil, hole, fine)
	const n = 400
	for i := 0; i < n; i += 40 {
		appendIDs(t, s, pool, ids(fmt.Sprintf("bh%03d-", i), 40)...)
	}
	waitFor(t, "fine to get every event", func() bool { return fineRcv.count() == n })
	if holeRcv.count() != 0 {
		t.Fatal("blackholed destination got events")
	}
	closeSoon(t, s)
	if got := s.byName["hole"].backlogEvents.Load(); got != n {
		t.Errorf("hole's backlog after close = %d, want %d kept for the next start", got, n)
	}
}

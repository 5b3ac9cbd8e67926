package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/config"
)

// scriptGuard bounds every wait in these tests; it is a failure guard,
// never an assertion about speed.
const scriptGuard = 10 * time.Second

const scriptPath = "/assets/t.js"

// scriptJS is a deterministic script big enough for compression to matter.
func scriptJS(version string) []byte {
	var b bytes.Buffer
	for i := range 600 {
		fmt.Fprintf(&b, "function tag_%s_%d(a){return a+%d;}\n", version, i, i*7)
	}
	return b.Bytes()
}

// scriptClock is the injected clock: time only moves when a test says so.
type scriptClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *scriptClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *scriptClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// scriptSeen is one request the fake upstream received.
type scriptSeen struct {
	method, path, rawQuery, host string
	query                        url.Values
	header                       http.Header
}

// scriptUpstream is a fake tag server on loopback. By default it serves
// body (gzip-encoded when asked), a Set-Cookie and other headers that must
// not reach shoppers; fail replaces that behaviour.
type scriptUpstream struct {
	srv *httptest.Server

	mu   sync.Mutex
	seen []scriptSeen
	body []byte
	fail http.HandlerFunc
	// gate, when set, holds every request until it is closed.
	gate chan struct{}
}

func newScriptUpstream(t testing.TB) *scriptUpstream {
	t.Helper()
	u := &scriptUpstream{body: scriptJS("v1")}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *scriptUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, scriptSeen{
		method: r.Method, path: r.URL.Path, rawQuery: r.URL.RawQuery, host: r.Host,
		query: r.URL.Query(), header: r.Header.Clone(),
	})
	body, fail, gate := u.body, u.fail, u.gate
	u.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		fail(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=UTF-8")
	h.Set("Set-Cookie", "NID=upstream-secret; Domain=.example; Path=/")
	h.Set("X-Upstream-Secret", "leak")
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cache-Control", "private, max-age=900")
	h.Set("Strict-Transport-Security", "max-age=31536000")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(body)
		zw.Close()
		return
	}
	w.Write(body)
}

func (u *scriptUpstream) set(f func(u *scriptUpstream)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(u)
}

func (u *scriptUpstream) requests() []scriptSeen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

func (u *scriptUpstream) count() int { return len(u.requests()) }

// scriptHarness is scriptRoutes behind a real fasthttp server on loopback,
// with an exact-path mux like the Server's tracking lookup.
type scriptHarness struct {
	t     testing.TB
	rs    *scriptRoutes
	m     *Metrics
	clock *scriptClock
	addr  string
	http  *http.Client
	logs  *observer.ObservedLogs
}

func scriptLimitsForTest() scriptLimits {
	lim := defaultScriptLimits()
	lim.maxBody = 64 << 10
	lim.fetchTimeout = 500 * time.Millisecond
	lim.dialTimeout = 500 * time.Millisecond
	return lim
}

func newScriptHarness(t testing.TB, scripts []config.Script, lim scriptLimits) *scriptHarness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	m := NewMetrics()
	clock := &scriptClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	rs, err := newScriptRoutesLimits(&config.Config{Scripts: scripts}, zap.New(core), m, clock.now, lim)
	if err != nil {
		t.Fatalf("newScriptRoutes: %v", err)
	}
	mux := map[string]fasthttp.RequestHandler{}
	for _, p := range rs.Paths() {
		mux[p] = rs.handler(p)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if h := mux[string(ctx.Path())]; h != nil {
				h(ctx)
				return
			}
			ctx.SetStatusCode(fasthttp.StatusNotFound)
		},
		ReadTimeout:           scriptGuard,
		WriteTimeout:          scriptGuard,
		IdleTimeout:           scriptGuard,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		Logger:                scriptQuietLog{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Shutdown()
		<-served
		rs.Close()
	})
	return &scriptHarness{
		t: t, rs: rs, m: m, clock: clock, addr: ln.Addr().String(), logs: logs,
		http: &http.Client{
			Transport: tr,
			Timeout:   scriptGuard,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// scriptQuietLog keeps fasthttp's messages about deliberately malformed
// requests out of the test output.
type scriptQuietLog struct{}

func (scriptQuietLog) Printf(string, ...any) {}

// scriptResp is a client-side view of one answer.
type scriptResp struct {
	code   int
	header http.Header
	body   []byte
}

func (h *scriptHarness) do(method, target string, hdr ...string) scriptResp {
	h.t.Helper()
	req, err := http.NewRequest(method, "http://"+h.addr+target, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	return scriptResp{code: resp.StatusCode, header: resp.Header, body: body}
}

func (h *scriptHarness) get(target string, hdr ...string) scriptResp {
	h.t.Helper()
	return h.do(http.MethodGet, target, hdr...)
}

// raw sends a request written byte for byte (absolute-URI request lines,
// unnormalised paths) and returns the status code.
func (h *scriptHarness) raw(request string) int {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, scriptGuard)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(scriptGuard))
	if _, err := io.WriteString(c, request); err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		h.t.Fatalf("%q: %v", request, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (h *scriptHarness) counter(name string) uint64 {
	return h.m.Set().GetOrCreateCounter(name).Get()
}

func (h *scriptHarness) result(route string, result int) uint64 {
	return h.counter(fmt.Sprintf(`sidetrack_script_requests_total{route=%q,result=%q}`, route, scriptResults[result]))
}

func (h *scriptHarness) fetches(route string) uint64 {
	return h.counter(fmt.Sprintf(`sidetrack_script_upstream_fetches_total{route=%q}`, route))
}

func (h *scriptHarness) upErrors(route, kind string) uint64 {
	return h.counter(fmt.Sprintf(`sidetrack_script_upstream_errors_total{route=%q,kind=%q}`, route, kind))
}

func gtagScript(up *scriptUpstream, ttl time.Duration) config.Script {
	return config.Script{Path: scriptPath, Upstream: up.srv.URL + "/gtag/js", TTL: config.Duration(ttl), Query: []string{"l", "id"}}
}

func wantHeader(t testing.TB, r scriptResp, name, want string) {
	t.Helper()
	if got := r.header.Get(name); got != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

func TestScriptCacheAndTTL(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, 10*time.Minute)}, scriptLimitsForTest())
	v1 := scriptJS("v1")

	r := h.get(scriptPath + "?id=G-1")
	if r.code != 200 || !bytes.Equal(r.body, v1) {
		t.Fatalf("first GET: %d, %d bytes; want 200 with the script", r.code, len(r.body))
	}
	wantHeader(t, r, "Cache-Control", "public, max-age=600")
	wantHeader(t, r, "Content-Type", "text/javascript; charset=UTF-8")
	wantHeader(t, r, "Vary", "Accept-Encoding")
	wantHeader(t, r, "Content-Encoding", "")
	wantHeader(t, r, "X-Content-Type-Options", "nosniff")
	etag1 := r.header.Get("ETag")
	if !strings.HasPrefix(etag1, `"`) || !strings.HasSuffix(etag1, `"`) || strings.HasPrefix(etag1, "W/") {
		t.Errorf("ETag = %q, want a strong tag", etag1)
	}

	h.clock.advance(4 * time.Minute)
	r = h.get(scriptPath + "?id=G-1")
	if r.code != 200 || !bytes.Equal(r.body, v1) {
		t.Fatalf("cached GET: %d", r.code)
	}
	wantHeader(t, r, "Cache-Control", "public, max-age=360")
	wantHeader(t, r, "ETag", etag1)
	if n := up.count(); n != 1 {
		t.Fatalf("upstream saw %d requests within ttl, want 1", n)
	}

	// Exactly at ttl the copy is no longer fresh: one refetch.
	up.set(func(u *scriptUpstream) { u.body = scriptJS("v2") })
	h.clock.advance(6 * time.Minute)
	r = h.get(scriptPath + "?id=G-1")
	if r.code != 200 || !bytes.Equal(r.body, scriptJS("v2")) {
		t.Fatalf("GET after ttl: %d, want the new script", r.code)
	}
	wantHeader(t, r, "Cache-Control", "public, max-age=600")
	if r.header.Get("ETag") == etag1 {
		t.Error("ETag did not change with the body")
	}
	if n := up.count(); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2", n)
	}
	if hit, miss := h.result(scriptPath, scriptResHit), h.result(scriptPath, scriptResMiss); hit != 1 || miss != 2 {
		t.Errorf("hit/miss = %d/%d, want 1/2", hit, miss)
	}
	if n := h.fetches(scriptPath); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
	if n := h.counter(`sidetrack_requests_total{route="script",code="200"}`); n != 3 {
		t.Errorf(`sidetrack_requests_total{route="script",code="200"} = %d, want 3`, n)
	}
}

func TestScriptDefaultTTLAndContentType(t *testing.T) {
	up := newScriptUpstream(t)
	up.set(func(u *scriptUpstream) {
		u.fail = func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Content-Type"] = nil // no type, and no sniffing
			w.Write([]byte("var x=1;"))
		}
	})
	h := newScriptHarness(t, []config.Script{{Path: "/fbevents.js", Upstream: up.srv.URL + "/en_US/fbevents.js"}}, scriptLimitsForTest())
	r := h.get("/fbevents.js?v=next&id=1")
	if r.code != 200 || string(r.body) != "var x=1;" {
		t.Fatalf("GET: %d %q", r.code, r.body)
	}
	wantHeader(t, r, "Content-Type", scriptDefaultType)
	wantHeader(t, r, "Cache-Control", "public, max-age=900")
	if got := up.requests()[0]; got.path != "/en_US/fbevents.js" || got.rawQuery != "" {
		t.Errorf("upstream got %s?%s, want /en_US/fbevents.js with no query", got.path, got.rawQuery)
	}
}

func TestScriptConditional(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
	target := scriptPath + "?id=G-1"
	plain := h.get(target)
	gz := h.get(target, "Accept-Encoding", "gzip")
	tag, gzTag := plain.header.Get("ETag"), gz.header.Get("ETag")
	if tag == "" || gzTag == "" || tag == gzTag {
		t.Fatalf("ETags identity %q gzip %q: want two different tags", tag, gzTag)
	}

	for _, tc := range []struct {
		name, inm, ae string
		code          int
		etag          string
	}{
		{"same tag", tag, "", 304, tag},
		{"weak form", "W/" + tag, "", 304, tag},
		{"in a list", `"nope", ` + tag, "", 304, tag},
		{"star", "*", "", 304, tag},
		{"gzip tag, now accepts br", gzTag, "br, gzip", 304, gzTag},
		{"other tag", `"nope"`, "", 200, tag},
		{"unquoted", strings.Trim(tag, `"`), "", 200, tag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{"If-None-Match", tc.inm}
			if tc.ae != "" {
				hdr = append(hdr, "Accept-Encoding", tc.ae)
			}
			r := h.get(target, hdr...)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d", r.code, tc.code)
			}
			wantHeader(t, r, "ETag", tc.etag)
			wantHeader(t, r, "Vary", "Accept-Encoding")
			if tc.code == 304 {
				if len(r.body) != 0 {
					t.Errorf("304 with a %d-byte body", len(r.body))
				}
				wantHeader(t, r, "Cache-Control", "public, max-age=3600")
			}
		})
	}
	if n := h.result(scriptPath, scriptResNotModified); n != 5 {
		t.Errorf("not_modified = %d, want 5", n)
	}
	if n := up.count(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

func TestScriptSingleFlight(t *testing.T) {
	const clients = 50
	up := newScriptUpstream(t)
	gate := make(chan struct{})
	up.set(func(u *scriptUpstream) { u.gate = gate })
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, defaultScriptLimits())

	var wg sync.WaitGroup
	results := make([]scriptResp, clients)
	for i := range clients {
		wg.Go(func() { results[i] = h.get(scriptPath+"?id=G-1&cb="+fmt.Sprint(i), "Accept-Encoding", "gzip") })
	}
	// Release the upstream only once every client is inside the handler:
	// one fetching, the others waiting for it.
	deadline := time.Now().Add(scriptGuard)
	for up.count() < 1 || h.rs.joined.Load() < clients-1 {
		if time.Now().After(deadline) {
			close(gate)
			t.Fatalf("waiting for clients: upstream %d requests, %d joined", up.count(), h.rs.joined.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()

	if n := up.count(); n != 1 {
		t.Fatalf("upstream saw %d requests for %d concurrent misses, want 1", n, clients)
	}
	for i, r := range results {
		if r.code != 200 {
			t.Fatalf("client %d: status %d", i, r.code)
		}
		if got := gunzipTest(t, r.body); !bytes.Equal(got, scriptJS("v1")) {
			t.Fatalf("client %d: wrong body", i)
		}
	}
	if n := h.result(scriptPath, scriptResMiss); n != clients {
		t.Errorf("miss = %d, want %d", n, clients)
	}
	// The entry is in the cache once the flight ends.
	if r := h.get(scriptPath + "?id=G-1"); r.code != 200 || up.count() != 1 {
		t.Errorf("after the flight: status %d, upstream %d requests; want a hit", r.code, up.count())
	}
}

func gunzipTest(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

func TestScriptStaleIfError(t *testing.T) {
	const ttl = 10 * time.Minute
	bomb := func() []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(make([]byte, 1<<20))
		zw.Close()
		return b.Bytes()
	}()
	for _, tc := range []struct {
		name string
		kind string
		fail func(u *scriptUpstream, stop <-chan struct{}) http.HandlerFunc
		down bool // close the upstream server instead
	}{
		{name: "500", kind: scriptErrStatus, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "oops", 500) }
		}},
		{name: "404", kind: scriptErrStatus, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) }
		}},
		{name: "redirect", kind: scriptErrRedirect, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://127.0.0.1:1/evil.js", http.StatusFound)
			}
		}},
		{name: "oversize", kind: scriptErrTooLarge, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, 65<<10)) }
		}},
		{name: "oversize chunked", kind: scriptErrTooLarge, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				for range 70 {
					w.Write(make([]byte, 1<<10))
					w.(http.Flusher).Flush()
				}
			}
		}},
		{name: "gzip bomb", kind: scriptErrTooLarge, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(bomb)
			}
		}},
		{name: "corrupt gzip", kind: scriptErrEncoding, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write([]byte("not gzip at all"))
			}
		}},
		{name: "unrequested encoding", kind: scriptErrEncoding, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Encoding", "deflate")
				w.Write([]byte{1, 2, 3})
			}
		}},
		{name: "timeout", kind: scriptErrTimeout, fail: func(_ *scriptUpstream, stop <-chan struct{}) http.HandlerFunc {
			return func(http.ResponseWriter, *http.Request) { <-stop }
		}},
		{name: "reset", kind: scriptErrReset, fail: func(*scriptUpstream, <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				c, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					c.Close()
				}
			}
		}},
		{name: "refused", kind: scriptErrConnect, down: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newScriptUpstream(t)
			stop := make(chan struct{})
			h := newScriptHarness(t, []config.Script{gtagScript(up, ttl)}, scriptLimitsForTest())
			t.Cleanup(func() { close(stop) }) // runs before the servers close
			v1 := scriptJS("v1")
			target := scriptPath + "?id=G-SECRET"
			if r := h.get(target); r.code != 200 {
				t.Fatalf("priming GET: %d", r.code)
			}
			if tc.down {
				up.srv.Close()
			} else {
				up.set(func(u *scriptUpstream) { u.fail = tc.fail(u, stop) })
			}

			// Expired: the refresh fails, the stale copy is served.
			h.clock.advance(ttl + time.Second)
			r := h.get(target, "Accept-Encoding", "gzip")
			if r.code != 200 || !bytes.Equal(gunzipTest(t, r.body), v1) {
				t.Fatalf("stale GET: %d, want 200 with the old script", r.code)
			}
			wantHeader(t, r, "Cache-Control", scriptCCStale)
			if n := h.upErrors(scriptPath, tc.kind); n != 1 {
				t.Errorf("upstream errors {kind=%s} = %d, want 1", tc.kind, n)
			}
			// Within the retry pause: stale at once, no new fetch.
			if r := h.get(target); r.code != 200 || !bytes.Equal(r.body, v1) {
				t.Fatalf("second stale GET: %d", r.code)
			}
			if n := h.fetches(scriptPath); n != 2 {
				t.Errorf("fetches = %d during the retry pause, want 2", n)
			}
			// After it: one more attempt, still stale.
			h.clock.advance(scriptRetryAfterError + time.Second)
			if r := h.get(target); r.code != 200 || !bytes.Equal(r.body, v1) {
				t.Fatalf("stale GET after the pause: %d", r.code)
			}
			if n := h.fetches(scriptPath); n != 3 {
				t.Errorf("fetches = %d after the pause, want 3", n)
			}
			if n := h.result(scriptPath, scriptResStale); n != 3 {
				t.Errorf("stale = %d, want 3", n)
			}

			// Beyond the stale bound: 502.
			h.clock.advance(scriptStaleFor)
			r = h.get(target)
			if r.code != 502 || string(r.body) != scriptBody502 {
				t.Fatalf("GET past the stale bound: %d %q, want 502", r.code, r.body)
			}
			wantHeader(t, r, "Cache-Control", "no-store")
			// Nothing cached at all: 502 too.
			if r := h.get(scriptPath + "?id=G-OTHER"); r.code != 502 {
				t.Fatalf("uncached GET: %d, want 502", r.code)
			}
			if n := h.result(scriptPath, scriptResError); n != 2 {
				t.Errorf("error = %d, want 2", n)
			}
			if n := h.counter(`sidetrack_requests_total{route="script",code="502"}`); n != 2 {
				t.Errorf("requests{code=502} = %d, want 2", n)
			}
			if h.logs.FilterMessageSnippet("script upstream failed").Len() == 0 {
				t.Error("no log line for the failures")
			}
			for _, e := range h.logs.All() {
				if strings.Contains(fmt.Sprint(e.ContextMap()), "SECRET") {
					t.Errorf("log line carries the query: %v", e.ContextMap())
				}
			}
		})
	}
}

func TestScriptNoLeaks(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
	shopper := []string{
		"Cookie", "_ga=GA1.1.123.456; session=s3cr3t",
		"Authorization", "Bearer shopper-token",
		"User-Agent", "Mozilla/5.0 shopper",
		"Referer", "https://shop.example/checkout?email=a@b.c",
		"Origin", "https://shop.example",
		"X-Forwarded-For", "203.0.113.9",
		"Accept-Language", "de-DE",
		"X-Custom", "private",
	}
	allowedResponse := map[string]bool{
		"Content-Type": true, "Content-Length": true, "Content-Encoding": true, "Cache-Control": true,
		"Etag": true, "Vary": true, "X-Content-Type-Options": true, "Date": true,
	}
	for i, ae := range []string{"", "gzip", "br"} { // miss, then hits
		hdr := slices.Clone(shopper)
		if ae != "" {
			hdr = append(hdr, "Accept-Encoding", ae)
		}
		r := h.get(scriptPath+"?id=G-1", hdr...)
		if r.code != 200 {
			t.Fatalf("GET %d: %d", i, r.code)
		}
		for name := range r.header {
			if !allowedResponse[name] {
				t.Errorf("answer %d carries %s: %q", i, name, r.header.Get(name))
			}
		}
	}
	seen := up.requests()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(seen))
	}
	for name, v := range seen[0].header {
		switch name {
		case "User-Agent", "Accept", "Accept-Encoding":
		default:
			t.Errorf("upstream received header %s: %q", name, v)
		}
	}
	if ua := seen[0].header.Get("User-Agent"); ua != scriptUserAgent {
		t.Errorf("upstream User-Agent %q, want %q", ua, scriptUserAgent)
	}
	if seen[0].host != up.srv.Listener.Addr().String() {
		t.Errorf("upstream Host %q, want %q", seen[0].host, up.srv.Listener.Addr())
	}
}

func TestScriptQueryFilter(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
	for _, tc := range []struct {
		name, query string
		wantRaw     string // what the upstream receives; "" when it must not be asked
		wantQuery   url.Values
	}{
		{"listed and unlisted", "?cid=123&id=G-1&uid=u9&l=dataLayer&upstream=http%3A%2F%2Fevil&_=1", "id=G-1&l=dataLayer", url.Values{"id": {"G-1"}, "l": {"dataLayer"}}},
		{"other order and other extras: same key", "?l=dataLayer&gclid=abc&id=G-1", "", nil},
		{"repeated: first value", "?id=G-1&id=G-2&l=dataLayer", "", nil},
		{"other id: new key", "?id=G-2", "id=G-2", url.Values{"id": {"G-2"}}},
		{"empty value ignored", "?id=G-2&l=", "", nil},
		{"encoded separators stay in the value", "?id=G-3%26upstream%3Dhttp%3A%2F%2Fevil%2F", "id=G-3%26upstream%3Dhttp%3A%2F%2Fevil%2F",
			url.Values{"id": {"G-3&upstream=http://evil/"}}},
		{"no query", "", "", url.Values{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			if r := h.get(scriptPath + tc.query); r.code != 200 {
				t.Fatalf("status %d", r.code)
			}
			seen := up.requests()[before:]
			if tc.wantQuery == nil {
				if len(seen) != 0 {
					t.Fatalf("upstream asked again (%q): the cache was split", seen[0].rawQuery)
				}
				return
			}
			if len(seen) != 1 {
				t.Fatalf("upstream saw %d requests, want 1", len(seen))
			}
			if seen[0].rawQuery != tc.wantRaw {
				t.Errorf("upstream query %q, want %q", seen[0].rawQuery, tc.wantRaw)
			}
			if len(tc.wantQuery) > 0 && fmt.Sprint(seen[0].query) != fmt.Sprint(tc.wantQuery) {
				t.Errorf("upstream params %v, want %v", seen[0].query, tc.wantQuery)
			}
			if seen[0].path != "/gtag/js" {
				t.Errorf("upstream path %q", seen[0].path)
			}
		})
	}

	long := h.get(scriptPath + "?id=" + strings.Repeat("x", scriptMaxQuery))
	if long.code != 400 || string(long.body) != scriptBodyQuery {
		t.Errorf("over-long id: %d %q, want 400", long.code, long.body)
	}
	if n := h.counter(`sidetrack_ingest_rejected_total{route="script",reason="query_too_long"}`); n != 1 {
		t.Errorf("rejections = %d, want 1", n)
	}
}

func TestScriptUpstreamFixedQuery(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{{Path: "/gtm.js", Upstream: up.srv.URL + "/gtm.js?fixed=1#frag", Query: []string{"id"}}}, scriptLimitsForTest())
	if r := h.get("/gtm.js?id=GTM-1&fixed=2"); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	if got := up.requests()[0]; got.path != "/gtm.js" || got.rawQuery != "fixed=1&id=GTM-1" {
		t.Errorf("upstream got %s?%s, want /gtm.js?fixed=1&id=GTM-1", got.path, got.rawQuery)
	}
}

func TestScriptOnlyConfiguredUpstream(t *testing.T) {
	up := newScriptUpstream(t)
	evil := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
	ev := evil.srv.Listener.Addr().String()
	for _, tc := range []struct {
		name, request string
		code          int
	}{
		{"absolute-URI request line", "GET http://" + ev + "/assets/t.js?id=G-1 HTTP/1.1\r\nHost: " + ev + "\r\n\r\n", 200},
		{"evil Host and X-Forwarded-Host", "GET /assets/t.js?id=G-2 HTTP/1.1\r\nHost: " + ev + "\r\nX-Forwarded-Host: " + ev + "\r\n\r\n", 200},
		{"upstream parameter", "GET /assets/t.js?id=G-3&upstream=http://" + ev + "/x&url=http://" + ev + " HTTP/1.1\r\nHost: shop\r\n\r\n", 200},
		{"dot segments onto the route", "GET /assets/../assets/./t.js?id=G-4 HTTP/1.1\r\nHost: shop\r\n\r\n", 200},
		{"encoded slash onto the route", "GET /assets%2Ft.js?id=G-5 HTTP/1.1\r\nHost: shop\r\n\r\n", 200},
		{"traversal in a value", "GET /assets/t.js?id=..%2F..%2Fevil&l=%2F%2F" + ev + " HTTP/1.1\r\nHost: shop\r\n\r\n", 200},
		{"traversal past the route", "GET /assets/t.js/../../gtag/js?id=G-6 HTTP/1.1\r\nHost: shop\r\n\r\n", 404},
		{"suffix after the route", "GET /assets/t.js/@" + ev + "/x?id=G-7 HTTP/1.1\r\nHost: shop\r\n\r\n", 404},
		{"encoded dots", "GET /assets/%2e%2e/%2e%2e/gtag/js?id=G-8 HTTP/1.1\r\nHost: shop\r\n\r\n", 404},
		{"authority form", "GET " + ev + " HTTP/1.1\r\nHost: shop\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := h.raw(tc.request); code != tc.code {
				t.Errorf("status %d, want %d", code, tc.code)
			}
		})
	}
	if n := evil.count(); n != 0 {
		t.Fatalf("the other server received %d requests", n)
	}
	seen := up.requests()
	if len(seen) != 6 {
		t.Errorf("upstream saw %d requests, want 6", len(seen))
	}
	for _, s := range seen {
		if s.method != "GET" || s.path != "/gtag/js" || s.host != up.srv.Listener.Addr().String() {
			t.Errorf("upstream request %s %s (Host %s): only GET /gtag/js on the configured host may be fetched", s.method, s.path, s.host)
		}
		for k := range s.query {
			if k != "id" && k != "l" {
				t.Errorf("upstream received parameter %q", k)
			}
		}
	}
}

func TestScriptEncodings(t *testing.T) {
	for _, upstreamGzip := range []bool{true, false} {
		t.Run(fmt.Sprintf("upstream gzip %v", upstreamGzip), func(t *testing.T) {
			up := newScriptUpstream(t)
			if !upstreamGzip {
				up.set(func(u *scriptUpstream) {
					u.fail = func(w http.ResponseWriter, _ *http.Request) {
						w.Header().Set("Content-Type", "application/javascript")
						w.Write(scriptJS("v1"))
					}
				})
			}
			h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
			want := scriptJS("v1")
			for _, tc := range []struct{ ae, enc string }{
				{"", ""},
				{"gzip", "gzip"},
				{"gzip, deflate, br, zstd", "br"},
				{"br;q=0, gzip", "gzip"},
				{"gzip;q=0, br;q=0", ""},
				{"gzip;q=0.000", ""},
				{"gzip;q=0.5", "gzip"},
				{"BR", "br"},
				{"x-gzip", "gzip"},
				{"deflate, identity", ""},
				{"*", "br"},
				{"br;q=0, *", "gzip"},
				{"*;q=0", ""},
				{" gzip ; q=1 ,", "gzip"},
			} {
				r := h.get(scriptPath+"?id=G-1", "Accept-Encoding", tc.ae)
				if r.code != 200 {
					t.Fatalf("AE %q: status %d", tc.ae, r.code)
				}
				if got := r.header.Get("Content-Encoding"); got != tc.enc {
					t.Errorf("AE %q: Content-Encoding %q, want %q", tc.ae, got, tc.enc)
				}
				var body []byte
				switch tc.enc {
				case "gzip":
					body = gunzipTest(t, r.body)
				case "br":
					var err error
					if body, err = fasthttp.AppendUnbrotliBytes(nil, r.body); err != nil {
						t.Fatalf("AE %q: unbrotli: %v", tc.ae, err)
					}
				default:
					body = r.body
				}
				if !bytes.Equal(body, want) {
					t.Errorf("AE %q: decoded body differs (%d bytes, want %d)", tc.ae, len(body), len(want))
				}
				if tc.enc != "" && len(r.body) >= len(want)/2 {
					t.Errorf("AE %q: %d bytes compressed from %d", tc.ae, len(r.body), len(want))
				}
				wantHeader(t, r, "Vary", "Accept-Encoding")
			}
		})
	}
}

func TestScriptHEAD(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
	for i, ae := range []string{"gzip", "gzip", ""} { // miss, hit, other encoding
		head := h.do(http.MethodHead, scriptPath+"?id=G-1", "Accept-Encoding", ae)
		get := h.get(scriptPath+"?id=G-1", "Accept-Encoding", ae)
		if head.code != 200 || len(head.body) != 0 {
			t.Fatalf("HEAD %d: status %d, %d body bytes", i, head.code, len(head.body))
		}
		for _, name := range []string{"Content-Type", "Content-Encoding", "ETag", "Cache-Control", "Vary"} {
			if head.header.Get(name) != get.header.Get(name) {
				t.Errorf("HEAD %d: %s %q, GET has %q", i, name, head.header.Get(name), get.header.Get(name))
			}
		}
		if cl := head.header.Get("Content-Length"); cl != fmt.Sprint(len(get.body)) {
			t.Errorf("HEAD %d: Content-Length %q, GET body is %d bytes", i, cl, len(get.body))
		}
	}
	if n := up.count(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

func TestScriptMethods(t *testing.T) {
	up := newScriptUpstream(t)
	h := newScriptHarness(t, []config.Script{gtagScript(up, time.Hour)}, scriptLimitsForTest())
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		r := h.do(m, scriptPath+"?id=G-1")
		if r.code != 405 || string(r.body) != scriptBody405 {
			t.Errorf("%s: %d %q, want 405", m, r.code, r.body)
		}
		wantHeader(t, r, "Allow", "GET, HEAD")
	}
	if n := up.count(); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
	if n := h.counter(`sidetrack_ingest_rejected_total{route="script",reason="method"}`); n != 5 {
		t.Errorf("rejections = %d, want 5", n)
	}
}

func TestScriptSeveralRoutes(t *testing.T) {
	gtag, gtm := newScriptUpstream(t), newScriptUpstream(t)
	gtm.set(func(u *scriptUpstream) { u.body = []byte("/* gtm */") })
	h := newScriptHarness(t, []config.Script{
		gtagScript(gtag, time.Hour),
		{Path: "/gtm.js", Upstream: gtm.srv.URL + "/gtm.js", Query: []string{"id", "l"}},
	}, scriptLimitsForTest())
	a, b := h.get(scriptPath+"?id=X"), h.get("/gtm.js?id=X")
	if !bytes.Equal(a.body, scriptJS("v1")) || string(b.body) != "/* gtm */" {
		t.Fatal("routes with the same query share a cache entry")
	}
	if gtag.count() != 1 || gtm.count() != 1 {
		t.Errorf("upstreams saw %d and %d requests, want 1 each", gtag.count(), gtm.count())
	}
	if h.result("/gtm.js", scriptResMiss) != 1 || h.result(scriptPath, scriptResMiss) != 1 {
		t.Error("per-route metrics not labelled by route")
	}
	var exp bytes.Buffer
	h.m.WritePrometheus(&exp)
	for _, line := range []string{
		`sidetrack_script_requests_total{route="/gtm.js",result="miss"} 1`,
		`sidetrack_script_upstream_fetches_total{route="/assets/t.js"} 1`,
		`sidetrack_script_upstream_errors_total{route="/gtm.js",kind="timeout"} 0`,
		`sidetrack_requests_total{route="script",code="200"} 2`,
	} {
		if !strings.Contains(exp.String(), line+"\n") {
			t.Errorf("exposition lacks %s", line)
		}
	}
}

func TestNewScriptRoutes(t *testing.T) {
	ok := config.Script{Path: "/t.js", Upstream: "https://www.googletagmanager.com/gtag/js", Query: []string{"id"}}
	for _, tc := range []struct {
		name    string
		scripts []config.Script
		err     string
	}{
		{"ftp", []config.Script{{Path: "/t.js", Upstream: "ftp://example.com/t.js"}}, "absolute http"},
		{"relative", []config.Script{{Path: "/t.js", Upstream: "/gtag/js"}}, "absolute http"},
		{"credentials", []config.Script{{Path: "/t.js", Upstream: "https://u:p@example.com/t.js"}}, "credentials"},
		{"path", []config.Script{{Path: "t.js", Upstream: ok.Upstream}}, "must start with '/'"},
		{"empty query name", []config.Script{{Path: "/t.js", Upstream: ok.Upstream, Query: []string{""}}}, "empty parameter"},
		{"negative ttl", []config.Script{{Path: "/t.js", Upstream: ok.Upstream, TTL: -1}}, "negative"},
		{"duplicate", []config.Script{ok, ok}, "configured twice"},
		{"all at once", []config.Script{{Path: "a", Upstream: "x"}, {Path: "/b", Upstream: "ftp://h/"}}, "scripts[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newScriptRoutes(&config.Config{Scripts: tc.scripts}, nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want one containing %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "u:p@") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}

	rs, err := newScriptRoutes(&config.Config{}, nil, nil, nil)
	if err != nil || len(rs.Paths()) != 0 || rs.handler("/t.js") != nil {
		t.Fatalf("no scripts: %v, %v", rs, err)
	}
	rs.Close()

	rs, err = newScriptRoutes(&config.Config{Scripts: []config.Script{ok, {Path: "/gtm.js", Upstream: "https://www.googletagmanager.com/gtm.js"}}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if got := rs.Paths(); !slices.Equal(got, []string{"/t.js", "/gtm.js"}) {
		t.Errorf("Paths = %v", got)
	}
	if len(rs.clients) != 1 {
		t.Errorf("%d clients for one upstream host, want 1", len(rs.clients))
	}
	if rs.handler("/t.js") == nil || rs.handler("/other") != nil {
		t.Error("handler lookup")
	}
	if rt := rs.routes["/t.js"]; rt.ttl != scriptDefaultTTL {
		t.Errorf("default ttl %v", rt.ttl)
	}
}

func TestScriptEncodingParsers(t *testing.T) {
	e := newScriptEntry("/t.js?", []byte("x"), scriptDefaultType, time.Time{})
	for _, tc := range []struct {
		inm  string
		want int
		ok   bool
	}{
		{"", 0, false},
		{e.etag[scriptEncBrotli], scriptEncBrotli, true},
		{" W/" + e.etag[scriptEncGzip] + " ", scriptEncGzip, true},
		{`"a", "b",` + e.etag[scriptEncIdentity], scriptEncIdentity, true},
		{",,,", 0, false},
		{"*", scriptEncGzip, true},
		{"W/*", 0, false},
	} {
		got, ok := scriptMatchETag([]byte(tc.inm), e, scriptEncGzip)
		if got != tc.want || ok != tc.ok {
			t.Errorf("If-None-Match %q: %d %v, want %d %v", tc.inm, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		params string
		zero   bool
	}{
		{"", false}, {"q=0", true}, {" Q=0.0 ", true}, {"q=0.001", false}, {"q=1", false},
		{"level=1;q=0", true}, {"q=", false}, {"q=abc", false}, {"q", false},
	} {
		if got := scriptQIsZero([]byte(tc.params)); got != tc.zero {
			t.Errorf("scriptQIsZero(%q) = %v", tc.params, got)
		}
	}
}

func FuzzScriptNegotiation(f *testing.F) {
	for _, s := range []string{"", "gzip", "br;q=0, gzip;q=0.5, *", "*;q=0", `W/"x", "y"`, ";;;,,,", "q=0;br", "BR;Q=0.000"} {
		f.Add(s, s)
	}
	e := newScriptEntry("/t.js?", []byte("x"), scriptDefaultType, time.Time{})
	f.Fuzz(func(t *testing.T, ae, inm string) {
		enc := scriptEncoding([]byte(ae))
		if enc < 0 || enc >= scriptEncCount {
			t.Fatalf("encoding %d", enc)
		}
		lower := strings.ToLower(ae)
		if enc == scriptEncBrotli && !strings.Contains(lower, "br") && !strings.Contains(lower, "*") {
			t.Fatalf("%q chose br", ae)
		}
		if enc == scriptEncGzip && !strings.Contains(lower, "gzip") && !strings.Contains(lower, "*") {
			t.Fatalf("%q chose gzip", ae)
		}
		m, ok := scriptMatchETag([]byte(inm), e, enc)
		if ok && (m < 0 || m >= scriptEncCount) {
			t.Fatalf("match %d", m)
		}
		if ok && !strings.Contains(inm, "*") && !strings.Contains(inm, e.etag[m]) {
			t.Fatalf("%q matched %s", inm, e.etag[m])
		}
	})
}

func FuzzScriptKey(f *testing.F) {
	for _, s := range []string{"", "id=G-1&l=dataLayer", "l=x&id=y&cid=1", "id=%26upstream%3D&id=2", "id=a+b&l=%00", "=&&=x"} {
		f.Add(s)
	}
	rs, err := newScriptRoutes(&config.Config{Scripts: []config.Script{{Path: "/t.js", Upstream: "https://example.com/gtag/js", Query: []string{"l", "id"}}}}, nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer rs.Close()
	rt := rs.routes["/t.js"]
	f.Fuzz(func(t *testing.T, query string) {
		var args fasthttp.Args
		args.Parse(query)
		key, ok := rt.appendKey(nil, &args)
		if !bytes.HasPrefix(key, []byte("/t.js?")) {
			t.Fatalf("key %q lacks the path", key)
		}
		if !ok {
			return
		}
		q := string(key[len("/t.js?"):])
		if len(q) > scriptMaxQuery {
			t.Fatalf("query of %d bytes accepted", len(q))
		}
		vals, err := url.ParseQuery(q)
		if err != nil {
			t.Fatalf("canonical query %q does not parse: %v", q, err)
		}
		for k, v := range vals {
			if (k != "id" && k != "l") || len(v) != 1 || v[0] == "" {
				t.Fatalf("canonical query %q has %s=%q", q, k, v)
			}
			if want := string(args.Peek(k)); v[0] != want {
				t.Fatalf("canonical %s=%q, request has %q", k, v[0], want)
			}
		}
		if strings.Contains(q, "&") && !strings.HasPrefix(q, "id=") {
			t.Fatalf("canonical query %q not sorted", q)
		}
	})
}

func BenchmarkScriptCachedHit(b *testing.B) {
	var fetched atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetched.Add(1)
		w.Header().Set("Content-Type", "text/javascript")
		w.Write(scriptJS("v1"))
	}))
	defer up.Close()
	cfg := &config.Config{Scripts: []config.Script{{Path: scriptPath, Upstream: up.URL + "/gtag/js", Query: []string{"id", "l"}}}}
	rs, err := newScriptRoutes(cfg, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	h := rs.handler(scriptPath)

	var req fasthttp.Request
	req.SetRequestURI(scriptPath + "?id=G-ABC123&l=dataLayer&cb=998877")
	req.Header.Set("Accept-Encoding", "gzip, deflate, br;q=0")
	req.Header.Set("Cookie", "_ga=GA1.1.1.1")
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	h(&ctx)
	if ctx.Response.StatusCode() != 200 || fetched.Load() != 1 {
		b.Fatalf("priming: %d", ctx.Response.StatusCode())
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(ctx.Response.Body())))
	b.ResetTimer()
	for b.Loop() {
		ctx.Response.Reset()
		h(&ctx)
	}
	b.StopTimer()
	if ctx.Response.StatusCode() != 200 || !bytes.Equal(ctx.Response.Header.ContentEncoding(), []byte("gzip")) || fetched.Load() != 1 {
		b.Fatalf("not a cached gzip hit: %d %q, %d fetches", ctx.Response.StatusCode(), ctx.Response.Header.ContentEncoding(), fetched.Load())
	}
}

func TestScriptHTTPSUpstream(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte("/* tls " + r.URL.RawQuery + " */"))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	scripts := []config.Script{{Path: "/gtm.js", Upstream: srv.URL + "/gtm.js", Query: []string{"id"}}}

	// The test server's certificate is not trusted: the fetch must fail.
	h := newScriptHarness(t, scripts, scriptLimitsForTest())
	if r := h.get("/gtm.js?id=GTM-1"); r.code != 502 {
		t.Fatalf("untrusted certificate: %d, want 502", r.code)
	}
	if hits.Load() != 0 {
		t.Fatal("a request went over an unverified TLS connection")
	}

	h = newScriptHarness(t, scripts, scriptLimitsForTest())
	for _, c := range h.rs.clients {
		c.TLSConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	}
	if r := h.get("/gtm.js?id=GTM-1"); r.code != 200 || string(r.body) != "/* tls id=GTM-1 */" {
		t.Fatalf("trusted certificate: %d %q", r.code, r.body)
	}
}

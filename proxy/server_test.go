package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's process-wide Date header refresher, started once.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// HostClient's idle-connection sweeper exits on its next tick once
		// the pool is empty.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		// A stopped server's worker-pool sweeper exits after its current
		// sleep (MaxIdleWorkerDuration), not at once.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

// guard bounds every wait in these tests; it is a failure guard, never an
// assertion about speed.
const guard = 10 * time.Second

// testConfig is a complete config for proxy tests; origin is the origin URL.
func testConfig(origin string) *config.Config {
	return &config.Config{
		Origin: origin,
		Server: config.Server{
			ReadTimeout:     config.Duration(guard),
			WriteTimeout:    config.Duration(guard),
			IdleTimeout:     config.Duration(guard),
			MaxHeaderBytes:  16 << 10,
			UpstreamTimeout: config.Duration(guard),
			MaxRequestBody:  256 << 20,
		},
	}
}

// testProxy is a running Server with its public and admin addresses.
type testProxy struct {
	*Server
	addr, adminAddr string
	logs            *observer.ObservedLogs
}

// startProxy starts cfg's Server on loopback listeners and stops it when
// the test ends. tweak, when not nil, runs after New and before serving.
func startProxy(t testing.TB, cfg *config.Config, opts Options, tweak func(*Server)) *testProxy {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := New(cfg, zap.New(core), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if tweak != nil {
		tweak(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := s.Serve(ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.ServeAdmin(aln); err != nil {
			t.Errorf("ServeAdmin: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := s.ShutdownAdmin(ctx); err != nil {
			t.Errorf("ShutdownAdmin: %v", err)
		}
		wg.Wait()
	})
	return &testProxy{Server: s, addr: ln.Addr().String(), adminAddr: aln.Addr().String(), logs: logs}
}

// recorded is one request as the origin saw it.
type recorded struct {
	Method, RequestURI, Host string
	Header                   http.Header
	Body                     []byte
}

// recordingOrigin is a net/http origin (an independent HTTP
// implementation) that records every request and answers with respond.
type recordingOrigin struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
	hits atomic.Int64
}

func newOrigin(t testing.TB, respond http.HandlerFunc) *recordingOrigin {
	t.Helper()
	o := &recordingOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		o.mu.Lock()
		o.reqs = append(o.reqs, recorded{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body})
		o.mu.Unlock()
		o.hits.Add(1)
		if respond != nil {
			respond(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "origin ok")
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *recordingOrigin) last(t testing.TB) recorded {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.reqs) == 0 {
		t.Fatal("origin saw no request")
	}
	return o.reqs[len(o.reqs)-1]
}

// rawExchange writes raw bytes to addr and reads one response (method
// tells ReadResponse whether a body follows). The connection is closed
// afterwards.
func rawExchange(t testing.TB, addr, raw, method string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(guard))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, bufio.NewReader(c), method)
}

func readResponse(t testing.TB, br *bufio.Reader, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	_ = resp.Body.Close()
	return resp, body
}

// get is a plain GET through the proxy over a fresh connection.
func get(t testing.TB, addr, target, host string, extra ...string) (*http.Response, []byte) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", target, host)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return rawExchange(t, addr, b.String(), "GET")
}

// httpGet fetches an admin URL with an optional bearer token.
func httpGet(t testing.TB, url, token string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: guard}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// metricsText scrapes the admin /metrics endpoint.
func (p *testProxy) metricsText(t testing.TB, token string) string {
	t.Helper()
	code, body, _ := httpGet(t, "http://"+p.adminAddr+"/metrics", token)
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return body
}

// metricValue finds one sample line's value in Prometheus text ("" when absent).
func metricValue(text, series string) string {
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*config.Config)
		want []string
	}{
		{"nil origin scheme", func(c *config.Config) { c.Origin = "ftp://x" }, []string{"scheme"}},
		{"origin path", func(c *config.Config) { c.Origin = "http://x/shop" }, []string{"without path"}},
		{"origin no host", func(c *config.Config) { c.Origin = "http://" }, []string{"no host"}},
		{"every problem at once", func(c *config.Config) {
			c.Origin = "gopher://x"
			c.TrustedProxies = []string{"10.0.0.0/33", "nope"}
			c.Hosts = []string{" "}
		}, []string{"scheme", `"10.0.0.0/33"`, `"nope"`, "empty host"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1")
			tc.mod(cfg)
			_, err := New(cfg, nil, Options{})
			if err == nil {
				t.Fatal("New accepted a bad config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := New(nil, nil, Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestServerAlwaysSetsTimeouts(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Server = config.Server{} // nothing set: fasthttp's defaults would be unlimited
	s, err := New(cfg, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*fasthttp.Server{"public": s.public, "admin": s.admin} {
		if srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
			t.Errorf("%s server timeouts not all set: read %v write %v idle %v", name, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
		}
	}
	if s.public.ReadBufferSize != defaultMaxHeaderBytes {
		t.Errorf("ReadBufferSize = %d, want %d", s.public.ReadBufferSize, defaultMaxHeaderBytes)
	}
	if !s.public.StreamRequestBody || !s.public.DisablePreParseMultipartForm || !s.public.NoDefaultServerHeader || s.public.Name != "" {
		t.Error("public server misses streaming, multipart or Server-header settings")
	}
	if s.up.timeout <= 0 {
		t.Error("upstream timeout not set")
	}
}

// TestShutdownRacesServe: Serve started in a goroutine and Shutdown right
// away (before fasthttp registered the listener) must still stop; Serve
// after Shutdown returns at once.
func TestShutdownRacesServe(t *testing.T) {
	for range 50 {
		s, err := New(testConfig("http://127.0.0.1:1"), nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 2)
		go func() { done <- s.Serve(ln) }()
		go func() { done <- s.ServeAdmin(aln) }()
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := s.ShutdownAdmin(ctx); err != nil {
			t.Errorf("ShutdownAdmin: %v", err)
		}
		cancel()
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve returned %v", err)
				}
			case <-time.After(guard):
				t.Fatal("Serve kept running after Shutdown")
			}
		}
	}
	// Serve after Shutdown returns at once and releases the listener.
	s, err := New(testConfig("http://127.0.0.1:1"), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still open after Serve-after-Shutdown")
	}
}

// TestReliabilitySlowloris: a client trickling its headers slower than read_timeout is
// cut off (408 or a closed connection) and never reaches the origin.
func TestReliabilitySlowloris(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Server.ReadTimeout = config.Duration(300 * time.Millisecond)
	p := startProxy(t, cfg, Options{}, nil)

	c, err := net.DialTimeout("tcp", p.addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan []byte, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(guard))
		b, _ := io.ReadAll(c)
		done <- b
	}()
	header := "GET / HTTP/1.1\r\nHost: shop.test\r\nX-Slow: " + strings.Repeat("a", 1000)
	var got []byte
	func() {
		for i := 0; i < len(header); i++ {
			select {
			case got = <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write([]byte{header[i]}); err != nil {
				got = <-done
				return
			}
		}
		t.Fatal("the server let a client trickle its whole header block")
	}()
	if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 408")) {
		t.Errorf("answer to slow client: %q, want 408 or a closed connection", got)
	}
	if n := o.hits.Load(); n != 0 {
		t.Errorf("origin saw %d requests from the slow client", n)
	}
	if v := metricValue(p.metricsText(t, ""), `sidetrack_ingest_rejected_total{route="pass",reason="timeout"}`); v != "1" {
		t.Errorf("timeout rejections = %q, want 1", v)
	}
}

func TestReliabilityHeaderTooLarge431(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Server.MaxHeaderBytes = 8 << 10
	p := startProxy(t, cfg, Options{}, nil)

	resp, _ := get(t, p.addr, "/", "shop.test", "X-Big: "+strings.Repeat("b", 4<<10))
	if resp.StatusCode != 200 {
		t.Fatalf("4 KiB header: %d, want 200", resp.StatusCode)
	}
	resp, _ = get(t, p.addr, "/", "shop.test", "X-Big: "+strings.Repeat("b", 20<<10))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("20 KiB header: %d, want 431", resp.StatusCode)
	}
	if o.hits.Load() != 1 {
		t.Errorf("origin hits = %d, want 1", o.hits.Load())
	}
	text := p.metricsText(t, "")
	if v := metricValue(text, `sidetrack_ingest_rejected_total{route="pass",reason="header_too_large"}`); v != "1" {
		t.Errorf("header_too_large rejections = %q, want 1", v)
	}
	if v := metricValue(text, `sidetrack_requests_total{route="pass",code="431"}`); v != "1" {
		t.Errorf("431 requests = %q, want 1", v)
	}
}

func TestMalformedRequest400(t *testing.T) {
	o := newOrigin(t, nil)
	p := startProxy(t, testConfig(o.URL), Options{}, nil)
	resp, _ := rawExchange(t, p.addr, "GET / HTTP/1.1\r\nHost: shop.test\r\nBad Header Line\r\n\r\n", "GET")
	if resp.StatusCode != 400 {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	if o.hits.Load() != 0 {
		t.Error("malformed request reached the origin")
	}
	if v := metricValue(p.metricsText(t, ""), `sidetrack_ingest_rejected_total{route="pass",reason="malformed"}`); v != "1" {
		t.Errorf("malformed rejections = %q, want 1", v)
	}
}

// TestGracefulShutdown: a slow in-flight request completes while Shutdown
// runs; new connections are refused once it started.
func TestGracefulShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() { // no t.Fatal off the test goroutine
		c, err := net.DialTimeout("tcp", p.addr, guard)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(guard))
		_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: shop.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		inflight <- result{resp.StatusCode, string(body), err}
	}()
	select {
	case <-started:
	case <-time.After(guard):
		t.Fatal("request never reached the origin")
	}

	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		shutdownErr <- p.Shutdown(ctx)
	}()

	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(guard)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("proxy still accepts connections during Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _, _ := httpGet(t, "http://"+p.adminAddr+"/readyz", ""); code != 503 {
		t.Errorf("/readyz during shutdown = %d, want 503", code)
	}
	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned (%v) before the in-flight request finished", err)
	default:
	}

	close(release)
	select {
	case r := <-inflight:
		if r.err != nil || r.code != 200 || r.body != "finished" {
			t.Errorf("in-flight request: %d %q %v, want 200 finished", r.code, r.body, r.err)
		}
	case <-time.After(guard):
		t.Fatal("in-flight request never completed")
	}
	if err := <-shutdownErr; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		t.Error("connection accepted after Shutdown")
	}
}

func TestAccessLog(t *testing.T) {
	tests := []struct {
		name     string
		access   bool
		sample   int
		requests int
		want     int
	}{
		{"off by default", false, 0, 4, 0},
		{"every request", true, 1, 4, 4},
		{"one in three", true, 3, 6, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, nil)
			cfg := testConfig(o.URL)
			cfg.Log.Access, cfg.Log.AccessSample = tc.access, tc.sample
			p := startProxy(t, cfg, Options{}, nil)
			for range tc.requests {
				get(t, p.addr, "/page?cid=SECRET-ID", "shop.test")
			}
			entries := p.logs.FilterMessage("access").All()
			if len(entries) != tc.want {
				t.Fatalf("%d access lines, want %d", len(entries), tc.want)
			}
			for _, e := range entries {
				f := e.ContextMap()
				if f["path"] != "/page" || f["method"] != "GET" || f["status"] != int64(200) || f["route"] != "pass" {
					t.Errorf("access line fields: %v", f)
				}
				if strings.Contains(fmt.Sprint(f), "SECRET") {
					t.Errorf("access line leaks the query: %v", f)
				}
			}
		})
	}
}

func TestFasthttpLoggerRedacts(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := fasthttpLogger{log: zap.New(core), limit: newLogLimiter(0)}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	l.Printf("error when serving connection %q<->%q: %v", addr, addr,
		errors.New(`error when reading request headers: cannot find http request method. buffer size=30, contents: "GET /g/collect?cid=123.456"`))
	l.Printf("%.3f %s - %s", 1.5, "#0000000000000001 - 127.0.0.1:1<->127.0.0.1:2 - GET http://shop/?uid=alice", []byte("uid=alice"))
	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("%d lines, want 2", len(all))
	}
	for _, e := range all {
		d := e.ContextMap()["detail"].(string)
		if strings.Contains(d, "cid=") || strings.Contains(d, "alice") || strings.Contains(d, "collect") {
			t.Errorf("raw request bytes logged: %q", d)
		}
	}
	if d := all[0].ContextMap()["detail"].(string); !strings.Contains(d, "127.0.0.1:8080") || !strings.Contains(d, "cannot find http request method") {
		t.Errorf("diagnostic part lost: %q", d)
	}
}

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(time.Hour)
	if _, ok := l.allow(); !ok {
		t.Fatal("first line suppressed")
	}
	for range 5 {
		if _, ok := l.allow(); ok {
			t.Fatal("line allowed within the interval")
		}
	}
	l.next.Store(0) // the interval has passed
	n, ok := l.allow()
	if !ok || n != 5 {
		t.Errorf("after interval: allowed %v, suppressed %d; want true, 5", ok, n)
	}
}

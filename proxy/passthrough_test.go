package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/sidetrack/sidetrack/config"
)

// rawOrigin is a TCP origin that records each request's header block
// byte for byte and answers with a canned raw response, so tests can see
// exactly which header lines cross the proxy in both directions.
type rawOrigin struct {
	ln      net.Listener
	respond func(r *http.Request) string
	mu      sync.Mutex
	headers []string
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	// closeAfter makes the origin close each connection after one answer
	// (to truncate an answer mid-body).
	closeAfter atomic.Bool
}

func newRawOrigin(t testing.TB, respond func(r *http.Request) string) *rawOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln, respond: respond, conns: make(map[net.Conn]struct{})}
	o.wg.Add(1)
	go o.accept()
	t.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for c := range o.conns {
			c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func (o *rawOrigin) URL() string { return "http://" + o.ln.Addr().String() }

func (o *rawOrigin) accept() {
	defer o.wg.Done()
	for {
		c, err := o.ln.Accept()
		if err != nil {
			return
		}
		o.mu.Lock()
		o.conns[c] = struct{}{}
		o.mu.Unlock()
		o.wg.Add(1)
		go o.serve(c)
	}
}

func (o *rawOrigin) serve(c net.Conn) {
	defer o.wg.Done()
	defer c.Close()
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for {
		raw.Reset()
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		// The header block is what the tee saw up to the blank line.
		head, _, _ := strings.Cut(raw.String(), "\r\n\r\n")
		_, _ = io.Copy(io.Discard, req.Body)
		o.mu.Lock()
		o.headers = append(o.headers, head)
		o.mu.Unlock()
		if _, err := io.WriteString(c, o.respond(req)); err != nil || o.closeAfter.Load() {
			return
		}
	}
}

func (o *rawOrigin) lastHeader(t testing.TB) string {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.headers) == 0 {
		t.Fatal("raw origin saw no request")
	}
	return o.headers[len(o.headers)-1]
}

// headerLines maps lowercase header names to their values in a raw block.
func headerLines(block string) map[string][]string {
	m := make(map[string][]string)
	for i, line := range strings.Split(block, "\r\n") {
		if i == 0 {
			continue // request or status line
		}
		k, v, ok := strings.Cut(line, ":")
		if ok {
			k = strings.ToLower(k)
			m[k] = append(m[k], strings.TrimSpace(v))
		}
	}
	return m
}

func TestPassThroughPreservesRequest(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Origin", "yes")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "answer for "+r.Method)
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)

	tests := []struct {
		method, target, body string
		headers              []string
	}{
		{"GET", "/", "", nil},
		{"GET", "/a/b%2Fc/../d?x=1&y=%20z&x=2&empty=&flag", "", nil},
		{"GET", "//double//slash/./x?q=http://elsewhere/", "", nil},
		{"GET", "/%C3%BCber;param?utf=%E2%9C%93", "", nil},
		{"POST", "/checkout?step=2", `{"cart":[1,2,3]}`, []string{"Content-Type: application/json"}},
		{"PUT", "/api/item/7", "replacement", []string{"Content-Type: text/plain"}},
		{"PATCH", "/api/item/7", "patch", nil},
		{"DELETE", "/api/item/7", "", nil},
		{"OPTIONS", "/api", "", nil},
		{"PROPFIND", "/dav/", "<propfind/>", []string{"Depth: 1"}},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: Shop.Example:8080\r\n", tc.method, tc.target)
			b.WriteString("X-Custom: one\r\nX-Custom: two\r\nCookie: a=1; b=2\r\nUser-Agent: test-agent/1.0\r\nAccept-Encoding: gzip, br\r\nAuthorization: Bearer abc\r\n")
			for _, h := range tc.headers {
				b.WriteString(h + "\r\n")
			}
			if tc.body != "" {
				fmt.Fprintf(&b, "Content-Length: %d\r\n", len(tc.body))
			}
			b.WriteString("Connection: close\r\n\r\n" + tc.body)
			resp, body := rawExchange(t, p.addr, b.String(), tc.method)

			if resp.StatusCode != http.StatusCreated || string(body) != "answer for "+tc.method || resp.Header.Get("X-Origin") != "yes" {
				t.Errorf("client got %d %q X-Origin=%q", resp.StatusCode, body, resp.Header.Get("X-Origin"))
			}
			r := o.last(t)
			if r.Method != tc.method || r.RequestURI != tc.target || r.Host != "Shop.Example:8080" || string(r.Body) != tc.body {
				t.Errorf("origin saw %s %s host %q body %q", r.Method, r.RequestURI, r.Host, r.Body)
			}
			want := map[string][]string{
				"X-Custom":        {"one", "two"},
				"Cookie":          {"a=1; b=2"},
				"User-Agent":      {"test-agent/1.0"},
				"Accept-Encoding": {"gzip, br"},
				"Authorization":   {"Bearer abc"},
			}
			for _, h := range tc.headers {
				k, v, _ := strings.Cut(h, ": ")
				want[k] = []string{v}
			}
			for k, v := range want {
				if got := r.Header.Values(k); strings.Join(got, "|") != strings.Join(v, "|") {
					t.Errorf("origin header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestPassThroughAddsNothingUnasked(t *testing.T) {
	o := newRawOrigin(t, func(*http.Request) string { return "HTTP/1.1 204 No Content\r\n\r\n" })
	p := startProxy(t, testConfig(o.URL()), Options{}, nil)
	resp, _ := rawExchange(t, p.addr, "POST /form HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b", "POST")
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h := headerLines(o.lastHeader(t))
	for _, k := range []string{"user-agent", "content-type"} {
		if v, ok := h[k]; ok {
			t.Errorf("proxy invented %s: %q", k, v)
		}
	}
	if v := resp.Header.Values("Content-Type"); len(v) != 0 {
		t.Errorf("proxy invented a response Content-Type: %q", v)
	}
	if v := resp.Header.Get("Server"); v != "" {
		t.Errorf("proxy added Server: %q", v)
	}
}

func TestAsteriskOptions(t *testing.T) {
	o := newRawOrigin(t, func(*http.Request) string { return "HTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n" })
	p := startProxy(t, testConfig(o.URL()), Options{}, nil)
	resp, _ := rawExchange(t, p.addr, "OPTIONS * HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", "OPTIONS")
	if resp.StatusCode != 200 || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
	if line, _, _ := strings.Cut(o.lastHeader(t), "\r\n"); line != "OPTIONS * HTTP/1.1" {
		t.Errorf("origin request line %q", line)
	}
}

// TestStreamingResponseIsLive: a chunked origin answer (server-sent
// events, long polls) reaches the client as it is produced, not when it
// ends.
func TestStreamingResponseIsLive(t *testing.T) {
	next := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)
	c, err := net.DialTimeout("tcp", p.addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(guard))
	_, _ = io.WriteString(c, "GET /events HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q %v (the proxy held the stream back)", line, err)
	}
	close(next)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest of stream %q", rest)
	}
}

func TestHopByHopRemoved(t *testing.T) {
	o := newRawOrigin(t, func(r *http.Request) string {
		return "HTTP/1.1 200 OK\r\n" +
			"Connection: X-Resp-Hop, close\r\n" +
			"X-Resp-Hop: 1\r\n" +
			"Keep-Alive: timeout=5\r\n" +
			"Proxy-Authenticate: Basic realm=x\r\n" +
			"Proxy-Extra: 1\r\n" +
			"Upgrade: foo\r\n" +
			"Trailer: X-Trail\r\n" +
			"X-Kept: yes\r\n" +
			"Content-Length: 2\r\n\r\nok"
	})
	p := startProxy(t, testConfig(o.URL()), Options{}, nil)

	c, err := net.DialTimeout("tcp", p.addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(guard))
	br := bufio.NewReader(c)
	req := "GET /hop HTTP/1.1\r\nHost: shop.test\r\n" +
		"Connection: keep-alive, X-Hop, x-other-hop\r\n" +
		"X-Hop: 1\r\nX-Other-Hop: 2\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic eDp5\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"TE: trailers\r\n" +
		"Upgrade: h2c\r\n" +
		"X-End: kept\r\n\r\n"
	for round := range 2 {
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("round %d: %d %q", round, resp.StatusCode, body)
		}
		for _, k := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate", "Proxy-Extra", "Upgrade", "Trailer"} {
			if v := resp.Header.Values(k); len(v) > 0 {
				t.Errorf("round %d: response kept hop-by-hop %s: %q", round, k, v)
			}
		}
		if resp.Header.Get("X-Kept") != "yes" {
			t.Errorf("round %d: end-to-end response header lost", round)
		}
		// The origin's "Connection: close" is about its own connection:
		// the client's keep-alive connection stays usable.
		if resp.Close {
			t.Fatalf("round %d: origin's Connection: close leaked to the client", round)
		}
		h := headerLines(o.lastHeader(t))
		for _, k := range []string{"x-hop", "x-other-hop", "keep-alive", "proxy-authorization", "proxy-connection", "te", "upgrade", "trailer", "transfer-encoding"} {
			if v, ok := h[k]; ok {
				t.Errorf("round %d: origin got hop-by-hop %s: %q", round, k, v)
			}
		}
		if v := h["connection"]; len(v) > 0 && !strings.EqualFold(v[0], "close") {
			t.Errorf("round %d: origin got Connection: %q", round, v)
		}
		if got := h["x-end"]; len(got) != 1 || got[0] != "kept" {
			t.Errorf("round %d: end-to-end request header lost: %q", round, got)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	tests := []struct {
		name     string
		trusted  []string
		extra    []string
		wantXFF  string
		wantXFP  string
		wantFwd  string
		wantReal string
	}{
		{"untrusted peer: chain replaced", nil,
			[]string{"X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https", "X-Forwarded-Host: evil.test", "Forwarded: for=1.2.3.4", "X-Real-IP: 1.2.3.4"},
			"127.0.0.1", "http", "", ""},
		{"untrusted (other range)", []string{"10.0.0.0/8"},
			[]string{"X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https"},
			"127.0.0.1", "http", "", ""},
		{"trusted peer: chain extended, proto believed", []string{"127.0.0.0/8"},
			[]string{"X-Forwarded-For: 203.0.113.9, 198.51.100.2", "X-Forwarded-Proto: https", "Forwarded: for=203.0.113.9", "X-Real-IP: 203.0.113.9"},
			"203.0.113.9, 198.51.100.2, 127.0.0.1", "https", "for=203.0.113.9", "203.0.113.9"},
		{"trusted peer: several XFF lines joined", []string{"127.0.0.1"},
			[]string{"X-Forwarded-For: 203.0.113.9", "X-Forwarded-For: 198.51.100.2"},
			"203.0.113.9, 198.51.100.2, 127.0.0.1", "http", "", ""},
		{"trusted peer without headers", []string{"127.0.0.0/8"}, nil, "127.0.0.1", "http", "", ""},
		{"trusted peer: junk proto", []string{"127.0.0.0/8"}, []string{"X-Forwarded-Proto: gopher"}, "127.0.0.1", "http", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, nil)
			cfg := testConfig(o.URL)
			cfg.TrustedProxies = tc.trusted
			p := startProxy(t, cfg, Options{}, nil)
			resp, _ := get(t, p.addr, "/", "shop.test", tc.extra...)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			h := o.last(t).Header
			if got := strings.Join(h.Values("X-Forwarded-For"), "|"); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tc.wantXFF)
			}
			if got := strings.Join(h.Values("X-Forwarded-Proto"), "|"); got != tc.wantXFP {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tc.wantXFP)
			}
			if got := strings.Join(h.Values("X-Forwarded-Host"), "|"); got != "shop.test" {
				t.Errorf("X-Forwarded-Host = %q, want the request host", got)
			}
			if got := h.Get("Forwarded"); got != tc.wantFwd {
				t.Errorf("Forwarded = %q, want %q", got, tc.wantFwd)
			}
			if got := h.Get("X-Real-Ip"); got != tc.wantReal {
				t.Errorf("X-Real-IP = %q, want %q", got, tc.wantReal)
			}
		})
	}
}

func TestHostsMisdirected421(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Hosts = []string{"Shop.Test", "www.shop.test"}
	p := startProxy(t, cfg, Options{}, nil)

	tests := []struct {
		raw  string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", 200},
		{"GET / HTTP/1.1\r\nHost: SHOP.TEST:8080\r\nConnection: close\r\n\r\n", 200},
		{"GET / HTTP/1.1\r\nHost: www.shop.test.\r\nConnection: close\r\n\r\n", 200},
		{"GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n", 421},
		{"GET / HTTP/1.1\r\nHost: shop.test.evil.test\r\nConnection: close\r\n\r\n", 421},
		{"GET / HTTP/1.0\r\n\r\n", 421},
		// The absolute-form authority is the request's host (RFC 9112 §3.2.2).
		{"GET http://evil.test/ HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", 421},
		{"GET http://shop.test/ok HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n", 200},
	}
	wantHits, want421 := 0, 0
	for _, tc := range tests {
		resp, body := rawExchange(t, p.addr, tc.raw, "GET")
		if resp.StatusCode != tc.want {
			t.Errorf("%q: %d, want %d", tc.raw, resp.StatusCode, tc.want)
		}
		if tc.want == 421 {
			want421++
			if !bytes.Contains(body, []byte("Misdirected")) {
				t.Errorf("421 body %q", body)
			}
		} else {
			wantHits++
		}
	}
	if got := o.hits.Load(); got != int64(wantHits) {
		t.Errorf("origin hits %d, want %d", got, wantHits)
	}
	if got := o.last(t).Host; got != "shop.test" {
		t.Errorf("absolute-form request reached the origin with Host %q", got)
	}
	if v := metricValue(p.metricsText(t, ""), `sidetrack_ingest_rejected_total{route="pass",reason="host_not_allowed"}`); v != strconv.Itoa(want421) {
		t.Errorf("host_not_allowed rejections %q, want %d", v, want421)
	}
}

func TestMultipleSetCookieSurvive(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sid=1; Path=/; HttpOnly")
		w.Header().Add("Set-Cookie", "sid=2; Path=/account; Secure")
		w.Header().Add("Set-Cookie", "theme=dark; Max-Age=60")
		w.Header().Add("Set-Cookie", "broken")
		_, _ = io.WriteString(w, "ok")
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)
	resp, _ := get(t, p.addr, "/login", "shop.test")
	got := resp.Header.Values("Set-Cookie")
	want := []string{"sid=1; Path=/; HttpOnly", "sid=2; Path=/account; Secure", "theme=dark; Max-Age=60", "broken"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Set-Cookie = %q, want %q", got, want)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new?x=1", http.StatusFound)
			return
		}
		_, _ = io.WriteString(w, "new page")
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)
	resp, _ := get(t, p.addr, "/old", "shop.test")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/new?x=1" {
		t.Errorf("got %d Location %q, want 302 /new?x=1", resp.StatusCode, resp.Header.Get("Location"))
	}
	if o.hits.Load() != 1 {
		t.Errorf("origin hits %d: the redirect was followed", o.hits.Load())
	}
}

func TestOriginErrorsPassThrough(t *testing.T) {
	for _, code := range []int{400, 404, 500, 503} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Err", "origin")
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(code)
				_, _ = io.WriteString(w, "origin says "+strconv.Itoa(code))
			})
			p := startProxy(t, testConfig(o.URL), Options{}, nil)
			resp, body := get(t, p.addr, "/x", "shop.test")
			if resp.StatusCode != code || string(body) != "origin says "+strconv.Itoa(code) ||
				resp.Header.Get("X-Err") != "origin" || resp.Header.Get("Retry-After") != "7" {
				t.Errorf("got %d %q %v", resp.StatusCode, body, resp.Header)
			}
			text := p.metricsText(t, "")
			if v := metricValue(text, fmt.Sprintf(`sidetrack_requests_total{route="pass",code="%d"}`, code)); v != "1" {
				t.Errorf("requests_total for %d = %q", code, v)
			}
			if v := metricValue(text, `sidetrack_upstream_errors_total{kind="other"}`); v != "0" {
				t.Errorf("an origin HTTP error counted as upstream error: %q", v)
			}
		})
	}
}

func TestHeadAndNoBodyAnswers(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "11")
			_, _ = io.WriteString(w, "hello world")
		}
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)
	resp, body := rawExchange(t, p.addr, "HEAD /page HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", "HEAD")
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != 11 {
		t.Errorf("HEAD: %d len %d Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	resp, body = get(t, p.addr, "/304", "shop.test")
	if resp.StatusCode != 304 || len(body) != 0 || resp.Header.Get("ETag") != `"v1"` {
		t.Errorf("304: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestOriginDown502(t *testing.T) {
	p := startProxy(t, testConfig("http://"+closedAddr(t)), Options{}, func(s *Server) {
		s.upLog = newLogLimiter(time.Hour) // one line for the whole outage
	})
	const n = 5
	for range n {
		resp, body := get(t, p.addr, "/", "shop.test")
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", resp.StatusCode)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(body, []byte("502 Bad Gateway")) {
			t.Errorf("502 page: %q %q", resp.Header.Get("Content-Type"), body)
		}
	}
	text := p.metricsText(t, "")
	if v := metricValue(text, `sidetrack_upstream_errors_total{kind="connect"}`); v != strconv.Itoa(n) {
		t.Errorf("connect errors %q, want %d", v, n)
	}
	if v := metricValue(text, `sidetrack_requests_total{route="pass",code="502"}`); v != strconv.Itoa(n) {
		t.Errorf("502 requests %q, want %d", v, n)
	}
	if got := p.logs.FilterMessage("origin request failed").Len(); got != 1 {
		t.Errorf("%d log lines for %d failures, want 1", got, n)
	}
}

func TestOriginSlow504(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
	})
	t.Cleanup(func() { close(release) }) // runs before the origin closes
	cfg := testConfig(o.URL)
	cfg.Server.UpstreamTimeout = config.Duration(300 * time.Millisecond)
	p := startProxy(t, cfg, Options{}, nil)
	resp, body := get(t, p.addr, "/slow", "shop.test")
	if resp.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(body, []byte("504 Gateway Timeout")) {
		t.Fatalf("got %d %q, want the 504 page", resp.StatusCode, body)
	}
	if v := metricValue(p.metricsText(t, ""), `sidetrack_upstream_errors_total{kind="timeout"}`); v != "1" {
		t.Errorf("timeout errors %q, want 1", v)
	}
}

func TestOriginResetMidResponse(t *testing.T) {
	// Promises 100 bytes and sends 5; the test then kills the connection.
	o := newRawOrigin(t, func(*http.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"
	})
	o.closeAfter.Store(true)
	p := startProxy(t, testConfig(o.URL()), Options{}, nil)
	c, err := net.DialTimeout("tcp", p.addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(guard))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
	// Either the header never arrives complete with its body, or the body
	// is cut short: the client must not see a complete answer.
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		if got, err := io.ReadAll(resp.Body); err == nil {
			t.Fatalf("client read a complete body %q from a truncated origin answer", got)
		}
	}
	waitFor(t, func() bool {
		return metricValue(p.metricsText(t, ""), `sidetrack_upstream_errors_total{kind="reset"}`) == "1"
	}, "reset counted")
}

// waitFor polls cond until it holds or the guard expires.
func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReliabilityRequestBodyLimit413(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Server.MaxRequestBody = 1 << 10
	p := startProxy(t, cfg, Options{}, nil)

	small := strings.Repeat("s", 1<<10)
	big := strings.Repeat("b", 2<<10)
	resp, _ := rawExchange(t, p.addr, "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n"+small, "POST")
	if resp.StatusCode != 200 {
		t.Fatalf("body at the limit: %d", resp.StatusCode)
	}
	resp, _ = rawExchange(t, p.addr, "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2048\r\n\r\n"+big, "POST")
	if resp.StatusCode != 413 {
		t.Errorf("Content-Length over the limit: %d, want 413", resp.StatusCode)
	}
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big)
	resp, _ = rawExchange(t, p.addr, "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n"+chunked, "POST")
	if resp.StatusCode != 413 {
		t.Errorf("chunked body over the limit: %d, want 413", resp.StatusCode)
	}
	// A chunked body is streamed, so the origin may see the start of that
	// request, but never a complete over-limit body.
	o.mu.Lock()
	for _, r := range o.reqs {
		if len(r.Body) > 1<<10 {
			t.Errorf("origin received a %d-byte body past the 1 KiB limit", len(r.Body))
		}
	}
	o.mu.Unlock()
	if v := metricValue(p.metricsText(t, ""), `sidetrack_ingest_rejected_total{route="pass",reason="body_too_large"}`); v != "2" {
		t.Errorf("body_too_large rejections %q, want 2", v)
	}
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ n, off int }

// pattern is 0..250 repeated; byte i of a pattern stream is i%251.
var pattern = func() []byte {
	b := make([]byte, 64<<10+251)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	start := r.off % 251
	k := copy(p[:min(len(p), r.n-r.off)], pattern[start:])
	r.off += k
	return k, nil
}

func patternSum(n int) string {
	h := sha256.New()
	_, _ = io.Copy(h, &patternReader{n: n})
	return hex.EncodeToString(h.Sum(nil))
}

func bigBodySize() int {
	if testing.Short() {
		return 8 << 20
	}
	return 32 << 20
}

// allocDuring reports the bytes allocated process-wide while f runs.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestLargeRequestBodyStreams(t *testing.T) {
	size := bigBodySize()
	want := patternSum(size)
	// Not the recording origin: it must not keep the body.
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	}))
	t.Cleanup(o.Close)
	p := startProxy(t, testConfig(o.URL), Options{}, nil)

	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var answer []byte
			var code int
			alloc := allocDuring(func() {
				c, err := net.DialTimeout("tcp", p.addr, guard)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(guard))
				bw := bufio.NewWriterSize(c, 32<<10)
				if chunked {
					_, _ = io.WriteString(bw, "POST /upload HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
					cw := &chunkWriter{w: bw}
					_, _ = io.Copy(cw, &patternReader{n: size})
					_, _ = io.WriteString(bw, "0\r\n\r\n")
				} else {
					fmt.Fprintf(bw, "POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size)
					_, _ = io.Copy(bw, &patternReader{n: size})
				}
				if err := bw.Flush(); err != nil {
					t.Fatal(err)
				}
				resp, body := readResponse(t, bufio.NewReader(c), "POST")
				code, answer = resp.StatusCode, body
			})
			if code != 200 || string(answer) != fmt.Sprintf("%d %s", size, want) {
				t.Fatalf("origin got %d %q, want %d bytes with sum %s", code, answer, size, want)
			}
			if alloc > uint64(size/4) {
				t.Errorf("allocated %d bytes while streaming a %d-byte request body", alloc, size)
			}
			t.Logf("%d-byte request body: %d bytes allocated process-wide", size, alloc)
		})
	}
}

type chunkWriter struct{ w io.Writer }

func (c *chunkWriter) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(c.w, "%x\r\n", len(p)); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	_, err = io.WriteString(c.w, "\r\n")
	return n, err
}

func TestLargeResponseBodyStreams(t *testing.T) {
	size := bigBodySize()
	want := patternSum(size)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		_, _ = io.Copy(w, &patternReader{n: size})
	})
	p := startProxy(t, testConfig(o.URL), Options{}, nil)
	for _, q := range []string{"", "?chunked=1"} {
		t.Run("query="+q, func(t *testing.T) {
			var n int64
			var sum string
			var resp *http.Response
			alloc := allocDuring(func() {
				c, err := net.DialTimeout("tcp", p.addr, guard)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(guard))
				_, _ = io.WriteString(c, "GET /download"+q+" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
				resp, err = http.ReadResponse(bufio.NewReaderSize(c, 32<<10), nil)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				buf := make([]byte, 32<<10)
				n, _ = io.CopyBuffer(h, resp.Body, buf)
				sum = hex.EncodeToString(h.Sum(nil))
			})
			if resp.StatusCode != 200 || n != int64(size) || sum != want {
				t.Fatalf("client got %d, %d bytes, sum %s; want %d bytes, %s", resp.StatusCode, n, sum, size, want)
			}
			if q == "" && resp.ContentLength != int64(size) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, size)
			}
			if alloc > uint64(size/4) {
				t.Errorf("allocated %d bytes while streaming a %d-byte response body", alloc, size)
			}
			t.Logf("%d-byte response body: %d bytes allocated process-wide", size, alloc)
		})
	}
}

// TestReliabilityOpenProxyCanary: no request, however crafted, makes sidetrack
// connect anywhere but the origin.
func TestReliabilityOpenProxyCanary(t *testing.T) {
	canary, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var canaryConns atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := canary.Accept()
			if err != nil {
				return
			}
			canaryConns.Add(1)
			c.Close()
		}
	}()
	defer func() { canary.Close(); wg.Wait() }()
	ca := canary.Addr().String()

	o := newOrigin(t, nil)
	p := startProxy(t, testConfig(o.URL), Options{}, nil)

	tests := []struct {
		name, raw, method string
		want              int
	}{
		{"absolute-form http", "GET http://" + ca + "/steal HTTP/1.1\r\nHost: " + ca + "\r\nConnection: close\r\n\r\n", "GET", 200},
		{"absolute-form https", "GET https://" + ca + "/steal HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", "GET", 200},
		{"absolute-form with userinfo", "GET http://user:pw@" + ca + "/x HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", "GET", 200},
		{"absolute-form HTTP/1.0 no Host", "GET http://" + ca + "/ HTTP/1.0\r\n\r\n", "GET", 200},
		{"forged Host", "GET / HTTP/1.1\r\nHost: " + ca + "\r\nConnection: close\r\n\r\n", "GET", 200},
		{"forged X-Forwarded-Host", "GET / HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-Host: " + ca + "\r\nConnection: close\r\n\r\n", "GET", 200},
		{"network-path reference", "GET //" + ca + "/x HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", "GET", 200},
		{"POST absolute-form", "POST http://" + ca + "/ HTTP/1.1\r\nHost: " + ca + "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", "POST", 200},
		{"CONNECT", "CONNECT " + ca + " HTTP/1.1\r\nHost: " + ca + "\r\n\r\n", "CONNECT", 501},
		{"TRACE", "TRACE http://" + ca + "/ HTTP/1.1\r\nHost: " + ca + "\r\nConnection: close\r\n\r\n", "TRACE", 405},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: " + ca + "\r\nConnection: close\r\n\r\n", "OPTIONS", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := o.hits.Load()
			resp, _ := rawExchange(t, p.addr, tc.raw, tc.method)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			// net/http answers OPTIONS * itself, without its handler;
			// TestAsteriskOptions checks that one with a raw origin.
			if tc.want == 200 && tc.method != "OPTIONS" && o.hits.Load() != before+1 {
				t.Errorf("request did not go to the origin")
			}
			if tc.want == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
	if n := canaryConns.Load(); n != 0 {
		t.Fatalf("the canary saw %d connections: sidetrack is an open proxy", n)
	}
	r := o.last(t)
	_ = r
	text := p.metricsText(t, "")
	for _, reason := range []string{"connect", "trace"} {
		if v := metricValue(text, `sidetrack_ingest_rejected_total{route="pass",reason="`+reason+`"}`); v != "1" {
			t.Errorf("%s rejections %q, want 1", reason, v)
		}
	}
}

func TestWebSocketNotProxied(t *testing.T) {
	o := newRawOrigin(t, func(*http.Request) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	p := startProxy(t, testConfig(o.URL()), Options{}, nil)
	resp, body := rawExchange(t, p.addr, "GET /socket HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "GET")
	if resp.StatusCode != 501 || !bytes.Contains(body, []byte("WebSockets are not proxied")) {
		t.Errorf("websocket: %d %q, want 501 with an explanation", resp.StatusCode, body)
	}
	o.mu.Lock()
	n := len(o.headers)
	o.mu.Unlock()
	if n != 0 {
		t.Error("websocket upgrade reached the origin")
	}
	// Other upgrades are ignored: the request proceeds without Upgrade.
	resp, _ = rawExchange(t, p.addr, "GET /page HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("h2c upgrade request: %d, want 200", resp.StatusCode)
	}
	h := headerLines(o.lastHeader(t))
	if _, ok := h["upgrade"]; ok {
		t.Error("Upgrade reached the origin")
	}
	if _, ok := h["http2-settings"]; ok {
		t.Error("HTTP2-Settings (named in Connection) reached the origin")
	}
	if v := metricValue(p.metricsText(t, ""), `sidetrack_ingest_rejected_total{route="pass",reason="websocket"}`); v != "1" {
		t.Errorf("websocket rejections %q, want 1", v)
	}
}

func TestTrackingRoutesDispatchedFirst(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Hosts = []string{"shop.test"}
	p := startProxy(t, cfg, Options{}, func(s *Server) {
		s.addTracking("/collect", RouteCollect, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(204) })
		s.addTrackingPrefix("/v1/", RouteSegment, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(200); ctx.SetBodyString(`{"success":true}`) })
		s.tracking["/unlabelled"] = func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(202) }
	})
	tests := []struct {
		target, host string
		want         int
	}{
		{"/collect?x=1", "shop.test", 204},
		{"/v1/track", "shop.test", 200},
		{"/v1/batch", "shop.test", 200},
		{"/unlabelled", "shop.test", 202},
		{"/collectx", "shop.test", 200}, // pass-through
		{"/v1/track", "evil.test", 421},
		{"/unlabelled", "evil.test", 421},
	}
	for _, tc := range tests {
		resp, _ := get(t, p.addr, tc.target, tc.host)
		if resp.StatusCode != tc.want {
			t.Errorf("%s on %s: %d, want %d", tc.target, tc.host, resp.StatusCode, tc.want)
		}
	}
	if o.hits.Load() != 1 {
		t.Errorf("origin hits %d, want 1", o.hits.Load())
	}
	text := p.metricsText(t, "")
	for series, want := range map[string]string{
		`sidetrack_ingest_rejected_total{route="segment",reason="host_not_allowed"}`:  "1",
		`sidetrack_ingest_rejected_total{route="tracking",reason="host_not_allowed"}`: "1",
	} {
		if v := metricValue(text, series); v != want {
			t.Errorf("%s = %q, want %s", series, v, want)
		}
	}
}

func TestSplitTarget(t *testing.T) {
	tests := []struct {
		raw, path, query, authority string
		form                        targetForm
	}{
		{"/", "/", "", "", formOrigin},
		{"/a/b?c=d&e", "/a/b", "c=d&e", "", formOrigin},
		{"/a?", "/a", "", "", formOrigin},
		{"/a#frag?x", "/a", "", "", formOrigin},
		{"/a?x=1#frag", "/a", "x=1", "", formOrigin},
		{"//evil/x", "//evil/x", "", "", formOrigin},
		{"*", "*", "", "", formAsterisk},
		{"http://evil.test", "/", "", "evil.test", formAbsolute},
		{"HTTPS://evil.test:8443/p?q", "/p", "q", "evil.test:8443", formAbsolute},
		{"http://u:p@evil.test/p", "/p", "", "evil.test", formAbsolute},
		{"http://evil.test?q=1", "/", "q=1", "evil.test", formAbsolute},
		{"ftp://evil.test/", "", "", "", formInvalid},
		{"http:///nohost", "", "", "", formInvalid},
		{"evil.test:443", "", "", "", formInvalid},
		{"", "", "", "", formInvalid},
	}
	for _, tc := range tests {
		path, query, auth, form := splitTarget([]byte(tc.raw))
		if form != tc.form || (form != formInvalid && (string(path) != tc.path || string(query) != tc.query || string(auth) != tc.authority)) {
			t.Errorf("splitTarget(%q) = %q %q %q %v, want %q %q %q %v", tc.raw, path, query, auth, form, tc.path, tc.query, tc.authority, tc.form)
		}
	}
}

func FuzzSplitTarget(f *testing.F) {
	for _, s := range []string{"/", "/a?b#c", "*", "http://h/p?q", "https://u@h:1", "//x", "http://", "x://y/z"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		path, query, auth, form := splitTarget(raw)
		switch form {
		case formInvalid:
			return
		case formAbsolute:
			if len(auth) == 0 || bytes.ContainsAny(auth, "/?#@") {
				t.Fatalf("authority %q from %q", auth, raw)
			}
		case formAsterisk:
			if string(path) != "*" {
				t.Fatalf("asterisk path %q", path)
			}
			return
		}
		if len(path) == 0 || path[0] != '/' {
			t.Fatalf("path %q from %q does not start with /", path, raw)
		}
		if bytes.ContainsAny(path, "?#") || bytes.IndexByte(query, '#') >= 0 {
			t.Fatalf("path %q / query %q from %q keep delimiters", path, query, raw)
		}
	})
}

// benchOrigin is a fasthttp origin answering a small page, as a shop's
// cached HTML or asset would be.
func benchOrigin(b *testing.B, ln net.Listener) {
	b.Helper()
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
			ctx.Response.Header.Set("Set-Cookie", "sid=1; Path=/")
			ctx.SetContentType("text/html; charset=utf-8")
			ctx.SetBodyString("<!doctype html><title>shop</title><p>hello</p>")
		},
		NoDefaultServerHeader: true,
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	b.Cleanup(func() { _ = srv.Shutdown(); <-done })
}

// runClient sends GET requests through the proxy at c and checks answers.
func runClient(b *testing.B, c *fasthttp.HostClient) {
	b.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://shop.test/products/42?ref=home")
	req.Header.Set("User-Agent", "bench/1.0")
	req.Header.Set("Cookie", "stk_did=abc; _ga=GA1.1.1.1")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Body()) == 0 {
			b.Fatalf("status %d", resp.StatusCode())
		}
	}
}

// BenchmarkPassThrough: client → sidetrack → origin over loopback TCP.
func BenchmarkPassThrough(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	benchOrigin(b, ln)
	p := startProxy(b, testConfig("http://"+ln.Addr().String()), Options{}, nil)
	c := &fasthttp.HostClient{Addr: p.addr, MaxConns: 1, DialTimeout: dialOrigin}
	defer c.CloseIdleConnections()
	runClient(b, c)
}

// inmemoryDial adapts an in-memory listener to HostClient.DialTimeout.
func inmemoryDial(ln *fasthttputil.InmemoryListener) fasthttp.DialFuncWithTimeout {
	return func(string, time.Duration) (net.Conn, error) { return ln.Dial() }
}

// BenchmarkPassThroughInProcess runs the same exchange over in-memory
// pipes, so no syscalls blur the picture and every allocation is in this
// process: client, sidetrack, fasthttp and the origin. Compare with
// BenchmarkBaselineProxyInProcess (a bare fasthttp HostClient proxy with the
// same streaming settings) to see what sidetrack itself adds.
func BenchmarkPassThroughInProcess(b *testing.B) {
	originLn := fasthttputil.NewInmemoryListener()
	benchOrigin(b, originLn)
	s, err := New(testConfig("http://origin.internal"), nil, Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.up.client.DialTimeout = inmemoryDial(originLn)
	proxyLn := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { _ = s.Serve(proxyLn); close(done) }()
	b.Cleanup(func() { _ = s.Shutdown(context.Background()); <-done })
	c := &fasthttp.HostClient{Addr: "proxy", DialTimeout: inmemoryDial(proxyLn), MaxConns: 1}
	defer c.CloseIdleConnections()
	runClient(b, c)
}

// BenchmarkBaselineProxyInProcess is the floor for the in-process
// benchmark: fasthttp's own minimal streaming reverse proxy, with the same
// timeouts (each costs deadline updates per request) but none of
// sidetrack's header handling, metrics or pooling.
func BenchmarkBaselineProxyInProcess(b *testing.B) {
	originLn := fasthttputil.NewInmemoryListener()
	benchOrigin(b, originLn)
	up := &fasthttp.HostClient{Addr: "origin", DialTimeout: inmemoryDial(originLn), StreamResponseBody: true,
		NoDefaultUserAgentHeader: true, ReadTimeout: guard, WriteTimeout: guard}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if err := up.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error("bad gateway", 502)
			}
		},
		StreamRequestBody: true,
		ReadTimeout:       guard,
		WriteTimeout:      guard,
		IdleTimeout:       guard,
	}
	proxyLn := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { _ = srv.Serve(proxyLn); close(done) }()
	b.Cleanup(func() { _ = srv.Shutdown(); <-done; up.CloseIdleConnections() })
	c := &fasthttp.HostClient{Addr: "proxy", DialTimeout: inmemoryDial(proxyLn), MaxConns: 1}
	defer c.CloseIdleConnections()
	runClient(b, c)
}

// TestPassThroughTee: a route that proxies through passThrough with a tee
// (the form route) sees every body byte the origin gets, streamed.
func TestPassThroughTee(t *testing.T) {
	o := newOrigin(t, nil)
	var mu sync.Mutex
	var seen []string
	p := startProxy(t, testConfig(o.URL), Options{}, func(s *Server) {
		s.addTracking("/contact", RouteForm, func(ctx *fasthttp.RequestCtx) {
			var buf bytes.Buffer
			code := s.passThrough(ctx, &buf)
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%d %s", code, buf.String()))
			mu.Unlock()
		})
	})
	form := "email=a%40b.test&msg=" + strings.Repeat("x", 20000)
	for _, raw := range []string{
		"POST /contact HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " + strconv.Itoa(len(form)) + "\r\nConnection: close\r\n\r\n" + form,
		"POST /contact HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(form), form),
	} {
		resp, body := rawExchange(t, p.addr, raw, "POST")
		if resp.StatusCode != 200 || string(body) != "origin ok" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if got := string(o.last(t).Body); got != form {
			t.Errorf("origin got %d bytes, want the form", len(got))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if s != "200 "+form {
			t.Errorf("tee saw %.40q…", s)
		}
	}
	if len(seen) != 2 {
		t.Errorf("%d tee results", len(seen))
	}
}

func TestHTTPSOrigin(t *testing.T) {
	o := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v host=%s uri=%s", r.TLS != nil, r.Host, r.RequestURI)
	}))
	t.Cleanup(o.Close)
	p := startProxy(t, testConfig(o.URL), Options{}, func(s *Server) {
		if !s.up.client.IsTLS {
			t.Fatal("https origin without IsTLS")
		}
		s.up.client.TLSConfig = o.Client().Transport.(*http.Transport).TLSClientConfig
	})
	resp, body := get(t, p.addr, "/secure?x=1", "shop.test")
	if resp.StatusCode != 200 || string(body) != "tls=true host=shop.test uri=/secure?x=1" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}

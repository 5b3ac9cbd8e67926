package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// memSink records what reaches the sink, as JSON (events are released
// right away, like a real sink does), and can be told to fail.
type memSink struct {
	pool *enrich.EventPool
	mu   sync.Mutex
	evs  []map[string]any
	quar []string // reasons
	fail error
}

func (m *memSink) Append(_ context.Context, events []*enrich.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	for _, e := range events {
		var v map[string]any
		if err := json.Unmarshal(e.AppendJSON(nil), &v); err != nil {
			panic(err)
		}
		m.evs = append(m.evs, v)
		m.pool.Put(e)
	}
	return nil
}

func (m *memSink) Quarantine(_ context.Context, events []*enrich.Event, reasons []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.quar = append(m.quar, reasons...)
	for _, e := range events {
		m.pool.Put(e)
	}
	return nil
}

func (m *memSink) events() []map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]map[string]any(nil), m.evs...)
}

// fullErr and drainErr are how a sink reports backpressure and shutdown.
type fullErr struct{}

func (fullErr) Error() string             { return "full" }
func (fullErr) RetryAfter() time.Duration { return 3 * time.Second }

type drainErr struct{}

func (drainErr) Error() string  { return "draining" }
func (drainErr) Draining() bool { return true }

// releaseCounter is a pipeline stage that counts Release calls (dedup
// reservations undone).
type releaseCounter struct {
	mu       sync.Mutex
	released int
}

func (r *releaseCounter) Apply(*enrich.Request, *enrich.Event, *enrich.EventResult) {}
func (r *releaseCounter) Release(evs []*enrich.Event) {
	r.mu.Lock()
	r.released += len(evs)
	r.mu.Unlock()
}

// invalidIfNamed marks events named "bad_event" invalid, as validation does.
type invalidIfNamed struct{}

func (invalidIfNamed) Apply(_ *enrich.Request, e *enrich.Event, res *enrich.EventResult) {
	if e.Name == "bad_event" {
		res.Outcome = enrich.Invalid
		res.Reason = "invalid:commerce.value"
		res.Errors = append(res.Errors, enrich.FieldError{Index: e.Index, Field: "commerce.value", Message: "must be ≥ 0"})
	}
}

type trackingEnv struct {
	*testProxy
	sink   *memSink
	rel    *releaseCounter
	origin *recordingOrigin
}

func startTracking(t *testing.T, tweak func(*config.Config)) *trackingEnv {
	t.Helper()
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/contact" && r.Method == "POST":
			if strings.Contains(r.Header.Get("X-Test"), "invalid") {
				w.Header().Set("Location", "/contact?error=1")
			} else {
				w.Header().Set("Location", "/thanks")
			}
			w.WriteHeader(http.StatusSeeOther)
		case r.URL.Path == "/cached":
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "public, max-age=60")
			io.WriteString(w, "<p>cached</p>")
		case r.URL.Path == "/own-cookie":
			w.Header().Set("Content-Type", "text/html")
			http.SetCookie(w, &http.Cookie{Name: "stk_did", Value: "origin-value"})
			io.WriteString(w, "<p>own</p>")
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, "<p>page</p>")
		}
	})
	cfg := testConfig(o.URL)
	cfg.Hosts = nil
	cfg.Secrets = []config.Secret{"test-secret-0123456789"}
	cfg.Cookies = config.Cookies{Device: config.DeviceCookie{Name: "stk_did", MaxAge: config.Duration(400 * 24 * time.Hour)},
		Session: config.SessionCook{Name: "stk_ses", Idle: config.Duration(30 * time.Minute)}, Touches: config.NamedCookie{Name: "stk_tch"}}
	cfg.Ingest = config.Ingest{
		MaxBody:    64 << 10,
		GA4:        config.GA4Ingest{Paths: []string{"/g/collect"}},
		Segment:    config.Segment{Prefix: "/v1", MaxEvent: 32 << 10, MaxRequest: 500 << 10},
		Collect:    config.Collect{Path: "/collect"},
		ServerKeys: []config.Secret{"server-key-0123456789"},
		Forms: []config.Form{{Path: "/contact", Event: "lead_submitted",
			Fields:  map[string]string{"email": "email", "topic": "topic"},
			Success: config.FormSuccess{Status: []string{"200-299", "300-399"}, NotLocation: "/contact"}}},
		CORS: config.CORS{Origins: []string{"https://shop.example"}},
	}
	cfg.Consent.Default = config.Purposes{Analytics: "granted", Ads: "granted", AdUserData: "granted", AdPersonalization: "granted"}
	if tweak != nil {
		tweak(cfg)
	}
	pool := &enrich.EventPool{}
	sink := &memSink{pool: pool}
	rel := &releaseCounter{}
	identity, err := enrich.NewIdentity(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dedup = config.Dedup{Window: config.Duration(time.Hour), Capacity: 10000, FalsePositiveRate: 0.001}
	dedup, err := enrich.NewDedup(cfg, enrich.DedupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dedup.Close() })
	pipe := enrich.NewPipeline(nil, identity, invalidIfNamed{}, rel, dedup)
	p := startProxy(t, cfg, Options{Sink: sink, Pipeline: pipe, Events: pool, Pages: identity}, nil)
	return &trackingEnv{testProxy: p, sink: sink, rel: rel, origin: o}
}

func (e *trackingEnv) do(t *testing.T, method, target, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addr+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

const ga4Hit = "/g/collect?v=2&tid=G-T&cid=1.2&_p=7&_s=1&en=page_view&dl=https%3A%2F%2Fshop.example%2F"

func TestTrackingAnswers(t *testing.T) {
	env := startTracking(t, nil)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("browser-key:"))
	tests := []struct {
		name         string
		method, path string
		body         string
		hdr          []string
		code         int
		answer       string // substring of the body
		stored       int    // events that reach the sink
	}{
		{"ga4 get", "GET", ga4Hit, "", nil, 204, "", 1},
		{"ga4 post lines", "POST", "/g/collect?v=2&tid=G-T&cid=1.2", "en=a&_s=1\r\nen=b&_s=2\r\nen=c&_s=3\r\n", []string{"Content-Type", "text/plain;charset=UTF-8"}, 204, "", 3},
		{"ga4 sendBeacon empty body", "POST", strings.Replace(ga4Hit, "_s=1", "_s=2", 1), "", nil, 204, "", 1},
		{"ga4 repeated hit is a duplicate, answered the same", "GET", ga4Hit, "", nil, 204, "", 0},
		{"ga4 wrong method", "PUT", ga4Hit, "", nil, 405, "method", 0},
		{"segment track text/plain", "POST", "/v1/t", `{"type":"track","event":"Signed Up","messageId":"m-1","anonymousId":"a"}`, []string{"Content-Type", "text/plain", "Authorization", basic}, 200, `{"success":true}`, 1},
		{"segment metrics ignored", "POST", "/v1/m", `{"series":[]}`, nil, 200, `{"success":true}`, 0},
		{"segment unknown call", "POST", "/v1/nope", `{}`, nil, 404, "unknown endpoint", 0},
		{"segment malformed", "POST", "/v1/batch", `{"batch":`, nil, 400, `"error"`, 0},
		{"segment invalid event quarantined, still 200", "POST", "/v1/batch", `{"batch":[{"type":"track"},{"type":"track","event":"ok"}]}`, nil, 200, `{"success":true}`, 1},
		{"collect single", "POST", "/collect", `{"name":"page_view","url":"https://shop.example/"}`, []string{"Content-Type", "application/json"}, 204, "", 1},
		{"collect beacon text/plain batch", "POST", "/collect", `{"batch":[{"name":"a"},{"name":"b"}]}`, []string{"Content-Type", "text/plain;charset=UTF-8"}, 204, "", 2},
		{"collect 422 lists every error", "POST", "/collect", `{"batch":[{"name":""},{"name":"x","value":"abc"}]}`, []string{"Content-Type", "application/json"}, 422, `"index":1`, 0},
		{"collect 422 from validation", "POST", "/collect", `{"name":"bad_event"}`, nil, 422, `commerce.value`, 0},
		{"collect 415", "POST", "/collect", `<xml/>`, []string{"Content-Type", "application/xml"}, 415, `"error"`, 0},
		{"collect malformed", "POST", "/collect", `{nope`, nil, 400, `"error"`, 0},
		{"collect pixel gif", "GET", "/collect?name=page_view", "", []string{"Accept", "image/avif,image/webp,*/*"}, 200, "GIF89a", 1},
		{"collect pixel 204", "GET", "/collect?name=page_view", "", nil, 204, "", 1},
		{"collect carries a ga4 hit", "GET", "/collect?v=2&tid=G-ABC&cid=9.9&en=scroll", "", nil, 204, "", 1},
		{"collect bad server key", "POST", "/collect", `{"name":"x"}`, []string{"Authorization", "Bearer wrong-key-0123456789"}, 401, `"error"`, 0},
		{"collect server key", "POST", "/collect", `{"name":"order_paid","transaction_id":"T9"}`, []string{"Authorization", "Bearer server-key-0123456789"}, 204, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(env.sink.events())
			resp, body := env.do(t, tt.method, tt.path, tt.body, tt.hdr...)
			if resp.StatusCode != tt.code || !strings.Contains(body, tt.answer) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.code, tt.answer)
			}
			if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("error answer Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if got := len(env.sink.events()) - before; got != tt.stored {
				t.Errorf("stored %d events, want %d", got, tt.stored)
			}
		})
	}
	evs := env.sink.events()
	sources := map[string]bool{}
	for _, e := range evs {
		sources[e["source"].(string)] = true
	}
	for _, s := range []string{"ga4", "segment", "collect", "backend"} {
		if !sources[s] {
			t.Errorf("no %s event stored", s)
		}
	}
	env.sink.mu.Lock()
	quar := append([]string(nil), env.sink.quar...)
	env.sink.mu.Unlock()
	if len(quar) != 1 || quar[0] != "decode:event" {
		t.Errorf("quarantine reasons %v, want [decode:event]", quar)
	}
	m := env.metricsText(t, "")
	for _, series := range []string{
		`sidetrack_ingest_rejected_total{route="collect",reason="invalid"}`,
		`sidetrack_ingest_rejected_total{route="collect",reason="unsupported_media_type"}`,
		`sidetrack_requests_total{route="ga4",code="204"}`,
		`sidetrack_events_total{source="segment",name="ok",outcome="accepted"}`,
	} {
		if metricValue(m, series) == "" {
			t.Errorf("metric %s missing", series)
		}
	}
}

func TestTrackingCORS(t *testing.T) {
	env := startTracking(t, nil)
	resp, _ := env.do(t, "OPTIONS", "/v1/t", "", "Origin", "https://shop.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type")
	h := resp.Header
	if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://shop.example" ||
		h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "authorization") ||
		h.Get("Access-Control-Allow-Methods") == "" || h.Get("Access-Control-Max-Age") == "" || h.Get("Vary") != "Origin" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, h)
	}
	resp, _ = env.do(t, "OPTIONS", "/v1/t", "", "Origin", "https://evil.example")
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign preflight: %d %v", resp.StatusCode, resp.Header)
	}
	// gtag sends credentialed GETs without a preflight.
	resp, _ = env.do(t, "GET", ga4Hit, "", "Origin", "https://shop.example")
	h = resp.Header
	if h.Get("Access-Control-Allow-Origin") != "https://shop.example" || h.Get("Access-Control-Allow-Credentials") != "true" ||
		h.Get("Access-Control-Expose-Headers") != "Retry-After" || h.Get("Vary") != "Origin" {
		t.Fatalf("real answer CORS headers: %v", h)
	}
	resp, _ = env.do(t, "GET", ga4Hit, "", "Origin", "https://evil.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode != 204 {
		t.Fatalf("foreign origin: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestTrackingWriteKeys(t *testing.T) {
	env := startTracking(t, func(c *config.Config) {
		c.Ingest.Segment.WriteKeys = []config.Secret{"good-write-key"}
	})
	track := `{"type":"track","event":"x"}`
	basic := func(k string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(k+":")) }
	cases := []struct {
		target, body string
		hdr          []string
		code         int
	}{
		{"/v1/track", track, []string{"Authorization", basic("good-write-key")}, 200},
		{"/v1/track", track, []string{"Authorization", basic("bad-write-key")}, 401},
		{"/v1/track", track, nil, 401},
		{"/v1/track?writeKey=good-write-key", track, nil, 200},
		{"/v1/track", `{"type":"track","event":"x","writeKey":"good-write-key"}`, nil, 200},
		{"/v1/batch", `{"writeKey":"bad","batch":[{"type":"track","event":"x"}]}`, nil, 401},
		{"/v1/track", track, []string{"Authorization", basic("server-key-0123456789")}, 200},
	}
	for _, c := range cases {
		resp, body := env.do(t, "POST", c.target, c.body, c.hdr...)
		if resp.StatusCode != c.code {
			t.Errorf("%s %s %v: %d %s, want %d", c.target, c.body, c.hdr, resp.StatusCode, body, c.code)
		}
	}
	evs := env.sink.events()
	if n := len(evs); n != 4 || evs[3]["source"] != "backend" {
		t.Fatalf("stored %d events (%v), want 4 with the last a backend event", n, evs)
	}
}

func TestTrackingGzipMislabelled(t *testing.T) {
	env := startTracking(t, nil)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	io.WriteString(zw, `{"batch":[{"type":"track","event":"Order Completed","messageId":"rudder-1"}]}`)
	zw.Close()
	// @rudderstack/rudder-sdk-node sends gzip labelled as a form post.
	resp, body := env.do(t, "POST", "/v1/batch", buf.String(), "Content-Type", "application/x-www-form-urlencoded", "Content-Encoding", "gzip")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// And with no Content-Encoding at all.
	buf.Reset()
	zw = gzip.NewWriter(&buf)
	io.WriteString(zw, `{"batch":[{"type":"track","event":"Order Completed","messageId":"rudder-2"}]}`)
	zw.Close()
	resp, body = env.do(t, "POST", "/v1/batch", buf.String(), "Content-Type", "application/x-www-form-urlencoded")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// A zip bomb is cut at the limit: 413, not an out-of-memory.
	buf.Reset()
	zw = gzip.NewWriter(&buf)
	zw.Write(bytes.Repeat([]byte(" "), 50<<20))
	zw.Close()
	resp, _ = env.do(t, "POST", "/v1/batch", buf.String(), "Content-Encoding", "gzip")
	if resp.StatusCode != 413 {
		t.Fatalf("zip bomb: %d", resp.StatusCode)
	}
	if n := len(env.sink.events()); n != 2 {
		t.Fatalf("stored %d", n)
	}
}

func TestTrackingRateLimit(t *testing.T) {
	env := startTracking(t, func(c *config.Config) {
		c.Ingest.RateLimit = config.RateLimit{PerClient: config.Rate{PerSecond: 0.001}, Burst: 2}
	})
	for i := range 2 {
		if resp, _ := env.do(t, "GET", ga4Hit, ""); resp.StatusCode != 204 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp, body := env.do(t, "GET", ga4Hit, "")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	// Server-key requests are not limited per client.
	resp, _ = env.do(t, "POST", "/collect", `{"name":"order_paid"}`, "Authorization", "Bearer server-key-0123456789")
	if resp.StatusCode != 204 {
		t.Fatalf("server request limited: %d", resp.StatusCode)
	}
}

func TestTrackingSinkFailures(t *testing.T) {
	env := startTracking(t, nil)
	cases := []struct {
		err  error
		code int
	}{
		{fullErr{}, 429},
		{drainErr{}, 503},
		{errors.New("disk on fire"), 503},
	}
	for _, c := range cases {
		env.sink.mu.Lock()
		env.sink.fail = c.err
		env.sink.mu.Unlock()
		resp, body := env.do(t, "POST", "/collect", `{"name":"x","event_id":"retry-me"}`)
		if resp.StatusCode != c.code || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%v: %d %s %v", c.err, resp.StatusCode, body, resp.Header)
		}
	}
	env.rel.mu.Lock()
	released := env.rel.released
	env.rel.mu.Unlock()
	if released != 3 {
		t.Errorf("pipeline Release called for %d events, want 3 (one per failed append)", released)
	}
	env.sink.mu.Lock()
	env.sink.fail = nil
	env.sink.mu.Unlock()
	if resp, _ := env.do(t, "POST", "/collect", `{"name":"x","event_id":"retry-me"}`); resp.StatusCode != 204 {
		t.Fatalf("retry after recovery: %d", resp.StatusCode)
	}
}

func TestTrackingIdempotencyKey(t *testing.T) {
	env := startTracking(t, nil)
	env.do(t, "POST", "/collect", `{"name":"a"}`, "X-Idempotency-Key", "idem-1")
	env.do(t, "POST", "/collect", `{"batch":[{"name":"b"},{"name":"c"}]}`, "X-Idempotency-Key", "idem-2")
	evs := env.sink.events()
	if evs[0]["event_id"] != "idem-1" {
		t.Errorf("single event id %v", evs[0]["event_id"])
	}
	if evs[1]["event_id"] == "idem-2" || evs[2]["event_id"] == "idem-2" {
		t.Error("idempotency key applied to a batch")
	}
}

func TestFormRoute(t *testing.T) {
	env := startTracking(t, nil)
	// The form page itself passes through.
	if resp, body := env.do(t, "GET", "/contact", ""); resp.StatusCode != 200 || body != "<p>page</p>" {
		t.Fatalf("GET form page: %d %q", resp.StatusCode, body)
	}
	form := "email=jane%40example.com&topic=returns&message=" + strings.Repeat("long+text+", 1000)
	resp, _ := env.do(t, "POST", "/contact", form, "Content-Type", "application/x-www-form-urlencoded",
		"Referer", "https://shop.example/contact")
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/thanks" {
		t.Fatalf("origin answer changed: %d %v", resp.StatusCode, resp.Header)
	}
	if got := env.origin.last(t); string(got.Body) != form {
		t.Fatalf("origin saw a different body (%d bytes, want %d)", len(got.Body), len(form))
	}
	// A redirect back to the form is the form re-displayed: no event.
	resp, _ = env.do(t, "POST", "/contact", "email=x", "Content-Type", "application/x-www-form-urlencoded", "X-Test", "invalid")
	if resp.StatusCode != 303 {
		t.Fatalf("%d", resp.StatusCode)
	}
	evs := env.sink.events()
	if len(evs) != 1 {
		t.Fatalf("events %v, want exactly one lead", evs)
	}
	e := evs[0]
	if e["name"] != "lead_submitted" || e["source"] != "form" || e["url"] != "https://shop.example/contact" {
		t.Errorf("form event %v", e)
	}
	if p, _ := e["properties"].(map[string]any); p["topic"] != "returns" {
		t.Errorf("mapped field missing: %v", e["properties"])
	}
	raw, _ := json.Marshal(evs)
	if bytes.Contains(raw, []byte("jane")) {
		t.Error("raw email reached the sink")
	}
}

func TestPageCookies(t *testing.T) {
	env := startTracking(t, nil)
	resp, _ := env.do(t, "GET", "/landing", "")
	var did *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "stk_did" {
			did = c
		}
	}
	if did == nil || !did.HttpOnly || did.SameSite != http.SameSiteLaxMode {
		t.Fatalf("HTML answer: device cookie %+v", did)
	}
	resp, _ = env.do(t, "GET", "/cached", "")
	if len(resp.Cookies()) != 0 {
		t.Fatalf("publicly cacheable answer got cookies: %v", resp.Cookies())
	}
	resp, _ = env.do(t, "GET", "/own-cookie", "")
	var vals []string
	for _, c := range resp.Cookies() {
		if c.Name == "stk_did" {
			vals = append(vals, c.Value)
		}
	}
	if len(vals) != 1 || vals[0] != "origin-value" {
		t.Fatalf("origin's own cookie not respected: %v", vals)
	}
	// The beacon that follows reuses the page's device id.
	env.do(t, "GET", ga4Hit, "", "Cookie", "stk_did="+did.Value)
	evs := env.sink.events()
	if len(evs) != 1 || evs[0]["device_id"] == "" {
		t.Fatalf("events %v", evs)
	}
}

func TestTaggingServerPaths(t *testing.T) {
	tagging := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "sgtm:"+r.URL.Path)
	})
	env := startTracking(t, func(c *config.Config) { c.Ingest.GA4.TaggingServer = tagging.URL })
	if _, body := env.do(t, "GET", "/_/service_worker/5b40/sw_iframe.html?origin=https%3A%2F%2Fshop.example", ""); body != "sgtm:/_/service_worker/5b40/sw_iframe.html" {
		t.Fatalf("sGTM path answered %q", body)
	}
	if _, body := env.do(t, "GET", "/shop/page", ""); body != "<p>page</p>" {
		t.Fatalf("ordinary path answered %q", body)
	}
	if n := tagging.hits.Load(); n != 1 {
		t.Fatalf("tagging server saw %d requests, want 1", n)
	}
	// GA4 hits themselves are decoded here, never passed on.
	env.do(t, "GET", ga4Hit, "")
	if n := tagging.hits.Load(); n != 1 {
		t.Fatalf("tagging server saw a GA4 hit")
	}
}

// A batch refused with 422 stores nothing, so its valid events must not be
// remembered as seen: the corrected resend is accepted, not deduplicated.
func TestCollect422ThenCorrectedResend(t *testing.T) {
	env := startTracking(t, nil)
	resp, body := env.do(t, "POST", "/collect", `{"batch":[{"name":"good","event_id":"g-1"},{"name":"bad_event"}]}`)
	if resp.StatusCode != 422 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, _ = env.do(t, "POST", "/collect", `{"batch":[{"name":"good","event_id":"g-1"}]}`)
	if resp.StatusCode != 204 {
		t.Fatalf("resend: %d", resp.StatusCode)
	}
	if evs := env.sink.events(); len(evs) != 1 || evs[0]["event_id"] != "g-1" {
		t.Fatalf("stored %v, want the corrected resend", evs)
	}
}

// A body over Segment's 500 KB limit is refused from its Content-Length,
// before it is read (the client may still be sending: a raw connection
// keeps the test independent of when the server closes).
func TestSegmentTooLarge413(t *testing.T) {
	env := startTracking(t, nil)
	raw := "POST /v1/batch HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\nContent-Length: 614400\r\n\r\n" +
		`{"batch":[{"type":"track","event":"x","properties":{"p":"` + strings.Repeat("x", 16<<10)
	resp, body := rawExchange(t, env.addr, raw, "POST")
	if resp.StatusCode != 413 || !strings.Contains(string(body), `"error"`) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if m := env.metricsText(t, ""); metricValue(m, `sidetrack_ingest_rejected_total{route="segment",reason="too_large"}`) == "" {
		t.Error("rejection not counted")
	}
}

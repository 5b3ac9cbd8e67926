package webhook_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
	"github.com/sidetrack/sidetrack/forward/webhook"
)

// destination is the shape of forward.Destination; guard_test.go checks
// against the real interface.
type destination interface {
	Name() string
	Limits() webhook.Limits
	GroupKey(*enrich.Event) string
	Prepare(*enrich.Event) error
	Send(context.Context, []*enrich.Event) ([]error, error)
	Close() error
}

var _ destination = (*webhook.Adapter)(nil)

// The behaviour interfaces the delivery core reads errors through.
type (
	retryable  interface{ Retryable() bool }
	retryAfter interface{ RetryAfter() time.Duration }
	permanent  interface{ Permanent() bool }
	paused     interface{ Paused() bool }
	tooLarge   interface{ TooLarge() bool }
)

// class names what the delivery core will do with err.
func class(err error) string {
	if err == nil {
		return "delivered"
	}
	var (
		r  retryable
		p  permanent
		pa paused
		tl tooLarge
	)
	switch {
	case errors.As(err, &r) && r.Retryable():
		return "retry"
	case errors.As(err, &p) && p.Permanent():
		return "permanent"
	case errors.As(err, &pa) && pa.Paused():
		return "paused"
	case errors.As(err, &tl) && tl.TooLarge():
		return "too large"
	}
	return "unclassified: " + err.Error()
}

func wait(err error) time.Duration {
	var ra retryAfter
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

var t0 = time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)

func batch(prefix string, n int) []*enrich.Event {
	out := make([]*enrich.Event, n)
	for i := range out {
		out[i] = &enrich.Event{
			EventID:    fmt.Sprintf("%s-%d", prefix, i),
			Name:       "order_completed",
			Source:     enrich.SourceBackend,
			ReceivedAt: t0,
			OccurredAt: t0,
			URL:        "https://shop.example/thanks?order=1",
			Commerce:   enrich.Commerce{Value: enrich.Some(59.97), Currency: "EUR", TransactionID: fmt.Sprint("T", i)},
			Properties: enrich.Props{{Key: "note", Kind: enrich.PropString, Str: "ü \"quoted\"\n"}},
		}
	}
	return out
}

// request is what the receiver saw.
type request struct {
	method, uri, remote string
	header              http.Header
	body                []byte // as sent
}

// receiver is a real HTTP server on 127.0.0.1 that records requests and
// answers with respond.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond atomic.Value // http.HandlerFunc
}

func newReceiver(t testing.TB, respond http.HandlerFunc) *receiver {
	rc := &receiver{}
	rc.respond.Store(respond)
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("receiver: %v", err)
		}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, request{r.Method, r.RequestURI, r.RemoteAddr, r.Header.Clone(), body})
		rc.mu.Unlock()
		rc.respond.Load().(http.HandlerFunc)(w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

func (rc *receiver) last(t *testing.T) request {
	t.Helper()
	r := rc.requests()
	if len(r) == 0 {
		t.Fatal("receiver got no request")
	}
	return r[len(r)-1]
}

func answer(code int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func hookCfg(url string, x config.DestinationX) config.Destination {
	x.URL = url
	return config.Destination{Name: "hook", Type: config.TypeWebhook, Timeout: config.Duration(10 * time.Second), Options: x}
}

func newHook(t testing.TB, cfg config.Destination, opts ...webhook.Option) *webhook.Adapter {
	t.Helper()
	a, err := webhook.New(cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func sendOK(t *testing.T, a *webhook.Adapter, events []*enrich.Event) {
	t.Helper()
	per, err := a.Send(context.Background(), events)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(per) != len(events) || slices.ContainsFunc(per, func(e error) bool { return e != nil }) {
		t.Fatalf("per-event results %v", per)
	}
}

func decodeEvents(t *testing.T, body []byte) []json.RawMessage {
	t.Helper()
	var p map[string][]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if len(p) != 1 || p["events"] == nil {
		t.Fatalf("body keys %v, want only events", p)
	}
	return p["events"]
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPayloadAndHeaders(t *testing.T) {
	rc := newReceiver(t, answer(http.StatusNoContent, ""))
	clk := func() time.Time { return t0 }
	a := newHook(t, hookCfg(rc.URL+"/hooks/in?src=sidetrack", config.DestinationX{
		Headers: map[string]config.Secret{"Authorization": "Bearer tok-1", "x-shop": "eu-1", "User-Agent": "shop-pipe/2"},
	}), webhook.WithClock(clk))
	if a.Name() != "hook" || a.Limits() != (webhook.Limits{MaxBytes: 5 << 20}) || a.GroupKey(&enrich.Event{}) != "" || a.Prepare(&enrich.Event{}) != nil {
		t.Fatal("unexpected Name/Limits/GroupKey/Prepare")
	}
	events := batch("p", 3)
	sendOK(t, a, events)
	r := rc.last(t)

	if r.method != http.MethodPost || r.uri != "/hooks/in?src=sidetrack" {
		t.Fatalf("%s %s", r.method, r.uri)
	}
	for i, raw := range decodeEvents(t, r.body) {
		if want := events[i].AppendJSON(nil); !bytes.Equal(raw, want) {
			t.Errorf("event %d:\n got %s\nwant %s", i, raw, want)
		}
	}
	for _, h := range []struct{ name, want string }{
		{"Content-Type", "application/json"},
		{"User-Agent", "shop-pipe/2"}, // configured headers may replace it
		{"Authorization", "Bearer tok-1"},
		{"X-Shop", "eu-1"},
		{"Content-Encoding", ""},
		{"X-Sidetrack-Event-Ids", "p-0,p-1,p-2"},
		{"X-Sidetrack-Event-Count", "3"},
		{"X-Sidetrack-Timestamp", strconv.FormatInt(t0.Unix(), 10)},
		{"X-Sidetrack-Signature", ""}, // no secret
		{"Content-Length", strconv.Itoa(len(r.body))},
	} {
		if got := r.header.Get(h.name); got != h.want {
			t.Errorf("%s: %q, want %q", h.name, got, h.want)
		}
	}

	// The idempotency key follows the batch's ids.
	key := r.header.Get("Idempotency-Key")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(key) {
		t.Fatalf("Idempotency-Key %q", key)
	}
	sendOK(t, a, batch("p", 3))
	sendOK(t, a, batch("p", 2))
	reqs := rc.requests()
	if reqs[1].header.Get("Idempotency-Key") != key || reqs[2].header.Get("Idempotency-Key") == key {
		t.Fatal("Idempotency-Key does not follow the batch")
	}

	// Default User-Agent.
	b := newHook(t, hookCfg(rc.URL, config.DestinationX{}))
	sendOK(t, b, batch("u", 1))
	if ua := rc.last(t).header.Get("User-Agent"); ua != "sidetrack" {
		t.Fatalf("User-Agent %q", ua)
	}
}

func TestGzipRoundTrip(t *testing.T) {
	rc := newReceiver(t, answer(http.StatusOK, "ok"))
	plain := newHook(t, hookCfg(rc.URL, config.DestinationX{}))
	zipped := newHook(t, hookCfg(rc.URL, config.DestinationX{Gzip: true}))
	events := batch("z", 200)
	sendOK(t, plain, events)
	sendOK(t, zipped, events)
	reqs := rc.requests()
	if reqs[1].header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", reqs[1].header.Get("Content-Encoding"))
	}
	if len(reqs[1].body) >= len(reqs[0].body)/2 {
		t.Errorf("gzip body %d bytes for %d plain", len(reqs[1].body), len(reqs[0].body))
	}
	if got := gunzip(t, reqs[1].body); !bytes.Equal(got, reqs[0].body) {
		t.Fatal("decompressed body differs from the plain one")
	}
	// A pooled gzip writer must not leak one batch into the next.
	sendOK(t, zipped, batch("y", 1))
	if evs := decodeEvents(t, gunzip(t, rc.last(t).body)); len(evs) != 1 {
		t.Fatalf("%d events after reuse", len(evs))
	}
}

func TestSignature(t *testing.T) {
	const secret = "whsec-test-7f3a"
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprint("gzip=", gz), func(t *testing.T) {
			rc := newReceiver(t, answer(http.StatusOK, ""))
			a := newHook(t, hookCfg(rc.URL, config.DestinationX{Secret: secret, Gzip: gz}))
			sendOK(t, a, batch("s", 4))
			r := rc.last(t)
			sig := r.header.Get("X-Sidetrack-Signature")
			ts := r.header.Get("X-Sidetrack-Timestamp")
			if !regexp.MustCompile(`^t=` + ts + `,v1=[0-9a-f]{64}$`).MatchString(sig) {
				t.Fatalf("signature header %q (timestamp %q)", sig, ts)
			}
			now := time.Now()
			if err := VerifySignature(secret, sig, r.body, now, 5*time.Minute); err != nil {
				t.Fatalf("valid request rejected: %v", err)
			}
			tampered := bytes.Clone(r.body)
			tampered[len(tampered)/2] ^= 1
			for _, tc := range []struct {
				name, secret, header string
				body                 []byte
				now                  time.Time
			}{
				{"tampered body", secret, sig, tampered, now},
				{"wrong secret", secret + "x", sig, r.body, now},
				{"replayed later", secret, sig, r.body, now.Add(time.Hour)},
				{"no header", secret, "", r.body, now},
				{"other timestamp", secret, strings.Replace(sig, "t="+ts, "t=1"+ts, 1), r.body, now},
			} {
				if err := VerifySignature(tc.secret, tc.header, tc.body, tc.now, 5*time.Minute); err == nil {
					t.Errorf("%s: accepted", tc.name)
				}
			}
		})
	}
}

// docBlock returns the fenced code blocks of lang in the webhook docs.
func docBlocks(t *testing.T, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "destinations", "webhook.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("no %s block in docs", lang)
	}
	return out
}

func TestDocsMatchExamples(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlocks(t, "go")
	if !strings.Contains(string(src), blocks[0]) {
		t.Fatalf("the first go block of docs/destinations/webhook.md is not in example_test.go verbatim:\n%s", blocks[0])
	}
}

// TestShellVerificationExample runs the documented openssl check on a
// request sidetrack really sent.
func TestShellVerificationExample(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	script := docBlocks(t, "sh")[0]
	const secret = "whsec shell 'test' $HOME"
	rc := newReceiver(t, answer(http.StatusOK, ""))
	a := newHook(t, hookCfg(rc.URL, config.DestinationX{Secret: secret, Gzip: true}))
	sendOK(t, a, batch("sh", 20))
	r := rc.last(t)

	run := func(body []byte) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "body.bin"), body, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SECRET="+secret, "SIG="+r.header.Get("X-Sidetrack-Signature"))
		out, err := cmd.CombinedOutput()
		if err != nil && len(out) == 0 {
			t.Fatalf("script: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run(r.body); got != "valid" {
		t.Fatalf("genuine request: %q", got)
	}
	tampered := bytes.Clone(r.body)
	tampered[len(tampered)-5] ^= 1
	if got := run(tampered); got != "INVALID" {
		t.Fatalf("tampered request: %q", got)
	}
}

func TestEventIDsHeader(t *testing.T) {
	rc := newReceiver(t, answer(http.StatusOK, ""))
	a := newHook(t, hookCfg(rc.URL, config.DestinationX{}))
	long := batch("0193f1c2-7d4e-7a51-9b3c-", 500) // ≈ 30 bytes per id
	var longIDs []string
	for _, e := range long {
		longIDs = append(longIDs, e.EventID)
	}
	for _, tc := range []struct {
		name string
		ids  []string
		want func(got string) bool
	}{
		{"plain", []string{"a", "b-1", "c_2"}, func(g string) bool { return g == "a,b-1,c_2" }},
		{"unsafe ids left out", []string{"a,b", "has space", "ümlaut", "", "quote\"", "ok", "tab\t"}, func(g string) bool { return g == "ok" }},
		{"capped at whole ids", longIDs, func(g string) bool {
			return len(g) <= webhook.MaxEventIDsHeader && len(g) > webhook.MaxEventIDsHeader-40 &&
				strings.HasPrefix(strings.Join(longIDs, ",")+",", g+",")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := make([]*enrich.Event, len(tc.ids))
			for i, id := range tc.ids {
				events[i] = &enrich.Event{EventID: id, Name: "x", Source: enrich.SourceCollect}
			}
			sendOK(t, a, events)
			r := rc.last(t)
			if got := r.header.Get("X-Sidetrack-Event-Ids"); !tc.want(got) {
				t.Fatalf("X-Sidetrack-Event-Ids %q", got)
			}
			if got := r.header.Get("X-Sidetrack-Event-Count"); got != strconv.Itoa(len(tc.ids)) {
				t.Fatalf("X-Sidetrack-Event-Count %q", got)
			}
			if n := len(decodeEvents(t, r.body)); n != len(tc.ids) {
				t.Fatalf("%d events in body", n)
			}
		})
	}
}

func TestStatusMapping(t *testing.T) {
	now := t0
	for _, tc := range []struct {
		name    string
		respond http.HandlerFunc
		class   string
		wait    time.Duration
		excerpt string
	}{
		{"200", answer(200, `{"ok":true}`), "delivered", 0, ""},
		{"202", answer(202, ""), "delivered", 0, ""},
		{"204", answer(204, ""), "delivered", 0, ""},
		{"400 permanent", answer(400, `{"error":"bad field"}`), "permanent", 0, `{"error":"bad field"}`},
		{"401 pauses", answer(401, "unauthorized"), "paused", 0, ""},
		{"403 pauses", answer(403, "forbidden"), "paused", 0, ""},
		{"404 permanent", answer(404, "no such hook"), "permanent", 0, "no such hook"},
		{"408 retry", answer(408, ""), "retry", 0, ""},
		{"413 splits", answer(413, "too big"), "too large", 0, ""},
		{"429 with Retry-After seconds", answer(429, "slow down", "Retry-After", "7"), "retry", 7 * time.Second, "slow down"},
		{"503 with Retry-After date", answer(503, "", "Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)), "retry", 90 * time.Second, ""},
		{"500 retry", answer(500, "boom"), "retry", 0, "boom"},
		{"502 retry", answer(502, ""), "retry", 0, ""},
		{"501 permanent", answer(501, "no"), "permanent", 0, ""},
		{"505 permanent", answer(505, ""), "permanent", 0, ""},
		{"long error body excerpted", answer(500, strings.Repeat("x", 1<<20)), "retry", 0, strings.Repeat("x", 256)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, tc.respond)
			a := newHook(t, hookCfg(rc.URL, config.DestinationX{}), webhook.WithClock(func() time.Time { return now }))
			per, err := a.Send(context.Background(), batch("st", 2))
			if got := class(err); got != tc.class {
				t.Fatalf("class %s, want %s (err %v)", got, tc.class, err)
			}
			if err == nil && len(per) != 2 {
				t.Fatalf("per-event results %v", per)
			}
			if got := wait(err); got != tc.wait {
				t.Errorf("wait %v, want %v", got, tc.wait)
			}
			var se *status.Error
			if err != nil && (!errors.As(err, &se) || se.Code == 0) {
				t.Fatalf("error %v carries no status code", err)
			}
			if tc.excerpt != "" && se.Excerpt != tc.excerpt {
				t.Errorf("excerpt %q, want %q", se.Excerpt, tc.excerpt)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var followed atomic.Int32
	elsewhere := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { followed.Add(1) })
	for _, code := range []int{301, 302, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, answer(code, "moved", "Location", elsewhere.URL+"/secret-path?token=abc"))
			a := newHook(t, hookCfg(rc.URL, config.DestinationX{}))
			_, err := a.Send(context.Background(), batch("r", 1))
			if got := class(err); got != "permanent" {
				t.Fatalf("class %s (err %v)", got, err)
			}
			if strings.Contains(err.Error(), "secret-path") || strings.Contains(err.Error(), "token") {
				t.Errorf("error shows the redirect's path: %v", err)
			}
			if !strings.Contains(err.Error(), "redirect not followed") {
				t.Errorf("error does not say why: %v", err)
			}
		})
	}
	if n := followed.Load(); n != 0 {
		t.Fatalf("redirect followed %d times", n)
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	cfg := hookCfg(rc.URL, config.DestinationX{})
	cfg.Timeout = config.Duration(50 * time.Millisecond)
	a := newHook(t, cfg)
	_, err := a.Send(context.Background(), batch("t", 1))
	if got := class(err); got != "retry" {
		t.Fatalf("class %s (err %v)", got, err)
	}
	if !status.IsTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("not a timeout: %v", err)
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	a := newHook(t, hookCfg("http://"+addr+"/hook", config.DestinationX{}))
	_, err = a.Send(context.Background(), batch("c", 1))
	if got := class(err); got != "retry" {
		t.Fatalf("class %s (err %v)", got, err)
	}
}

func TestCancelledContextIsNotAFailure(t *testing.T) {
	rc := newReceiver(t, answer(200, ""))
	a := newHook(t, hookCfg(rc.URL, config.DestinationX{}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := a.Send(ctx, batch("x", 1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	var r retryable
	if errors.As(err, &r) {
		t.Fatalf("shutdown classified as a delivery failure: %v", err)
	}
}

func TestConnectionReuse(t *testing.T) {
	rc := newReceiver(t, answer(200, strings.Repeat("k", 2048)))
	a := newHook(t, hookCfg(rc.URL, config.DestinationX{Gzip: true}))
	for range 5 {
		sendOK(t, a, batch("k", 10))
	}
	rc.respond.Store(answer(500, strings.Repeat("e", 8<<10))) // longer than the excerpt
	for range 3 {
		if _, err := a.Send(context.Background(), batch("k", 10)); class(err) != "retry" {
			t.Fatalf("err %v", err)
		}
	}
	remotes := map[string]bool{}
	for _, r := range rc.requests() {
		remotes[r.remote] = true
	}
	if len(remotes) != 1 {
		t.Fatalf("%d connections for %d sequential requests", len(remotes), len(rc.requests()))
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	const (
		secret     = "hmac-SECRET-1"
		authHeader = "Bearer header-SECRET-2"
		pathToken  = "path-SECRET-3"
	)
	core, logs := observer.New(zap.DebugLevel)
	release := make(chan struct{})
	var calls atomic.Int32
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.WriteHeader(500)
		case 2:
			w.WriteHeader(401)
		default:
			select { // time out
			case <-r.Context().Done():
			case <-release:
			}
		}
	})
	defer close(release)
	cfg := hookCfg(rc.URL+"/hooks/"+pathToken+"?key="+pathToken, config.DestinationX{
		Secret: secret, Headers: map[string]config.Secret{"Authorization": authHeader},
	})
	cfg.Timeout = config.Duration(50 * time.Millisecond)
	a, err := webhook.New(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for range 3 {
		_, err := a.Send(context.Background(), batch("l", 1))
		if err == nil {
			t.Fatal("Send succeeded")
		}
		texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
	}
	refused := newHook(t, hookCfg("http://127.0.0.1:1/hooks/"+pathToken, config.DestinationX{Secret: secret}))
	if _, err := refused.Send(context.Background(), batch("l", 1)); err != nil {
		texts = append(texts, err.Error())
	}
	if _, err := webhook.New(hookCfg("http://[bad/"+pathToken, config.DestinationX{}), zap.New(core)); err != nil {
		texts = append(texts, err.Error())
	}
	bad := hookCfg(rc.URL, config.DestinationX{Headers: map[string]config.Secret{"X-Bad": authHeader + "\n"}})
	if _, err := webhook.New(bad, zap.New(core)); err != nil {
		texts = append(texts, err.Error())
	}
	a.Close()
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the check below would prove nothing")
	}
	for _, e := range logs.All() {
		texts = append(texts, e.Message, fmt.Sprint(e.ContextMap()))
	}
	if len(rc.requests()) < 3 || rc.requests()[0].header.Get("Authorization") != authHeader {
		t.Fatal("secrets were not sent")
	}
	for _, s := range texts {
		for _, secret := range []string{secret, authHeader, pathToken} {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows a secret", s)
			}
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		url     string
		headers map[string]config.Secret
	}{
		{"empty url", "", nil},
		{"relative url", "/hook", nil},
		{"ftp url", "ftp://example.com/x", nil},
		{"no host", "http:///x", nil},
		{"bad header name", "http://127.0.0.1/", map[string]config.Secret{"Bad Name": "v"}},
		{"control char in value", "http://127.0.0.1/", map[string]config.Secret{"X-Key": "a\r\nInjected: 1"}},
		{"reserved header", "http://127.0.0.1/", map[string]config.Secret{"content-encoding": "br"}},
		{"sidetrack header", "http://127.0.0.1/", map[string]config.Secret{"X-Sidetrack-Signature": "forged"}},
		{"idempotency header", "http://127.0.0.1/", map[string]config.Secret{"Idempotency-Key": "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := webhook.New(hookCfg(tc.url, config.DestinationX{Headers: tc.headers}), nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func benchmarkSend(b *testing.B, gz bool) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	a, err := webhook.New(hookCfg(srv.URL, config.DestinationX{Secret: "s", Gzip: gz}), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	events := batch("0193f1c2-7d4e-7a51-9b3c-", 500)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(events[0].AppendJSON(nil))+1) * int64(len(events)))
	for b.Loop() {
		if _, err := a.Send(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSend500 is encode + sign + POST + answer of a 500-event batch
// over loopback (the receiver runs in the same process).
func BenchmarkSend500(b *testing.B)     { benchmarkSend(b, false) }
func BenchmarkSend500Gzip(b *testing.B) { benchmarkSend(b, true) }

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// statusEnv is a running sidetrack with three destinations: the local
// ndjson file, a webhook that refuses everything (400: dead letters) and
// GA4 relaying to a fake Google that answers 204, after a known mix of
// events was sent.
type statusEnv struct {
	*instance
	accepted int
}

// The known mix and what it must produce. Browser events come from
// /collect beacons without cookies (each its own visitor), backend events
// with the server key.
var statusMix = []struct {
	body   string
	server bool
	code   int
}{
	{`{"name":"page_viewed","event_id":"p1","url":"https://shop.example/?gclid=Cj0KCQ-test"}`, false, 204},
	{`{"name":"page_viewed","event_id":"p2","url":"https://shop.example/"}`, false, 204},
	{`{"name":"page_viewed","event_id":"p3","url":"https://shop.example/a","referrer":"https://www.bing.com/"}`, false, 204},
	{`{"name":"page_viewed","event_id":"p4"}`, false, 204},
	{`{"name":"order_completed","event_id":"o1","url":"https://shop.example/thanks","transaction_id":"T-1","value":42,"currency":"EUR","user":{"email":"Jane.Doe@example.com"}}`, false, 204},
	{`{"name":"order_completed","event_id":"b1","transaction_id":"T-1","value":42,"currency":"EUR"}`, true, 204}, // dedup: the browser's
	{`{"name":"order_completed","event_id":"b2","transaction_id":"T-2","value":10,"currency":"EUR"}`, true, 204},
	{`{"name":"wishlist_poked","event_id":"w1","url":"https://shop.example/w"}`, false, 204},
	{`{"name":"page_viewed","colour":"blue"}`, false, 422}, // unknown field: invalid
}

// statusAccepted is how many events of statusMix are stored.
const statusAccepted = 7

func startStatusEnv(t *testing.T) *statusEnv {
	t.Helper()
	shop := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "shop") }))
	refuse := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":"schema"}`, http.StatusBadRequest)
	}))
	google := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	dir := t.TempDir()
	dests := fmt.Sprintf("  - {name: local, type: ndjson, path: %q}\n", filepath.Join(dir, "events")) +
		fmt.Sprintf("  - {name: hook, type: webhook, url: %q, retry: {max_attempts: 1}}\n", refuse+"/in") +
		fmt.Sprintf("  - {name: google, type: ga4, measurement_id: G-STATUS1, endpoint: %q}\n", google)
	in := start(t, dir, testConfigWith(dir, shop, dests, "alerts: {validation_fail_rate: 0.1, dlq_depth: 1, min_events: 1}\n"))
	for i, m := range statusMix {
		req, _ := http.NewRequest("POST", in.base+"/collect", strings.NewReader(m.body))
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
		if m.server {
			req.Header.Set("Authorization", "Bearer server-key-0123456789")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != m.code {
			t.Fatalf("event %d: %d %s, want %d", i, resp.StatusCode, b, m.code)
		}
	}
	// A GA4 purchase with a currency that is no currency is quarantined.
	q := url.Values{"v": {"2"}, "tid": {"G-STATUS1"}, "cid": {"5.6"}, "_p": {"1"}, "_s": {"1"}, "en": {"purchase"},
		"dl": {"https://shop.example/thanks"}, "cu": {"XXX"}, "epn.value": {"5"}, "ep.transaction_id": {"T-3"}}
	resp, err := http.Get(in.base + "/g/collect?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if evs := in.waitEvents(statusAccepted); len(evs) != statusAccepted {
		t.Fatalf("%d events stored, want %d", len(evs), statusAccepted)
	}
	env := &statusEnv{instance: in, accepted: statusAccepted}
	// Delivery settles: every event is dead-lettered at the hook,
	// delivered to the file, and nothing waits any more.
	settled := func() bool {
		if env.metric(`sidetrack_dlq_events{destination="hook"}`) != statusAccepted ||
			env.metric(`sidetrack_deliveries_total{destination="local",outcome="delivered"}`) != statusAccepted {
			return false
		}
		for _, d := range []string{"local", "hook", "google"} {
			if env.metric(`sidetrack_backlog_events{destination="`+d+`"}`) != 0 ||
				env.metric(`sidetrack_spool_oldest_age_seconds{destination="`+d+`"}`) != 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(20 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return env
}

// metric is the value of one exact series on /metrics, -1 when absent.
func (in *statusEnv) metric(series string) float64 {
	in.t.Helper()
	for _, line := range strings.Split(string(in.adminGet("/metrics")), "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, _ := strconv.ParseFloat(line[len(series)+1:], 64)
			return v
		}
	}
	return -1
}

// TestStatusFigures checks every data-quality metric and the status JSON
// against the known mix.
func TestStatusFigures(t *testing.T) {
	in := startStatusEnv(t)
	series := []struct {
		name string
		want float64
	}{
		{`sidetrack_coverage_ratio{name="page_viewed",dimension="click_id"}`, 0.25},
		{`sidetrack_coverage_ratio{name="page_viewed",dimension="consent"}`, 1},
		{`sidetrack_coverage_ratio{name="page_viewed",dimension="source_medium"}`, 0.75},
		{`sidetrack_coverage_ratio{name="page_viewed",dimension="direct"}`, 1.0 / 3},
		{`sidetrack_coverage_ratio{name="page_viewed",dimension="hashed_email"}`, 0},
		{`sidetrack_coverage_ratio{name="order_completed",dimension="hashed_email"}`, 0.5},
		{`sidetrack_coverage_ratio{name="order_completed",dimension="source_medium"}`, 0.5},
		{`sidetrack_reconciliation_ratio{kind="backend_matched"}`, 0.5},
		{`sidetrack_reconciliation_ratio{kind="browser_matched"}`, 1},
		{`sidetrack_alert_firing{alert="dlq_depth"}`, 1},
		{`sidetrack_alert_firing{alert="validation_fail_rate"}`, 1},
		{`sidetrack_alert_firing{alert="volume_drop"}`, 0},
		{`sidetrack_alert_firing{alert="direct_share_jump"}`, 0},
		{`sidetrack_deliveries_total{destination="hook",outcome="dead_lettered"}`, statusAccepted},
		{`sidetrack_deliveries_total{destination="local",outcome="delivered"}`, statusAccepted},
		{`sidetrack_dlq_events{destination="hook"}`, statusAccepted},
		{`sidetrack_spool_oldest_age_seconds{destination="local"}`, 0},
		{`sidetrack_quarantine_events`, 1},
		{`sidetrack_deliveries_total{destination="google",outcome="delivered"}`, statusAccepted},
		{`sidetrack_retries_total{destination="hook"}`, 0},
		{`sidetrack_requests_total{route="collect",code="204"}`, 8},
		{`sidetrack_requests_total{route="collect",code="422"}`, 1},
		{`sidetrack_ingest_rejected_total{route="collect",reason="invalid"}`, 1},
		{`sidetrack_events_total{source="collect",name="page_viewed",outcome="accepted"}`, 4},
		{`sidetrack_events_total{source="collect",name="page_viewed",outcome="invalid"}`, 1},
		{`sidetrack_events_total{source="backend",name="order_completed",outcome="duplicate"}`, 1},
		{`sidetrack_events_total{source="backend",name="order_completed",outcome="accepted"}`, 1},
		{`sidetrack_events_total{source="ga4",name="order_completed",outcome="quarantined"}`, 1},
		{`sidetrack_dedup_checks_total{result="duplicate"}`, 1},
		{`sidetrack_spool_events`, 0},
	}
	for _, s := range series {
		if got := in.metric(s.name); fmt.Sprintf("%.6f", got) != fmt.Sprintf("%.6f", s.want) {
			t.Errorf("%s = %v, want %v", s.name, got, s.want)
		}
	}

	var st struct {
		Throughput struct {
			Events map[string]int `json:"events_total"`
		}
		Delivery struct {
			Destinations []struct {
				Name         string
				Type         string
				Verified     bool
				Delivered    int
				DeadLettered int `json:"dead_lettered"`
				DLQEvents    int `json:"dlq_events"`
				Orders       int `json:"orders_delivered"`
				OrdersDead   int `json:"orders_dead_lettered"`
			}
		}
		Quality struct {
			Totals     map[string]struct{ Observed, Accepted, Failed int }
			Violations []struct {
				Name, Field string
				Count       int
			}
			Drift struct {
				UnknownEvents int `json:"unknown_events"`
				Top           []struct{ Name string }
			}
			Reconciliation struct {
				BackendOrders    int `json:"backend_orders"`
				BrowserPurchases int `json:"browser_purchases"`
				Matched          int
			}
		}
		Quarantine []struct{ Name, Source, Reason string }
		Notes      []string
	}
	body := in.adminGet("/status.json")
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if ev := st.Throughput.Events; ev["accepted"] != statusAccepted || ev["duplicate"] != 1 || ev["invalid"] != 1 || ev["quarantined"] != 1 {
		t.Errorf("events %v", ev)
	}
	got := map[string]string{}
	for _, d := range st.Delivery.Destinations {
		got[d.Name] = fmt.Sprintf("%s verified=%v orders=%d/%d delivered=%d dead=%d dlq=%d", d.Type, d.Verified, d.Orders, d.OrdersDead,
			d.Delivered, d.DeadLettered, d.DLQEvents)
	}
	want := map[string]string{
		"local":  fmt.Sprintf("ndjson verified=true orders=2/0 delivered=%d dead=0 dlq=0", statusAccepted),
		"hook":   fmt.Sprintf("webhook verified=true orders=0/2 delivered=0 dead=%d dlq=%d", statusAccepted, statusAccepted),
		"google": "ga4 verified=false orders=",
	}
	for k, w := range want {
		if !strings.HasPrefix(got[k], w) {
			t.Errorf("destination %s: %q, want %q…", k, got[k], w)
		}
	}
	if tot := st.Quality.Totals["1h"]; tot.Observed != 9 || tot.Accepted != statusAccepted || tot.Failed != 2 {
		t.Errorf("totals %+v", tot)
	}
	if v := fmt.Sprint(st.Quality.Violations); v != "[{order_completed commerce.currency 1} {page_viewed unspecified 1}]" {
		t.Errorf("violations %s", v)
	}
	if d := st.Quality.Drift; d.UnknownEvents != 1 || len(d.Top) != 1 || d.Top[0].Name != "wishlist_poked" {
		t.Errorf("drift %+v", d)
	}
	if r := st.Quality.Reconciliation; r.BackendOrders != 2 || r.BrowserPurchases != 1 || r.Matched != 1 {
		t.Errorf("reconciliation %+v", r)
	}
	if q := fmt.Sprint(st.Quarantine); q != "[{order_completed ga4 invalid:commerce.currency}]" {
		t.Errorf("quarantine %s", q)
	}
	if len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "unverified") && !strings.Contains(st.Notes[0], "not verified") {
		t.Errorf("notes %q", st.Notes)
	}
	// The curl example of docs/metrics.md runs as written.
	if _, err := exec.LookPath("curl"); err == nil {
		doc, err := os.ReadFile("docs/metrics.md")
		if err != nil {
			t.Fatal(err)
		}
		ex := regexp.MustCompile("(?s)```sh\n(curl [^`]*?/status.json)\n```").FindSubmatch(doc)
		if ex == nil {
			t.Fatal("no /status.json example in docs/metrics.md")
		}
		cmd := exec.Command("sh", "-c", strings.ReplaceAll(string(ex[1]), "http://127.0.0.1:9090", in.admin))
		cmd.Env = append(cleanEnv(), "ADMIN_TOKEN=admin-token-0123456789")
		out, err := cmd.Output()
		if err != nil || !json.Valid(out) || !bytes.Contains(out, []byte(`"throughput"`)) {
			t.Errorf("docs example: %v %s", err, out)
		}
	}
	// PII never reaches the status data.
	for _, pii := range []string{"jane", "Jane", "example.com"} {
		if bytes.Contains(body, []byte(pii)) {
			t.Errorf("status.json contains %q", pii)
		}
	}
	in.stop()
}

// chromium finds a Chromium binary, or skips (fails when
// REQUIRE_BROWSER_TESTS=1, as in CI).
func chromium(t *testing.T) string {
	t.Helper()
	// Debian's launcher script adds flags that make the browser fetch
	// extension updates on its own; the binary behind it runs clean.
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err == nil {
		return "/usr/lib/chromium/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("REQUIRE_BROWSER_TESTS") == "1" {
		t.Fatal("chromium is not installed and REQUIRE_BROWSER_TESTS=1")
	}
	t.Skip("chromium is not installed (apt-get install chromium); set REQUIRE_BROWSER_TESTS=1 to fail instead")
	return ""
}

// pageHost is the name the browser loads the status page under; the
// test's proxy maps it to the admin port and adds the admin token.
// bareHost maps to the admin port too, without the token.
const (
	pageHost = "sidetrack.status"
	bareHost = "sidetrack.bare"
)

// browserProxy is the only way out of the test's browser: requests for
// pageHost go to sidetrack's admin port with the token, anything else is
// recorded and refused.
type browserProxy struct {
	mu       sync.Mutex
	admin    []string
	external []string
}

func (p *browserProxy) handler(admin string) http.Handler {
	target, _ := url.Parse(admin)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		host := r.In.Host
		if r.In.URL.Host != "" {
			host = r.In.URL.Host
		}
		r.SetURL(target)
		if host == pageHost {
			r.Out.Header.Set("Authorization", "Bearer admin-token-0123456789")
		}
	}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if r.Method != http.MethodConnect && r.URL.Host != "" {
			host = r.URL.Host
		}
		ours := host == pageHost || host == bareHost
		p.mu.Lock()
		if ours {
			p.admin = append(p.admin, r.Method+" "+r.URL.Path)
		} else {
			p.external = append(p.external, r.Method+" "+host+r.URL.Path)
		}
		p.mu.Unlock()
		if !ours {
			http.Error(w, "no external requests", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// browserServices are hosts Chromium itself calls whatever page it shows
// (on-demand component installs, account checks), which no flag turns
// off in every version. A page never loads assets from them; anything
// else the proxy sees is the page's doing.
var browserServices = []string{"update.googleapis.com", "accounts.google.com", "clients2.google.com",
	"content-autofill.googleapis.com", "optimizationguide-pa.googleapis.com", "safebrowsingohttpgateway.googleapis.com"}

func browserService(request string) bool {
	_, rest, _ := strings.Cut(request, " ")
	for _, h := range browserServices {
		if rest == h+":443" || strings.HasPrefix(rest, h+"/") {
			return true
		}
	}
	return false
}

// runChromium runs headless Chromium through the proxy with args.
func runChromium(t *testing.T, bin, proxyAddr string, args ...string) (stdout, stderr []byte) {
	t.Helper()
	base := []string{"--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
		"--disable-extensions", "--metrics-recording-only", "--disable-client-side-phishing-detection", "--disable-breakpad",
		"--disable-component-extensions-with-background-pages", "--password-store=basic", "--use-mock-keychain",
		"--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,NetworkTimeServiceQuerying,SafeBrowsing,InterestFeedContentSuggestions,CertificateTransparencyComponentUpdater",
		"--user-data-dir=" + t.TempDir(), "--proxy-server=http://" + proxyAddr, "--proxy-bypass-list=<-loopback>",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=4000", "--window-size=1400,2200"}
	cmd := exec.Command(bin, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Dir = t.TempDir()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, errb.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("chromium did not finish\n%s", errb.String())
	}
	return out.Bytes(), errb.Bytes()
}

var (
	tagRe = regexp.MustCompile(`<[^>]*>`)
	wsRe  = regexp.MustCompile(`\s+`)
)

// cell returns the text of the cell data-k=k in row data-key=row of the
// table with id table, from a dumped DOM.
func cell(dom, table, row, k string) string {
	ti := strings.Index(dom, `<table id="`+table+`"`)
	if ti < 0 {
		return "(no table " + table + ")"
	}
	tbl := dom[ti:]
	tbl = tbl[:strings.Index(tbl, "</table>")]
	m := regexp.MustCompile(`<tr data-key="` + regexp.QuoteMeta(row) + `">(.*?)</tr>`).FindStringSubmatch(tbl)
	if m == nil {
		return "(no row " + row + ")"
	}
	c := regexp.MustCompile(`<td[^>]*data-k="` + regexp.QuoteMeta(k) + `"[^>]*>(.*?)</td>`).FindStringSubmatch(m[1])
	if c == nil {
		return "(no cell " + k + ")"
	}
	return strings.TrimSpace(wsRe.ReplaceAllString(tagRe.ReplaceAllString(c[1], " "), " "))
}

// TestStatusPageInBrowser loads /status in headless Chromium after the
// known mix, checks the figures the page's script rendered, that the page
// asked nothing of any other host, and keeps a screenshot.
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	in := startStatusEnv(t)
	bp := &browserProxy{}
	front := origin(t, bp.handler(in.admin))
	proxyAddr := strings.TrimPrefix(front, "http://")
	page := "http://" + pageHost + "/status"

	out, errOut := runChromium(t, bin, proxyAddr, "--dump-dom", page)
	dom := string(out)
	if !strings.Contains(dom, `data-loaded="1"`) {
		bp.mu.Lock()
		t.Fatalf("the page's script did not render status.json (requests %q, %q):\n%s\n%s", bp.admin, bp.external, dom, errOut)
	}
	checks := []struct{ table, row, k, want string }{
		{"dests", "local", "delivered", strconv.Itoa(statusAccepted)},
		{"dests", "hook", "dead_lettered", strconv.Itoa(statusAccepted)},
		{"dests", "hook", "dlq", strconv.Itoa(statusAccepted)},
		{"dests", "google", "state", "ok sent, unverified"},
		{"dests", "local", "state", "ok"},
		{"outcomes", "totals", "accepted", strconv.Itoa(statusAccepted)},
		{"outcomes", "totals", "quarantined", "1"},
		{"outcomes", "totals", "duplicate", "1"},
		{"coverage", "page_viewed", "accepted", "4"},
		{"coverage", "page_viewed", "click_id", "25.0%"},
		{"coverage", "page_viewed", "source_medium", "75.0%"},
		{"coverage", "page_viewed", "direct", "33.3%"},
		{"coverage", "order_completed", "hashed_email", "50.0%"},
		{"recon", "matched", "window", "1"},
		{"orders", "local", "delivered", "2"},
		{"orders", "local", "share", "100.0%"},
		{"orders", "hook", "dead_lettered", "2"},
		{"recon", "backend_matched", "window", "50.0%"},
		{"recon", "browser_matched", "window", "100.0%"},
		{"alerts", "dlq_depth", "state", "firing"},
		{"alerts", "validation_fail_rate", "state", "firing"},
		{"alerts", "volume_drop", "state", "off"},
		{"violations", "order_completed:commerce.currency", "count", "1"},
		{"drift", "wishlist_poked", "count", "1"},
		{"quarantine", "order_completed", "reason", "invalid:commerce.currency"},
	}
	for _, c := range checks {
		if got := cell(dom, c.table, c.row, c.k); got != c.want {
			t.Errorf("%s/%s/%s shows %q, want %q", c.table, c.row, c.k, got, c.want)
		}
	}
	if !strings.Contains(dom, "GA4") || !strings.Contains(dom, "<polyline") && !strings.Contains(dom, "collecting samples") {
		t.Error("the GA4 note or the throughput chart is missing")
	}

	// Without the token the page asks for it instead of showing data.
	out, errOut = runChromium(t, bin, proxyAddr, "--dump-dom", "http://"+bareHost+"/status")
	bare := string(out)
	if !strings.Contains(bare, `id="login" style="display: block;"`) || !strings.Contains(bare, "admin token required") ||
		strings.Contains(bare, `data-loaded="1"`) {
		t.Errorf("without the token the page does not ask for it:\n%s\n%s", bare, errOut)
	}

	dir := os.Getenv("ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "status-page.png")
	_, errOut = runChromium(t, bin, proxyAddr, "--screenshot="+shot, "--hide-scrollbars", page)
	if b, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("no screenshot at %s: %v\n%s", shot, err, errOut)
	}
	t.Logf("screenshot: %s", shot)

	bp.mu.Lock()
	defer bp.mu.Unlock()
	for _, r := range bp.external {
		if !browserService(r) {
			t.Errorf("the page made a request to another host: %q", r)
		}
	}
	seen := strings.Join(bp.admin, ",")
	if !strings.Contains(seen, "GET /status,") || !strings.Contains(seen, "GET /status.json") {
		t.Errorf("admin requests %q", seen)
	}
	for _, r := range bp.admin {
		if r != "GET /status" && r != "GET /status.json" && r != "GET /favicon.ico" {
			t.Errorf("unexpected request %q", r)
		}
	}
	in.stop()
}

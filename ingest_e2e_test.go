package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"
)

// capture is one recorded request from testdata/fixtures.
type capture struct {
	Scenario       string          `json:"scenario"`
	Method         string          `json:"method"`
	URL            string          `json:"url"`
	Path           string          `json:"path"`
	Query          json.RawMessage `json:"query"`
	Headers        [][2]string     `json:"headers"`
	Body           string          `json:"body"`
	BodyRawBase64  string          `json:"body_raw_base64"`
	DecodedFrom    string          `json:"body_decoded_from"`
	Events         json.RawMessage `json:"events"`
	ResponseStatus json.RawMessage `json:"response_status"`
}

func readCaptures(t *testing.T, file string) []capture {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "fixtures", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []capture
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4<<20), 4<<20)
	for sc.Scan() {
		var c capture
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, c)
	}
	return out
}

// target returns path?query of a capture (public hits store the query as
// a string, client captures store the whole URL).
func (c *capture) target() string {
	if c.URL != "" {
		return c.URL
	}
	var q string
	if err := json.Unmarshal(c.Query, &q); err == nil && q != "" {
		return c.Path + "?" + q
	}
	return c.Path
}

// replay sends a capture to sidetrack as the client sent it: same method,
// target, headers and body bytes (gzip re-sent compressed).
func replay(t *testing.T, base string, c capture) (*http.Response, []byte) {
	t.Helper()
	body := []byte(c.Body)
	if c.BodyRawBase64 != "" {
		raw, err := base64.StdEncoding.DecodeString(c.BodyRawBase64)
		if err != nil {
			t.Fatal(err)
		}
		body = raw
	}
	req, err := http.NewRequest(c.Method, base+c.target(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range c.Headers {
		switch strings.ToLower(h[0]) {
		case "host", "content-length", "connection", "accept-encoding":
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func countLines(body string) int {
	n := 0
	for _, l := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return max(n, 1)
}

// TestReplayRealClients sends every recorded request of real analytics
// clients through a running sidetrack: each gets the answer its client
// expects, and the events land in the ndjson output.
func TestReplayRealClients(t *testing.T) {
	shop := origin(t, http.NotFoundHandler())
	dir := t.TempDir()
	in := start(t, dir, testConfig(dir, shop, ""))

	want := 0
	for _, file := range []string{"ga4/gtag.ndjson", "ga4/public-hits.ndjson"} {
		for i, c := range readCaptures(t, file) {
			resp, b := replay(t, in.base, c)
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("%s #%d %s: status %d %s", file, i, c.target()[:min(60, len(c.target()))], resp.StatusCode, b)
			}
			if file == "ga4/gtag.ndjson" && c.Method == "GET" {
				// gtag logs an error per hit unless the answer allows its origin with credentials.
				if o := req0Origin(c); o != "" && resp.Header.Get("Access-Control-Allow-Origin") != "" &&
					resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
					t.Errorf("%s #%d: CORS answer without credentials", file, i)
				}
			}
			want += countLines(c.Body)
		}
	}
	for _, file := range []string{"segment/segment-node.ndjson", "segment/segment-node.retry-429.ndjson", "segment/segment-go.ndjson", "segment/rudder-node.ndjson"} {
		for i, c := range readCaptures(t, file) {
			resp, b := replay(t, in.base, c)
			if resp.StatusCode != 200 || string(b) != `{"success":true}` {
				t.Errorf("%s #%d: %d %s", file, i, resp.StatusCode, b)
			}
			var batch struct {
				Batch []json.RawMessage `json:"batch"`
			}
			json.Unmarshal([]byte(c.Body), &batch)
			want += len(batch.Batch)
		}
	}
	// One public hit has no event name (`en`): it is answered like the
	// rest (gtag never retries) and quarantined with its reason. Repeats
	// (analytics-node's retries with the same messageIds, the same order T1
	// in each gtag consent scenario) are answered like originals and
	// counted, never written twice.
	const quarantined = 1
	var evs []map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs = in.events()
		dups := in.metricSum(`outcome="duplicate"`)
		if len(evs)+dups+quarantined == want || time.Now().After(deadline) {
			if got := len(evs) + dups + quarantined; got != want {
				t.Fatalf("accepted %d + duplicates %d + quarantined %d = %d, want %d", len(evs), dups, quarantined, got, want)
			}
			if dups == 0 {
				t.Fatal("no duplicates counted: the fixtures repeat messageIds and order T1")
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	q := in.adminGet("/quarantine/show")
	if n := bytes.Count(q, []byte("\n")); n != quarantined || !bytes.Contains(q, []byte(`"reason":"decode:en"`)) {
		t.Errorf("quarantine (%d lines): %s", n, q)
	}
	seen := map[string]bool{}
	orders := 0
	for _, e := range evs {
		id := e["event_id"].(string)
		if seen[id] {
			t.Errorf("event id %s written twice", id)
		}
		seen[id] = true
		if c, _ := e["commerce"].(map[string]any); c != nil && c["transaction_id"] == "T1" && e["name"] == "order_completed" {
			orders++
		}
	}
	if orders != 1 {
		t.Errorf("order T1 written %d times, want once", orders)
	}

	// Spot checks across formats.
	var purchase, deniedHit map[string]any
	bySource := map[string]int{}
	ids := map[string]int{}
	for _, e := range evs {
		bySource[e["source"].(string)]++
		ids[e["event_id"].(string)]++
		if e["original_name"] == "purchase" && e["ga_measurement_id"] == "G-TEST123" {
			purchase = e
		}
		if c, _ := e["consent"].(map[string]any); c != nil && c["gcs"] == "G100" {
			deniedHit = e
		}
	}
	if bySource["ga4"] == 0 || bySource["segment"] == 0 {
		t.Errorf("sources: %v", bySource)
	}
	if purchase == nil {
		t.Fatal("gtag purchase not found")
	}
	com := purchase["commerce"].(map[string]any)
	if purchase["name"] != "order_completed" || com["transaction_id"] != "T1" || com["value"] != 59.97 || com["currency"] != "USD" {
		t.Errorf("purchase: name %v commerce %v", purchase["name"], com)
	}
	if items, _ := com["items"].([]any); len(items) != 2 {
		t.Errorf("purchase items: %v", com["items"])
	}
	if deniedHit == nil {
		t.Error("no event carries the denied scenario's gcs=G100")
	}
	// analytics-node sent one messageId twice; dedup keeps them apart until
	// the dedup stage drops the repeat, but each has its own line here.
	for _, e := range evs {
		if e["source"] == "segment" && e["event_id"] == "" {
			t.Errorf("segment event without id: %v", e)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "events", "events.ndjson"))
	for _, pii := range []string{"@example.com", "Jane", "+1555"} {
		if bytes.Contains(raw, []byte(pii)) {
			t.Errorf("event log contains raw PII %q", pii)
		}
	}
	in.stop()
}

func req0Origin(c capture) string {
	for _, h := range c.Headers {
		if strings.EqualFold(h[0], "Origin") {
			return h[1]
		}
	}
	return ""
}

// TestAnalyticsGoClient runs the real segmentio/analytics-go client against
// sidetrack, authenticated with a server key: its events are backend events.
func TestAnalyticsGoClient(t *testing.T) {
	shop := origin(t, http.NotFoundHandler())
	dir := t.TempDir()
	in := start(t, dir, testConfig(dir, shop, ""))

	client, err := analytics.NewWithConfig("server-key-0123456789", analytics.Config{
		Endpoint:  in.base,
		Interval:  50 * time.Millisecond,
		BatchSize: 10,
		Verbose:   false,
	})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(client.Enqueue(analytics.Identify{MessageId: "go-identify-1", UserId: "user-42",
		Traits: analytics.NewTraits().SetEmail("jane.doe@example.com").SetFirstName("Jane").Set("plan", "gold")}))
	must(client.Enqueue(analytics.Track{MessageId: "go-order-1", UserId: "user-42", Event: "Order Completed",
		Properties: analytics.NewProperties().SetOrderId("ORD-77").SetRevenue(99.5).SetCurrency("EUR").
			SetProducts(analytics.Product{ID: "SKU-1", Price: 49.75})}))
	must(client.Enqueue(analytics.Page{MessageId: "go-page-1", UserId: "user-42", Name: "Home",
		Properties: analytics.NewProperties().SetURL("https://shop.example/")}))
	must(client.Close())

	evs := in.waitEvents(3)
	if len(evs) != 3 {
		t.Fatalf("got %d events: %v", len(evs), evs)
	}
	byID := map[string]map[string]any{}
	for _, e := range evs {
		byID[e["event_id"].(string)] = e
		if e["source"] != "backend" {
			t.Errorf("server-key event with source %v", e["source"])
		}
		if _, ok := e["device_id"]; ok {
			t.Errorf("server event got a device id: %v", e)
		}
	}
	order := byID["go-order-1"]
	if order == nil || order["name"] != "order_completed" || order["user_id"] != "user-42" {
		t.Fatalf("order: %v", order)
	}
	com := order["commerce"].(map[string]any)
	if com["transaction_id"] != "ORD-77" || com["value"] != 99.5 || com["currency"] != "EUR" {
		t.Errorf("order commerce: %v", com)
	}
	if byID["go-identify-1"] == nil || byID["go-page-1"] == nil {
		t.Errorf("missing identify or page: %v", byID)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "events", "events.ndjson"))
	if bytes.Contains(raw, []byte("jane.doe")) || bytes.Contains(raw, []byte("Jane")) {
		t.Error("raw PII in the event log")
	}
	in.stop()
}

// TestVisitorJourney follows one visitor from an ad click through page
// views and add-to-cart to a purchase beacon, and the shop backend's later
// order_paid for the same order: every browser event carries the same
// device id and the original touch, and the backend event is joined to the
// browser's identifiers.
func TestVisitorJourney(t *testing.T) {
	shop := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>shop</html>")
	}))
	dir := t.TempDir()
	in := start(t, dir, testConfig(dir, shop, ""))
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	const ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
	send := func(req *http.Request) {
		t.Helper()
		req.Header.Set("User-Agent", ua)
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d", req.Method, req.URL, resp.StatusCode)
		}
	}
	landing := "https://shop.example/spring?utm_source=Facebook&utm_medium=paid_social&utm_campaign=Spring%20Sale&fbclid=IwAR-Fb.Click_ID-42"
	// The landing page itself passes through to the shop, and its HTML
	// answer already carries the device cookie.
	page, _ := http.NewRequest("GET", in.base+"/spring?utm_source=Facebook", nil)
	send(page)
	base, _ := url.Parse(in.base)
	var deviceCookie string
	for _, c := range jar.Cookies(base) {
		if c.Name == "stk_did" {
			deviceCookie = c.Value
		}
	}
	if deviceCookie == "" {
		t.Fatal("the landing page's pass-through answer set no device cookie")
	}
	hit := func(en, dl, dr string, seq int, extra string) {
		q := url.Values{"v": {"2"}, "tid": {"G-JOURNEY"}, "cid": {"111.222"}, "sid": {"1700000000"}, "sct": {"1"},
			"_p": {"9001"}, "_s": {fmt.Sprint(seq)}, "en": {en}, "dl": {dl}, "dr": {dr}, "gcs": {"G111"}}
		req, _ := http.NewRequest("GET", in.base+"/g/collect?"+q.Encode()+extra, nil)
		send(req)
	}
	hit("page_view", landing, "https://www.facebook.com/", 1, "")
	hit("page_view", "https://shop.example/product/7", landing, 2, "")
	beacon := func(body string) {
		req, _ := http.NewRequest("POST", in.base+"/collect", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
		send(req)
	}
	beacon(`{"name":"add_to_cart","url":"https://shop.example/product/7","value":42,"currency":"EUR","items":[{"id":"SKU-7","quantity":1,"price":42}]}`)
	beacon(`{"name":"purchase","event_id":"evt-order-9","url":"https://shop.example/thanks","value":42,"currency":"EUR","transaction_id":"ORDER-9","items":[{"id":"SKU-7","quantity":1,"price":42}]}`)

	// The shop's backend confirms payment later, with no browser context.
	req, _ := http.NewRequest("POST", in.base+"/v1/track",
		strings.NewReader(`{"event":"order_paid","messageId":"srv-paid-9","userId":"user-9","properties":{"order_id":"ORDER-9","revenue":42,"currency":"EUR"}}`))
	req.Header.Set("Authorization", "Bearer server-key-0123456789")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	evs := in.waitEvents(5)
	if len(evs) != 5 {
		t.Fatalf("got %d events", len(evs))
	}
	device := evs[0]["device_id"]
	if device == nil || device == "" {
		t.Fatal("first page view has no device id")
	}
	for i, e := range evs {
		attr, _ := e["attribution"].(map[string]any)
		if attr == nil {
			t.Fatalf("event %d (%v) has no attribution", i, e["name"])
		}
		ft, _ := attr["first_touch"].(map[string]any)
		if ft == nil || ft["source"] != "facebook" || ft["medium"] != "paid_social" || ft["campaign"] != "spring sale" {
			t.Errorf("event %d (%v): first touch %v", i, e["name"], attr["first_touch"])
		}
		fbc, _ := attr["fbc"].(string)
		if !strings.HasPrefix(fbc, "fb.") || !strings.HasSuffix(fbc, ".IwAR-Fb.Click_ID-42") {
			t.Errorf("event %d (%v): fbc %q", i, e["name"], fbc)
		}
		if e["device_id"] != device {
			t.Errorf("event %d (%v): device %v, want %v", i, e["name"], e["device_id"], device)
		}
	}
	if ch := evs[0]["attribution"].(map[string]any)["channel"]; ch != "Paid Social" {
		t.Errorf("landing channel %v, want Paid Social", ch)
	}
	paid := evs[4]
	if paid["name"] != "order_paid" || paid["source"] != "backend" {
		t.Fatalf("last event: %v", paid)
	}
	if paid["anonymous_id"] != "111.222" {
		t.Errorf("backend event lacks the browser's GA client id: %v", paid["anonymous_id"])
	}
	if q, _ := paid["quality"].([]any); !containsAny(q, "joined") {
		t.Errorf("backend event not flagged joined: %v", paid["quality"])
	}
	in.stop()
}

func containsAny(list []any, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

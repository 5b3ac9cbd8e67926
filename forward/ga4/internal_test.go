package ga4

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

func TestEndpoints(t *testing.T) {
	for _, tc := range []struct {
		region, endpoint          string
		relay, mp, debug, relayOf string
	}{
		{"", "", "https://region1.google-analytics.com/g/collect", "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST1&api_secret=a%2Bb", "https://www.google-analytics.com/debug/mp/collect?", "https://region1.google-analytics.com"},
		{"eu", "", "https://region1.analytics.google.com/g/collect", "https://region1.google-analytics.com/mp/collect?", "https://region1.google-analytics.com/debug/mp/collect?", "https://region1.analytics.google.com"},
		{"eu", "http://127.0.0.1:8080/proxy/", "http://127.0.0.1:8080/proxy/g/collect", "http://127.0.0.1:8080/proxy/mp/collect?", "http://127.0.0.1:8080/proxy/debug/mp/collect?", "http://127.0.0.1:8080"},
	} {
		a, err := New(config.Destination{Name: "g", Options: config.DestinationX{
			Mode: ModeMP, MeasurementID: "G-TEST1", APISecret: "a+b", Region: tc.region, Endpoint: tc.endpoint,
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.relayURL != tc.relay || !strings.HasPrefix(a.mpURL, tc.mp) || !strings.HasPrefix(a.debugURL, tc.debug) || a.relayHost != tc.relayOf {
			t.Errorf("region %q endpoint %q: relay %s mp %s debug %s host %s", tc.region, tc.endpoint, a.relayURL, a.mpURL, a.debugURL, a.relayHost)
		}
		if strings.Contains(a.mpHost, "a+b") || strings.Contains(a.relayHost, "secret") {
			t.Errorf("host names hold the secret")
		}
		a.Close()
	}
}

// TestNamesAgreeWithTheAliasTable: every GA4 name the adapter sends for a
// canonical name is one the naming stage folds into that canonical name
// (enrich/data/event_aliases.tsv), so a gtag event comes back under the
// name it was sent with.
func TestNamesAgreeWithTheAliasTable(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "enrich", "data", "event_aliases.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	aliases := map[string]string{} // alias → canonical
	canonicals := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if from, to, ok := strings.Cut(line, "\t"); ok {
			aliases[from] = to
		} else {
			canonicals[line] = true
		}
	}
	mapped := 0
	for c := range canonicals {
		n := ga4Name(c)
		if n == "" {
			continue
		}
		mapped++
		if aliases[n] != c {
			t.Errorf("%s is sent as %s, which the alias table maps to %q", c, n, aliases[n])
		}
		if !validName(n, maxNameLen) {
			t.Errorf("%s: %s is not a valid GA4 name", c, n)
		}
	}
	if mapped < 40 {
		t.Errorf("only %d canonical names map to GA4 names", mapped)
	}
	for _, syn := range []string{"view_search_results", "first_open"} {
		if c := aliases[syn]; c == "" || !ga4Synonym(syn, c) {
			t.Errorf("%s: alias table says %q", syn, c)
		}
	}
}

func TestEventName(t *testing.T) {
	for _, tc := range []struct {
		name, original, want string
		ok                   bool
	}{
		{"order_completed", "purchase", "purchase", true},
		{"order_completed", "Order Completed", "purchase", true},
		{"order_completed", "checkout_success", "purchase", true},
		{"products_searched", "view_search_results", "view_search_results", true},
		{"products_searched", "Products Searched", "search", true},
		{"my_event", "my_event", "my_event", true},
		{"coupon_applied", "Coupon Applied", "coupon_applied", true},
		{"x", "", "x", true},
		{strings.Repeat("a", 45), "", strings.Repeat("a", 40), true},
		{"1_bad", "1 bad", "", false},
		{"", "", "", false},
		{"é_event", "é event", "", false},
		{"Coupon Applied", "Coupon Applied", "Coupon_Applied", true},
		{"checkout-step.2 ", "", "checkout_step_2", true},
		{"--", "", "", false},
		{" " + strings.Repeat("b", 39) + " c", "", strings.Repeat("b", 39), true},
	} {
		got, ok := eventName(&enrich.Event{Name: tc.name, OriginalName: tc.original})
		if got != tc.want || ok != tc.ok {
			t.Errorf("eventName(%q, %q) = %q, %v; want %q, %v", tc.name, tc.original, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMessageIndex(t *testing.T) {
	for _, tc := range []struct {
		path, desc string
		want       int
	}{
		{"events", "Event at index: [3] has invalid name [_x]. Names must start with an alphabetic character.", 3},
		{"events[12].params.items", "", 12},
		{"#/events/4/params/currency", "", 4},
		{"events.0.params", "", 0},
		{"client_id", "Measurement requires a client_id.", -1},
		{"", "", -1},
		{"events", "Event at index [7] is bad", 7},
	} {
		if got := messageIndex(tc.path, tc.desc); got != tc.want {
			t.Errorf("messageIndex(%q, %q) = %d, want %d", tc.path, tc.desc, got, tc.want)
		}
	}
}

func TestIsGACID(t *testing.T) {
	for s, want := range map[string]bool{
		"585712067.1795442481": true, "1.2": true, "": false, "123": false, ".1": false, "1.": false,
		"1.2.3": false, "GA1.1.5.6": false, "a.b": false, "0193f1c2-7e1a-7000-8000-000000000000": false,
	} {
		if isGACID(s) != want {
			t.Errorf("isGACID(%q) = %v", s, !want)
		}
	}
}

func TestCut(t *testing.T) {
	if got := cut("aüb", 2); got != "aü" {
		t.Errorf("%q", got)
	}
	if got := cut(strings.Repeat("€", 5), 3); got != "€€€" {
		t.Errorf("%q", got)
	}
	if got := cut("abc", 5); got != "abc" {
		t.Errorf("%q", got)
	}
}

// FuzzGA4ValidationAnswer: any answer of the debug endpoint parses or is
// refused without panicking, and indexes are never made up.
func FuzzGA4ValidationAnswer(f *testing.F) {
	for _, s := range []string{
		`{"validationMessages":[]}`,
		`{"validationMessages":[{"fieldPath":"events","description":"Event at index: [0] has invalid name [_badEventName]. Names must start with an alphabetic character.","validationCode":"NAME_INVALID"}]}`,
		`{"validationMessages":[{"fieldPath":"events[2].params.currency","description":"x","validationCode":"VALUE_INVALID"}]}`,
		`{"validationMessages":[{"fieldPath":"client_id","description":"Measurement requires a client_id.","validationCode":"VALUE_REQUIRED"}]}`,
		`{}`, `[]`, `<html>`, ``, `{"validationMessages":null}`, `{"validationMessages":[{"fieldPath":7}]}`,
		`{"validationMessages":[{"description":"index: [99999999999]"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, err := parseValidation(body)
		if err != nil {
			return
		}
		for _, m := range msgs {
			if m.Index < -1 || m.Index > 9999 {
				t.Fatalf("index %d", m.Index)
			}
			for _, s := range []string{m.FieldPath, m.Description, m.ValidationCode} {
				for i := 0; i < len(s); i++ {
					if s[i] < 0x20 || s[i] >= 0x7f {
						t.Fatalf("unprintable byte in %q", s)
					}
				}
			}
		}
	})
}

// FuzzGA4Encoding: whatever an event's strings hold, a relayed parameter
// decodes to the same string, and an MP body is valid JSON holding it.
func FuzzGA4Encoding(f *testing.F) {
	for _, s := range []string{"", "plain", "a&b=c+d%20e f", "ü€💡~!*'()", "\r\n\x00\xff", "\"\\</script>\u2028"} {
		f.Add(s)
	}
	a, err := New(config.Destination{Name: "g", Options: config.DestinationX{Mode: ModeMP, MeasurementID: "G-X1", APISecret: "s"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer a.Close()
	f.Fuzz(func(t *testing.T, s string) {
		q := string(appendEscaped([]byte("k="), s))
		v, err := url.ParseQuery(q)
		if err != nil || v.Get("k") != s {
			t.Fatalf("%q → %q → %q (%v)", s, q, v.Get("k"), err)
		}
		e := &enrich.Event{EventID: "e", DeviceID: s, Name: "x", Title: s, OccurredAt: time.Unix(1, 0),
			Properties: enrich.Props{{Key: "p", Kind: enrich.PropString, Str: s}}}
		b := a.appendMPHead(nil, e)
		body := append(append([]byte("{"), b...), `"events":[`...)
		body = appendMPEvent(body, e, "x", 1)
		body = append(body, "]}"...)
		var out struct {
			Events []struct {
				Params map[string]any `json:"params"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("invalid JSON for %q: %v\n%s", s, err, body)
		}
		if utf8.ValidString(s) && s != "" {
			want := cut(strings.ToValidUTF8(s, "\ufffd"), maxValueLen)
			if got := out.Events[0].Params["p"]; got != want {
				t.Fatalf("p = %q, want %q", got, want)
			}
		}
	})
}

func benchEvent(i int) *enrich.Event {
	return &enrich.Event{
		EventID: fmt.Sprintf("0193f1c2-7e1a-7000-8000-%012d", i), AnonymousID: "585712067.1795442481",
		GASessionID: "1795442481", GASessionNumber: 2, GAMeasurementID: "G-BENCH1", PageLoadID: "1795442481274",
		HitSeq: int64(i + 1), Name: "order_completed", OriginalName: "purchase", Source: enrich.SourceGA4,
		OccurredAt: time.Unix(1795442481, 0), ReceivedAt: time.Unix(1795442481, 0),
		URL:      "https://shop.example/checkout/thanks?order=1001&utm_source=newsletter",
		Referrer: "https://shop.example/checkout", Title: "Thank you – Example Shop",
		GA:      enrich.GAHit{Version: "2", SessionEngaged: true, EngagementMS: 1200},
		Context: enrich.Context{UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0", Locale: "en-us", Screen: "1280x720", IPTruncated: "203.0.113.0", Country: "US", Region: "CA"},
		Consent: enrich.Consent{Analytics: enrich.Granted, Ads: enrich.Granted, AdUserData: enrich.Granted, AdPersonalization: enrich.Granted, GCS: "G111", GCD: "13r3r3r3r5l1", NPA: "0"},
		Commerce: enrich.Commerce{Value: enrich.Some(59.97), Currency: "USD", TransactionID: "T1001", Tax: enrich.Some(4.5), Shipping: enrich.Some(5), Coupon: "SPRING",
			Items: []enrich.Item{
				{ID: "SKU-1", Name: "Blue T-Shirt", Brand: "Acme", Category: "Apparel", Variant: "blue", Price: enrich.Some(19.99), Quantity: enrich.Some(2)},
				{ID: "SKU-2", Name: "Canvas Tote", Category: "Bags", Price: enrich.Some(19.99), Quantity: enrich.Some(1), Coupon: "SPRING"},
			}},
		UserData:       enrich.UserData{Google: enrich.GoogleUserData{EM: strings.Repeat("ab", 32), PH: strings.Repeat("cd", 32)}},
		Properties:     enrich.Props{{Key: "payment_type", Kind: enrich.PropString, Str: "card"}},
		UserProperties: enrich.Props{{Key: "plan", Kind: enrich.PropString, Str: "pro"}},
	}
}

func benchAdapter(b *testing.B) *Adapter {
	a, err := New(config.Destination{Name: "g", Options: config.DestinationX{Mode: ModeMP, MeasurementID: "G-BENCH1", APISecret: "s"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	return a
}

// BenchmarkEncodeMPBatch25 encodes a full 25-event Measurement Protocol
// request (purchases with items, user data, consent), as Send does.
func BenchmarkEncodeMPBatch25(b *testing.B) {
	a := benchAdapter(b)
	events := make([]*enrich.Event, MaxEventsPerRequest)
	for i := range events {
		events[i] = benchEvent(i)
	}
	w := &work{}
	idx := make([]int, len(events))
	for i := range idx {
		idx[i] = i
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.buf, w.spans = w.buf[:0], w.spans[:0]
		for _, e := range events {
			var sp span
			sp.ctx = len(w.buf)
			w.buf = a.appendMPHead(w.buf, e)
			sp.ctxEnd, sp.line = len(w.buf), len(w.buf)
			sp.ts = e.OccurredAt.UnixMicro()
			name, _ := eventName(e)
			w.buf = appendMPEvent(w.buf, e, name, sp.ts)
			sp.lineEnd = len(w.buf)
			w.spans = append(w.spans, sp)
		}
		w.body = a.encodeMP(w.body[:0], w, w.buf[w.spans[0].ctx:w.spans[0].ctxEnd], idx)
	}
	b.SetBytes(int64(len(w.body)))
}

// BenchmarkEncodeRelayHit encodes one /g/collect hit (query and line).
func BenchmarkEncodeRelayHit(b *testing.B) {
	a := benchAdapter(b)
	e := benchEvent(0)
	var buf, scratch []byte
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf = a.appendRelayContext(buf[:0], e)
		name, _ := eventName(e)
		buf, scratch = appendRelayLine(buf, scratch, e, name)
	}
	b.SetBytes(int64(len(buf)))
}

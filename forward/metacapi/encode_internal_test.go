package metacapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

func testAdapter(tb testing.TB) *Adapter {
	tb.Helper()
	a, err := New(config.Destination{Name: "meta", Options: config.DestinationX{
		PixelID: "1234567890", AccessToken: "EAAtok", LimitedDataUse: true,
	}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// benchEvents builds n purchases as a shop's thank-you page produces them.
func benchEvents(n int, now time.Time) []*enrich.Event {
	out := make([]*enrich.Event, n)
	for i := range out {
		out[i] = &enrich.Event{
			EventID: fmt.Sprintf("0193f1c2-7b1a-7c3d-9e4f-%012d", i), Name: "order_completed", Source: enrich.SourceGA4,
			ReceivedAt: now, OccurredAt: now.Add(-time.Second),
			URL:         "https://shop.example/checkout/thanks?order=T" + fmt.Sprint(i),
			Attribution: enrich.Attribution{FBC: "fb.1.1763900000000.IwAR2xYz_abc", FBP: "fb.1.1763800000000.1234567890"},
			Context:     enrich.Context{UserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"},
			Consent:     enrich.Consent{Analytics: enrich.Granted, Ads: enrich.Granted, AdUserData: enrich.Granted},
			UserData:    enrich.UserData{EM: hash(fmt.Sprint("u", i, "@example.com")), PH: hash("4915123456789"), FN: hash("jane"), LN: hash("doe"), Country: hash("de")},
			Commerce: enrich.Commerce{Value: enrich.Some(59.97), Currency: "EUR", TransactionID: fmt.Sprint("T", i), Items: []enrich.Item{
				{ID: "SKU-1", Name: "Mug", Price: enrich.Some(19.99), Quantity: enrich.Some(2)},
				{ID: "SKU-2", Name: "Tee", Price: enrich.Some(19.99), Quantity: enrich.Some(1)},
			}},
		}
	}
	return out
}

// BenchmarkEncode1000 encodes a full 1000-event request body's events
// (the work of one Send before the network).
func BenchmarkEncode1000(b *testing.B) {
	now := time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)
	a := testAdapter(b)
	events := benchEvents(1000, now)
	var (
		buf []byte
		v   view
	)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf = buf[:0]
		for _, e := range events {
			if err := a.view(e, now, &v); err != nil {
				b.Fatal(err)
			}
			buf = a.appendEvent(buf, e, &v)
		}
	}
	b.SetBytes(int64(len(buf)))
}

// The hand-written encoder always produces valid JSON that decodes to the
// event's values.
func TestEncodeIsValidJSON(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)
	a := testAdapter(t)
	var v view
	for _, e := range benchEvents(3, now) {
		e.Commerce.Items[0].ID = "quote\" back\\slash \u2028 ctl\x01 bad\xff"
		e.URL += "&q=\"x\""
		if err := a.view(e, now, &v); err != nil {
			t.Fatal(err)
		}
		b := a.appendEvent(nil, e, &v)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if m["event_source_url"] != e.URL {
			t.Fatalf("url %v", m["event_source_url"])
		}
		ids := m["custom_data"].(map[string]any)["content_ids"].([]any)
		if ids[0] != strings.ToValidUTF8(e.Commerce.Items[0].ID, "\ufffd") {
			t.Fatalf("id %q", ids[0])
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"", "\\", "\n\r\t", "\x00\x1f", "\xff\xfe", "ü€😀", "\u2028\u2029", "<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); utf8.ValidString(s) && got != want {
			t.Fatalf("%q -> %q", s, got)
		}
	})
}

// FuzzClassify feeds arbitrary answers to the answer decoder: it never
// panics, and every failure is classified.
func FuzzClassify(f *testing.F) {
	for _, s := range []struct {
		code int
		body string
	}{
		{400, `{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804003,"is_transient":false,"error_user_title":"T","error_user_msg":"M","fbtrace_id":"A"}}`},
		{400, `{"error":{"code":190}}`},
		{400, `{"error":{"code":17,"is_transient":true}}`},
		{500, `<html>`},
		{400, `{"error":null}`},
		{400, `{"error":{"code":"x"}}`},
		{302, ``},
		{413, `{}`},
	} {
		f.Add(s.code, []byte(s.body))
	}
	a := testAdapter(f)
	f.Fuzz(func(t *testing.T, code int, body []byte) {
		if code < 300 || code > 599 {
			return
		}
		err := a.classify(code, "", body)
		if err == nil {
			t.Fatal("failure answer classified as success")
		}
		var rej *rejection
		type classified interface {
			Retryable() bool
			Permanent() bool
			Paused() bool
			TooLarge() bool
		}
		var c classified
		if !errors.As(err, &rej) && !errors.As(err, &c) {
			t.Fatalf("unclassified: %v", err)
		}
		if strings.Contains(err.Error(), "EAAtok") {
			t.Fatal("token in error")
		}
	})
}

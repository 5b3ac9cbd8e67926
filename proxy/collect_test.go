package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// collectNow is the receive time of every test request.
var collectNow = time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)

func newCollectDecoded() *decoded {
	return &decoded{pool: &enrich.EventPool{}}
}

func readCollectFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "collect", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeCollect decodes body with a fresh decoder and checks the
// invariants every decode must keep: events encode to valid JSON, problem
// indexes point at events, and raw PII never reaches the encoding.
func decodeCollect(t testing.TB, maxBatch int, body string) (*decoded, error) {
	t.Helper()
	d := newCollectDecoded()
	err := newCollectDecoder(maxBatch).decodeJSON(d, []byte(body), collectNow)
	checkCollectDecoded(t, d, err)
	return d, err
}

func decodeCollectQuery(t testing.TB, query string) *decoded {
	t.Helper()
	d := newCollectDecoded()
	err := newCollectDecoder(0).decodeQuery(d, []byte(query), collectNow)
	if err != nil {
		t.Fatalf("decodeQuery(%q): %v", query, err)
	}
	checkCollectDecoded(t, d, err)
	return d
}

func checkCollectDecoded(t testing.TB, d *decoded, err error) {
	t.Helper()
	if err != nil {
		var de *decodeError
		if !errors.As(err, &de) {
			t.Fatalf("error %v is not a *decodeError", err)
		}
		if len(d.events) != 0 {
			t.Fatalf("request-level error %v, but %d events were added", err, len(d.events))
		}
		return
	}
	if len(d.events) == 0 {
		t.Fatal("no error and no event")
	}
	for i, e := range d.events {
		if e.Index != i {
			t.Fatalf("event %d has Index %d", i, e.Index)
		}
		out := e.AppendJSON(nil)
		if !json.Valid(out) {
			t.Fatalf("event %d encodes to invalid JSON: %s", i, out)
		}
		if !e.PII.IsZero() {
			pii := e.PII
			e.PII = enrich.PII{}
			same := bytes.Equal(out, e.AppendJSON(nil))
			e.PII = pii
			if !same {
				t.Fatalf("event %d: raw PII changes the encoding: %s", i, out)
			}
		}
	}
	for _, p := range d.problems {
		if p.Index < 0 || p.Index >= len(d.events) {
			t.Fatalf("problem %+v points at no event (%d events)", p, len(d.events))
		}
		if p.Message == "" {
			t.Fatalf("problem %+v has no message", p)
		}
	}
}

func TestCollectJSONAllFields(t *testing.T) {
	d, err := decodeCollect(t, 0, string(readCollectFixture(t, "order.json")))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.problems) != 0 {
		t.Fatalf("problems: %+v", d.problems)
	}
	if len(d.events) != 1 {
		t.Fatalf("%d events, want 1", len(d.events))
	}
	e := d.events[0]
	checks := []struct {
		field     string
		got, want any
	}{
		{"Name", e.Name, "order_completed"},
		{"OriginalName", e.OriginalName, "order_completed"},
		{"Source", e.Source, enrich.SourceCollect},
		{"EventID", e.EventID, "0b6f3c1e-8a51-4c2b-9d0e-5f7a2b9c4e11"},
		{"ReceivedAt", e.ReceivedAt, collectNow},
		{"OccurredAt", e.OccurredAt, time.Date(2025, 3, 14, 9, 26, 53, 589e6, time.UTC)},
		{"URL", e.URL, "https://shop.example/checkout/thank-you?order=T-10023&utm_source=newsletter&utm_medium=email"},
		{"Host", e.Host, "shop.example"},
		{"Path", e.Path, "/checkout/thank-you"},
		{"Referrer", e.Referrer, "https://shop.example/checkout/payment"},
		{"Title", e.Title, "Thank you for your order"},
		{"Value", e.Commerce.Value, enrich.Some(59.97)},
		{"Currency", e.Commerce.Currency, "EUR"},
		{"TransactionID", e.Commerce.TransactionID, "T-10023"},
		{"Tax", e.Commerce.Tax, enrich.Some(9.57)},
		{"Shipping", e.Commerce.Shipping, enrich.Some(4.90)},
		{"Coupon", e.Commerce.Coupon, "SPRING10"},
		{"Items", e.Commerce.Items, []enrich.Item{
			{ID: "SKU-1001", Name: "Linen shirt", Brand: "Northwind", Category: "Apparel", Variant: "blue / M",
				Price: enrich.Some(39.99), Quantity: enrich.Some(1), Coupon: "SPRING10", Discount: enrich.Some(4)},
			{ID: "SKU-2040", Name: "Canvas tote", Brand: "Northwind", Category: "Bags", Variant: "natural",
				Price: enrich.Some(19.98), Quantity: enrich.Some(1)},
		}},
		{"UserID", e.UserID, "cust-77812"},
		{"AnonymousID", e.AnonymousID, "a5c0d2f4-6e1b-4f3a-8c9d-0e1f2a3b4c5d"},
		{"Consent.Categories", e.Consent.Categories, enrich.Props{
			{Key: "analytics", Str: "granted"}, {Key: "ads", Str: "granted"},
			{Key: "ad_user_data", Str: "denied"}, {Key: "ad_personalization", Str: "denied"},
		}},
		// The consent decision is the consent stage's, not the decoder's.
		{"Consent.Analytics", e.Consent.Analytics, enrich.Unknown},
		{"Properties", e.Properties, enrich.Props{
			{Key: "payment_method", Str: "card"},
			{Key: "first_order", Kind: enrich.PropBool, Bool: true},
			{Key: "items_count", Kind: enrich.PropNumber, Num: 2},
		}},
		{"UserProperties", e.UserProperties, enrich.Props{{Key: "tier", Str: "gold"}}},
		{"PII", e.PII, enrich.PII{Email: "Jane.Doe@Example.com", Phone: "+49 30 1234567", FirstName: "Jane",
			LastName: "Doe", City: "Berlin", Zip: "10115", Country: "DE"}},
		{"Quality", e.Quality, enrich.Flags(0)},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.field, c.got, c.want)
		}
	}
}

func TestCollectJSONFieldForms(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		check func(e *enrich.Event) error
	}{
		{"transaction_id as number", `{"name":"order_completed","transaction_id":100234}`, func(e *enrich.Event) error {
			return collectWant(e.Commerce.TransactionID, "100234")
		}},
		{"user_id as number", `{"name":"x","user_id":42,"anonymous_id":"a"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.UserID, "42"), collectWant(e.AnonymousID, "a"))
		}},
		{"item id as number", `{"name":"x","items":[{"id":1001,"quantity":2}]}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.Commerce.Items[0].ID, "1001"), collectWant(e.Commerce.Items[0].Quantity, enrich.Some(2)))
		}},
		{"value as numeric string is coerced and flagged", `{"name":"x","value":"12.50"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.Commerce.Value, enrich.Some(12.5)), collectWant(e.Quality.Has(enrich.FlagCoercedValue), true))
		}},
		{"item price as numeric string is coerced and flagged", `{"name":"x","items":[{"id":"a","price":"9.99"}]}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.Commerce.Items[0].Price, enrich.Some(9.99)), collectWant(e.Quality.Has(enrich.FlagCoercedValue), true))
		}},
		{"a JSON number is not a coercion", `{"name":"x","value":0}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.Commerce.Value, enrich.Some(0)), collectWant(e.Quality.Has(enrich.FlagCoercedValue), false))
		}},
		{"negative value passes decode (validation's rule)", `{"name":"x","value":-5}`, func(e *enrich.Event) error {
			return collectWant(e.Commerce.Value, enrich.Some(-5))
		}},
		{"timestamp with offset is stored in UTC", `{"name":"x","timestamp":"2025-03-14T10:30:00.5+02:00"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.OccurredAt, time.Date(2025, 3, 14, 8, 30, 0, 5e8, time.UTC)),
				collectWant(e.OccurredAt.Location(), time.UTC))
		}},
		{"future timestamp is clamped to now and flagged", `{"name":"x","timestamp":"2031-01-01T00:00:00Z"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.OccurredAt, collectNow), collectWant(e.Quality.Has(enrich.FlagClockSkew), true))
		}},
		{"missing timestamp is now", `{"name":"x"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.OccurredAt, collectNow), collectWant(e.ReceivedAt, collectNow))
		}},
		{"null optional fields are absent", `{"name":"x","event_id":null,"value":null,"items":null,"user":null,"consent":null,"properties":{"a":null},"user_properties":null,"user_id":null}`,
			func(e *enrich.Event) error {
				return errors.Join(collectWant(e.EventID, ""), collectWant(e.Commerce.Value.Set, false), collectWant(len(e.Properties), 0))
			}},
		{"escaped strings are unescaped", `{"name":"caf\u00e9_viewed","title":"a \"quoted\" \\ title\n"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.Name, "café_viewed"), collectWant(e.Title, "a \"quoted\" \\ title\n"))
		}},
		{"relative url keeps the path", `{"name":"x","url":"/cart?step=2"}`, func(e *enrich.Event) error {
			return errors.Join(collectWant(e.URL, "/cart?step=2"), collectWant(e.Path, "/cart"), collectWant(e.Host, ""))
		}},
		{"a repeated property key keeps the last value", `{"name":"x","properties":{"a":1,"a":"two"}}`, func(e *enrich.Event) error {
			return collectWant(e.Properties, enrich.Props{{Key: "a", Str: "two"}})
		}},
		{"name of 100 multi-byte characters", `{"name":"` + strings.Repeat("é", 100) + `"}`, func(e *enrich.Event) error {
			return collectWant(e.Name, strings.Repeat("é", 100))
		}},
		{"item extra GA4 fields", `{"name":"x","items":[{"id":"a","category2":"b","category5":"c","affiliation":"d","list_id":"e","list_name":"f","location_id":"g","index":3}]}`,
			func(e *enrich.Event) error {
				return collectWant(e.Commerce.Items[0], enrich.Item{ID: "a", Category2: "b", Category5: "c", Affiliation: "d",
					ListID: "e", ListName: "f", LocationID: "g", Index: enrich.Some(3)})
			}},
		{"all user keys", `{"name":"x","user":{"email":"a@b.c","phone":"1","first_name":"f","last_name":"l","city":"c","state":"s","zip":"z","country":"de","date_of_birth":"19800101","gender":"f","external_id":"e"}}`,
			func(e *enrich.Event) error {
				return collectWant(e.PII, enrich.PII{Email: "a@b.c", Phone: "1", FirstName: "f", LastName: "l", City: "c", State: "s",
					Zip: "z", Country: "de", DateOfBirth: "19800101", Gender: "f", ExternalID: "e"})
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := decodeCollect(t, 0, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.problems) != 0 {
				t.Fatalf("problems: %+v", d.problems)
			}
			if err := tt.check(d.events[0]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func collectWant(got, want any) error {
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("got %#v, want %#v", got, want)
	}
	return nil
}

func collectFE(i int, field, msg string) enrich.FieldError {
	return enrich.FieldError{Index: i, Field: field, Message: msg}
}

func TestCollectJSONProblems(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []enrich.FieldError
	}{
		{"missing name", `{"value":1}`, []enrich.FieldError{collectFE(0, "name", collectMsgRequired)}},
		{"empty name", `{"name":""}`, []enrich.FieldError{collectFE(0, "name", collectMsgNonEmpty)}},
		{"null name", `{"name":null}`, []enrich.FieldError{collectFE(0, "name", collectMsgNonEmpty)}},
		{"name not a string", `{"name":5}`, []enrich.FieldError{collectFE(0, "name", collectMsgNonEmpty)}},
		{"name too long", `{"name":"` + strings.Repeat("a", 101) + `"}`, []enrich.FieldError{collectFE(0, "name", collectMsgNameTooLong)}},
		{"event_id too long", `{"name":"x","event_id":"` + strings.Repeat("a", 129) + `"}`, []enrich.FieldError{collectFE(0, "event_id", collectMsgIDTooLong)}},
		{"event_id a number", `{"name":"x","event_id":7}`, []enrich.FieldError{collectFE(0, "event_id", collectMsgString)}},
		{"bad timestamp", `{"name":"x","timestamp":"yesterday"}`, []enrich.FieldError{collectFE(0, "timestamp", collectMsgTime)}},
		{"timestamp a number", `{"name":"x","timestamp":1700000000}`, []enrich.FieldError{collectFE(0, "timestamp", collectMsgString)}},
		{"url an object", `{"name":"x","url":{}}`, []enrich.FieldError{collectFE(0, "url", collectMsgString)}},
		{"text too long", `{"name":"x","title":"` + strings.Repeat("a", collectMaxText+1) + `"}`, []enrich.FieldError{collectFE(0, "title", collectMsgTooLong)}},
		{"value a word", `{"name":"x","value":"twelve"}`, []enrich.FieldError{collectFE(0, "value", collectMsgNumber)}},
		{"value hex string", `{"name":"x","value":"0x10"}`, []enrich.FieldError{collectFE(0, "value", collectMsgNumber)}},
		{"value NaN string", `{"name":"x","value":"NaN"}`, []enrich.FieldError{collectFE(0, "value", collectMsgNumber)}},
		{"value bare NaN", `{"name":"x","value":NaN}`, []enrich.FieldError{collectFE(0, "value", collectMsgFinite)}},
		{"value overflows", `{"name":"x","tax":1e999}`, []enrich.FieldError{collectFE(0, "tax", collectMsgFinite)}},
		{"value a bool", `{"name":"x","shipping":true}`, []enrich.FieldError{collectFE(0, "shipping", collectMsgNumber)}},
		{"currency a number", `{"name":"x","currency":978}`, []enrich.FieldError{collectFE(0, "currency", collectMsgString)}},
		{"transaction_id an object", `{"name":"x","transaction_id":{}}`, []enrich.FieldError{collectFE(0, "transaction_id", collectMsgStringOrNum)}},
		{"user_id a bool", `{"name":"x","user_id":true}`, []enrich.FieldError{collectFE(0, "user_id", collectMsgStringOrNum)}},
		{"items an object", `{"name":"x","items":{"id":"a"}}`, []enrich.FieldError{collectFE(0, "items", collectMsgItems)}},
		{"item not an object", `{"name":"x","items":[{"id":"a"},"b"]}`, []enrich.FieldError{collectFE(0, "items[1]", collectMsgObject)}},
		{"item field errors", `{"name":"x","items":[{"id":"a","quantity":"two"},{"id":true,"name":3,"price":[1],"colour":"red"}]}`,
			[]enrich.FieldError{
				collectFE(0, "items[0].quantity", collectMsgNumber),
				collectFE(0, "items[1].id", collectMsgStringOrNum),
				collectFE(0, "items[1].name", collectMsgString),
				collectFE(0, "items[1].price", collectMsgNumber),
				collectFE(0, "items[1].colour", collectMsgUnknown),
			}},
		{"consent not an object", `{"name":"x","consent":"granted"}`, []enrich.FieldError{collectFE(0, "consent", collectMsgObject)}},
		{"consent bad values and purposes", `{"name":"x","consent":{"analytics":"yes","ads":true,"marketing":"granted","ad_user_data":"Granted"}}`,
			[]enrich.FieldError{
				collectFE(0, "consent.analytics", collectMsgConsentValue),
				collectFE(0, "consent.ads", collectMsgConsentValue),
				collectFE(0, "consent.marketing", collectMsgPurpose),
				collectFE(0, "consent.ad_user_data", collectMsgConsentValue),
			}},
		{"properties not an object", `{"name":"x","properties":[1]}`, []enrich.FieldError{collectFE(0, "properties", collectMsgObject)}},
		{"nested properties", `{"name":"x","properties":{"ok":1,"obj":{"a":1},"arr":[1]},"user_properties":{"u":{}}}`,
			[]enrich.FieldError{
				collectFE(0, "properties.obj", collectMsgScalar),
				collectFE(0, "properties.arr", collectMsgScalar),
				collectFE(0, "user_properties.u", collectMsgScalar),
			}},
		{"empty property key", `{"name":"x","properties":{"":1}}`, []enrich.FieldError{collectFE(0, "properties", collectMsgKey)}},
		{"user not an object", `{"name":"x","user":"a@b.c"}`, []enrich.FieldError{collectFE(0, "user", collectMsgObject)}},
		{"user bad fields", `{"name":"x","user":{"email":["a@b.c"],"ssn":"123"}}`, []enrich.FieldError{
			collectFE(0, "user.email", collectMsgString),
			collectFE(0, "user.ssn", collectMsgUnknown),
		}},
		{"unknown top-level fields (typos)", `{"name":"x","vaule":1,"Currency":"EUR"}`, []enrich.FieldError{
			collectFE(0, "vaule", collectMsgUnknown),
			collectFE(0, "Currency", collectMsgUnknown),
		}},
		{"a long unknown field name is capped", `{"name":"x","` + strings.Repeat("k", 300) + `":1}`, []enrich.FieldError{
			collectFE(0, strings.Repeat("k", 100), collectMsgUnknown),
		}},
		{"several errors in a batch, all reported with their index", `{"batch":[
			{"name":"page_viewed"},
			{"value":"abc","items":[{"id":"a"},{"id":"b","quantity":"x"}]},
			"not an event",
			{"name":"ok","consent":{"ads":"maybe"},"properties":{"n":{"deep":1}}}
		]}`, []enrich.FieldError{
			collectFE(1, "value", collectMsgNumber),
			collectFE(1, "items[1].quantity", collectMsgNumber),
			collectFE(1, "name", collectMsgRequired),
			collectFE(2, "", "event must be a JSON object"),
			collectFE(3, "consent.ads", collectMsgConsentValue),
			collectFE(3, "properties.n", collectMsgScalar),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := decodeCollect(t, 0, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.problems, tt.want) {
				t.Fatalf("problems:\n got %+v\nwant %+v", d.problems, tt.want)
			}
		})
	}
}

func TestCollectProblemCap(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	for i := range 1200 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"value":"x"}`)
	}
	b.WriteString(`]}`)
	d, err := decodeCollect(t, 2000, b.String())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(d.problems); got != collectMaxProblems+1 {
		t.Fatalf("%d problems, want %d", got, collectMaxProblems+1)
	}
	if last := d.problems[len(d.problems)-1]; last.Message != collectMsgTooMany {
		t.Fatalf("last problem %+v, want the too-many note", last)
	}
}

func TestCollectRequestErrors(t *testing.T) {
	tests := []struct {
		name     string
		maxBatch int
		body     string
		status   int
	}{
		{"empty body", 0, "", 400},
		{"whitespace body", 0, " \r\n\t", 400},
		{"not JSON", 0, "name=page_viewed", 400},
		{"truncated JSON", 0, `{"name":"x"`, 400},
		{"trailing garbage", 0, `{"name":"x"} {}`, 400},
		{"array at the top", 0, `[{"name":"x"}]`, 400},
		{"string at the top", 0, `"x"`, 400},
		{"batch not an array", 0, `{"batch":{"name":"x"}}`, 400},
		{"batch empty", 0, `{"batch":[]}`, 400},
		{"batch with other fields", 0, `{"batch":[{"name":"x"}],"name":"y"}`, 400},
		{"batch over the limit", 3, `{"batch":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]}`, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeCollect(t, tt.maxBatch, tt.body)
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a decodeError", err)
			}
			if de.status != tt.status {
				t.Fatalf("status %d (%s), want %d", de.status, de.msg, tt.status)
			}
			if strings.Contains(tt.body, "name") && tt.body != "" && strings.Contains(de.msg, tt.body) {
				t.Fatalf("message echoes the body: %q", de.msg)
			}
		})
	}
}

func TestCollectBatch(t *testing.T) {
	d, err := decodeCollect(t, 10, string(readCollectFixture(t, "batch10.json")))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.problems) != 0 {
		t.Fatalf("problems: %+v", d.problems)
	}
	if len(d.events) != 10 {
		t.Fatalf("%d events, want 10", len(d.events))
	}
	names := []string{"page_viewed", "product_viewed", "product_added", "checkout_started", "page_viewed",
		"scroll", "product_viewed", "product_added", "cart_viewed", "lead_submitted"}
	for i, e := range d.events {
		if e.Name != names[i] || e.EventID != fmt.Sprintf("evt-%04d", i) {
			t.Errorf("event %d = %s/%s", i, e.Name, e.EventID)
		}
		if p, _ := e.Properties.Get("position"); p.Num != float64(i) {
			t.Errorf("event %d position %v", i, p.Num)
		}
		if want := time.Date(2025, 3, 14, 9, 26, 10+i, 0, time.UTC); !e.OccurredAt.Equal(want) {
			t.Errorf("event %d at %v, want %v", i, e.OccurredAt, want)
		}
	}
	// Exactly at the limit is fine; one more is 413 (TestCollectRequestErrors).
	if _, err := decodeCollect(t, 1, `{"batch":[{"name":"a"}]}`); err != nil {
		t.Fatalf("batch at the limit: %v", err)
	}
}

func TestCollectLimits(t *testing.T) {
	props := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":%d`, i, i)
		}
		return "{" + b.String() + "}"
	}
	items := func(n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(`{"id":"a","quantity":1},`, n), ",") + "]"
	}
	tests := []struct {
		name string
		body string
		want []enrich.FieldError
	}{
		{"event_id of 128", `{"name":"x","event_id":"` + strings.Repeat("a", 128) + `"}`, nil},
		{"text at the limit", `{"name":"x","url":"/` + strings.Repeat("a", collectMaxText-1) + `"}`, nil},
		{"url over the limit", `{"name":"x","url":"/` + strings.Repeat("a", collectMaxText) + `"}`, []enrich.FieldError{collectFE(0, "url", collectMsgTooLong)}},
		{"100 properties", `{"name":"x","properties":` + props(100) + `}`, nil},
		{"101 properties", `{"name":"x","properties":` + props(101) + `}`, []enrich.FieldError{collectFE(0, "properties", collectMsgTooManyProps)}},
		{"property key of 100", `{"name":"x","properties":{"` + strings.Repeat("k", 100) + `":1}}`, nil},
		{"property key of 101", `{"name":"x","user_properties":{"` + strings.Repeat("k", 101) + `":1}}`, []enrich.FieldError{collectFE(0, "user_properties", collectMsgKey)}},
		{"200 items", `{"name":"x","items":` + items(200) + `}`, nil},
		{"201 items", `{"name":"x","items":` + items(201) + `}`, []enrich.FieldError{collectFE(0, "items", collectMsgTooManyItems)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := decodeCollect(t, 0, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.problems, tt.want) && !(len(d.problems) == 0 && len(tt.want) == 0) {
				t.Fatalf("problems:\n got %+v\nwant %+v", d.problems, tt.want)
			}
		})
	}
}

func TestCollectQuery(t *testing.T) {
	full := "name=page_viewed&event_id=e1&timestamp=2025-03-14T09:00:00Z" +
		"&url=https%3A%2F%2Fshop.example%2Fsale%3Futm_source%3Dx&referrer=https%3A%2F%2Fwww.google.com%2F" +
		"&title=Big+sale&value=12.50&currency=EUR&transaction_id=T1&tax=2&shipping=0&coupon=C" +
		"&user_id=u1&anonymous_id=a1&p.section=hero&pn.depth=75&up.tier=gold&upn.orders=3" +
		"&consent.analytics=granted&consent.ads=denied&_=1710410400000"
	d := decodeCollectQuery(t, full)
	if len(d.problems) != 0 {
		t.Fatalf("problems: %+v", d.problems)
	}
	e := d.events[0]
	err := errors.Join(
		collectWant(e.Name, "page_viewed"), collectWant(e.EventID, "e1"), collectWant(e.Source, enrich.SourceCollect),
		collectWant(e.OccurredAt, time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)),
		collectWant(e.URL, "https://shop.example/sale?utm_source=x"), collectWant(e.Host, "shop.example"), collectWant(e.Path, "/sale"),
		collectWant(e.Referrer, "https://www.google.com/"), collectWant(e.Title, "Big sale"),
		collectWant(e.Commerce.Value, enrich.Some(12.5)), collectWant(e.Commerce.Currency, "EUR"), collectWant(e.Commerce.TransactionID, "T1"),
		collectWant(e.Commerce.Tax, enrich.Some(2)), collectWant(e.Commerce.Shipping, enrich.Some(0)), collectWant(e.Commerce.Coupon, "C"),
		collectWant(e.UserID, "u1"), collectWant(e.AnonymousID, "a1"),
		collectWant(e.Properties, enrich.Props{{Key: "section", Str: "hero"}, {Key: "depth", Kind: enrich.PropNumber, Num: 75}}),
		collectWant(e.UserProperties, enrich.Props{{Key: "tier", Str: "gold"}, {Key: "orders", Kind: enrich.PropNumber, Num: 3}}),
		collectWant(e.Consent.Categories, enrich.Props{{Key: "analytics", Str: "granted"}, {Key: "ads", Str: "denied"}}),
		// A query value is text by nature: a number in it is no coercion.
		collectWant(e.Quality.Has(enrich.FlagCoercedValue), false),
	)
	if err != nil {
		t.Fatal(err)
	}

	// An unescaped '+' in the timestamp offset arrives as a space.
	d = decodeCollectQuery(t, "name=x&timestamp=2025-03-14T09:00:00+01:00")
	if len(d.problems) != 0 || !d.events[0].OccurredAt.Equal(time.Date(2025, 3, 14, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("timestamp with '+': %v, %+v", d.events[0].OccurredAt, d.problems)
	}

	problems := []struct {
		name  string
		query string
		want  []enrich.FieldError
	}{
		{"empty query", "", []enrich.FieldError{collectFE(0, "name", collectMsgRequired)}},
		{"empty name", "name=", []enrich.FieldError{collectFE(0, "name", collectMsgNonEmpty)}},
		{"items", "name=x&items=%5B%5D&items[0].id=a", []enrich.FieldError{collectFE(0, "items", collectMsgGETItems), collectFE(0, "items", collectMsgGETItems)}},
		{"user data", "name=x&user.email=a%40b.c", []enrich.FieldError{collectFE(0, "user.email", collectMsgGETUser)}},
		{"objects", "name=x&properties=%7B%7D", []enrich.FieldError{collectFE(0, "properties", collectMsgGETObject)}},
		{"bad numbers", "name=x&value=12%2C50&pn.depth=deep", []enrich.FieldError{collectFE(0, "value", collectMsgNumber), collectFE(0, "pn.depth", collectMsgNumber)}},
		{"bad consent", "name=x&consent.ads=yes&consent.marketing=granted", []enrich.FieldError{
			collectFE(0, "consent.ads", collectMsgConsentValue), collectFE(0, "consent.marketing", collectMsgPurpose)}},
		{"unknown parameter", "name=x&nmae=y", []enrich.FieldError{collectFE(0, "nmae", collectMsgUnknown)}},
		{"empty property key", "name=x&p.=1", []enrich.FieldError{collectFE(0, "properties", collectMsgKey)}},
	}
	for _, tt := range problems {
		t.Run(tt.name, func(t *testing.T) {
			d := decodeCollectQuery(t, tt.query)
			if !reflect.DeepEqual(d.problems, tt.want) {
				t.Fatalf("problems:\n got %+v\nwant %+v", d.problems, tt.want)
			}
		})
	}
}

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"12.50", 12.5, true}, {"0", 0, true}, {"-3", -3, true}, {"1e3", 1000, true}, {"2.5E-1", 0.25, true},
		{"", 0, false}, {"-", 0, false}, {"1.", 0, false}, {".5", 0, false}, {"+1", 0, false}, {"1e", 0, false},
		{" 1", 0, false}, {"1 ", 0, false}, {"0x10", 0, false}, {"1_000", 0, false}, {"NaN", 0, false},
		{"Inf", 0, false}, {"1e999", 0, false}, {"12,50", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseDecimal([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseDecimal(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestCollectDocsExamples decodes every ```json block of docs/collect.md:
// the documented contract must be the implemented one. A block right after
// a line with "<!-- invalid -->" must yield problems; every other block
// must decode cleanly.
func TestCollectDocsExamples(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "docs", "collect.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type block struct {
		line    int
		invalid bool
		body    string
	}
	var (
		blocks  []block
		cur     *block
		prev    string // last non-blank line outside a block
		lineNum int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lineNum++
		line := sc.Text()
		switch {
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line + "\n"
		case strings.TrimSpace(line) == "```json":
			cur = &block{line: lineNum, invalid: strings.Contains(prev, "<!-- invalid -->")}
		case strings.TrimSpace(line) != "":
			prev = line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("unterminated ```json block at line %d", cur.line)
	}
	valid, invalid := 0, 0
	for _, b := range blocks {
		d, err := decodeCollect(t, 0, b.body)
		switch {
		case err != nil:
			t.Errorf("docs/collect.md:%d: request-level error %v", b.line, err)
		case b.invalid && len(d.problems) == 0:
			t.Errorf("docs/collect.md:%d: marked invalid but decodes without problems", b.line)
		case !b.invalid && len(d.problems) != 0:
			t.Errorf("docs/collect.md:%d: problems %+v", b.line, d.problems)
		}
		if b.invalid {
			invalid++
		} else {
			valid++
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "collect.md"))
	if err != nil {
		t.Fatal(err)
	}
	if limit := fmt.Sprintf("Up to %d events", defaultCollectBatch); !bytes.Contains(doc, []byte(limit)) {
		t.Errorf("docs/collect.md does not state the default batch limit (%q)", limit)
	}
	if valid < 4 || invalid < 1 {
		t.Fatalf("docs/collect.md has %d valid and %d invalid json examples; the contract needs both", valid, invalid)
	}
}

func BenchmarkCollectDecode(b *testing.B) {
	for _, bb := range []struct {
		name, file string
	}{
		{"single", "order.json"},
		{"batch10", "batch10.json"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			body := readCollectFixture(b, bb.file)
			c := newCollectDecoder(0)
			d := newCollectDecoded()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.decodeJSON(d, body, collectNow); err != nil {
					b.Fatal(err)
				}
				d.release()
			}
		})
	}
	b.Run("query", func(b *testing.B) {
		q := []byte("name=page_viewed&event_id=e1&url=https%3A%2F%2Fshop.example%2Fsale&title=Big+sale&p.section=hero&consent.analytics=granted")
		c := newCollectDecoder(0)
		d := newCollectDecoded()
		b.ReportAllocs()
		for b.Loop() {
			if err := c.decodeQuery(d, q, collectNow); err != nil {
				b.Fatal(err)
			}
			d.release()
		}
	})
}

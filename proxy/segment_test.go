package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

const (
	segTestMaxEvent   = 32 << 10
	segTestMaxRequest = 500 << 10
)

var segNow = time.Date(2026, 11, 23, 13, 40, 0, 0, time.UTC)

// segDecode runs one decode with a fresh collector.
func segDecode(t testing.TB, call, body string) (*decoded, error) {
	t.Helper()
	d := &decoded{pool: &enrich.EventPool{}}
	err := newSegmentDecoder(segTestMaxEvent, segTestMaxRequest).decode(d, call, []byte(body), segNow)
	return d, err
}

// segOne decodes a request that must yield exactly one event and no
// problem.
func segOne(t *testing.T, call, body string) *enrich.Event {
	t.Helper()
	d, err := segDecode(t, call, body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(d.events) != 1 {
		t.Fatalf("got %d events, want 1", len(d.events))
	}
	if len(d.problems) != 0 {
		t.Fatalf("unexpected problems: %+v", d.problems)
	}
	return d.events[0]
}

func segProp(t *testing.T, p enrich.Props, key string) enrich.Prop {
	t.Helper()
	x, ok := p.Get(key)
	if !ok {
		t.Fatalf("property %q missing in %+v", key, p)
	}
	return x
}

func segNoProp(t *testing.T, p enrich.Props, key string) {
	t.Helper()
	if x, ok := p.Get(key); ok {
		t.Fatalf("property %q should be absent, got %+v", key, x)
	}
}

func segEq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestSegmentCalls(t *testing.T) {
	tests := []struct {
		call, body string
		name       string
	}{
		{"track", `{"event":"Signed Up"}`, "Signed Up"},
		{"t", `{"event":"Signed Up"}`, "Signed Up"},
		{"page", `{}`, "page"},
		{"p", `{}`, "page"},
		{"identify", `{}`, "identify"},
		{"i", `{}`, "identify"},
		{"screen", `{}`, "screen"},
		{"s", `{}`, "screen"},
		{"group", `{}`, "group"},
		{"g", `{}`, "group"},
		{"alias", `{}`, "alias"},
		{"a", `{}`, "alias"},
		// the endpoint decides for single calls, whatever "type" says
		{"p", `{"type":"track","event":"x"}`, "page"},
		{"batch", `{"batch":[{"type":"identify"}]}`, "identify"},
		{"b", `{"batch":[{"type":"page"}]}`, "page"},
		{"import", `{"batch":[{"type":"screen"}]}`, "screen"},
	}
	for _, tt := range tests {
		t.Run(tt.call+"/"+tt.name, func(t *testing.T) {
			e := segOne(t, tt.call, tt.body)
			segEq(t, "Name", e.Name, tt.name)
			segEq(t, "OriginalName", e.OriginalName, tt.name)
			segEq(t, "Source", e.Source, enrich.SourceSegment)
			segEq(t, "ReceivedAt", e.ReceivedAt, segNow)
			segEq(t, "OccurredAt", e.OccurredAt, segNow)
		})
	}
}

func TestSegmentMapping(t *testing.T) {
	tests := []struct {
		name, call, body string
		check            func(t *testing.T, e *enrich.Event)
	}{
		{"ids", "t", `{"event":"x","messageId":"m-1","anonymousId":"a-1","userId":"u-1"}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "EventID", e.EventID, "m-1")
			segEq(t, "AnonymousID", e.AnonymousID, "a-1")
			segEq(t, "UserID", e.UserID, "u-1")
		}},
		{"numeric userId keeps every digit", "t", `{"event":"x","userId":12345678901234567890,"anonymousId":42}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "UserID", e.UserID, "12345678901234567890")
			segEq(t, "AnonymousID", e.AnonymousID, "42")
		}},
		{"non-string ids ignored", "t", `{"event":"x","userId":true,"messageId":{"a":1},"anonymousId":null}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "UserID", e.UserID, "")
			segEq(t, "EventID", e.EventID, "")
			segEq(t, "AnonymousID", e.AnonymousID, "")
		}},
		{"page from properties", "page", `{"name":"Pricing","category":"Docs","properties":{"url":"https://shop.example/pricing?a=1","path":"/ignored","title":"Pricing","referrer":"https://www.google.com/","search":"?a=1","plan":"pro"},"context":{"page":{"url":"https://shop.example/other","title":"Other"}}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "URL", e.URL, "https://shop.example/pricing?a=1")
			segEq(t, "Host", e.Host, "shop.example")
			segEq(t, "Path", e.Path, "/pricing")
			segEq(t, "Title", e.Title, "Pricing")
			segEq(t, "Referrer", e.Referrer, "https://www.google.com/")
			segEq(t, "page_name", segProp(t, e.Properties, "page_name").Str, "Pricing")
			segEq(t, "page_category", segProp(t, e.Properties, "page_category").Str, "Docs")
			segEq(t, "plan", segProp(t, e.Properties, "plan").Str, "pro")
			for _, k := range []string{"url", "path", "title", "referrer", "search", "name", "category"} {
				segNoProp(t, e.Properties, k)
			}
		}},
		{"page name in properties", "page", `{"properties":{"name":"Home","category":"Top"}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "page_name", segProp(t, e.Properties, "page_name").Str, "Home")
			segEq(t, "page_category", segProp(t, e.Properties, "page_category").Str, "Top")
			segNoProp(t, e.Properties, "name")
		}},
		{"page from context.page", "page", `{"context":{"page":{"url":"https://shop.example/a/b#x","title":"T","referrer":"https://r.example/"}}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "URL", e.URL, "https://shop.example/a/b#x")
			segEq(t, "Path", e.Path, "/a/b")
			segEq(t, "Title", e.Title, "T")
			segEq(t, "Referrer", e.Referrer, "https://r.example/")
		}},
		{"path without url", "page", `{"properties":{"path":"/only?q=1"}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "URL", e.URL, "")
			segEq(t, "Path", e.Path, "/only")
		}},
		{"track keeps its url property, page from context", "track", `{"event":"Product Viewed","properties":{"url":"https://shop.example/p/1","title":"Shirt"},"context":{"page":{"url":"https://shop.example/list","title":"List"}}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "URL", e.URL, "https://shop.example/list")
			segEq(t, "Title", e.Title, "List")
			segEq(t, "url prop", segProp(t, e.Properties, "url").Str, "https://shop.example/p/1")
			segEq(t, "title prop", segProp(t, e.Properties, "title").Str, "Shirt")
		}},
		{"screen", "screen", `{"name":"Home","category":"Main","properties":{"tab":2}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "screen_name", segProp(t, e.Properties, "screen_name").Str, "Home")
			segEq(t, "screen_category", segProp(t, e.Properties, "screen_category").Str, "Main")
			segEq(t, "tab", segProp(t, e.Properties, "tab").Num, 2.0)
		}},
		{"context", "track", `{"event":"x","context":{"userAgent":"Mozilla/5.0 (X11)","locale":"de-DE","ip":"203.0.113.9","screen":{"width":1920,"height":1080},"campaign":{"source":"Google","medium":"CPC","name":"Spring Sale","term":"shoes","content":"ad1","id":"c-7"},"consent":{"categoryPreferences":{"Advertising":true,"Analytics":false,"Weird":"yes"}}}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "UserAgent", e.Context.UserAgent, "Mozilla/5.0 (X11)")
			segEq(t, "Locale", e.Context.Locale, "de-DE")
			segEq(t, "Screen", e.Context.Screen, "1920x1080")
			a := e.Attribution
			segEq(t, "UTMSource", a.UTMSource, "Google")
			segEq(t, "UTMMedium", a.UTMMedium, "CPC")
			segEq(t, "UTMCampaign", a.UTMCampaign, "Spring Sale")
			segEq(t, "UTMTerm", a.UTMTerm, "shoes")
			segEq(t, "UTMContent", a.UTMContent, "ad1")
			segEq(t, "UTMID", a.UTMID, "c-7")
			if len(e.Consent.Categories) != 2 {
				t.Fatalf("categories = %+v", e.Consent.Categories)
			}
			segEq(t, "Advertising", segProp(t, e.Consent.Categories, "Advertising").Bool, true)
			segEq(t, "Analytics kind", segProp(t, e.Consent.Categories, "Analytics").Kind, enrich.PropBool)
			segEq(t, "Analytics", segProp(t, e.Consent.Categories, "Analytics").Bool, false)
			if out := string(e.AppendJSON(nil)); strings.Contains(out, "203.0.113.9") {
				t.Errorf("raw context.ip stored: %s", out)
			}
		}},
		{"identify traits", "identify", `{"userId":"u","traits":{"email":"Jane@Example.com","phone":"+1 555 0100","firstName":"Jane","last_name":"Doe","name":"Jane Doe","birthday":"1990-01-02","gender":"f","address":{"city":"Berlin","state":"BE","postalCode":"10115","country":"DE","street":"Hauptstr. 1"},"plan":"pro","logins":3,"vip":true,"company":{"name":"ACME"},"tags":["a"],"nothing":null}}`, func(t *testing.T, e *enrich.Event) {
			want := enrich.PII{Email: "Jane@Example.com", Phone: "+1 555 0100", FirstName: "Jane", LastName: "Doe", City: "Berlin", State: "BE", Zip: "10115", Country: "DE", DateOfBirth: "1990-01-02", Gender: "f"}
			segEq(t, "PII", e.PII, want)
			segEq(t, "plan", segProp(t, e.UserProperties, "plan").Str, "pro")
			segEq(t, "logins", segProp(t, e.UserProperties, "logins").Num, 3.0)
			segEq(t, "vip", segProp(t, e.UserProperties, "vip").Bool, true)
			if len(e.UserProperties) != 3 {
				t.Errorf("user properties = %+v, want plan, logins, vip only", e.UserProperties)
			}
			if len(e.Properties) != 0 {
				t.Errorf("properties = %+v", e.Properties)
			}
			if !e.Quality.Has(enrich.FlagDroppedPII) {
				t.Error("street dropped without dropped_pii")
			}
		}},
		{"full name is split, never a user property", "identify", `{"traits":{"name":"Ana María López","plan":"x"}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "FirstName", e.PII.FirstName, "Ana")
			segEq(t, "LastName", e.PII.LastName, "María López")
			segNoProp(t, e.UserProperties, "name")
		}},
		{"context.traits fill gaps only", "identify", `{"traits":{"email":"a@example.com","plan":"pro"},"context":{"traits":{"email":"b@example.com","plan":"free","phone":"+4930123","seats":5}}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "Email", e.PII.Email, "a@example.com")
			segEq(t, "Phone", e.PII.Phone, "+4930123")
			segEq(t, "plan", segProp(t, e.UserProperties, "plan").Str, "pro")
			segEq(t, "seats", segProp(t, e.UserProperties, "seats").Num, 5.0)
		}},
		{"context.traits on track", "track", `{"event":"x","context":{"traits":{"email":"c@example.com","tier":"gold"}}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "Email", e.PII.Email, "c@example.com")
			segEq(t, "tier", segProp(t, e.UserProperties, "tier").Str, "gold")
		}},
		{"group", "group", `{"groupId":7,"traits":{"name":"ACME","employees":50,"email":"billing@acme.example","industry":"retail"}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "group_id", segProp(t, e.Properties, "group_id").Str, "7")
			segEq(t, "name", segProp(t, e.Properties, "name").Str, "ACME")
			segEq(t, "employees", segProp(t, e.Properties, "employees").Num, 50.0)
			segNoProp(t, e.Properties, "email")
			segEq(t, "PII", e.PII, enrich.PII{})
			if !e.Quality.Has(enrich.FlagDroppedPII) {
				t.Error("group email dropped without dropped_pii")
			}
			if len(e.UserProperties) != 0 {
				t.Errorf("user properties = %+v", e.UserProperties)
			}
		}},
		{"alias", "alias", `{"userId":"new","previousId":"old"}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "previous_id", segProp(t, e.Properties, "previous_id").Str, "old")
			segEq(t, "UserID", e.UserID, "new")
		}},
		{"order completed", "track", `{"event":"Order Completed","properties":{"order_id":"ORD-1","checkout_id":"CHK-1","value":10,"revenue":59.97,"total":70,"currency":"EUR","tax":5.5,"shipping":4,"coupon":"SPRING","products":[{"product_id":"P1","sku":"S1","name":"Shirt","brand":"B","category":"Tops","variant":"red","price":19.99,"quantity":2,"coupon":"C1","position":1,"url":"https://x/y"},{"id":"P2","price":"5.00","quantity":1},{"sku":"S3"},"junk",{"product_id":33}]}}`, func(t *testing.T, e *enrich.Event) {
			c := e.Commerce
			segEq(t, "Value", c.Value, enrich.Some(10))
			segEq(t, "TransactionID", c.TransactionID, "ORD-1")
			segEq(t, "Currency", c.Currency, "EUR")
			segEq(t, "Tax", c.Tax, enrich.Some(5.5))
			segEq(t, "Shipping", c.Shipping, enrich.Some(4))
			segEq(t, "Coupon", c.Coupon, "SPRING")
			// keys not chosen stay as properties
			segEq(t, "revenue", segProp(t, e.Properties, "revenue").Num, 59.97)
			segEq(t, "total", segProp(t, e.Properties, "total").Num, 70.0)
			segEq(t, "checkout_id", segProp(t, e.Properties, "checkout_id").Str, "CHK-1")
			for _, k := range []string{"value", "order_id", "currency", "tax", "shipping", "coupon", "products"} {
				segNoProp(t, e.Properties, k)
			}
			if len(c.Items) != 4 {
				t.Fatalf("items = %+v", c.Items)
			}
			want0 := enrich.Item{ID: "P1", Name: "Shirt", Brand: "B", Category: "Tops", Variant: "red", Price: enrich.Some(19.99), Quantity: enrich.Some(2), Coupon: "C1", Index: enrich.Some(1)}
			segEq(t, "item 0", c.Items[0], want0)
			segEq(t, "item 1 id", c.Items[1].ID, "P2")
			segEq(t, "item 1 price", c.Items[1].Price, enrich.Some(5))
			segEq(t, "item 2 id", c.Items[2].ID, "S3")
			segEq(t, "item 3 id", c.Items[3].ID, "33")
			if !e.Quality.Has(enrich.FlagCoercedValue) {
				t.Error("price \"5.00\" not flagged coerced_value")
			}
		}},
		{"revenue when no value", "track", `{"event":"Order Completed","properties":{"orderId":"O2","revenue":59.97,"total":70}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "Value", e.Commerce.Value, enrich.Some(59.97))
			segEq(t, "TransactionID", e.Commerce.TransactionID, "O2")
			segEq(t, "total", segProp(t, e.Properties, "total").Num, 70.0)
			segNoProp(t, e.Properties, "orderId")
			if e.Quality.Has(enrich.FlagCoercedValue) {
				t.Error("plain numbers flagged coerced_value")
			}
		}},
		{"total, numeric string", "track", `{"event":"Order Completed","properties":{"checkout_id":123,"value":"n/a","total":" 12.50 "}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "Value", e.Commerce.Value, enrich.Some(12.5))
			segEq(t, "TransactionID", e.Commerce.TransactionID, "123")
			segEq(t, "value stays", segProp(t, e.Properties, "value").Str, "n/a")
			if !e.Quality.Has(enrich.FlagCoercedValue) {
				t.Error("\" 12.50 \" not flagged coerced_value")
			}
		}},
		{"not numbers", "track", `{"event":"x","properties":{"value":"Infinity","tax":"1,5","currency":3}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "Value set", e.Commerce.Value.Set, false)
			segEq(t, "Tax set", e.Commerce.Tax.Set, false)
			segEq(t, "Currency", e.Commerce.Currency, "")
			segEq(t, "value", segProp(t, e.Properties, "value").Str, "Infinity")
			segEq(t, "tax", segProp(t, e.Properties, "tax").Str, "1,5")
			segEq(t, "currency", segProp(t, e.Properties, "currency").Num, 3.0)
			if e.Quality.Has(enrich.FlagCoercedValue) {
				t.Error("non-numbers flagged coerced_value")
			}
		}},
		{"properties", "track", `{"event":"x","properties":{"s":"v","n":1.5,"b":false,"nil":null,"o":{"a":[1,"x\"y",true,null],"email":"z@example.com"},"":"empty key","dup":1,"dup":2,"email":"Jo@example.com","Phone":"+44 20 7946 0000","name":"Shirt"}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "s", segProp(t, e.Properties, "s").Str, "v")
			segEq(t, "n", segProp(t, e.Properties, "n").Num, 1.5)
			segEq(t, "b kind", segProp(t, e.Properties, "b").Kind, enrich.PropBool)
			segNoProp(t, e.Properties, "nil")
			segNoProp(t, e.Properties, "")
			segEq(t, "o", segProp(t, e.Properties, "o").Str, `{"a":[1,"x\"y",true,null]}`)
			segEq(t, "dup (last wins)", segProp(t, e.Properties, "dup").Num, 2.0)
			segEq(t, "name (a product's)", segProp(t, e.Properties, "name").Str, "Shirt")
			segNoProp(t, e.Properties, "email")
			segNoProp(t, e.Properties, "Phone")
			segEq(t, "Email", e.PII.Email, "Jo@example.com")
			segEq(t, "Phone", e.PII.Phone, "+44 20 7946 0000")
			if !e.Quality.Has(enrich.FlagDroppedPII) {
				t.Error("nested email dropped without dropped_pii")
			}
			if e.Quality.Has(enrich.FlagTruncated) {
				t.Error("flagged truncated")
			}
			if !json.Valid([]byte(segProp(t, e.Properties, "o").Str)) {
				t.Error("nested value is not JSON")
			}
			if out := string(e.AppendJSON(nil)); strings.Contains(out, "example.com") || strings.Contains(out, "7946") {
				t.Errorf("PII in output: %s", out)
			}
		}},
		{"nested value over 1 KiB dropped", "track", `{"event":"x","properties":{"big":{"k":"` + strings.Repeat("a", 1100) + `"},"edge":"` + strings.Repeat("b", 10) + `"}}`, func(t *testing.T, e *enrich.Event) {
			segNoProp(t, e.Properties, "big")
			segProp(t, e.Properties, "edge")
			if !e.Quality.Has(enrich.FlagTruncated) {
				t.Error("not flagged truncated")
			}
		}},
		{"nested value of exactly 1 KiB kept", "track", `{"event":"x","properties":{"big":["` + strings.Repeat("a", 1020) + `"]}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "len", len(segProp(t, e.Properties, "big").Str), 1024)
			if e.Quality.Has(enrich.FlagTruncated) {
				t.Error("flagged truncated")
			}
		}},
		{"escaped keys and strings", "track", `{"event":"caf\u00e9","properties":{"k\u00e9y":"v\nw"}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "Name", e.Name, "café")
			segEq(t, "kéy", segProp(t, e.Properties, "kéy").Str, "v\nw")
		}},
		{"properties not an object", "track", `{"event":"x","properties":[1,2],"context":"nope"}`, func(t *testing.T, e *enrich.Event) {
			if len(e.Properties) != 0 {
				t.Errorf("properties = %+v", e.Properties)
			}
		}},
		{"too many products", "track", `{"event":"x","properties":{"products":[` + strings.Repeat(`{"id":"p"},`, segMaxItems) + `{"id":"last"}]}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "items", len(e.Commerce.Items), segMaxItems)
			if !e.Quality.Has(enrich.FlagTruncated) {
				t.Error("not flagged truncated")
			}
		}},
		{"too many properties", "track", `{"event":"x","properties":{` + segManyProps(segMaxProps+1) + `}}`, func(t *testing.T, e *enrich.Event) {
			segEq(t, "properties", len(e.Properties), segMaxProps)
			if !e.Quality.Has(enrich.FlagTruncated) {
				t.Error("not flagged truncated")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := segOne(t, tt.call, tt.body)
			tt.check(t, e)
			if out := e.AppendJSON(nil); !json.Valid(out) {
				t.Errorf("AppendJSON output is not JSON: %s", out)
			}
		})
	}
}

func segManyProps(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"p` + strconv.Itoa(i) + `":1`)
	}
	return b.String()
}

func TestSegmentBatchContextMerge(t *testing.T) {
	body := `{"batch":[
		{"type":"track","event":"a"},
		{"type":"track","event":"b","context":{"locale":"fr-FR","page":{"url":"https://own.example/x"}}}
	],"context":{"locale":"en-US","userAgent":"analytics-go","page":{"url":"https://batch.example/","title":"Batch"},"campaign":{"source":"newsletter"}}}`
	d, err := segDecode(t, "batch", body)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.events) != 2 || len(d.problems) != 0 {
		t.Fatalf("events %d problems %+v", len(d.events), d.problems)
	}
	a, b := d.events[0], d.events[1]
	segEq(t, "a locale", a.Context.Locale, "en-US")
	segEq(t, "a UA", a.Context.UserAgent, "analytics-go")
	segEq(t, "a URL", a.URL, "https://batch.example/")
	segEq(t, "a utm", a.Attribution.UTMSource, "newsletter")
	segEq(t, "b locale (own wins)", b.Context.Locale, "fr-FR")
	segEq(t, "b UA (from batch)", b.Context.UserAgent, "analytics-go")
	segEq(t, "b URL (own page wins)", b.URL, "https://own.example/x")
	segEq(t, "b title (own page object replaces the batch's)", b.Title, "")
	segEq(t, "b utm", b.Attribution.UTMSource, "newsletter")
	segEq(t, "indexes", a.Index*10+b.Index, 1)
}

func TestSegmentWriteKey(t *testing.T) {
	tests := []struct{ name, call, body, want string }{
		{"single", "t", `{"event":"x","writeKey":"wk1"}`, "wk1"},
		{"batch level wins", "batch", `{"writeKey":"top","batch":[{"type":"track","event":"x","writeKey":"inner"}]}`, "top"},
		{"first message's", "batch", `{"batch":[{"type":"track","event":"x"},{"type":"track","event":"y","writeKey":"second"},{"type":"track","event":"z","writeKey":"third"}]}`, "second"},
		{"empty batch", "batch", `{"writeKey":"lonely","batch":[]}`, "lonely"},
		{"none", "batch", `{"batch":[{"type":"track","event":"x"}]}`, ""},
		{"not a string", "t", `{"event":"x","writeKey":5}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := segDecode(t, tt.call, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			segEq(t, "writeKey", d.writeKey, tt.want)
		})
	}
}

func TestSegmentTimes(t *testing.T) {
	iso := func(d time.Duration) string { return segNow.Add(d).Format(time.RFC3339Nano) }
	tests := []struct {
		name  string
		msg   string // fields added to a track message
		batch string // batch-level fields ("" = single call)
		want  time.Time
		skew  bool
	}{
		{"nothing: now", ``, "", segNow, false},
		{"timestamp as sent without sentAt", `"timestamp":"` + iso(-time.Hour) + `"`, "", segNow.Add(-time.Hour), false},
		{"originalTimestamp without sentAt", `"originalTimestamp":"` + iso(-time.Hour) + `"`, "", segNow.Add(-time.Hour), false},
		{"device clock 2h ahead corrected", `"originalTimestamp":"` + iso(2*time.Hour-5*time.Second) + `","sentAt":"` + iso(2*time.Hour) + `"`, "", segNow.Add(-5 * time.Second), true},
		{"device clock 2h behind corrected", `"timestamp":"` + iso(-2*time.Hour-5*time.Second) + `","sentAt":"` + iso(-2*time.Hour) + `"`, "", segNow.Add(-5 * time.Second), true},
		{"small skew not flagged", `"timestamp":"` + iso(-30*time.Second) + `","sentAt":"` + iso(10*time.Second) + `"`, "", segNow.Add(-40 * time.Second), false},
		{"originalTimestamp wins over timestamp", `"originalTimestamp":"` + iso(-3*time.Second) + `","timestamp":"` + iso(-time.Hour) + `","sentAt":"` + iso(0) + `"`, "", segNow.Add(-3 * time.Second), false},
		{"historical import keeps its date", `"timestamp":"` + iso(-72*time.Hour) + `","sentAt":"` + iso(0) + `"`, "", segNow.Add(-72 * time.Hour), false},
		{"batch-level sentAt applies", `"timestamp":"` + iso(3*time.Hour-7*time.Second) + `"`, `"sentAt":"` + iso(3*time.Hour) + `"`, segNow.Add(-7 * time.Second), true},
		{"message sentAt wins over batch", `"originalTimestamp":"` + iso(-1*time.Second) + `","sentAt":"` + iso(0) + `"`, `"sentAt":"` + iso(time.Hour) + `"`, segNow.Add(-1 * time.Second), false},
		{"future timestamp clamped", `"timestamp":"` + iso(10*time.Minute) + `"`, "", segNow, true},
		{"slightly future clamped, not flagged", `"timestamp":"` + iso(2*time.Second) + `"`, "", segNow, false},
		{"sentAt before the event clamps", `"timestamp":"` + iso(0) + `","sentAt":"` + iso(-time.Hour) + `"`, "", segNow, true},
		{"garbage ignored", `"timestamp":"yesterday","sentAt":"now"`, "", segNow, false},
		{"offset zone", `"timestamp":"2026-11-23T14:30:00+01:00"`, "", time.Date(2026, 11, 23, 13, 30, 0, 0, time.UTC), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := `{"type":"track","event":"x"`
			if tt.msg != "" {
				msg += "," + tt.msg
			}
			msg += "}"
			call, body := "track", msg
			if tt.batch != "" {
				call, body = "batch", `{"batch":[`+msg+`],`+tt.batch+`}`
			}
			e := segOne(t, call, body)
			if !e.OccurredAt.Equal(tt.want) {
				t.Errorf("OccurredAt = %s, want %s", e.OccurredAt, tt.want)
			}
			segEq(t, "clock_skew", e.Quality.Has(enrich.FlagClockSkew), tt.skew)
			segEq(t, "ReceivedAt", e.ReceivedAt, segNow)
		})
	}
}

func TestSegmentTimeFormats(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s, ns int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ns, time.UTC)
	}
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-23T13:37:42.222Z", utc(2026, 11, 23, 13, 37, 42, 222e6), true},
		{"2026-11-23T13:37:48.154845704Z", utc(2026, 11, 23, 13, 37, 48, 154845704), true},
		{"2026-11-23T13:37:48.1548457041234Z", utc(2026, 11, 23, 13, 37, 48, 154845704), true},
		{"2026-11-23T13:37:42Z", utc(2026, 11, 23, 13, 37, 42, 0), true},
		{"2026-11-23T13:37:42", utc(2026, 11, 23, 13, 37, 42, 0), true},
		{"2026-11-23 13:37", utc(2026, 11, 23, 13, 37, 0, 0), true},
		{"2026-11-23T15:37:42+02:00", utc(2026, 11, 23, 13, 37, 42, 0), true},
		{"2026-11-23T08:07:42-0530", utc(2026, 11, 23, 13, 37, 42, 0), true},
		{"2026-11-23T14:37:42.5+01", utc(2026, 11, 23, 13, 37, 42, 5e8), true},
		{"2026-11-23", utc(2026, 11, 23, 0, 0, 0, 0), true},
		{"2024-02-29T00:00:00Z", utc(2024, 2, 29, 0, 0, 0, 0), true},
		{"2026-02-29T00:00:00Z", time.Time{}, false},
		{"2026-13-01T00:00:00Z", time.Time{}, false},
		{"2026-11-23T24:00:00Z", time.Time{}, false},
		{"2026-11-23T13:37:42.Z", time.Time{}, false},
		{"2026-11-23T13:37:42+1", time.Time{}, false},
		{"2026-11-23T13:37:42ZZ", time.Time{}, false},
		{"2026-11-23T13", time.Time{}, false},
		{"2026-11-23T13:37:4", time.Time{}, false},
		{"1795441062222", time.Time{}, false},
		{"", time.Time{}, false},
	}
	p := newSegmentDecoder(1, 1)
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			parser := p.parsers.Get()
			defer p.parsers.Put(parser)
			v, err := parser.Parse(strconv.Quote(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := segTime(v)
			if ok != tt.ok || !got.Equal(tt.want) {
				t.Errorf("segTime(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// segSized returns a track message of exactly n bytes.
func segSized(t testing.TB, n int) string {
	t.Helper()
	const head, tail = `{"type":"track","event":"x","properties":{"pad":"`, `"}}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("cannot build a %d-byte message", n)
	}
	return head + strings.Repeat("a", pad) + tail
}

// segPadded returns a batch body of exactly n bytes holding msgs.
func segPadded(t testing.TB, n int, msgs []string) string {
	t.Helper()
	head := `{"batch":[` + strings.Join(msgs, ",") + `],"pad":"`
	const tail = `"}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("cannot build a %d-byte body", n)
	}
	return head + strings.Repeat("p", pad) + tail
}

func TestSegmentLimits(t *testing.T) {
	const ev, req = segTestMaxEvent, segTestMaxRequest
	var fill []string // 16 messages of 31 KiB: under 500 KiB together
	for range 16 {
		fill = append(fill, segSized(t, 31<<10))
	}
	tests := []struct {
		name, call, body string
		tooLarge         bool
		events           int
	}{
		{"single at the message limit", "track", segSized(t, ev), false, 1},
		{"single one above", "track", segSized(t, ev+1), true, 0},
		{"single, whitespace does not count", "track", "  \n" + segSized(t, ev) + "\n", false, 1},
		{"batch message at the limit", "batch", `{"batch":[` + segSized(t, ev) + `]}`, false, 1},
		{"batch message one above", "batch", `{"batch":[{"type":"track","event":"y"},` + segSized(t, ev+1) + `]}`, true, 0},
		{"batch message one above, spaced", "batch", `{ "writeKey" : "k" , "batch" : [ {"type":"page"} ,` + "\n\t" + segSized(t, ev+1) + ` ] }`, true, 0},
		{"batch message at the limit, spaced", "batch", `{ "writeKey" : "k" , "batch" : [ {"type":"page"} ,` + "\n\t" + segSized(t, ev) + "\n" + ` ] }`, false, 2},
		{"escaped top-level key measured re-encoded", "batch", `{"b\u0061tch":[` + segSized(t, ev+1) + `]}`, true, 0},
		{"request at the limit", "batch", segPadded(t, req, fill), false, 16},
		{"request one above", "batch", segPadded(t, req+1, fill), true, 0},
		{"batch of 2500", "batch", `{"batch":[` + strings.Repeat(`{"type":"page"},`, segMaxBatch-1) + `{"type":"page"}]}`, false, segMaxBatch},
		{"batch of 2501", "batch", `{"batch":[` + strings.Repeat(`{"type":"page"},`, segMaxBatch) + `{"type":"page"}]}`, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := segDecode(t, tt.call, tt.body)
			if tt.tooLarge {
				var de *decodeError
				if !errors.As(err, &de) || de.status != 413 {
					t.Fatalf("err = %v, want a 413 decodeError", err)
				}
			} else if err != nil {
				t.Fatalf("err = %v", err)
			}
			segEq(t, "events", len(d.events), tt.events)
			segEq(t, "problems", len(d.problems), 0)
		})
	}
}

func TestSegmentMalformed(t *testing.T) {
	tests := []struct{ name, call, body string }{
		{"not JSON", "track", `{"event":`},
		{"empty body", "track", ``},
		{"array body", "track", `[{"event":"x"}]`},
		{"string body", "page", `"page"`},
		{"trailing garbage", "track", `{"event":"x"} {}`},
		{"batch missing", "batch", `{"messages":[]}`},
		{"batch not an array", "batch", `{"batch":{"type":"track"}}`},
		{"batch body an array", "b", `[{"type":"track","event":"x"}]`},
		{"unknown call", "m", `{}`},
		{"empty call", "", `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := segDecode(t, tt.call, tt.body)
			var de *decodeError
			if !errors.As(err, &de) || de.status != 400 {
				t.Fatalf("err = %v, want a 400 decodeError", err)
			}
			if len(d.events) != 0 {
				t.Errorf("%d events added on error", len(d.events))
			}
		})
	}
}

func TestSegmentProblems(t *testing.T) {
	body := `{"batch":[
		{"type":"track","event":"ok","messageId":"m0"},
		"not an object",
		{"messageId":"m2"},
		{"type":"purchase","messageId":"m3"},
		{"type":"track","messageId":"m4","properties":{"value":1}},
		{"type":"track","event":"","messageId":"m5"},
		{"type":"batch","messageId":"m6"},
		null,
		{"type":"page","messageId":"m8"}
	]}`
	d, err := segDecode(t, "batch", body)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.events) != 9 {
		t.Fatalf("got %d events, want 9 (every message, problems included)", len(d.events))
	}
	want := []enrich.FieldError{
		{Index: 1, Field: "message"},
		{Index: 2, Field: "type"},
		{Index: 3, Field: "type"},
		{Index: 4, Field: "event"},
		{Index: 5, Field: "event"},
		{Index: 6, Field: "type"},
		{Index: 7, Field: "message"},
	}
	if len(d.problems) != len(want) {
		t.Fatalf("problems = %+v", d.problems)
	}
	for i, p := range d.problems {
		if p.Index != want[i].Index || p.Field != want[i].Field || p.Message == "" {
			t.Errorf("problem %d = %+v, want index %d field %q", i, p, want[i].Index, want[i].Field)
		}
	}
	for i, e := range d.events {
		segEq(t, "Index", e.Index, i)
		segEq(t, "Source", e.Source, enrich.SourceSegment)
		if !json.Valid(e.AppendJSON(nil)) {
			t.Errorf("event %d not valid JSON", i)
		}
	}
	// events with problems keep what could be decoded, for quarantine
	segEq(t, "m3 id", d.events[3].EventID, "m3")
	segEq(t, "m4 value", d.events[4].Commerce.Value, enrich.Some(1))
	segEq(t, "m8 name", d.events[8].Name, "page")
}

// segFixture is one recorded request (see /work/shared/fixtures/README.md).
type segFixture struct {
	TS   time.Time `json:"ts"`
	Path string    `json:"path"`
	Body string    `json:"body"`
	JSON struct {
		WriteKey string `json:"writeKey"`
		Batch    []struct {
			Type      string `json:"type"`
			Event     string `json:"event"`
			MessageID string `json:"messageId"`
		} `json:"batch"`
	} `json:"json"`
}

func segFixtures(t testing.TB) map[string][]segFixture {
	t.Helper()
	files, err := filepath.Glob("testdata/segment/*.ndjson")
	if err != nil || len(files) != 4 {
		t.Fatalf("fixtures: %v %v", files, err)
	}
	out := map[string][]segFixture{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var fx segFixture
			if err := json.Unmarshal(sc.Bytes(), &fx); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], fx)
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestSegmentFixtures(t *testing.T) {
	fixtures := segFixtures(t)
	wantReq := map[string]int{"segment-node.ndjson": 1, "segment-node.retry-429.ndjson": 3, "segment-go.ndjson": 1, "rudder-node.ndjson": 2}
	pii := []string{"jane.doe@example.com", "Jane", "Doe"}
	for file, reqs := range fixtures {
		segEq(t, file+" requests", len(reqs), wantReq[file])
		for n, fx := range reqs {
			t.Run(file+"/"+strconv.Itoa(n), func(t *testing.T) {
				d := &decoded{pool: &enrich.EventPool{}}
				call := fx.Path[strings.LastIndexByte(fx.Path, '/')+1:]
				err := newSegmentDecoder(segTestMaxEvent, segTestMaxRequest).decode(d, call, []byte(fx.Body), fx.TS)
				if err != nil {
					t.Fatal(err)
				}
				if len(d.problems) != 0 {
					t.Errorf("problems: %+v", d.problems)
				}
				if len(d.events) != len(fx.JSON.Batch) {
					t.Fatalf("events = %d, want %d", len(d.events), len(fx.JSON.Batch))
				}
				segEq(t, "writeKey", d.writeKey, fx.JSON.WriteKey)
				for i, e := range d.events {
					m := fx.JSON.Batch[i]
					segEq(t, "EventID", e.EventID, m.MessageID)
					segEq(t, "UserID", e.UserID, "user-123")
					if e.OccurredAt.After(fx.TS) || e.OccurredAt.Before(fx.TS.Add(-10*time.Second)) {
						t.Errorf("OccurredAt %s not within 10s before %s", e.OccurredAt, fx.TS)
					}
					if e.Quality.Has(enrich.FlagClockSkew) {
						t.Error("clock_skew on a local capture")
					}
					switch m.Type {
					case "identify":
						segEq(t, "Name", e.Name, "identify")
						segEq(t, "Email", e.PII.Email, "jane.doe@example.com")
						segEq(t, "FirstName", e.PII.FirstName, "Jane")
						segEq(t, "LastName", e.PII.LastName, "Doe")
						segEq(t, "plan", segProp(t, e.UserProperties, "plan").Str, "pro")
						segNoProp(t, e.UserProperties, "name")
					case "track":
						segEq(t, "Name", e.Name, "Order Completed")
						segEq(t, "OriginalName", e.OriginalName, m.Event)
						c := e.Commerce
						segEq(t, "Value", c.Value, enrich.Some(59.97))
						segEq(t, "Currency", c.Currency, "USD")
						segEq(t, "TransactionID", c.TransactionID, "ORD-1001")
						if len(c.Items) != 2 {
							t.Fatalf("items = %+v", c.Items)
						}
						segEq(t, "item 0", c.Items[0], enrich.Item{ID: "SKU-1", Name: "Blue T-Shirt", Price: enrich.Some(19.99), Quantity: enrich.Some(2)})
						segEq(t, "item 1", c.Items[1], enrich.Item{ID: "SKU-2", Name: "Canvas Tote", Price: enrich.Some(19.99), Quantity: enrich.Some(1)})
						if len(e.Properties) != 0 {
							t.Errorf("properties = %+v", e.Properties)
						}
					case "page":
						segEq(t, "Name", e.Name, "page")
						segEq(t, "URL", e.URL, "https://shop.example.com/pricing")
						segEq(t, "Path", e.Path, "/pricing")
						segEq(t, "Host", e.Host, "shop.example.com")
						segEq(t, "Title", e.Title, "Pricing - Example Shop")
						segEq(t, "Referrer", e.Referrer, "https://www.google.com/")
						segEq(t, "page_name", segProp(t, e.Properties, "page_name").Str, "Pricing")
					default:
						t.Errorf("unexpected type %q", m.Type)
					}
					out := string(e.AppendJSON(nil))
					if !json.Valid([]byte(out)) {
						t.Errorf("not JSON: %s", out)
					}
					for _, s := range pii {
						if strings.Contains(out, s) {
							t.Errorf("PII %q in output: %s", s, out)
						}
					}
				}
				// The same messageId twice in one request stays two
				// events: dedup is a later stage.
				if strings.Contains(fx.Body, "acceptance-dedup-0001") {
					segEq(t, "events with the duplicated messageId", segCountID(d.events, "acceptance-dedup-0001"), 2)
				}
			})
		}
	}
}

func segCountID(events []*enrich.Event, id string) int {
	n := 0
	for _, e := range events {
		if e.EventID == id {
			n++
		}
	}
	return n
}

// segBenchTrack is what analytics.js (analytics-next) posts to /v1/t.
const segBenchTrack = `{"timestamp":"2026-11-23T13:39:59.120Z","integrations":{},"type":"track","event":"Product Added","properties":{"product_id":"SKU-1","sku":"SKU-1","name":"Blue T-Shirt","category":"Tops","price":19.99,"quantity":1,"currency":"USD","cart_id":"c-81f2"},"context":{"page":{"path":"/products/blue-t-shirt","referrer":"https://www.google.com/","search":"?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=EAIaIQobChMI","title":"Blue T-Shirt – Example Shop","url":"https://shop.example.com/products/blue-t-shirt?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=EAIaIQobChMI"},"userAgent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","userAgentData":{"brands":[{"brand":"Chromium","version":"131"},{"brand":"Not_A Brand","version":"24"}],"mobile":false,"platform":"Windows"},"locale":"en-US","library":{"name":"analytics.js","version":"npm:next-1.76.0"},"campaign":{"source":"google","medium":"cpc","name":"spring"},"consent":{"categoryPreferences":{"Advertising":true,"Analytics":true,"Functional":true}}},"messageId":"ajs-next-1795441199120-3f1c0a51-6d7e-4d9b-9e2a-5b0f8c1d2e3f","anonymousId":"7d9e2b4c-1a3f-4e5d-8c6b-9a0f1e2d3c4b","writeKey":"acceptance-write-key","userId":null,"sentAt":"2026-11-23T13:39:59.131Z","_metadata":{"bundled":["Segment.io"],"unbundled":[],"bundledIds":[]}}`

// segBenchBatch returns a 10-message server batch in analytics-node's
// shape: identify, Order Completed and pages.
func segBenchBatch() string {
	msgs := []string{
		`{"timestamp":"2026-11-23T13:37:42.222Z","integrations":{},"type":"identify","userId":"user-123","traits":{"email":"jane.doe@example.com","name":"Jane Doe","plan":"pro"},"context":{"library":{"name":"@segment/analytics-node","version":"3.1.0"}},"anonymousId":"anon-7f3c2a10","messageId":"node-next-1795441062222-f2d9256a-f559-4a4b-b87b-7c08c692c9e5","_metadata":{"nodeVersion":"v20.20.2","jsRuntime":"node"}}`,
	}
	for i := range 9 {
		if i%2 == 0 {
			msgs = append(msgs, `{"timestamp":"2026-11-23T13:37:42.223Z","integrations":{},"event":"Order Completed","type":"track","properties":{"order_id":"ORD-100`+strconv.Itoa(i)+`","revenue":59.97,"currency":"USD","products":[{"product_id":"SKU-1","sku":"SKU-1","name":"Blue T-Shirt","price":19.99,"quantity":2},{"product_id":"SKU-2","sku":"SKU-2","name":"Canvas Tote","price":19.99,"quantity":1}]},"context":{"library":{"name":"@segment/analytics-node","version":"3.1.0"}},"userId":"user-123","messageId":"order-`+strconv.Itoa(i)+`","_metadata":{"nodeVersion":"v20.20.2","jsRuntime":"node"}}`)
		} else {
			msgs = append(msgs, `{"timestamp":"2026-11-23T13:37:42.223Z","integrations":{},"type":"page","properties":{"path":"/pricing","url":"https://shop.example.com/pricing","title":"Pricing - Example Shop","referrer":"https://www.google.com/"},"name":"Pricing","context":{"library":{"name":"@segment/analytics-node","version":"3.1.0"}},"userId":"user-123","messageId":"page-`+strconv.Itoa(i)+`","_metadata":{"nodeVersion":"v20.20.2","jsRuntime":"node"}}`)
		}
	}
	return `{"batch":[` + strings.Join(msgs, ",") + `],"writeKey":"acceptance-write-key","sentAt":"2026-11-23T13:37:42.226Z"}`
}

func BenchmarkSegmentDecode(b *testing.B) {
	cases := []struct {
		name, call, body string
		events           int
	}{
		{"analyticsjs-track", "t", segBenchTrack, 1},
		{"server-batch-10", "batch", segBenchBatch(), 10},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dec := newSegmentDecoder(segTestMaxEvent, segTestMaxRequest)
			d := &decoded{pool: &enrich.EventPool{}}
			body := []byte(c.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := dec.decode(d, c.call, body, segNow); err != nil {
					b.Fatal(err)
				}
				if len(d.events) != c.events || len(d.problems) != 0 {
					b.Fatalf("events %d problems %v", len(d.events), d.problems)
				}
				d.release()
			}
		})
	}
}

func TestSegmentPropertyKeysNotPII(t *testing.T) {
	e := segOne(t, "track", `{"event":"Product Viewed","properties":{"name":"Dress","gender":"women","city":"Paris","mobile":false,"country":"FR"}}`)
	for _, k := range []string{"name", "gender", "city", "mobile", "country"} {
		segProp(t, e.Properties, k)
	}
	segEq(t, "PII", e.PII, enrich.PII{})
	if e.Quality.Has(enrich.FlagDroppedPII) {
		t.Error("flagged dropped_pii")
	}
}

// TestSegmentConcurrent shares one decoder between goroutines, as the
// server does; run with -race.
func TestSegmentConcurrent(t *testing.T) {
	dec := newSegmentDecoder(segTestMaxEvent, segTestMaxRequest)
	pool := &enrich.EventPool{}
	body := []byte(segBenchBatch())
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for range 50 {
				d := &decoded{pool: pool}
				if err := dec.decode(d, "batch", body, segNow); err != nil {
					errs <- err
					return
				}
				if len(d.events) != 10 || d.events[2].EventID != "page-1" || d.events[1].Commerce.TransactionID != "ORD-1000" {
					errs <- errors.New("wrong events from a shared decoder")
					return
				}
				d.release()
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

package proxy

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sidetrack/sidetrack/enrich"
)

var ga4Now = time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)

// ga4Decode runs one request through a fresh decoder.
func ga4Decode(t testing.TB, query, body string) (*decoded, error) {
	t.Helper()
	d := &decoded{pool: &enrich.EventPool{}}
	err := newGA4Decoder(0).decode(d, []byte(query), []byte(body), ga4Now)
	return d, err
}

// ga4One decodes a request that must give exactly one event.
func ga4One(t *testing.T, query, body string) (*enrich.Event, *decoded) {
	t.Helper()
	d, err := ga4Decode(t, query, body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(d.events) != 1 {
		t.Fatalf("got %d events, want 1", len(d.events))
	}
	return d.events[0], d
}

func ga4GetProp(t *testing.T, p enrich.Props, key string) enrich.Prop {
	t.Helper()
	x, ok := p.Get(key)
	if !ok {
		t.Fatalf("property %q missing in %+v", key, p)
	}
	return x
}

func ga4NoProblems(t *testing.T, d *decoded) {
	t.Helper()
	if len(d.problems) > 0 {
		t.Fatalf("unexpected problems: %+v", d.problems)
	}
}

func ga4HasProblem(t *testing.T, d *decoded, index int, field string) {
	t.Helper()
	for _, p := range d.problems {
		if p.Index == index && p.Field == field {
			return
		}
	}
	t.Fatalf("no problem for event %d field %q in %+v", index, field, d.problems)
}

func ga4Eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestGA4DecodeParams(t *testing.T) {
	tests := []struct {
		name  string
		query string
		check func(t *testing.T, e *enrich.Event)
	}{
		{"ids and session", "v=2&tid=G-TEST123&gtm=45je5b40v9181883904za204&_p=1795442481274&cid=585712067.1795442481&uid=user-123&sid=1795442481&sct=3&seg=1&_s=7&en=page_view",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "GA.Version", e.GA.Version, "2")
				ga4Eq(t, "GAMeasurementID", e.GAMeasurementID, "G-TEST123")
				ga4Eq(t, "GA.GTM", e.GA.GTM, "45je5b40v9181883904za204")
				ga4Eq(t, "PageLoadID", e.PageLoadID, "1795442481274")
				ga4Eq(t, "AnonymousID", e.AnonymousID, "585712067.1795442481")
				ga4Eq(t, "UserID", e.UserID, "user-123")
				ga4Eq(t, "GASessionID", e.GASessionID, "1795442481")
				ga4Eq(t, "GASessionNumber", e.GASessionNumber, 3)
				ga4Eq(t, "GA.SessionEngaged", e.GA.SessionEngaged, true)
				ga4Eq(t, "HitSeq", e.HitSeq, 7)
				ga4Eq(t, "Source", e.Source, enrich.SourceGA4)
				ga4Eq(t, "ReceivedAt", e.ReceivedAt, ga4Now)
				ga4Eq(t, "OccurredAt", e.OccurredAt, ga4Now)
			}},
		{"session flags", "v=2&tid=G-X&en=page_view&seg=0&_fv=1&_ss=1&_et=1513&_dbg=1",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "GA.SessionEngaged", e.GA.SessionEngaged, false)
				ga4Eq(t, "GA.FirstVisit", e.GA.FirstVisit, true)
				ga4Eq(t, "GA.SessionStart", e.GA.SessionStart, true)
				ga4Eq(t, "GA.EngagementMS", e.GA.EngagementMS, 1513)
				ga4Eq(t, "GA.Debug", e.GA.Debug, true)
			}},
		{"debug_mode event parameter", "v=2&tid=G-X&en=x&ep.debug_mode=true",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "GA.Debug", e.GA.Debug, true)
				ga4Eq(t, "len(Properties)", len(e.Properties), 0)
			}},
		{"name and page", "v=2&tid=G-X&en=Page_View&dl=https%3A%2F%2Fwww.shop.test%2Fshop%2Fsale%3Futm_source%3Dfb%26gclid%3Dabc&dr=https%3A%2F%2Fwww.google.com%2F&dt=Spring%20Sale%20-%20Shop&ul=en-us&sr=1280x720",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Name", e.Name, "Page_View")
				ga4Eq(t, "OriginalName", e.OriginalName, "Page_View")
				ga4Eq(t, "URL", e.URL, "https://www.shop.test/shop/sale?utm_source=fb&gclid=abc")
				ga4Eq(t, "Host", e.Host, "www.shop.test")
				ga4Eq(t, "Path", e.Path, "/shop/sale")
				ga4Eq(t, "Referrer", e.Referrer, "https://www.google.com/")
				ga4Eq(t, "Title", e.Title, "Spring Sale - Shop")
				ga4Eq(t, "Context.Locale", e.Context.Locale, "en-us")
				ga4Eq(t, "Context.Screen", e.Context.Screen, "1280x720")
			}},
		{"plus is a space", "v=2&tid=G-X&en=x&dt=a+b%2Bc",
			func(t *testing.T, e *enrich.Event) { ga4Eq(t, "Title", e.Title, "a b+c") }},
		{"custom parameters", "v=2&tid=G-X&en=sign_up&ep.method=email&epn.percent_scrolled=90&ep.empty=&up.plan=pro&upn.ltv=12.5&ep.content%20group=blog",
			func(t *testing.T, e *enrich.Event) {
				m := ga4GetProp(t, e.Properties, "method")
				ga4Eq(t, "method kind", m.Kind, enrich.PropString)
				ga4Eq(t, "method", m.Str, "email")
				p := ga4GetProp(t, e.Properties, "percent_scrolled")
				ga4Eq(t, "percent_scrolled kind", p.Kind, enrich.PropNumber)
				ga4Eq(t, "percent_scrolled", p.Num, 90)
				ga4Eq(t, "empty", ga4GetProp(t, e.Properties, "empty").Str, "")
				ga4Eq(t, "content group", ga4GetProp(t, e.Properties, "content group").Str, "blog")
				ga4Eq(t, "plan", ga4GetProp(t, e.UserProperties, "plan").Str, "pro")
				ltv := ga4GetProp(t, e.UserProperties, "ltv")
				ga4Eq(t, "ltv kind", ltv.Kind, enrich.PropNumber)
				ga4Eq(t, "ltv", ltv.Num, 12.5)
				ga4Eq(t, "len(Properties)", len(e.Properties), 4)
			}},
		{"commerce", "v=2&tid=G-X&en=purchase&cu=USD&epn.value=59.97&ep.transaction_id=T1&epn.tax=4.5&epn.shipping=5&ep.coupon=SPRING&ep.event_id=evt-1",
			func(t *testing.T, e *enrich.Event) {
				c := e.Commerce
				ga4Eq(t, "Currency", c.Currency, "USD")
				ga4Eq(t, "Value", c.Value, enrich.Some(59.97))
				ga4Eq(t, "TransactionID", c.TransactionID, "T1")
				ga4Eq(t, "Tax", c.Tax, enrich.Some(4.5))
				ga4Eq(t, "Shipping", c.Shipping, enrich.Some(5))
				ga4Eq(t, "Coupon", c.Coupon, "SPRING")
				ga4Eq(t, "EventID", e.EventID, "evt-1")
				ga4Eq(t, "len(Properties)", len(e.Properties), 0)
				ga4Eq(t, "coerced", e.Quality.Has(enrich.FlagCoercedValue), false)
			}},
		{"value as a string parameter is coerced", "v=2&tid=G-X&en=purchase&ep.value=7630&ep.currency=EUR",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Value", e.Commerce.Value, enrich.Some(7630))
				ga4Eq(t, "Currency", e.Commerce.Currency, "EUR")
				ga4Eq(t, "coerced", e.Quality.Has(enrich.FlagCoercedValue), true)
				ga4Eq(t, "len(Properties)", len(e.Properties), 0)
			}},
		{"cu wins over ep.currency", "v=2&tid=G-X&en=purchase&ep.currency=EUR&cu=USD",
			func(t *testing.T, e *enrich.Event) { ga4Eq(t, "Currency", e.Commerce.Currency, "USD") }},
		{"NaN value stays a string property", "v=2&tid=G-X&en=begin_checkout&ep.value=NaN",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Value.Set", e.Commerce.Value.Set, false)
				ga4Eq(t, "value", ga4GetProp(t, e.Properties, "value").Str, "NaN")
			}},
		{"items", "v=2&tid=G-X&en=purchase&pr1=idSKU-1~nmBlue%20T-Shirt~brAcme~caApparel~c2Tops~c3Tees~c4Cotton~c5Blue~vablue~pr19.99~qt2~cpSPRING~ds1.5~lp3~afWeb%20Store~liL1~lnRelated~loChIJ~k0google_business_vertical~v0retail",
			func(t *testing.T, e *enrich.Event) {
				if len(e.Commerce.Items) != 1 {
					t.Fatalf("items = %+v", e.Commerce.Items)
				}
				want := enrich.Item{ID: "SKU-1", Name: "Blue T-Shirt", Brand: "Acme", Category: "Apparel",
					Category2: "Tops", Category3: "Tees", Category4: "Cotton", Category5: "Blue", Variant: "blue",
					Price: enrich.Some(19.99), Quantity: enrich.Some(2), Coupon: "SPRING", Discount: enrich.Some(1.5),
					Index: enrich.Some(3), Affiliation: "Web Store", ListID: "L1", ListName: "Related", LocationID: "ChIJ"}
				ga4Eq(t, "item", e.Commerce.Items[0], want)
			}},
		{"consent", "v=2&tid=G-X&en=page_view&gcs=G100&gcd=13p3p3p3p5l1&npa=1",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "GCS", e.Consent.GCS, "G100")
				ga4Eq(t, "GCD", e.Consent.GCD, "13p3p3p3p5l1")
				ga4Eq(t, "NPA", e.Consent.NPA, "1")
				ga4Eq(t, "Analytics", e.Consent.Analytics, enrich.Unknown) // the consent stage decides
			}},
		{"user data goes to PII only", "v=2&tid=G-X&en=purchase&ep.user_data.email_address=a%40b.com&ep.user_data.phone_number=%2B1234567890&ep.user_data.address.first_name=John&ep.user_data.address.last_name=Doe&ep.user_data.address.street=1%20Main&ep.user_data.address.city=New%20York&ep.user_data.address.region=NY&ep.user_data.address.postal_code=10001&ep.user_data.address.country=US&ep.user_data._tag_mode=CODE&ep.user_data=x",
			func(t *testing.T, e *enrich.Event) {
				want := enrich.PII{Email: "a@b.com", Phone: "+1234567890", FirstName: "John", LastName: "Doe",
					City: "New York", State: "NY", Zip: "10001", Country: "US"}
				ga4Eq(t, "PII", e.PII, want)
				ga4Eq(t, "len(Properties)", len(e.Properties), 0)
				ga4Eq(t, "dropped street", e.Quality.Has(enrich.FlagDroppedPII), true)
			}},
		{"user data, indexed address and short names", "v=2&tid=G-X&en=x&ep.user_data.email=u%40x.com&ep.user_data.address.0.first_name=Ann&user_data.phone=555",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Email", e.PII.Email, "u@x.com")
				ga4Eq(t, "FirstName", e.PII.FirstName, "Ann")
				ga4Eq(t, "Phone", e.PII.Phone, "555")
				ga4Eq(t, "len(Properties)", len(e.Properties), 0)
			}},
		{"hashed user data", "v=2&tid=G-X&en=x&ep.user_data.sha256_email_address=" + strings.Repeat("AB", 32) + "&ep.user_data.address.sha256_last_name=" + strings.Repeat("0f", 32),
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Email", e.PII.Email, strings.Repeat("ab", 32))
				ga4Eq(t, "LastName", e.PII.LastName, strings.Repeat("0f", 32))
			}},
		{"em user-provided data", "v=2&tid=G-X&en=purchase&em=tv.1~em.4x8WFpkYUiISoDaC9zQnW4M-xxMNPal-E3vq2kbfQCI~pn.4x8WFpkYUiISoDaC9zQnW4M-xxMNPal-E3vq2kbfQCI~fn0.abc~sa0.xyz~co0.NO~fn1.ignored",
			func(t *testing.T, e *enrich.Event) {
				full := ga4B64Hex(t, "4x8WFpkYUiISoDaC9zQnW4M-xxMNPal-E3vq2kbfQCI")
				ga4Eq(t, "len(hex)", len(full), 64)
				ga4Eq(t, "Email", e.PII.Email, full)
				ga4Eq(t, "Phone", e.PII.Phone, full)
				ga4Eq(t, "FirstName", e.PII.FirstName, "abc")
				ga4Eq(t, "Country", e.PII.Country, "NO")
				ga4Eq(t, "dropped street", e.Quality.Has(enrich.FlagDroppedPII), true)
			}},
		{"unknown parameters are ignored", "v=2&tid=G-X&en=page_view&_z=fetch&_eu=AAI&are=1&frm=0&pscdl=noapi&tfd=373&richsstsse&dma=0&_gaz=1&tag_exp=1~2&_tu=BA&ecid=679041404&sst.etld=google.com&uafvl=Not%253AA-Brand%3B8.0.0.0&_c=1&_ee=1",
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Name", e.Name, "page_view")
				ga4Eq(t, "len(Properties)", len(e.Properties), 0)
				ga4Eq(t, "len(UserProperties)", len(e.UserProperties), 0)
				ga4Eq(t, "Quality", e.Quality, 0)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, d := ga4One(t, tc.query, "")
			ga4NoProblems(t, d)
			tc.check(t, e)
			ga4ValidJSON(t, e)
		})
	}
}

func ga4B64Hex(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func ga4ValidJSON(t testing.TB, e *enrich.Event) {
	t.Helper()
	b := e.AppendJSON(nil)
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
}

func TestGA4DecodeLines(t *testing.T) {
	const q = "v=2&tid=G-X&cid=1.2&_p=99&dt=Shared&en=page_view&_et=5"
	tests := []struct {
		name  string
		body  string
		names []string
	}{
		{"no body", "", []string{"page_view"}},
		{"whitespace body", " \r\n\t\n", []string{"page_view"}},
		{"LF", "en=a\nen=b", []string{"a", "b"}},
		{"CRLF", "en=a\r\nen=b\r\nen=c", []string{"a", "b", "c"}},
		{"trailing newline", "en=a\r\nen=b\r\n", []string{"a", "b"}},
		{"blank lines ignored", "\r\nen=a\r\n\r\n  \nen=b\n\n", []string{"a", "b"}},
		{"line without en keeps the shared one", "_et=1\r\nen=b", []string{"page_view", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ga4Decode(t, q, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			ga4NoProblems(t, d)
			if len(d.events) != len(tc.names) {
				t.Fatalf("got %d events, want %d", len(d.events), len(tc.names))
			}
			for i, e := range d.events {
				ga4Eq(t, "Name", e.Name, tc.names[i])
				ga4Eq(t, "Index", e.Index, i)
				ga4Eq(t, "AnonymousID", e.AnonymousID, "1.2")
				ga4Eq(t, "PageLoadID", e.PageLoadID, "99")
				ga4Eq(t, "Title", e.Title, "Shared")
			}
		})
	}
	t.Run("line overrides query", func(t *testing.T) {
		d, err := ga4Decode(t, q+"&ep.a=q&pr1=idQ&epn.value=1",
			"en=x&dt=Line&_et=7&ep.a=l&pr1=idL\r\nen=y&dt=&epn.value=2\r\nen=z&ep.b=only")
		if err != nil {
			t.Fatal(err)
		}
		ga4NoProblems(t, d)
		x, y, z := d.events[0], d.events[1], d.events[2]
		ga4Eq(t, "x.Title", x.Title, "Line")
		ga4Eq(t, "x.EngagementMS", x.GA.EngagementMS, 7)
		ga4Eq(t, "x.a", ga4GetProp(t, x.Properties, "a").Str, "l")
		ga4Eq(t, "x.items", len(x.Commerce.Items), 1)
		ga4Eq(t, "x.item id", x.Commerce.Items[0].ID, "L")
		ga4Eq(t, "x.value", x.Commerce.Value, enrich.Some(1))
		ga4Eq(t, "y.Title", y.Title, "") // an empty line value overrides too
		ga4Eq(t, "y.EngagementMS", y.GA.EngagementMS, 5)
		ga4Eq(t, "y.value", y.Commerce.Value, enrich.Some(2))
		ga4Eq(t, "y.item id", y.Commerce.Items[0].ID, "Q")
		ga4Eq(t, "z.a", ga4GetProp(t, z.Properties, "a").Str, "q")
		ga4Eq(t, "z.b", ga4GetProp(t, z.Properties, "b").Str, "only")
		if _, ok := x.Properties.Get("b"); ok {
			t.Error("a line's parameters leaked into another line's event")
		}
	})
}

func TestGA4Items(t *testing.T) {
	tests := []struct {
		name  string
		query string
		ids   []string
		names []string
	}{
		{"numeric order", "pr3=id3&pr10=id10&pr1=id1&pr2=id2", []string{"1", "2", "3", "10"}, nil},
		{"tilde escape", "pr1=idA~~B~nmx~~~~y~~", []string{"A~B"}, []string{"x~~y~"}},
		{"empty entries", "pr1=idA~br~~nmN", []string{"A"}, nil},
		{"escaped tilde then separator", "pr1=nma~~~idB", []string{"B"}, []string{"a~"}},
		{"duplicate index, later wins", "pr1=idA&pr1=idB", []string{"B"}, nil},
		{"not an item", "pr=idA&pr0=idB&prx=idC&pr01=idD&price=9", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, d := ga4One(t, "v=2&tid=G-X&en=view_item_list&"+tc.query, "")
			ga4NoProblems(t, d)
			if len(e.Commerce.Items) != len(tc.ids) {
				t.Fatalf("items = %+v, want ids %q", e.Commerce.Items, tc.ids)
			}
			for i, id := range tc.ids {
				ga4Eq(t, "ID", e.Commerce.Items[i].ID, id)
			}
			for i, nm := range tc.names {
				ga4Eq(t, "Name", e.Commerce.Items[i].Name, nm)
			}
		})
	}
}

func TestGA4Problems(t *testing.T) {
	tests := []struct {
		name   string
		query  string
		body   string
		fields []string // problems of event 0
		check  func(t *testing.T, e *enrich.Event)
	}{
		{"bad epn", "v=2&tid=G-X&en=x&epn.score=abc&epn.value=1e999&epn.tax=NaN&epn.ok=3", "",
			[]string{"epn.score", "epn.value", "epn.tax"},
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "ok", ga4GetProp(t, e.Properties, "ok").Num, 3)
				ga4Eq(t, "Value.Set", e.Commerce.Value.Set, false)
				if _, ok := e.Properties.Get("score"); ok {
					t.Error("bad number stored")
				}
			}},
		{"bad upn", "v=2&tid=G-X&en=x&upn.ltv=1x", "", []string{"upn.ltv"}, nil},
		{"bad percent-encoding", "v=2&tid=G-X&en=x&dt=100%zz&dr=%E", "", []string{"dt", "dr"},
			func(t *testing.T, e *enrich.Event) {
				ga4Eq(t, "Title", e.Title, "")
				ga4Eq(t, "Name", e.Name, "x")
			}},
		{"bad integers", "v=2&tid=G-X&en=x&sct=one&_s=1.5&_et=9x&cid=1", "", []string{"sct", "_s", "_et"},
			func(t *testing.T, e *enrich.Event) { ga4Eq(t, "AnonymousID", e.AnonymousID, "1") }},
		{"NaN engagement time is no value", "v=2&tid=G-X&en=x&_et=NaN&sct=undefined", "", nil,
			func(t *testing.T, e *enrich.Event) { ga4Eq(t, "EngagementMS", e.GA.EngagementMS, 0) }},
		{"bad item number", "v=2&tid=G-X&en=x&pr1=idA~prfree~qt2", "", []string{"pr1"},
			func(t *testing.T, e *enrich.Event) {
				it := e.Commerce.Items[0]
				ga4Eq(t, "ID", it.ID, "A")
				ga4Eq(t, "Quantity", it.Quantity, enrich.Some(2))
				ga4Eq(t, "Price.Set", it.Price.Set, false)
			}},
		{"missing event name", "v=2&tid=G-X&uid=u", "", []string{"en"}, nil},
		{"problem in the shared query is reported per event", "v=2&tid=G-X&epn.x=bad", "en=a\r\nen=b", []string{"epn.x"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ga4Decode(t, tc.query, tc.body)
			if err != nil {
				t.Fatalf("a per-event problem failed the request: %v", err)
			}
			for _, f := range tc.fields {
				ga4HasProblem(t, d, 0, f)
			}
			n := 0
			for _, p := range d.problems {
				if p.Index == 0 {
					n++
				}
				if p.Message == "" {
					t.Errorf("problem without message: %+v", p)
				}
			}
			ga4Eq(t, "problems of event 0", n, len(tc.fields))
			if len(d.events) > 1 && len(tc.fields) > 0 {
				ga4HasProblem(t, d, 1, tc.fields[0])
			}
			if tc.check != nil {
				tc.check(t, d.events[0])
			}
			for _, e := range d.events {
				ga4ValidJSON(t, e)
			}
		})
	}
}

func TestGA4RequestErrors(t *testing.T) {
	tests := []struct {
		name, query, body string
		status            int
	}{
		{"empty", "", "", 400},
		{"whitespace only", "", "\r\n \n", 400},
		{"nothing decodes", "v=%zz&tid=%G-&en=%", "", 400},
		{"nothing decodes in lines either", "v=%zz", "en=%x\r\n&&&", 400},
		{"too many lines", "v=2&tid=G-X", strings.Repeat("en=a\r\n", 4), 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool := &enrich.EventPool{}
			d := &decoded{pool: pool}
			err := newGA4Decoder(3).decode(d, []byte(tc.query), []byte(tc.body), ga4Now)
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a decodeError", err)
			}
			ga4Eq(t, "status", de.status, tc.status)
			ga4Eq(t, "events left in d", len(d.events), 0)
			ga4Eq(t, "problems left in d", len(d.problems), 0)
		})
	}
	t.Run("exactly maxLines is fine", func(t *testing.T) {
		d := &decoded{pool: &enrich.EventPool{}}
		if err := newGA4Decoder(3).decode(d, []byte("v=2&tid=G-X"), []byte("en=a\r\n\r\nen=b\r\nen=c\r\n"), ga4Now); err != nil {
			t.Fatal(err)
		}
		ga4Eq(t, "events", len(d.events), 3)
	})
}

func TestGA4Limits(t *testing.T) {
	t.Run("long value truncated on a rune boundary", func(t *testing.T) {
		long := strings.Repeat("a", ga4MaxValue-1) + "é" + "tail"
		e, d := ga4One(t, "v=2&tid=G-X&en=x&dt="+long+"&dr=short", "")
		ga4NoProblems(t, d)
		ga4Eq(t, "len(Title)", len(e.Title), ga4MaxValue-1)
		ga4Eq(t, "valid UTF-8", utf8.ValidString(e.Title), true)
		ga4Eq(t, "truncated", e.Quality.Has(enrich.FlagTruncated), true)
		ga4Eq(t, "Referrer", e.Referrer, "short")
	})
	t.Run("value at the limit kept whole", func(t *testing.T) {
		e, _ := ga4One(t, "v=2&tid=G-X&en=x&dt="+strings.Repeat("a", ga4MaxValue), "")
		ga4Eq(t, "len(Title)", len(e.Title), ga4MaxValue)
		ga4Eq(t, "truncated", e.Quality.Has(enrich.FlagTruncated), false)
	})
	t.Run("items", func(t *testing.T) {
		var q strings.Builder
		q.WriteString("v=2&tid=G-X&en=purchase")
		for i := 1; i <= ga4MaxItems+5; i++ {
			q.WriteString("&pr" + strconv.Itoa(i) + "=id" + strconv.Itoa(i))
		}
		e, d := ga4One(t, q.String(), "")
		ga4NoProblems(t, d)
		ga4Eq(t, "items", len(e.Commerce.Items), ga4MaxItems)
		ga4Eq(t, "last id", e.Commerce.Items[ga4MaxItems-1].ID, strconv.Itoa(ga4MaxItems))
		ga4Eq(t, "truncated", e.Quality.Has(enrich.FlagTruncated), true)
	})
	t.Run("properties", func(t *testing.T) {
		var q strings.Builder
		q.WriteString("v=2&tid=G-X&en=x")
		for i := range ga4MaxProps + 10 {
			q.WriteString("&ep.p" + strconv.Itoa(i) + "=v&up.u" + strconv.Itoa(i) + "=v")
		}
		q.WriteString("&ep.p0=again&epn.value=3") // replacing and canonical keys still work
		e, d := ga4One(t, q.String(), "")
		ga4NoProblems(t, d)
		ga4Eq(t, "properties", len(e.Properties), ga4MaxProps)
		ga4Eq(t, "user properties", len(e.UserProperties), ga4MaxProps)
		ga4Eq(t, "p0", ga4GetProp(t, e.Properties, "p0").Str, "again")
		ga4Eq(t, "value", e.Commerce.Value, enrich.Some(3))
		ga4Eq(t, "truncated", e.Quality.Has(enrich.FlagTruncated), true)
	})
	t.Run("long property name cut", func(t *testing.T) {
		e, _ := ga4One(t, "v=2&tid=G-X&en=x&ep."+strings.Repeat("k", 300)+"=v", "")
		ga4Eq(t, "key length", len(e.Properties[0].Key), ga4MaxKey)
		ga4Eq(t, "truncated", e.Quality.Has(enrich.FlagTruncated), true)
	})
	t.Run("problems per request bounded", func(t *testing.T) {
		var b strings.Builder
		for range 50 {
			b.WriteString("en=x")
			for j := range 30 {
				b.WriteString("&epn.n" + strconv.Itoa(j) + "=bad")
			}
			b.WriteString("\n")
		}
		d, err := ga4Decode(t, "v=2&tid=G-X", b.String())
		if err != nil {
			t.Fatal(err)
		}
		ga4Eq(t, "events", len(d.events), 50)
		ga4Eq(t, "problems", len(d.problems), ga4MaxProblems)
	})
}

func TestIsGA4Hit(t *testing.T) {
	wrapped := "e44f730e=" + strings.NewReplacer("+", "%2B", "=", "%3D").Replace(
		base64.StdEncoding.EncodeToString([]byte("/g/collect?v=2&tid=G-ABC&en=page_view&cid=1.2")))
	tests := []struct {
		query string
		want  bool
	}{
		{"v=2&tid=G-TEST123&en=page_view", true},
		{"?v=2&tid=G-TEST123", true},
		{"en=page_view&tid=G-1&cid=1&v=2", true},
		{"v=1&tid=UA-1234-1&t=pageview", false},
		{"v=2&tid=UA-1", false},
		{"v=2", false},
		{"tid=G-1", false},
		{"v=20&tid=G-1", false},
		{"", false},
		{"name=page_view&url=https%3A%2F%2Fx", false},
		{wrapped, true},
		{"d=" + base64.StdEncoding.EncodeToString([]byte(`{"name":"page_view","url":"https://x/"}`)), false},
		{"x=" + base64.StdEncoding.EncodeToString([]byte("/g/collect?v=1&tid=UA-1")), false},
		{"x=%zz" + strings.Repeat("A", 40), false},
	}
	for _, tc := range tests {
		if got := isGA4Hit([]byte(tc.query)); got != tc.want {
			t.Errorf("isGA4Hit(%.60q) = %v, want %v", tc.query, got, tc.want)
		}
	}
	t.Run("url-safe alphabet without padding", func(t *testing.T) {
		q := "k=" + base64.RawURLEncoding.EncodeToString([]byte("/collect?v=2&tid=G-Z&dt=>>>???&en=scroll"))
		if !isGA4Hit([]byte(q)) {
			t.Fatal("not recognized")
		}
		e, d := ga4One(t, q, "")
		ga4NoProblems(t, d)
		ga4Eq(t, "Name", e.Name, "scroll")
		ga4Eq(t, "Title", e.Title, ">>>???")
	})
}

// ga4Request is one recorded request from testdata/ga4.
type ga4Request struct {
	file, label  string
	method       string
	query, body  string
	events       []string // event names the fixture lists (public hits only)
	hasEventList bool
	notes        string
	scenario     string
}

func ga4Fixtures(t testing.TB) []ga4Request {
	t.Helper()
	var out []ga4Request
	for _, name := range []string{"gtag.ndjson", "public-hits.ndjson"} {
		f, err := os.Open(filepath.Join("testdata", "ga4", name))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			var r struct {
				Method   string          `json:"method"`
				URL      string          `json:"url"`
				Query    json.RawMessage `json:"query"`
				Body     *string         `json:"body"`
				Events   []string        `json:"events"`
				Notes    string          `json:"notes"`
				Scenario string          `json:"scenario"`
				Seq      int             `json:"seq"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s:%d: %v", name, n, err)
			}
			req := ga4Request{file: name, method: r.Method, notes: r.Notes, scenario: r.Scenario,
				events: r.Events, hasEventList: r.Events != nil}
			req.label = name + ":" + strconv.Itoa(n)
			if r.Body != nil {
				req.body = *r.Body
			}
			if r.URL != "" { // gtag capture: the raw query is in the URL
				_, req.query, _ = strings.Cut(r.URL, "?")
			} else if err := json.Unmarshal(r.Query, &req.query); err != nil {
				t.Fatalf("%s:%d: query: %v", name, n, err)
			}
			out = append(out, req)
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if len(out) != 20+67 {
		t.Fatalf("read %d fixture requests, want 87", len(out))
	}
	return out
}

// ga4Lines counts a body's non-blank lines.
func ga4Lines(body string) int {
	n := 0
	for _, l := range strings.Split(body, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// TestGA4ReplayFixtures decodes every recorded request.
func TestGA4ReplayFixtures(t *testing.T) {
	var purchases, denied, batches int
	for _, r := range ga4Fixtures(t) {
		t.Run(r.label, func(t *testing.T) {
			body := r.body
			if strings.Contains(r.notes, "joins the two body lines with a space") {
				// The source printed the body with a space between its
				// lines; the wire had CRLF, as its note says.
				body = strings.ReplaceAll(body, " en=", "\r\nen=")
			}
			d, err := ga4Decode(t, r.query, body)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := max(ga4Lines(body), 1)
			if len(d.events) != want {
				t.Fatalf("got %d events, want %d", len(d.events), want)
			}
			if r.file == "gtag.ndjson" && strings.Contains(body, "\n") && !strings.Contains(body, "\r\n") {
				t.Fatal("gtag bodies are CRLF-separated")
			}
			if r.hasEventList && len(r.events) > 0 {
				for i, e := range d.events {
					ga4Eq(t, "Name", e.Name, r.events[i])
				}
			}
			for _, e := range d.events {
				ga4ValidJSON(t, e)
				if e.GAMeasurementID == "" || !strings.HasPrefix(e.GAMeasurementID, "G-") {
					t.Errorf("tid = %q", e.GAMeasurementID)
				}
				ga4Eq(t, "Version", e.GA.Version, "2")
				if e.AnonymousID == "" {
					t.Error("cid missing")
				}
			}
			for _, p := range d.problems {
				e := d.events[p.Index]
				// The only problems in real traffic: a hit without en
				// (a batch's shared URL seen on its own).
				if p.Field != "en" || e.Name != "" {
					t.Errorf("unexpected problem %+v", p)
				}
			}
			if r.file == "gtag.ndjson" && !isGA4Hit([]byte(r.query)) {
				t.Error("isGA4Hit = false")
			}
			for _, e := range d.events {
				switch {
				case e.Name == "purchase" && e.Commerce.TransactionID == "T1":
					purchases++
					ga4CheckT1(t, e)
				}
			}
			if r.scenario == "denied" {
				denied++
				for _, e := range d.events {
					ga4Eq(t, "GCS", e.Consent.GCS, "G100")
					ga4Eq(t, "GCD", e.Consent.GCD, "13p3p3p3p5l1")
					ga4Eq(t, "NPA", e.Consent.NPA, "1")
				}
			}
			if r.scenario == "granted" {
				for _, e := range d.events {
					ga4Eq(t, "GCS", e.Consent.GCS, "G111")
					ga4Eq(t, "UserID", e.UserID, "user-123")
				}
			}
			if r.file == "gtag.ndjson" && len(d.events) == 3 {
				batches++
				ga4CheckDeniedBatch(t, d)
			}
		})
	}
	ga4Eq(t, "T1 purchases seen", purchases, 3)
	ga4Eq(t, "denied-scenario requests seen", denied, 5)
	ga4Eq(t, "gtag 3-line batches seen", batches, 1)
}

// ga4CheckT1 checks the captured purchase: T1, 59.97 USD, two items.
func ga4CheckT1(t *testing.T, e *enrich.Event) {
	t.Helper()
	c := e.Commerce
	ga4Eq(t, "Value", c.Value, enrich.Some(59.97))
	ga4Eq(t, "Currency", c.Currency, "USD")
	ga4Eq(t, "Tax", c.Tax, enrich.Some(4.5))
	ga4Eq(t, "Shipping", c.Shipping, enrich.Some(5))
	ga4Eq(t, "Coupon", c.Coupon, "SPRING")
	if len(c.Items) != 2 {
		t.Fatalf("items = %+v", c.Items)
	}
	ga4Eq(t, "item 1", c.Items[0], enrich.Item{ID: "SKU-1", Name: "Blue T-Shirt", Brand: "Acme", Category: "Apparel",
		Variant: "blue", Price: enrich.Some(19.99), Quantity: enrich.Some(2)})
	ga4Eq(t, "item 2", c.Items[1], enrich.Item{ID: "SKU-2", Name: "Canvas Tote", Category: "Bags",
		Price: enrich.Some(19.99), Quantity: enrich.Some(1), Coupon: "SPRING"})
	ga4Eq(t, "Host", e.Host, "www.shop.test")
	ga4Eq(t, "Path", e.Path, "/shop/spring-sale")
	ga4Eq(t, "Title", e.Title, "Spring Sale - Example Shop")
}

// ga4CheckDeniedBatch checks the denied scenario's 3-line POST.
func ga4CheckDeniedBatch(t *testing.T, d *decoded) {
	t.Helper()
	names := []string{"view_item", "add_to_cart", "begin_checkout"}
	values := []float64{19.99, 39.98, 59.97}
	items := []int{1, 1, 2}
	ets := []int64{1513, 2, 1}
	for i, e := range d.events {
		ga4Eq(t, "Name", e.Name, names[i])
		ga4Eq(t, "Value", e.Commerce.Value, enrich.Some(values[i]))
		ga4Eq(t, "items", len(e.Commerce.Items), items[i])
		ga4Eq(t, "EngagementMS", e.GA.EngagementMS, ets[i])
		ga4Eq(t, "HitSeq", e.HitSeq, 3) // shared, from the query
		ga4Eq(t, "Index", e.Index, i)
	}
	ga4Eq(t, "coupon", d.events[2].Commerce.Coupon, "SPRING")
}

func TestGA4WrappedFixture(t *testing.T) {
	var wrapped *ga4Request
	for _, r := range ga4Fixtures(t) {
		if strings.Contains(r.notes, "base64") {
			wrapped = &r
		}
	}
	if wrapped == nil {
		t.Fatal("wrapped fixture not found")
	}
	if !isGA4Hit([]byte(wrapped.query)) {
		t.Fatal("isGA4Hit = false for the wrapped hit")
	}
	e, d := ga4One(t, wrapped.query, "")
	ga4NoProblems(t, d)
	ga4Eq(t, "Name", e.Name, "purchase")
	ga4Eq(t, "tid", e.GAMeasurementID, "G-ABCDEF1234")
	ga4Eq(t, "TransactionID", e.Commerce.TransactionID, "5502962827364")
	ga4Eq(t, "Value", e.Commerce.Value, enrich.Some(7630))
	ga4Eq(t, "Shipping", e.Commerce.Shipping, enrich.Some(30))
	ga4Eq(t, "EventID", e.EventID, "1738980736899_173920487620322")
	ga4Eq(t, "Email", e.PII.Email, "user@example.com")
	ga4Eq(t, "City", e.PII.City, "New York")
	ga4Eq(t, "Zip", e.PII.Zip, "10001")
	if len(e.Commerce.Items) != 1 || e.Commerce.Items[0].Price != enrich.Some(7600) {
		t.Errorf("items = %+v", e.Commerce.Items)
	}
	for _, p := range e.Properties {
		if strings.Contains(p.Key, "user_data") {
			t.Errorf("user data in properties: %q", p.Key)
		}
	}
}

// TestGA4PooledEventReuse decodes into events that held other data.
func TestGA4PooledEventReuse(t *testing.T) {
	pool := &enrich.EventPool{}
	g := newGA4Decoder(0)
	d := &decoded{pool: pool}
	big := "v=2&tid=G-X&en=purchase&cu=USD&epn.value=9&pr1=idA&pr2=idB&ep.a=1&up.b=2&ep.user_data.email=a%40b.c&gcs=G111"
	small := "v=2&tid=G-Y&en=scroll"
	for i := range 20 {
		q := big
		if i%2 == 1 {
			q = small
		}
		if err := g.decode(d, []byte(q), nil, ga4Now); err != nil {
			t.Fatal(err)
		}
		e := d.events[0]
		if i%2 == 1 {
			if len(e.Commerce.Items) != 0 || len(e.Properties) != 0 || e.Commerce.Currency != "" ||
				!e.PII.IsZero() || e.Consent.GCS != "" || e.GAMeasurementID != "G-Y" {
				t.Fatalf("stale data in a reused event: %+v", e)
			}
		}
		d.release()
	}
}

// BenchmarkGA4Decode decodes fixture-shaped requests into pooled events.
func BenchmarkGA4Decode(b *testing.B) {
	reqs := ga4Fixtures(b)
	pick := func(f func(r ga4Request) bool) ga4Request {
		for _, r := range reqs {
			if f(r) {
				return r
			}
		}
		b.Fatal("fixture not found")
		return ga4Request{}
	}
	cases := []struct {
		name string
		r    ga4Request
	}{
		{"single_get", pick(func(r ga4Request) bool {
			return r.file == "gtag.ndjson" && r.method == "GET" && strings.Contains(r.query, "en=page_view")
		})},
		{"post_3_lines", pick(func(r ga4Request) bool { return r.file == "gtag.ndjson" && ga4Lines(r.body) == 3 })},
		{"purchase_2_items", pick(func(r ga4Request) bool {
			return r.file == "gtag.ndjson" && strings.Contains(r.query, "en=purchase")
		})},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			g := newGA4Decoder(0)
			d := &decoded{pool: &enrich.EventPool{}}
			q, body := []byte(c.r.query), []byte(c.r.body)
			b.SetBytes(int64(len(q) + len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := g.decode(d, q, body, ga4Now); err != nil {
					b.Fatal(err)
				}
				d.release()
			}
		})
	}
}

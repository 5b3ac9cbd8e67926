package enrich

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestPublishedHashVectors checks the example hashes vendors publish for
// their normalization rules, end to end through hashPII.
func TestPublishedHashVectors(t *testing.T) {
	// Meta's Conversions API examples (fn "joe", ln "smith", ge "f") and
	// the em / ph examples of Meta-compatible docs (Snap's Conversions
	// API: "Person@Example.com" → person@example.com; "+44 844 412 4653"
	// → 448444124653), plus the widely quoted test@example.com.
	e := &Event{PII: PII{
		Email: "Person@Example.com", Phone: "+44 844 412 4653",
		FirstName: "Joe", LastName: "Smith", Gender: "F",
	}}
	if hashPII(e) {
		t.Fatal("dropped a value")
	}
	u := e.UserData
	for _, c := range []struct{ field, got, want string }{
		{"em", u.EM, "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"},
		{"ph", u.PH, "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383"},
		{"fn", u.FN, "78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3"},
		{"ln", u.LN, "6627835f988e2c5e50533d491163072d3f4f41f5c8b04630150debb3722ca2dd"},
		{"ge", u.GE, "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"},
		{"google ph", u.Google.PH, sha("+448444124653")},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s, want %s", c.field, c.got, c.want)
		}
	}
	e = &Event{PII: PII{Email: "  TEST@example.com "}}
	hashPII(e)
	if want := "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"; e.UserData.EM != want || e.UserData.Google.EM != want {
		t.Errorf("test@example.com: %s / %s", e.UserData.EM, e.UserData.Google.EM)
	}
}

func TestHashPIINormalization(t *testing.T) {
	const hashed = "973DFE463EC85785F5F95AF5BA3906EEDB2D931C24E69824A89EA65DBA4E813B"
	cases := []struct {
		name    string
		pii     PII
		country string // e.Context.Country
		locale  string
		check   func(u UserData) []string // got/want pairs
		dropped bool
	}{
		{name: "gmail dots (Google only), +tag kept", pii: PII{Email: " John.Doe+shop@GMail.com "},
			check: func(u UserData) []string {
				return []string{u.EM, sha("john.doe+shop@gmail.com"), u.Google.EM, sha("johndoe+shop@gmail.com")}
			}},
		{name: "googlemail", pii: PII{Email: "a.b@googlemail.com"},
			check: func(u UserData) []string { return []string{u.Google.EM, sha("ab@googlemail.com")} }},
		{name: "other domains keep dots", pii: PII{Email: "a.b@example.co.uk"},
			check: func(u UserData) []string { return []string{u.Google.EM, sha("a.b@example.co.uk")} }},
		{name: "invalid email dropped", pii: PII{Email: "not an email"}, dropped: true,
			check: func(u UserData) []string { return []string{u.EM, "", u.Google.EM, ""} }},
		{name: "already hashed kept", pii: PII{Email: hashed, Phone: hashed},
			check: func(u UserData) []string {
				l := strings.ToLower(hashed)
				return []string{u.EM, l, u.Google.EM, l, u.PH, l, u.Google.PH, l}
			}},
		{name: "phone with geo country", pii: PII{Phone: "(415) 555-2671"}, country: "US",
			check: func(u UserData) []string { return []string{u.PH, sha("14155552671"), u.Google.PH, sha("+14155552671")} }},
		{name: "phone with locale", pii: PII{Phone: "030 901820"}, locale: "de-de",
			check: func(u UserData) []string { return []string{u.PH, sha("4930901820")} }},
		{name: "phone region from address country", pii: PII{Phone: "020 7946 0958", Country: "United Kingdom"}, country: "US",
			check: func(u UserData) []string { return []string{u.PH, sha("442079460958"), u.Country, sha("gb")} }},
		{name: "phone 00 prefix", pii: PII{Phone: "0049 30 901820"},
			check: func(u UserData) []string { return []string{u.PH, sha("4930901820")} }},
		{name: "phone digits with country code, no region", pii: PII{Phone: "14155552671"},
			check: func(u UserData) []string { return []string{u.PH, sha("14155552671")} }},
		{name: "phone without region dropped", pii: PII{Phone: "030 901820"}, dropped: true,
			check: func(u UserData) []string { return []string{u.PH, ""} }},
		{name: "invalid phone dropped", pii: PII{Phone: "+1 555"}, country: "US", dropped: true,
			check: func(u UserData) []string { return []string{u.PH, "", u.Google.PH, ""} }},
		{name: "names", pii: PII{FirstName: "  Mary-Ann ", LastName: "O'Neil 3rd"},
			check: func(u UserData) []string {
				return []string{u.FN, sha("maryann"), u.LN, sha("oneil 3rd"), u.Google.FN, sha("maryann"), u.Google.LN, sha("oneil rd")}
			}},
		{name: "utf-8 names kept", pii: PII{FirstName: "Zoë", LastName: "Müller"},
			check: func(u UserData) []string { return []string{u.FN, sha("zoë"), u.LN, sha("müller")} }},
		{name: "city", pii: PII{City: " New York 10 "},
			check: func(u UserData) []string { return []string{u.CT, sha("newyork"), u.Google.CT, sha("new york")} }},
		{name: "us state names", pii: PII{State: "California"},
			check: func(u UserData) []string { return []string{u.ST, sha("ca"), u.Google.ST, sha("ca")} }},
		{name: "us state code", pii: PII{State: " NY. ", Country: "US"},
			check: func(u UserData) []string { return []string{u.ST, sha("ny")} }},
		{name: "us state two words", pii: PII{State: "new hampshire"},
			check: func(u UserData) []string { return []string{u.ST, sha("nh")} }},
		{name: "non-us state", pii: PII{State: "Bavaria", Country: "DE"},
			check: func(u UserData) []string { return []string{u.ST, sha("bavaria")} }},
		{name: "georgia the state, not the country", pii: PII{State: "Georgia", Country: "usa"},
			check: func(u UserData) []string { return []string{u.ST, sha("ga"), u.Country, sha("us")} }},
		{name: "zip+4", pii: PII{Zip: "94043-1351"},
			check: func(u UserData) []string { return []string{u.ZP, sha("94043")} }},
		{name: "uk postcode", pii: PII{Zip: "SW1A 1AA", Country: "gb"},
			check: func(u UserData) []string { return []string{u.ZP, sha("sw1a1aa")} }},
		{name: "country names and codes", pii: PII{Country: "Germany"},
			check: func(u UserData) []string { return []string{u.Country, sha("de"), u.Google.Country, sha("de")} }},
		{name: "country alpha-3", pii: PII{Country: "DEU"},
			check: func(u UserData) []string { return []string{u.Country, sha("de")} }},
		{name: "country united states", pii: PII{Country: "United States"},
			check: func(u UserData) []string { return []string{u.Country, sha("us")} }},
		{name: "country uk", pii: PII{Country: "UK"},
			check: func(u UserData) []string { return []string{u.Country, sha("gb")} }},
		{name: "unknown country dropped", pii: PII{Country: "Narnia"}, dropped: true,
			check: func(u UserData) []string { return []string{u.Country, ""} }},
		{name: "dob iso", pii: PII{DateOfBirth: "1990-05-14"}, check: func(u UserData) []string { return []string{u.DB, sha("19900514")} }},
		{name: "dob us", pii: PII{DateOfBirth: "05/14/1990"}, check: func(u UserData) []string { return []string{u.DB, sha("19900514")} }},
		{name: "dob eu", pii: PII{DateOfBirth: "14.05.1990"}, check: func(u UserData) []string { return []string{u.DB, sha("19900514")} }},
		{name: "dob compact", pii: PII{DateOfBirth: "19900514"}, check: func(u UserData) []string { return []string{u.DB, sha("19900514")} }},
		{name: "dob timestamp", pii: PII{DateOfBirth: "1990-05-14T00:00:00Z"}, check: func(u UserData) []string { return []string{u.DB, sha("19900514")} }},
		{name: "dob leap day", pii: PII{DateOfBirth: "2000-02-29"}, check: func(u UserData) []string { return []string{u.DB, sha("20000229")} }},
		{name: "dob impossible", pii: PII{DateOfBirth: "1990-02-30"}, dropped: true, check: func(u UserData) []string { return []string{u.DB, ""} }},
		{name: "gender words", pii: PII{Gender: " Male "}, check: func(u UserData) []string { return []string{u.GE, sha("m")} }},
		{name: "gender unknown dropped", pii: PII{Gender: "x"}, dropped: true, check: func(u UserData) []string { return []string{u.GE, ""} }},
		{name: "external id trimmed", pii: PII{ExternalID: " CRM-0042 "}, check: func(u UserData) []string { return []string{u.ExternalID, sha("CRM-0042")} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := &Event{PII: tc.pii, Context: Context{Country: tc.country, Locale: tc.locale}}
			if dropped := hashPII(e); dropped != tc.dropped {
				t.Errorf("dropped %v, want %v", dropped, tc.dropped)
			}
			pairs := tc.check(e.UserData)
			for i := 0; i < len(pairs); i += 2 {
				if pairs[i] != pairs[i+1] {
					t.Errorf("pair %d: %q, want %q", i/2, pairs[i], pairs[i+1])
				}
			}
		})
	}
}

func TestFindPII(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the span found, "" for none
	}{
		{"Thanks jane.doe+news@example.co.uk!", "jane.doe+news@example.co.uk"},
		{"mail: JANE@EXAMPLE.COM.", "JANE@EXAMPLE.COM"},
		{"Call +1 (415) 555-2671 now", "+1 (415) 555-2671"},
		{"Call (415) 555-2671", "(415) 555-2671"},
		{"tel 030 12345678", "030 12345678"},
		{"+4915123456789", "+4915123456789"},
		{"@handle on twitter", ""},
		{"user@localhost", ""},
		{"order 1699999999999 done", ""},
		{"t=1699999999.123", ""},
		{"call 415.555.2671", "415.555.2671"},
		{"Order #100012345678", ""},
		{"Sale 2024-01-15 10:30", ""},
		{"on 15.01.2024 14", ""},
		{"v1.2.3 build 45", ""},
		{"price 1.299,00 EUR", ""},
		{"sku ABC4155552671", ""},
		{"C++11 and c+14155552671", ""},
		{"a@b.c", ""},
		{"x@y.com@z.com", "x@y.com"},
	} {
		l, r, ok := findPII(tc.in, 0)
		got := ""
		if ok {
			got = tc.in[l:r]
		}
		if got != tc.want {
			t.Errorf("%q: found %q, want %q", tc.in, got, tc.want)
		}
		if ok && !mayHavePII(tc.in) {
			t.Errorf("%q: pre-check missed it", tc.in)
		}
	}
}

func TestScrubURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://shop.example/thanks?email=jane%40example.com&order=42", "https://shop.example/thanks?email=[redacted]&order=42"},
		{"https://shop.example/?q=call+me+%2B1+415+555+2671&x=1", "https://shop.example/?q=[redacted]&x=1"},
		{"https://shop.example/?phone=5552671&utm_source=x", "https://shop.example/?phone=[redacted]&utm_source=x"},
		{"https://shop.example/?Mobile_Phone=%2B14155552671", "https://shop.example/?Mobile_Phone=[redacted]"},
		{"https://shop.example/users/jane@example.com/orders?x=1", "https://shop.example/users/[redacted]/orders?x=1"},
		{"https://shop.example/a/?jane%40example.com", "https://shop.example/a/?[redacted]"},
		{"https://shop.example/p#email=jane@example.com&t=1", "https://shop.example/p#email=[redacted]&t=1"},
		{"https://shop.example/p#contact-jane@example.com", "https://shop.example/p#[redacted]"},
		{"https://jane:secret@shop.example/x?mail=jane@example.com", "https://shop.example/x?mail=[redacted]"},
		{"https://shop.example/?a=1&&e=j%40example.com&", "https://shop.example/?a=1&&e=[redacted]&"},
		{"/checkout?email=a%40b.io", "/checkout?email=[redacted]"},
	} {
		got, ch := scrubURL(nil, tc.in)
		if !ch || string(got) != tc.want {
			t.Errorf("%q:\n got %q (%v)\nwant %q", tc.in, got, ch, tc.want)
		}
	}
	for _, clean := range []string{
		"https://shop.example/products/shoe-42?utm_source=google&gclid=Cj0KCQjw-abc123&_=1699999999999",
		"https://shop.example/order/100012345678?ts=2024-01-15T10:30:00Z",
		"https://shop.example/?price=1.299,00&phone=",
		"https://shop.example/@brand/page",
		"",
	} {
		if got, ch := scrubURL(nil, clean); ch || got != nil {
			t.Errorf("%q changed to %q", clean, got)
		}
	}
}

func TestScrubText(t *testing.T) {
	got, ch := scrubText(nil, "Thanks jane@example.com, we'll call +49 30 901820 or (415) 555-2671.")
	if want := "Thanks [redacted], we'll call [redacted] or [redacted]."; !ch || string(got) != want {
		t.Errorf("got %q", got)
	}
	if _, ch := scrubText(nil, "Summer sale 2024-06-01: 50% off order 1699999999999"); ch {
		t.Error("changed a clean title")
	}
}

func FuzzScrub(f *testing.F) {
	for _, s := range []string{
		"https://shop.example/thanks?email=jane%40example.com&order=42",
		"Call +1 (415) 555-2671 now", "x@y.com@z.com", "https://a:b@c/d#e=f@g.hi",
		"phone=5552671", "%40%2B%", "+++++1234567890", "((((((1234567890", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, ch := scrubText(nil, s)
		if !ch {
			if out != nil {
				t.Fatal("unchanged text but output written")
			}
			out = []byte(s)
		} else if len(out) == 0 {
			t.Fatal("changed text is empty")
		}
		if _, _, ok := findPII(s, 0); ok != ch {
			t.Fatalf("%q: found %v, changed %v", s, ok, ch)
		}
		if again, ch2 := scrubText(nil, string(out)); ch2 {
			t.Fatalf("text scrub not stable: %q → %q → %q", s, out, again)
		}
		u, uch := scrubURL(nil, s)
		if uch {
			if again, ch2 := scrubURL(nil, string(u)); ch2 {
				t.Fatalf("URL scrub not stable: %q → %q → %q", s, u, again)
			}
		} else if u != nil {
			t.Fatal("unchanged URL but output written")
		}
	})
}

package ga4_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/ga4"
)

// The parameters that carry meaning for GA4's reports and that the relay
// must give back exactly as gtag.js sent them. Everything else gtag sends
// (_z, tfd, uaa…, sst.*, tag_exp, _ee, _eu, _tu, …) is tag and experiment
// bookkeeping that sidetrack does not keep.
var relayedParams = []string{
	"v", "tid", "gtm", "cid", "uid", "sid", "sct", "seg", "_p", "_s", "_et", "_fv", "_ss",
	"en", "dl", "dr", "dt", "ul", "sr", "cu", "gcs", "gcd", "npa",
}

// TestRelayRoundTripsGtagCaptures decodes every real gtag.js hit of
// proxy/testdata/ga4/gtag.ndjson into an event, relays it, and compares
// what the fake Google received with what gtag sent, parameter by
// parameter.
func TestRelayRoundTripsGtagCaptures(t *testing.T) {
	for _, c := range loadCaptures(t) {
		t.Run(fmt.Sprintf("%s/%d", c.Scenario, c.Seq), func(t *testing.T) {
			f := newFakeGoogle(t, clock)
			a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
			want := c.hits(t)
			var events []*enrich.Event
			for _, h := range want {
				e := eventFromHit(t, h, c.TS)
				e.Context.UserAgent = c.header("User-Agent")
				events = append(events, e)
			}
			sendAll(t, a, events)

			reqs := f.relayHits()
			if len(reqs) != 1 {
				t.Fatalf("%d relay requests for one gtag request, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != "POST" {
				t.Errorf("method %s", r.method)
			}
			if r.ua != c.header("User-Agent") {
				t.Errorf("User-Agent %q, want the client's %q", r.ua, c.header("User-Agent"))
			}
			got := r.events()
			if len(got) != len(want) {
				t.Fatalf("%d hits relayed, want %d", len(got), len(want))
			}
			for i := range want {
				compareHit(t, i, got[i], want[i])
			}
			// Page URL and title are encoded byte for byte as gtag does
			// (encodeURIComponent), not just equivalently.
			for _, k := range []string{"dl", "dt"} {
				if w := rawParam(c.rawQuery(), k); w != "" && rawParam(r.rawQuery, k) != w {
					t.Errorf("raw %s %q, gtag sent %q", k, rawParam(r.rawQuery, k), w)
				}
			}
		})
	}
}

func compareHit(t *testing.T, i int, got, want map[string]string) {
	t.Helper()
	keys := slices.Clone(relayedParams)
	for k := range want {
		if strings.HasPrefix(k, "ep.") || strings.HasPrefix(k, "epn.") || strings.HasPrefix(k, "up.") ||
			strings.HasPrefix(k, "upn.") || isItemKey(k) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		w, inWant := want[k]
		g, inGot := got[k]
		switch {
		case !inWant && !inGot:
		case !inWant:
			t.Errorf("hit %d: %s=%q relayed, gtag did not send it", i, k, g)
		case !inGot:
			t.Errorf("hit %d: %s missing, gtag sent %q", i, k, w)
		case strings.HasPrefix(k, "epn.") || strings.HasPrefix(k, "upn."):
			if float(t, g) != float(t, w) {
				t.Errorf("hit %d: %s=%q, gtag sent %q", i, k, g, w)
			}
		case g != w:
			t.Errorf("hit %d: %s=%q, gtag sent %q", i, k, g, w)
		}
	}
	// Nothing else but what sidetrack adds on purpose.
	for k := range got {
		if _, ok := want[k]; !ok && k != "ep.event_id" {
			t.Errorf("hit %d: unexpected %s=%q", i, k, got[k])
		}
	}
}

func isItemKey(k string) bool {
	if !strings.HasPrefix(k, "pr") || len(k) < 3 {
		return false
	}
	for _, c := range k[2:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// rawParam returns the still-encoded value of key in a raw query.
func rawParam(q, key string) string {
	for _, kv := range strings.Split(q, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// TestRelayBatchesOneClientsHits: the events of one page share one POST,
// one line each, with the shared context in the query, as gtag batches.
func TestRelayBatchesOneClientsHits(t *testing.T) {
	var c capture
	for _, x := range loadCaptures(t) {
		if x.Scenario == "granted" {
			c = x
			break
		}
	}
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
	h := c.hits(t)[0]
	var events []*enrich.Event
	for _, en := range []string{"page_view", "scroll", "view_item"} {
		h["en"] = en
		e := eventFromHit(t, h, c.TS)
		e.HitSeq = int64(len(events) + 1)
		events = append(events, e)
	}
	if k0, k2 := a.GroupKey(events[0]), a.GroupKey(events[2]); k0 != k2 || !strings.Contains(k0, mid) || !strings.Contains(k0, h["cid"]) {
		t.Fatalf("group keys %q, %q: one client's events must share a group keyed by tid and cid", k0, k2)
	}
	sendAll(t, a, events)
	reqs := f.relayHits()
	if len(reqs) != 1 || len(reqs[0].lines) != 3 {
		t.Fatalf("%d requests (%v); want one POST with 3 lines", len(reqs), reqs)
	}
	if !strings.Contains(reqs[0].body, "\r\n") {
		t.Errorf("lines not separated by CRLF as gtag does: %q", reqs[0].body)
	}
	for i, hit := range reqs[0].events() {
		if hit["en"] != []string{"page_view", "scroll", "view_item"}[i] || hit["_s"] != fmt.Sprint(i+1) {
			t.Errorf("line %d: en=%s _s=%s", i, hit["en"], hit["_s"])
		}
		if hit["cid"] != h["cid"] || hit["sid"] != h["sid"] || hit["dl"] != h["dl"] {
			t.Errorf("line %d lost the shared context: %v", i, hit)
		}
	}
	if q := reqs[0].query; q.Get("en") != "" || q.Get("cid") != h["cid"] {
		t.Errorf("query %v: the context goes in the query, the event in the line", q)
	}

	// Another page load of the same client: same group, separate request.
	f2 := newFakeGoogle(t, clock)
	a2 := newAdapter(t, gaCfg(f2.URL, config.DestinationX{}))
	other := eventFromHit(t, h, c.TS)
	other.PageLoadID = "999"
	sendAll(t, a2, []*enrich.Event{events[0], other})
	if n := len(f2.relayHits()); n != 2 {
		t.Fatalf("%d requests for two page loads, want 2", n)
	}
}

// TestRelayPurchaseWithItems encodes a full purchase, items with every
// field and a '~' in a value, and checks every parameter.
func TestRelayPurchaseWithItems(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
	e := &enrich.Event{
		EventID: "ev-1", AnonymousID: "123.456", GASessionID: "1795442481", GASessionNumber: 3,
		GAMeasurementID: mid, PageLoadID: "1795442481274", HitSeq: 7, UserID: "u-42",
		Name: "order_completed", OriginalName: "purchase", Source: enrich.SourceGA4,
		ReceivedAt: t0, OccurredAt: t0,
		URL: "https://shop.example/thanks?o=1&x=a b", Referrer: "https://shop.example/checkout", Title: "Thanks ~ Shop",
		GA:      enrich.GAHit{SessionEngaged: true, EngagementMS: 1234},
		Context: enrich.Context{Locale: "de-de", Screen: "1920x1080", UserAgent: "Mozilla/5.0 Test"},
		Commerce: enrich.Commerce{
			Value: enrich.Some(59.97), Currency: "EUR", TransactionID: "T-1", Tax: enrich.Some(4.5),
			Shipping: enrich.Some(0), Coupon: "SPRING",
			Items: []enrich.Item{{
				ID: "SKU~1", Name: "Blue T-Shirt", Brand: "Acme", Category: "Apparel", Category2: "Men",
				Category3: "Shirts", Category4: "T", Category5: "Blue", Variant: "blue", Price: enrich.Some(19.99),
				Quantity: enrich.Some(2), Coupon: "C1", Discount: enrich.Some(1.5), Affiliation: "Store",
				Index: enrich.Some(3), ListID: "rel", ListName: "Related", LocationID: "L1",
			}, {ID: "SKU-2", Price: enrich.Some(20), Quantity: enrich.Some(1)}},
		},
		Properties:     enrich.Props{{Key: "payment_type", Kind: enrich.PropString, Str: "card"}, {Key: "items_n", Kind: enrich.PropNumber, Num: 3}, {Key: "gift", Kind: enrich.PropBool, Bool: true}},
		UserProperties: enrich.Props{{Key: "plan", Kind: enrich.PropString, Str: "pro"}, {Key: "ltv", Kind: enrich.PropNumber, Num: 120.5}},
		Consent:        enrich.Consent{Analytics: enrich.Granted, Ads: enrich.Granted, AdUserData: enrich.Granted, AdPersonalization: enrich.Granted, GCS: "G111", GCD: "13r3r3r3r5l1", NPA: "0"},
	}
	sendAll(t, a, []*enrich.Event{e})
	hits := f.relayHits()
	if len(hits) != 1 {
		t.Fatalf("%d requests", len(hits))
	}
	got := hits[0].events()[0]
	want := map[string]string{
		"v": "2", "tid": mid, "cid": "123.456", "uid": "u-42", "sid": "1795442481", "sct": "3", "seg": "1",
		"_p": "1795442481274", "_s": "7", "_et": "1234", "en": "purchase",
		"dl": "https://shop.example/thanks?o=1&x=a b", "dr": "https://shop.example/checkout", "dt": "Thanks ~ Shop",
		"ul": "de-de", "sr": "1920x1080", "cu": "EUR", "gcs": "G111", "gcd": "13r3r3r3r5l1", "npa": "0",
		"ep.transaction_id": "T-1", "epn.value": "59.97", "epn.tax": "4.5", "epn.shipping": "0", "ep.coupon": "SPRING",
		"ep.event_id": "ev-1", "ep.payment_type": "card", "epn.items_n": "3", "ep.gift": "true",
		"up.plan": "pro", "upn.ltv": "120.5",
		"pr1": "idSKU~~1~nmBlue T-Shirt~brAcme~caApparel~c2Men~c3Shirts~c4T~c5Blue~vablue~pr19.99~qt2~cpC1~ds1.5~afStore~lp3~lirel~lnRelated~loL1",
		"pr2": "idSKU-2~pr20~qt1",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s=%q, want %q", k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s=%q", k, got[k])
		}
	}
	// The item decodes back to the same item (the '~' escape round-trips).
	if it := parseItem(t, got["pr1"]); it != e.Commerce.Items[0] {
		t.Errorf("item round trip: %+v, want %+v", it, e.Commerce.Items[0])
	}
}

// TestRelayConsent: gcs/gcd/npa go verbatim unless sidetrack's decision
// is more restrictive; events without them get them from the decision.
func TestRelayConsent(t *testing.T) {
	g, d, u := enrich.Granted, enrich.Denied, enrich.Unknown
	for _, tc := range []struct {
		name                string
		c                   enrich.Consent
		gcs, gcd, npa, sent string
	}{
		{name: "verbatim granted", c: enrich.Consent{Analytics: g, Ads: g, AdUserData: g, AdPersonalization: g, GCS: "G111", GCD: "13r3r3r3r5l1", NPA: "0"},
			gcs: "G111", gcd: "13r3r3r3r5l1", npa: "0"},
		{name: "verbatim denied", c: enrich.Consent{Analytics: d, Ads: d, AdUserData: d, AdPersonalization: d, GCS: "G100", GCD: "13p3p3p3p5l1", NPA: "1"},
			gcs: "G100", gcd: "13p3p3p3p5l1", npa: "1"},
		{name: "unset stays unset", c: enrich.Consent{GCD: "13l3l3l3l1l1", NPA: "0"},
			gcd: "13l3l3l3l1l1", npa: "0"},
		{name: "CMP cookie denied what gtag granted", c: enrich.Consent{Analytics: g, Ads: d, AdUserData: d, AdPersonalization: d, GCS: "G111", GCD: "13v3t3n3r5l1", NPA: "0"},
			gcs: "G101", gcd: "13u3t3m3q5l1", npa: "1"},
		{name: "no signals: from the decision", c: enrich.Consent{Analytics: g, Ads: d, AdUserData: d, AdPersonalization: u},
			gcs: "G101", gcd: "11q1v1q1l5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeGoogle(t, clock)
			a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
			e := serverEvent("c1", "page_viewed")
			e.Source = enrich.SourceGA4
			e.Consent = tc.c
			sendAll(t, a, []*enrich.Event{e})
			hit := f.relayHits()[0].events()[0]
			for k, w := range map[string]string{"gcs": tc.gcs, "gcd": tc.gcd, "npa": tc.npa} {
				if got, ok := hit[k]; got != w || ok != (w != "") {
					t.Errorf("%s=%q (sent %v), want %q", k, got, ok, w)
				}
			}
		})
	}
}

// TestRelayUserProvidedData: gtag's "em" (enhanced conversions) only when
// ad_user_data is granted.
func TestRelayUserProvidedData(t *testing.T) {
	em := strings.Repeat("ab", 32)
	ph := strings.Repeat("01", 32)
	for _, st := range []enrich.ConsentState{enrich.Granted, enrich.Denied, enrich.Unknown} {
		f := newFakeGoogle(t, clock)
		a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
		e := serverEvent("u1", "lead_submitted")
		e.Source = enrich.SourceGA4
		e.Consent.AdUserData = st
		e.UserData.Google = enrich.GoogleUserData{EM: em, PH: ph}
		sendAll(t, a, []*enrich.Event{e})
		hit := f.relayHits()[0].events()[0]
		got, ok := hit["em"]
		if st != enrich.Granted {
			if ok {
				t.Errorf("ad_user_data %s: em=%q sent", st, got)
			}
			continue
		}
		want := "tv.1~em.q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s~pn.AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
		if got != want {
			t.Errorf("em=%q, want %q", got, want)
		}
		if hit["en"] != "generate_lead" {
			t.Errorf("en=%q", hit["en"])
		}
	}
}

// TestRelayClientIP: the full IP only with analytics consent and a kept
// IP; the truncated one otherwise; nothing when privacy kept neither.
func TestRelayClientIP(t *testing.T) {
	opener := ipOpener{"sealed-1": "203.0.113.7"}
	for _, tc := range []struct {
		name      string
		analytics enrich.ConsentState
		sealed    string
		truncated string
		opener    bool
		want      string
	}{
		{"granted, kept", enrich.Granted, "sealed-1", "", true, "203.0.113.7"},
		{"granted, kept, no opener", enrich.Granted, "sealed-1", "203.0.113.0", false, "203.0.113.0"},
		{"denied, kept", enrich.Denied, "sealed-1", "203.0.113.0", true, "203.0.113.0"},
		{"granted, does not open", enrich.Granted, "tampered", "203.0.113.0", true, "203.0.113.0"},
		{"truncated only", enrich.Denied, "", "2001:db8:1::", true, "2001:db8:1::"},
		{"hashed only", enrich.Granted, "", "", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeGoogle(t, clock)
			var opts []ga4.Option
			if tc.opener {
				opts = append(opts, ga4.WithIPOpener(opener.OpenIP))
			}
			a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}), opts...)
			e := serverEvent("ip", "page_viewed")
			e.Source = enrich.SourceGA4
			e.Consent.Analytics = tc.analytics
			e.Context.IP, e.Context.IPTruncated, e.Context.IPHash = tc.sealed, tc.truncated, "0123abcd"
			sendAll(t, a, []*enrich.Event{e})
			hit := f.relayHits()[0].events()[0]
			if got := hit["_uip"]; got != tc.want {
				t.Errorf("_uip=%q, want %q", got, tc.want)
			}
		})
	}
}

// TestRelayEscaping: any value survives the trip through the query and
// the body line.
func TestRelayEscaping(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
	nasty := "a&b=c+d%20e f\r\nü€💡~!*'()#?/\\\"<>"
	e := serverEvent("x", "custom_thing")
	e.Source = enrich.SourceGA4
	e.URL, e.Title = "https://shop.example/p?q="+url.QueryEscape(nasty), nasty
	e.Properties = enrich.Props{{Key: "k&=" + nasty, Kind: enrich.PropString, Str: nasty}}
	e.Commerce.Items = []enrich.Item{{ID: nasty, Name: "~~"}}
	sendAll(t, a, []*enrich.Event{e})
	hit := f.relayHits()[0].events()[0]
	if hit["dt"] != nasty || hit["dl"] != e.URL || hit["ep.k&="+nasty] != nasty || hit["en"] != "custom_thing" {
		t.Errorf("escaping lost data: %q", hit)
	}
	if it := parseItem(t, hit["pr1"]); it.ID != nasty || it.Name != "~~" {
		t.Errorf("item %+v", it)
	}
}

// TestRelayBodyBound: one client's hits go in POSTs of at most 64 KiB of
// body (sendBeacon's cap, which gtag's batches respect).
func TestRelayBodyBound(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, gaCfg(f.URL, config.DestinationX{}))
	var events []*enrich.Event
	for i := range 25 {
		e := serverEvent(fmt.Sprint("b", i), "page_scrolled")
		e.Source, e.AnonymousID = enrich.SourceGA4, "5.6"
		e.Properties = enrich.Props{{Key: "blob", Kind: enrich.PropString, Str: strings.Repeat("z", 4000)}}
		events = append(events, e)
	}
	sendAll(t, a, events)
	hits := f.relayHits()
	if len(hits) < 2 {
		t.Fatalf("%d POSTs for ~100 KiB of hits", len(hits))
	}
	n := 0
	for _, h := range hits {
		if len(h.body) > 64<<10 {
			t.Errorf("body of %d bytes", len(h.body))
		}
		n += len(h.lines)
	}
	if n != 25 {
		t.Errorf("%d hits arrived of 25", n)
	}
}

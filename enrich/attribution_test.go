package enrich

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sidetrack/sidetrack/config"
)

var attrNow = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func newTestAttribution(t testing.TB, opts ...AttributionOption) *AttributionStage {
	t.Helper()
	a, err := NewAttribution(&config.Config{Hosts: []string{"shop.example", "Shop-Two.example."}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// attrEvent is an event as the decoders leave it: page URL, host, referrer.
func attrEvent(name, url, ref string) *Event {
	e := &Event{Name: name, URL: url, Referrer: ref, ReceivedAt: attrNow, Source: SourceGA4}
	e.Host = attrHost(url)
	return e
}

func TestAppendNormalizedUTM(t *testing.T) {
	for in, want := range map[string]string{
		"google":                      "google",
		" Google%20Ads ":              "google ads",
		"%20Google%20Ads%20":          "google ads",
		"FaceBook":                    "facebook",
		"Summer+Sale++2024":           "summer sale 2024",
		"summer%2Bsale":               "summer+sale",
		"e-mail":                      "e-mail",
		"%09tab%0Aand%0D%0Anewline%0": "tab and newline%0",
		"50%25+off":                   "50% off",
		"%zz":                         "%zz",
		"%":                           "%",
		"ÉTÉ%20Soldes":                "été soldes",
		"%C3%89t%C3%A9":               "été",
		"GROSSE%E2%80%83Aktion":       "grosse aktion", // U+2003 em space
		"bad%FFutf8":                  "bad\xffutf8",
		"":                            "",
		"+++":                         "",
		"%00a%7Fb":                    "a b",
	} {
		if got := string(AppendNormalizedUTM(nil, []byte(in))); got != want {
			t.Errorf("AppendNormalizedUTM(%q) = %q, want %q", in, got, want)
		}
	}
	// It appends.
	if got := string(AppendNormalizedUTM([]byte("x="), []byte("A+B"))); got != "x=a b" {
		t.Errorf("append: %q", got)
	}
	long := strings.Repeat("Ab%20", 200)
	if got := string(AppendNormalizedUTM(nil, []byte(long))); got != strings.TrimSpace(strings.Repeat("ab ", 200)) {
		t.Errorf("long value: %q", got)
	}
}

func TestAppendNormalizedUTMNoAlloc(t *testing.T) {
	dst := make([]byte, 0, 64)
	src := []byte(" Google%20Ads ")
	if n := testing.AllocsPerRun(100, func() { dst = AppendNormalizedUTM(dst[:0], src) }); n != 0 {
		t.Errorf("%v allocs, want 0", n)
	}
}

type attrWant struct {
	utmSource, utmMedium, utmCampaign string
	source, medium, campaign, channel string
	refKind                           string
	touchKind                         string // ClickIDKind of the touch made, "-" for no touch
}

func TestAttributionSourceMedium(t *testing.T) {
	a := newTestAttribution(t)
	const page = "https://shop.example/landing"
	tests := []struct {
		name, url, ref string
		want           attrWant
	}{
		// UTMs, messy as tagged in the wild.
		{"messy utms", page + "?utm_source=%20Google%20Ads%20&utm_medium=CPC&utm_campaign=Summer+Sale++2024", "",
			attrWant{"google ads", "cpc", "summer sale 2024", "google", "cpc", "summer sale 2024", ChannelPaidSearch, "", ""}},
		{"facebook paid social", page + "?utm_source=FaceBook&utm_medium=Paid-Social&utm_campaign=spring", "https://l.facebook.com/",
			attrWant{"facebook", "paid-social", "spring", "facebook", "paid_social", "spring", ChannelPaidSocial, ReferrerSocial, ""}},
		{"ig alias", page + "?utm_source=ig&utm_medium=paidsocial", "",
			attrWant{"ig", "paidsocial", "", "instagram", "paid_social", "", ChannelPaidSocial, "", ""}},
		{"email alias", page + "?utm_source=newsletter&utm_medium=e-mail&utm_campaign=march", "",
			attrWant{"newsletter", "e-mail", "march", "newsletter", "email", "march", ChannelEmail, "", ""}},
		{"ppc alias", page + "?utm_source=bing&utm_medium=ppc", "",
			attrWant{"bing", "ppc", "", "bing", "cpc", "", ChannelPaidSearch, "", ""}},
		{"utm wins over referrer", page + "?utm_source=partner&utm_medium=affiliate", "https://www.google.com/",
			attrWant{"partner", "affiliate", "", "partner", "affiliate", "", ChannelAffiliates, ReferrerSearch, ""}},
		{"campaign only", page + "?utm_campaign=x", "",
			attrWant{"", "", "x", NotSet, NotSet, "x", ChannelUnassigned, "", ""}},
		{"campaign with gclid", page + "?utm_campaign=brand&gclid=Cj0KCQ", "",
			attrWant{"", "", "brand", "google", "cpc", "brand", ChannelPaidSearch, "", "gclid"}},
		{"source only with fbclid", page + "?utm_source=facebook&fbclid=IwAR1", "",
			attrWant{"facebook", "", "", "facebook", "social", "", ChannelOrganicSocial, "", "fbclid"}},
		{"uppercase keys", page + "?UTM_SOURCE=Twitter&Utm_Medium=social", "",
			attrWant{"twitter", "social", "", "twitter", "social", "", ChannelOrganicSocial, "", ""}},
		{"html-escaped ampersands", page + "?utm_source=google&amp;utm_medium=cpc", "",
			attrWant{"google", "cpc", "", "google", "cpc", "", ChannelPaidSearch, "", ""}},
		{"hash-routed spa", "https://shop.example/#/p/1?utm_source=mailchimp&utm_medium=email", "",
			attrWant{"mailchimp", "email", "", "mailchimp", "email", "", ChannelEmail, "", ""}},
		{"fragment not query", page + "?a=1#utm_source=x", "",
			attrWant{"", "", "", DirectSource, MediumNone, "", ChannelDirect, "", "-"}},
		{"chatgpt tags its links", page + "?utm_source=chatgpt.com", "https://chatgpt.com/",
			attrWant{"chatgpt.com", "", "", "chatgpt", "referral", "", ChannelReferral, ReferrerAIAssistant, ""}},
		{"utm source only, other referrer", page + "?utm_source=chatgpt.com", "https://www.google.com/",
			attrWant{"chatgpt.com", "", "", "chatgpt", NotSet, "", ChannelUnassigned, ReferrerSearch, ""}},
		{"utm source only, same other site", page + "?utm_source=blog.example.net", "https://www.blog.example.net/",
			attrWant{"blog.example.net", "", "", "blog.example.net", "referral", "", ChannelReferral, ReferrerOther, ""}},

		// Click ids alone: DESIGN §4.
		{"gclid", page + "?gclid=Cj0KCQjw", "", attrWant{source: "google", medium: "cpc", channel: ChannelPaidSearch, touchKind: "gclid"}},
		{"gbraid", page + "?gbraid=0AAAAA", "", attrWant{source: "google", medium: "cpc", channel: ChannelPaidSearch, touchKind: "gbraid"}},
		{"wbraid", page + "?wbraid=CjkKCQ", "", attrWant{source: "google", medium: "cpc", channel: ChannelPaidSearch, touchKind: "wbraid"}},
		{"dclid", page + "?dclid=CJqF", "", attrWant{source: "dv360", medium: "display", channel: ChannelDisplay, touchKind: "dclid"}},
		{"srsltid", page + "?srsltid=AfmBOop", "https://www.google.com/", attrWant{source: "google", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch, touchKind: "srsltid"}},
		{"msclkid", page + "?msclkid=5f1e", "", attrWant{source: "bing", medium: "cpc", channel: ChannelPaidSearch, touchKind: "msclkid"}},
		{"ttclid", page + "?ttclid=E.C.P", "", attrWant{source: "tiktok", medium: "paid_social", channel: ChannelPaidSocial, touchKind: "ttclid"}},
		{"li_fat_id", page + "?li_fat_id=a1b2", "", attrWant{source: "linkedin", medium: "paid_social", channel: ChannelPaidSocial, touchKind: "li_fat_id"}},
		{"twclid", page + "?twclid=2-abc", "", attrWant{source: "twitter", medium: "paid_social", channel: ChannelPaidSocial, touchKind: "twclid"}},
		{"fbclid", page + "?fbclid=IwAR2F4", "https://lm.facebook.com/", attrWant{source: "facebook", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial, touchKind: "fbclid"}},
		{"gclid beats fbclid", page + "?fbclid=IwAR&gclid=Cj0", "", attrWant{source: "google", medium: "cpc", channel: ChannelPaidSearch, touchKind: "gclid"}},
		{"msclkid beats dclid", page + "?dclid=x&msclkid=y", "", attrWant{source: "bing", medium: "cpc", channel: ChannelPaidSearch, touchKind: "msclkid"}},
		{"fbclid beats srsltid", page + "?srsltid=x&fbclid=y", "", attrWant{source: "facebook", medium: "social", channel: ChannelOrganicSocial, touchKind: "fbclid"}},

		// Referrers.
		{"google", page, "https://www.google.com/", attrWant{source: "google", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"google.co.uk", page, "https://www.google.co.uk/", attrWant{source: "google", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"google.com.au", page, "https://www.google.com.au/", attrWant{source: "google", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"google.de upper case", page, "HTTPS://WWW.GOOGLE.DE/", attrWant{source: "google", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"google app", page, "android-app://com.google.android.googlequicksearchbox/", attrWant{source: "google", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"bing", page, "https://www.bing.com/search?q=shoes", attrWant{source: "bing", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"duckduckgo", page, "https://duckduckgo.com/", attrWant{source: "duckduckgo", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"yahoo japan", page, "https://search.yahoo.co.jp/", attrWant{source: "yahoo", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"yandex.com.tr", page, "https://yandex.com.tr/", attrWant{source: "yandex", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"ecosia", page, "https://www.ecosia.org/", attrWant{source: "ecosia", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"brave search", page, "https://search.brave.com/", attrWant{source: "brave", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"l.facebook.com", page, "https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example", attrWant{source: "facebook", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"lm.facebook.com", page, "https://lm.facebook.com/", attrWant{source: "facebook", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"instagram", page, "https://l.instagram.com/", attrWant{source: "instagram", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"t.co", page, "https://t.co/AbCd", attrWant{source: "twitter", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"x.com", page, "https://x.com/", attrWant{source: "twitter", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"lnkd.in", page, "https://lnkd.in/xyz", attrWant{source: "linkedin", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"pinterest.de", page, "https://www.pinterest.de/", attrWant{source: "pinterest", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"reddit", page, "https://old.reddit.com/r/x", attrWant{source: "reddit", medium: "social", channel: ChannelOrganicSocial, refKind: ReferrerSocial}},
		{"youtube is video", page, "https://www.youtube.com/", attrWant{source: "youtube", medium: "referral", channel: ChannelOrganicVideo, refKind: ReferrerSocial}},
		{"chatgpt", page, "https://chatgpt.com/", attrWant{source: "chatgpt", medium: "referral", channel: ChannelReferral, refKind: ReferrerAIAssistant}},
		{"chat.openai.com", page, "https://chat.openai.com/c/1", attrWant{source: "chatgpt", medium: "referral", channel: ChannelReferral, refKind: ReferrerAIAssistant}},
		{"perplexity", page, "https://www.perplexity.ai/search", attrWant{source: "perplexity", medium: "referral", channel: ChannelReferral, refKind: ReferrerAIAssistant}},
		{"gemini beats google.*", page, "https://gemini.google.com/app", attrWant{source: "gemini", medium: "referral", channel: ChannelReferral, refKind: ReferrerAIAssistant}},
		{"claude", page, "https://claude.ai/", attrWant{source: "claude", medium: "referral", channel: ChannelReferral, refKind: ReferrerAIAssistant}},
		{"copilot", page, "https://copilot.microsoft.com/", attrWant{source: "copilot", medium: "referral", channel: ChannelReferral, refKind: ReferrerAIAssistant}},
		{"google shopping", page, "https://shopping.google.com/", attrWant{source: "google_shopping", medium: "referral", channel: ChannelOrganicShopping, refKind: ReferrerShopping}},
		{"google shopping uk", page, "https://shopping.google.co.uk/", attrWant{source: "google_shopping", medium: "referral", channel: ChannelOrganicShopping, refKind: ReferrerShopping}},
		{"amazon.de", page, "https://www.amazon.de/", attrWant{source: "amazon", medium: "referral", channel: ChannelOrganicShopping, refKind: ReferrerShopping}},
		{"idealo", page, "https://www.idealo.de/preisvergleich", attrWant{source: "idealo", medium: "referral", channel: ChannelOrganicShopping, refKind: ReferrerShopping}},
		{"gmail", page, "https://mail.google.com/", attrWant{source: "gmail", medium: "email", channel: ChannelEmail, refKind: ReferrerEmail}},
		{"gmail app", page, "android-app://com.google.android.gm/", attrWant{source: "gmail", medium: "email", channel: ChannelEmail, refKind: ReferrerEmail}},
		{"outlook", page, "https://outlook.live.com/", attrWant{source: "outlook", medium: "email", channel: ChannelEmail, refKind: ReferrerEmail}},
		{"yahoo mail", page, "https://mail.yahoo.com/d/folders/1", attrWant{source: "yahoo_mail", medium: "email", channel: ChannelEmail, refKind: ReferrerEmail}},
		{"other site", page, "https://news.example.org/article?id=1", attrWant{source: "news.example.org", medium: "referral", channel: ChannelReferral, refKind: ReferrerOther}},
		{"other site www", page, "https://www.example.org/", attrWant{source: "example.org", medium: "referral", channel: ChannelReferral, refKind: ReferrerOther}},
		{"google docs", page, "https://docs.google.com/document/d/1", attrWant{source: "docs.google.com", medium: "referral", channel: ChannelReferral, refKind: ReferrerOther}},
		{"referrer without scheme", page, "bing.com/search", attrWant{source: "bing", medium: "organic", channel: ChannelOrganicSearch, refKind: ReferrerSearch}},
		{"referrer with port and user", page, "https://u:p@blog.example.net:8443/x", attrWant{source: "blog.example.net", medium: "referral", channel: ChannelReferral, refKind: ReferrerOther}},

		// Internal and direct.
		{"same host", page, "https://shop.example/cart", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"www of the host", page, "https://www.shop.example/", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"subdomain of a configured host", page, "https://blog.shop.example/post", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"configured host, case and dot", page, "https://SHOP-TWO.example/", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"not a subdomain", page, "https://evilshop.example/", attrWant{source: "evilshop.example", medium: "referral", channel: ChannelReferral, refKind: ReferrerOther}},
		{"paypal return", page, "https://www.paypal.com/checkoutnow?token=1", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"stripe 3ds return", page, "https://hooks.stripe.com/3d_secure_2/", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"amazon pay return", page, "https://payments.amazon.de/checkout", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"gtm preview", page, "https://tagassistant.google.com/", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, refKind: ReferrerInternal, touchKind: "-"}},
		{"direct", page, "", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, touchKind: "-"}},
		{"about:blank", page, "about:blank", attrWant{source: DirectSource, medium: MediumNone, channel: ChannelDirect, touchKind: "-"}},
		{"no page context", "", "", attrWant{touchKind: "-"}},
		{"click id on internal referrer", "https://shop.example/contact", "https://shop.example/landing?gclid=ABC",
			attrWant{source: "google", medium: "cpc", channel: ChannelPaidSearch, refKind: ReferrerInternal, touchKind: "-"}},
		{"click id on external referrer", "https://shop.example/thanks", "https://partner.example.net/?msclkid=M1",
			attrWant{source: "bing", medium: "cpc", channel: ChannelPaidSearch, refKind: ReferrerOther, touchKind: "msclkid"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := attrEvent("page_view", tc.url, tc.ref)
			var res EventResult
			a.Apply(&Request{ReceivedAt: attrNow}, e, &res)
			at := &e.Attribution
			w := tc.want
			got := attrWant{at.UTMSource, at.UTMMedium, at.UTMCampaign, at.Source, at.Medium, at.Campaign, at.Channel, at.ReferrerKind, "-"}
			if !at.LastTouch.IsZero() {
				got.touchKind = at.LastTouch.ClickIDKind
			}
			if got != w {
				t.Errorf("\n got %+v\nwant %+v", got, w)
			}
			if w.touchKind != "-" {
				want := Touch{Source: w.source, Medium: w.medium, Campaign: w.campaign, Channel: w.channel, ClickIDKind: w.touchKind, At: attrNow}
				if at.FirstTouch != want || at.LastTouch != want {
					t.Errorf("touches %+v / %+v, want %+v", at.FirstTouch, at.LastTouch, want)
				}
			} else if !at.FirstTouch.IsZero() {
				t.Errorf("unexpected first touch %+v", at.FirstTouch)
			}
			if res.Outcome != Accepted {
				t.Errorf("outcome %v", res.Outcome)
			}
		})
	}
}

func TestAttributionClickIDs(t *testing.T) {
	a := newTestAttribution(t)
	e := attrEvent("page_view", "https://shop.example/?gclid=Cj0KCQjw-AbC_123&gbraid=0AAAAA&wbraid=CjkKCQ&dclid=CJqF%2Ddcl"+
		"&srsltid=AfmBOop&fbclid=IwAR2F4-dbP0l7Mn1IawQQ&msclkid=5f1e2c&ttclid=E.C.P.Ct&li_fat_id=a1b2-c3&twclid=2-7x"+
		"&gclid=second", "https://partner.example.net/?twclid=fromref&Gclid=fromref")
	a.Apply(&Request{}, e, &EventResult{})
	want := ClickIDs{
		GCLID: "Cj0KCQjw-AbC_123", GBRAID: "0AAAAA", WBRAID: "CjkKCQ", DCLID: "CJqF-dcl", SRSLTID: "AfmBOop",
		FBCLID: "IwAR2F4-dbP0l7Mn1IawQQ", MSCLKID: "5f1e2c", TTCLID: "E.C.P.Ct", LiFatID: "a1b2-c3", TWCLID: "2-7x",
	}
	if e.Attribution.ClickIDs != want {
		t.Errorf("click ids\n got %+v\nwant %+v", e.Attribution.ClickIDs, want)
	}

	// Byte for byte: case kept, '+' not a space, decoded once; ids a cookie
	// cannot carry are dropped, not altered.
	for q, wantID := range map[string]string{
		"gclid=AbC+dEf":                     "AbC+dEf",
		"gclid=AbC%252B":                    "AbC%2B",
		"gclid=a%20b":                       "",
		"gclid=a%3Bb":                       "",
		"gclid=" + strings.Repeat("x", 481): "",
		"gclid=":                            "",
		"gclid":                             "",
		"gclid=%E2%9C%93":                   "",
	} {
		e := attrEvent("page_view", "https://shop.example/?"+q, "")
		a.Apply(&Request{}, e, &EventResult{})
		if e.Attribution.ClickIDs.GCLID != wantID {
			t.Errorf("%q: gclid %q, want %q", q, e.Attribution.ClickIDs.GCLID, wantID)
		}
	}

	// Ids already on the event (a decoder, a /collect body) are kept.
	e = attrEvent("page_view", "https://shop.example/?gclid=fromurl", "")
	e.Attribution.ClickIDs.GCLID = "frombody"
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.ClickIDs.GCLID != "frombody" || e.Attribution.LastTouch.ClickIDKind != "gclid" {
		t.Errorf("preset click id: %+v", e.Attribution)
	}
}

func TestAttributionPresetUTMs(t *testing.T) {
	// Segment's context.campaign fills the UTMs before this stage: they are
	// normalized and win over the URL's.
	a := newTestAttribution(t)
	e := attrEvent("Order Completed", "https://shop.example/?utm_source=bing&utm_medium=cpc", "")
	e.Source = SourceSegment
	e.Attribution.UTMSource, e.Attribution.UTMMedium, e.Attribution.UTMCampaign = " Google ", "CPC", "Brand  Search"
	e.Attribution.UTMTerm = "50% off"
	a.Apply(&Request{}, e, &EventResult{})
	at := e.Attribution
	if at.UTMSource != "google" || at.UTMMedium != "cpc" || at.UTMCampaign != "brand search" || at.UTMTerm != "50% off" ||
		at.Source != "google" || at.Medium != "cpc" || at.Channel != ChannelPaidSearch {
		t.Errorf("%+v", at)
	}
}

func TestAttributionFBC(t *testing.T) {
	a := newTestAttribution(t)
	ms := strconv.FormatInt(attrNow.UnixMilli(), 10)
	const fbclid = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
	tests := []struct {
		name, url, cookie, want string
	}{
		{"new click", "https://shop.example/?fbclid=" + fbclid, "", "fb.1." + ms + "." + fbclid},
		{"paid utms too", "https://shop.example/?utm_source=facebook&utm_medium=paid&fbclid=" + fbclid, "", "fb.1." + ms + "." + fbclid},
		{"same click in cookie", "https://shop.example/?fbclid=" + fbclid, "fb.1.1700000000000." + fbclid, "fb.1.1700000000000." + fbclid},
		{"cookie with another subdomain index", "https://shop.example/?fbclid=" + fbclid, "fb.2.1700000000000." + fbclid, "fb.2.1700000000000." + fbclid},
		{"new click replaces old", "https://shop.example/?fbclid=" + fbclid, "fb.1.1700000000000.OLDCLICK", "fb.1." + ms + "." + fbclid},
		{"case kept", "https://shop.example/?fbclid=AbCdEf", "fb.1.1700000000000.abcdef", "fb.1." + ms + ".AbCdEf"},
		{"aem suffix kept", "https://shop.example/?fbclid=IwZXh0bgNhZW0BMABhZGlkAAAG_aem_AbC", "", "fb.1." + ms + ".IwZXh0bgNhZW0BMABhZGlkAAAG_aem_AbC"},
		{"no fbclid keeps cookie", "https://shop.example/?gclid=x", "fb.1.1700000000000.OLD", "fb.1.1700000000000.OLD"},
		{"no fbclid no cookie", "https://shop.example/", "", ""},
	}
	for _, tc := range tests {
		e := attrEvent("page_view", tc.url, "")
		e.Attribution.FBC = tc.cookie
		a.Apply(&Request{}, e, &EventResult{})
		if e.Attribution.FBC != tc.want {
			t.Errorf("%s: fbc %q, want %q", tc.name, e.Attribution.FBC, tc.want)
		}
		if tc.want != "" && !ValidFBCookie(e.Attribution.FBC) {
			t.Errorf("%s: fbc %q is not a valid _fbc value", tc.name, e.Attribution.FBC)
		}
	}
	// The longest accepted fbclid still makes a valid _fbc cookie.
	e := attrEvent("page_view", "https://shop.example/?fbclid="+strings.Repeat("A", maxClickID), "")
	a.Apply(&Request{}, e, &EventResult{})
	if !ValidFBCookie(e.Attribution.FBC) {
		t.Errorf("max-length fbclid: fbc %d bytes not valid", len(e.Attribution.FBC))
	}
}

func TestAttributionTouches(t *testing.T) {
	a := newTestAttribution(t)
	earlier := attrNow.Add(-72 * time.Hour)
	old := Touch{Source: "google", Medium: "organic", Channel: ChannelOrganicSearch, At: earlier}
	oldPaid := Touch{Source: "facebook", Medium: "paid_social", Campaign: "spring", Channel: ChannelPaidSocial, ClickIDKind: "fbclid", At: earlier}

	// A new non-direct visit: first touch kept, last touch replaced.
	e := attrEvent("page_view", "https://shop.example/?utm_source=newsletter&utm_medium=email", "")
	e.Attribution.FirstTouch, e.Attribution.LastTouch = old, oldPaid
	a.Apply(&Request{}, e, &EventResult{})
	wantLast := Touch{Source: "newsletter", Medium: "email", Channel: ChannelEmail, At: attrNow}
	if e.Attribution.FirstTouch != old || e.Attribution.LastTouch != wantLast {
		t.Errorf("new visit: first %+v last %+v", e.Attribution.FirstTouch, e.Attribution.LastTouch)
	}

	// Direct and internal visits leave the touches alone; the event itself
	// stays (direct)/(none).
	for _, ref := range []string{"", "https://shop.example/", "https://www.paypal.com/"} {
		e = attrEvent("order_completed", "https://shop.example/thanks", ref)
		e.Attribution.FirstTouch, e.Attribution.LastTouch = old, oldPaid
		a.Apply(&Request{}, e, &EventResult{})
		at := e.Attribution
		if at.FirstTouch != old || at.LastTouch != oldPaid || at.Source != DirectSource || at.Medium != MediumNone || at.Channel != ChannelDirect {
			t.Errorf("referrer %q: %+v", ref, at)
		}
		if e.Quality.Has(FlagMissingClickContext) {
			t.Errorf("referrer %q: conversion with a paid last touch and its click id flagged", ref)
		}
	}
}

func TestAttributionMissingClickContext(t *testing.T) {
	a := newTestAttribution(t)
	paidNoClick := Touch{Source: "google", Medium: "cpc", Channel: ChannelPaidSearch, At: attrNow.Add(-time.Hour)}
	paidClick := paidNoClick
	paidClick.ClickIDKind = "gclid"
	tests := []struct {
		name, event, url string
		last             Touch
		want             bool
	}{
		{"order with cpc utm and no click id", "order_completed", "https://shop.example/?utm_source=google&utm_medium=cpc", Touch{}, true},
		{"purchase (gtag) with paid utm", "purchase", "https://shop.example/?utm_source=facebook&utm_medium=paid_social", Touch{}, true},
		{"Order Completed (segment) with ppc", "Order Completed", "https://shop.example/?utm_source=bing&utm_medium=ppc", Touch{}, true},
		{"lead with paid", "generate_lead", "https://shop.example/?utm_medium=paid", Touch{}, true},
		{"lead_submitted with cpc", "lead_submitted", "https://shop.example/?utm_medium=cpc", Touch{}, true},
		{"order with cpc and gclid", "order_completed", "https://shop.example/?utm_medium=cpc&gclid=x", Touch{}, false},
		{"order with organic utm", "order_completed", "https://shop.example/?utm_medium=email", Touch{}, false},
		{"page view with cpc", "page_view", "https://shop.example/?utm_medium=cpc", Touch{}, false},
		{"direct order, paid last touch without click", "purchase", "https://shop.example/thanks", paidNoClick, true},
		{"direct order, paid last touch with click", "purchase", "https://shop.example/thanks", paidClick, false},
		{"direct order, no touch", "purchase", "https://shop.example/thanks", Touch{}, false},
		{"server order", "order_completed", "", Touch{}, false},
	}
	for _, tc := range tests {
		e := attrEvent(tc.event, tc.url, "")
		e.Attribution.LastTouch = tc.last
		a.Apply(&Request{}, e, &EventResult{})
		if got := e.Quality.Has(FlagMissingClickContext); got != tc.want {
			t.Errorf("%s: missing_click_context = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAttributionOptions(t *testing.T) {
	a := newTestAttribution(t,
		WithSourceAliases(map[string]string{"Klaviyo ": "klaviyo_email", "fb": "meta"}),
		WithMediumAliases(map[string]string{"newsletter": "email"}),
		WithReferrer("partner.example.net", ReferrerShopping, "partner", ""),
		WithReferrer("intranet.*", ReferrerInternal, "", ""),
	)
	e := attrEvent("page_view", "https://shop.example/?utm_source=klaviyo&utm_medium=newsletter", "")
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.Source != "klaviyo_email" || e.Attribution.Medium != "email" || e.Attribution.Channel != ChannelEmail {
		t.Errorf("aliases: %+v", e.Attribution)
	}
	e = attrEvent("page_view", "https://shop.example/?utm_source=fb", "")
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.Source != "meta" {
		t.Errorf("override: %q", e.Attribution.Source)
	}
	e = attrEvent("page_view", "https://shop.example/", "https://deals.partner.example.net/")
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.ReferrerKind != ReferrerShopping || e.Attribution.Source != "partner" || e.Attribution.Medium != "referral" {
		t.Errorf("referrer option: %+v", e.Attribution)
	}
	e = attrEvent("page_view", "https://shop.example/", "https://intranet.co.uk/")
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.ReferrerKind != ReferrerInternal {
		t.Errorf("wildcard option: %+v", e.Attribution)
	}

	for _, o := range []AttributionOption{
		WithReferrer("x.example", "video", "", ""),
		WithReferrer("https://x.example/", ReferrerOther, "", ""),
		WithReferrer(".*", ReferrerOther, "", ""),
		WithSourceAliases(map[string]string{" ": "x"}),
	} {
		if _, err := NewAttribution(&config.Config{}, o); err == nil {
			t.Error("bad option accepted")
		}
	}
}

func TestAttributionHostFallbacks(t *testing.T) {
	a := newTestAttribution(t)
	// Without e.Host the page URL, then the request's Host, decide what is
	// internal.
	e := &Event{URL: "https://www.other-shop.example/p", Referrer: "https://other-shop.example/"}
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.ReferrerKind != ReferrerInternal {
		t.Errorf("from URL: %q", e.Attribution.ReferrerKind)
	}
	e = &Event{URL: "/relative/path", Referrer: "https://third.example:8443/"}
	a.Apply(&Request{Host: "third.example:8080"}, e, &EventResult{})
	if e.Attribution.ReferrerKind != ReferrerInternal {
		t.Errorf("from request host: %q", e.Attribution.ReferrerKind)
	}
	e = &Event{URL: "https://x.example/", Host: "X.Example:443", Referrer: "https://www.x.example/"}
	a.Apply(&Request{}, e, &EventResult{})
	if e.Attribution.ReferrerKind != ReferrerInternal {
		t.Errorf("host with case and port: %q", e.Attribution.ReferrerKind)
	}
}

func TestAttributionDataFiles(t *testing.T) {
	a := newTestAttribution(t)
	// Every canonical source that the referrer list or the click ids
	// produce for search/social/shopping classes must land in the channel
	// its kind promises, or the data files disagree with each other.
	for host, r := range a.refs {
		if r.kind == ReferrerInternal || r.kind == ReferrerOther {
			continue
		}
		ch := a.channels.Classify(r.source, r.medium, "")
		want := map[string][]string{
			ReferrerSearch:      {ChannelOrganicSearch},
			ReferrerSocial:      {ChannelOrganicSocial, ChannelOrganicVideo},
			ReferrerShopping:    {ChannelOrganicShopping},
			ReferrerEmail:       {ChannelEmail},
			ReferrerAIAssistant: {ChannelReferral},
		}[r.kind]
		ok := false
		for _, w := range want {
			ok = ok || ch == w
		}
		if !ok {
			t.Errorf("referrer %s (%s, %s/%s) lands in %q, want one of %v", host, r.kind, r.source, r.medium, ch, want)
		}
	}
	for name, r := range a.refWild {
		if r.kind == ReferrerShopping && a.channels.Classify(r.source, r.medium, "") != ChannelOrganicShopping {
			t.Errorf("wildcard %s.*: %s is not a shopping source", name, r.source)
		}
	}
	for _, ck := range clickKinds {
		if ch := a.channels.Classify(ck.source, ck.medium, ""); ch == ChannelUnassigned || ch == ChannelReferral {
			t.Errorf("click id %s implies %s/%s = %s", ck.name, ck.source, ck.medium, ch)
		}
	}
	for alias, canon := range a.srcAlias {
		if alias != normalizeUTMString(alias) || canon != normalizeUTMString(canon) {
			t.Errorf("source alias %q -> %q not normalized", alias, canon)
		}
	}
}

// TestAttributionNoAlloc pins the zero-allocation promise for events that
// need no rewrite.
func TestAttributionNoAlloc(t *testing.T) {
	a := newTestAttribution(t)
	req := &Request{ReceivedAt: attrNow}
	for _, tc := range []struct{ url, ref string }{
		{"https://shop.example/products/1", "https://shop.example/"},
		{"https://shop.example/products/1", ""},
		{"https://shop.example/?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=Cj0KCQjw", ""},
		{"https://shop.example/", "https://www.google.com/"},
		{"https://shop.example/", "https://l.facebook.com/l.php?u=x"},
		{"https://shop.example/", "https://news.example.org/a"},
	} {
		e := attrEvent("page_view", tc.url, tc.ref)
		host := e.Host
		allocs := testing.AllocsPerRun(200, func() {
			e.Attribution = Attribution{}
			e.Name, e.URL, e.Referrer, e.Host = "page_view", tc.url, tc.ref, host
			a.Apply(req, e, &EventResult{})
		})
		if allocs != 0 {
			t.Errorf("%s ref %q: %v allocs, want 0", tc.url, tc.ref, allocs)
		}
	}
}

func FuzzAppendNormalizedUTM(f *testing.F) {
	for _, s := range []string{"", " Google%20Ads ", "a+b", "%zz", "%C3%89t%C3%A9", "\xff\xfe", "Ⱥ%C8%BA", "%E2%80%83x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendNormalizedUTM([]byte("keep"), []byte(s))
		if string(out[:4]) != "keep" {
			t.Fatal("prefix overwritten")
		}
		n := string(out[4:])
		if strings.HasPrefix(n, " ") || strings.HasSuffix(n, " ") || strings.Contains(n, "  ") {
			t.Fatalf("%q -> %q: untrimmed or unfolded", s, n)
		}
		// Normalizing a decoded, normalized value changes nothing.
		if again := string(appendNormalized(nil, n, false)); again != n && utf8.ValidString(n) {
			t.Fatalf("%q -> %q -> %q: not idempotent", s, n, again)
		}
		if utf8.ValidString(s) && !strings.Contains(s, "%") && !utf8.ValidString(n) {
			t.Fatalf("%q -> %q: invalid UTF-8 from valid input", s, n)
		}
	})
}

var validKinds = map[string]bool{"": true, ReferrerSearch: true, ReferrerSocial: true, ReferrerAIAssistant: true,
	ReferrerShopping: true, ReferrerEmail: true, ReferrerInternal: true, ReferrerOther: true}

func FuzzAttribution(f *testing.F) {
	f.Add("https://shop.example/?utm_source=%20Google%20Ads%20&utm_medium=CPC&gclid=x", "https://www.google.co.uk/")
	f.Add("https://shop.example/#/p?fbclid=IwAR&utm_campaign=a+b", "android-app://com.google.android.gm/")
	f.Add("/relative?gclid=%", "about:blank")
	f.Add("https://[::1]:8080/?li_fat_id=%E2", "https://u@[::1]/?twclid=1")
	f.Add("?&&==&utm_source&amp;gclid=", "//shopping.google.com.au")
	f.Add("", "HTTPS://WWW.PAYPAL.COM./x")
	a := newTestAttribution(f)
	f.Fuzz(func(t *testing.T, url, ref string) {
		e := &Event{Name: "purchase", URL: url, Referrer: ref, ReceivedAt: attrNow}
		e.Host = attrHost(url)
		var res EventResult
		a.Apply(&Request{}, e, &res)
		at := &e.Attribution
		if !validKinds[at.ReferrerKind] {
			t.Fatalf("referrer kind %q", at.ReferrerKind)
		}
		if (at.Source == "") != (at.Channel == "") || (at.Source == "") != (at.Medium == "") {
			t.Fatalf("source %q medium %q channel %q", at.Source, at.Medium, at.Channel)
		}
		c := at.ClickIDs
		for _, id := range []string{c.GCLID, c.GBRAID, c.WBRAID, c.DCLID, c.SRSLTID, c.FBCLID, c.MSCLKID, c.TTCLID, c.LiFatID, c.TWCLID} {
			if id != "" && !attrValidClickID(id) {
				t.Fatalf("click id %q", id)
			}
		}
		if at.FBC != "" && (!ValidFBCookie(at.FBC) || attrFBCClickID(at.FBC) != c.FBCLID) {
			t.Fatalf("fbc %q for fbclid %q", at.FBC, c.FBCLID)
		}
		if !at.LastTouch.IsZero() && (at.LastTouch.Source != at.Source || at.FirstTouch.IsZero()) {
			t.Fatalf("touches %+v %+v", at.FirstTouch, at.LastTouch)
		}
		for _, u := range []string{at.UTMSource, at.UTMMedium, at.UTMCampaign, at.UTMTerm, at.UTMContent, at.UTMID} {
			if strings.HasPrefix(u, " ") || strings.HasSuffix(u, " ") {
				t.Fatalf("utm %q not trimmed", u)
			}
		}
		if res.Outcome != Accepted {
			t.Fatalf("outcome %v", res.Outcome)
		}
	})
}

func FuzzClassifyReferrer(f *testing.F) {
	for _, h := range []string{"www.google.co.uk", "l.facebook.com", "shopping.google.com.au", "co.uk", "google", ".", "..",
		"a..b", "com.google.android.gm", "payments.amazon.de", "shop.example", "x.shop.example", "[::1]", "google.com.",
		"mail.google.com", "évil.example"} {
		f.Add(h, "shop.example")
	}
	a := newTestAttribution(f)
	f.Fuzz(func(t *testing.T, host, page string) {
		host = strings.ToLower(host)
		kind, r := a.classify(host, page)
		if !validKinds[kind] || kind == "" {
			t.Fatalf("classify(%q) kind %q", host, kind)
		}
		if kind != ReferrerInternal && kind != ReferrerOther && r.kind != kind {
			t.Fatalf("classify(%q) = %q with entry %+v", host, kind, r)
		}
		// Subdomains of a configured host are internal, whatever the list says.
		if kind2, _ := a.classify("x."+host+".shop.example", page); host != "" && !strings.Contains(host, ":") && kind2 != ReferrerInternal {
			t.Fatalf("subdomain of shop.example: %q", kind2)
		}
	})
}

func BenchmarkAttribution(b *testing.B) {
	a := newTestAttribution(b)
	req := &Request{ReceivedAt: attrNow}
	for _, bc := range []struct{ name, url, ref string }{
		{"internal_pageview", "https://shop.example/products/blue-shirt?variant=42", "https://shop.example/collections/shirts"},
		{"direct", "https://shop.example/", ""},
		{"google_organic", "https://shop.example/products/blue-shirt", "https://www.google.co.uk/"},
		{"paid_landing_utm_gclid", "https://shop.example/?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=Cj0KCQjw8J", "https://www.google.com/"},
		{"messy_utm", "https://shop.example/?utm_source=%20Google%20Ads%20&utm_medium=CPC&utm_campaign=Summer+Sale", ""},
		{"fbclid_new_fbc", "https://shop.example/?fbclid=IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk", "https://l.facebook.com/"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var pool EventPool
			e := pool.Get()
			var res EventResult
			b.ReportAllocs()
			for b.Loop() {
				e.Reset() // keeps the arena, like a pooled event
				e.Name, e.URL, e.Referrer, e.Host, e.ReceivedAt = "page_view", bc.url, bc.ref, "shop.example", attrNow
				a.Apply(req, e, &res)
			}
		})
	}
}

func TestAttributionEncodedClickIDAllocs(t *testing.T) {
	a := newTestAttribution(t)
	var pool EventPool
	e := pool.Get()
	url := "https://shop.example/?gclid=Cj0KCQjw8J%2DsomewhatLongerThanThirtyTwoBytes"
	allocs := testing.AllocsPerRun(100, func() {
		e.Reset()
		e.URL, e.Host, e.ReceivedAt = url, "shop.example", attrNow
		a.Apply(&Request{}, e, &EventResult{})
	})
	if allocs != 0 || e.Attribution.ClickIDs.GCLID != "Cj0KCQjw8J-somewhatLongerThanThirtyTwoBytes" {
		t.Errorf("%v allocs, gclid %q", allocs, e.Attribution.ClickIDs.GCLID)
	}
}

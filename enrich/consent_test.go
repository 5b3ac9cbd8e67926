package enrich

import (
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
)

const (
	csG = Granted
	csD = Denied
)

// csConfig is the default config with its consent section adjusted.
func csConfig(mut func(*config.Consent)) *config.Config {
	cfg := config.Default()
	if mut != nil {
		mut(&cfg.Consent)
	}
	return cfg
}

func csNew(t testing.TB, mut func(*config.Consent)) *ConsentStage {
	t.Helper()
	s, err := NewConsent(csConfig(mut))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func allGranted(c *config.Consent) {
	c.Default = config.Purposes{Analytics: "granted", Ads: "granted", AdUserData: "granted", AdPersonalization: "granted"}
}

func withCMP(name, format string, m map[string][]string) func(*config.Consent) {
	return func(c *config.Consent) {
		c.CMPCookie = config.CMPCookie{Name: name, Format: format, Map: m}
	}
}

func both(fs ...func(*config.Consent)) func(*config.Consent) {
	return func(c *config.Consent) {
		for _, f := range fs {
			f(c)
		}
	}
}

func segCats(kv ...any) Props {
	var p Props
	for i := 0; i < len(kv); i += 2 {
		p = append(p, Prop{Key: kv[i].(string), Kind: PropBool, Bool: kv[i+1].(bool)})
	}
	return p
}

func collectCats(kv ...string) Props {
	var p Props
	for i := 0; i < len(kv); i += 2 {
		p = append(p, Prop{Key: kv[i], Kind: PropString, Str: kv[i+1]})
	}
	return p
}

// tcfString builds a TCF v2 core segment with the given purposes
// consented (and PurposeOneTreatment when p1t), base64url without padding.
func tcfString(p1t bool, purposes ...int) string {
	bits := make([]byte, 240) // core up to PublisherCC, vendor sections empty
	put := func(off, n int, v uint64) {
		for i := 0; i < n; i++ {
			bits[off+i] = byte(v >> (n - 1 - i) & 1)
		}
	}
	put(0, 6, 2)             // Version
	put(6, 36, 17000000000)  // Created (deciseconds)
	put(42, 36, 17000000000) // LastUpdated
	put(78, 12, 7)           // CmpId
	put(90, 12, 1)           // CmpVersion
	put(108, 12, 4<<6|13)    // ConsentLanguage "EN"
	put(120, 12, 80)         // VendorListVersion
	put(132, 6, 4)           // TcfPolicyVersion
	for _, p := range purposes {
		bits[tcfPurposesConsentBit+p-1] = 1
	}
	if p1t {
		bits[tcfPurposeOneTreatmentBit] = 1
	}
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var sb strings.Builder
	for i := 0; i < len(bits); i += 6 {
		v := 0
		for j := 0; j < 6; j++ {
			v = v<<1 | int(bits[i+j])
		}
		sb.WriteByte(alpha[v])
	}
	return sb.String()
}

// Real TC strings (from prebid/go-gdpr's tests); their purposes were
// checked with an independent base64 decoder.
const (
	tcfRealAll11 = "CQc78IAQc78IAAHABAFRCPFsAP_gAAAAAAAAKlwJ4AFgAYABUAC4AGQAQAAnABaADIAGgAWwAwgBzAD8AIQATgAuABlADjAIQARAAicBHAEdAJKAYoA0ACIgETAKWAXUAvMBgIDFgGMgMsAf2BAECMwEdgKlgAAAGKQAYAAgvwOgAwABBfghABgACC_BKADAAEF-AkAGAAIL8FoAMAAQX4A"
	tcfRealNone  = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"
	tcfReal1to8  = "COyiBqdOyiBqdObAAAENAfCIAP8AAH-AAAAAB4AXQQgEAAAgoAAAAABAIYQUAAAAAAAAAAAAAAAIQIQCxIvkgQMAAAABgAIAAAAAAAAAAABAZAkAAA"
	tcfRealP1T   = "COx3XOeOx3XOeLkAAAENAfCIAAAAAHgAAIAAAAAAAAAA" // no purposes, PurposeOneTreatment
)

const (
	otMixed = "isGpcEnabled=0&datestamp=Tue+Mar+11+2025+10%3A00%3A00+GMT%2B0100+(Central+European+Standard+Time)&version=202409.1.0&browserGpcFlag=0&isIABGlobal=false&hosts=&consentId=5b1e7c1e-0c5a-4a7b-9d7c-1f0e5f3c2a11&interactionCount=1&isAnonUser=1&landingPath=NotLandingPage&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A0%2CC0004%3A0&AwaitingReconsent=false&geolocation=DE%3BBE"
	otAll   = "isGpcEnabled=0&version=202409.1.0&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A1%2CC0004%3A1%2CC0005%3A1&interactionCount=2"
	otNone  = "groups=C0001%3A1%2CC0002%3A0%2CC0003%3A0%2CC0004%3A0&interactionCount=1"
	cbMixed = "{stamp:%27Ufd9c4Qf0sbJH0q1gUfO3Hhm2kq2W6Q2mGXQ0Rk2Rk8L1mXy8xgZ7A==%27%2Cnecessary:true%2Cpreferences:true%2Cstatistics:true%2Cmarketing:false%2Cmethod:%27explicit%27%2Cver:1%2Cutc:1710151234567%2Cregion:%27de%27}"
	cbNone  = "{stamp:'x',necessary:true,preferences:false,statistics:false,marketing:false,method:'explicit',ver:2}"
)

type csCase struct {
	name   string
	cfg    func(*config.Consent)
	server bool
	gpc    bool
	cookie [2]string
	gcs    string
	gcd    string
	npa    string
	cats   Props
	want   [4]ConsentState // analytics, ads, ad_user_data, ad_personalization
	src    string
	gpcRec bool
}

// TestConsentMatrix covers every signal source with granted, denied,
// mixed, missing and conflicting states; after the stage no purpose is
// ever Unknown.
func TestConsentMatrix(t *testing.T) {
	dflt := [4]ConsentState{csD, csD, csD, csD}
	all := [4]ConsentState{csG, csG, csG, csG}
	cases := []csCase{
		// default
		{name: "no signal: default", want: dflt, src: "default"},
		{name: "no signal: default granted", cfg: allGranted, want: all, src: "default"},
		{name: "mixed default", cfg: func(c *config.Consent) { c.Default.Analytics = "granted" }, want: [4]ConsentState{csG, csD, csD, csD}, src: "default"},
		// gcs
		{name: "gcs granted", gcs: "G111", want: [4]ConsentState{csG, csG, csD, csD}, src: "gcs"},
		{name: "gcs granted, default granted", cfg: allGranted, gcs: "G111", want: all, src: "gcs"},
		{name: "gcs denied", cfg: allGranted, gcs: "G100", want: [4]ConsentState{csD, csD, csG, csG}, src: "gcs"},
		{name: "gcs analytics only", gcs: "G101", want: [4]ConsentState{csG, csD, csD, csD}, src: "gcs"},
		{name: "gcs ads only", gcs: "G110", want: [4]ConsentState{csD, csG, csD, csD}, src: "gcs"},
		{name: "gcs unset", gcs: "G1--", want: dflt, src: "default"},
		{name: "gcs garbage", cfg: allGranted, gcs: "X9", want: all, src: "default"},
		// gcd
		{name: "gcd granted", gcd: "13t3t3t3t5l1", want: all, src: "gcd"},
		{name: "gcd granted by update", gcd: "11r1r1n1v5", want: all, src: "gcd"},
		{name: "gcd denied", cfg: allGranted, gcd: "13p3p3p3p5l1", want: dflt, src: "gcd"},
		{name: "gcd denied by update", cfg: allGranted, gcd: "11q1u1m1q5", want: dflt, src: "gcd"},
		{name: "gcd mixed", gcd: "11r1q1t1m5", want: [4]ConsentState{csD, csG, csG, csD}, src: "gcd"},
		{name: "gcd unset", cfg: allGranted, gcd: "13l3l3l3l1l1", want: all, src: "default"},
		{name: "gcd odd separators (fixture)", gcd: "13t3tPt2t5l1", want: all, src: "gcd"},
		{name: "gcd truncated", gcd: "13t3t", want: [4]ConsentState{csG, csG, csD, csD}, src: "gcd"},
		{name: "gcd wins over gcs", gcd: "13t3t3t3t5", gcs: "G100", want: all, src: "gcd"},
		{name: "gcs fills what gcd leaves unset", cfg: allGranted, gcd: "13l3t3t3t5", gcs: "G101", want: [4]ConsentState{csG, csD, csG, csG}, src: "gcs"},
		{name: "npa denies personalization", gcd: "13t3t3t3t5", npa: "1", want: [4]ConsentState{csG, csG, csG, csD}, src: "gcd"},
		{name: "npa with gcs", cfg: allGranted, gcs: "G111", npa: "1", want: [4]ConsentState{csG, csG, csG, csD}, src: "gcs"},
		{name: "npa=0 says nothing", cfg: allGranted, gcs: "G111", npa: "0", want: all, src: "gcs"},
		// Segment categoryPreferences
		{name: "segment granted", cats: segCats("Analytics", true, "Advertising", true), want: all, src: "segment"},
		{name: "segment denied", cfg: allGranted, cats: segCats("Analytics", false, "Advertising", false), want: dflt, src: "segment"},
		{name: "segment mixed", cats: segCats("Performance", true, "Marketing", false, "Functional", true), want: [4]ConsentState{csG, csD, csD, csD}, src: "segment"},
		{name: "segment onetrust ids", cfg: allGranted, cats: segCats("C0001", true, "C0002", false, "C0004", true), want: [4]ConsentState{csD, csG, csG, csG}, src: "segment"},
		{name: "segment unknown categories", cfg: allGranted, cats: segCats("Functional", false, "Necessary", true), want: all, src: "default"},
		{name: "segment conflicting categories", cats: segCats("Marketing", true, "Advertising", false, "analytics", true), want: [4]ConsentState{csG, csD, csD, csD}, src: "segment"},
		{name: "segment mapped by config", cfg: withCMP("", "onetrust", map[string][]string{"Perf": {"analytics"}, "Ads": {"ads", "ad_user_data"}}),
			cats: segCats("Perf", false, "Ads", true), want: [4]ConsentState{csD, csG, csG, csD}, src: "segment"},
		{name: "segment consent-mode names", cfg: allGranted, cats: segCats("ad_user_data", false, "analytics_storage", true), want: [4]ConsentState{csG, csG, csD, csG}, src: "segment"},
		// /collect consent object
		{name: "collect granted", cats: collectCats("analytics", "granted", "ads", "granted", "ad_user_data", "granted", "ad_personalization", "granted"), want: all, src: "collect"},
		{name: "collect denied", cfg: allGranted, cats: collectCats("analytics", "denied", "ads", "denied", "ad_user_data", "denied", "ad_personalization", "denied"), want: dflt, src: "collect"},
		{name: "collect mixed", cats: collectCats("analytics", "granted", "ads", "denied"), want: [4]ConsentState{csG, csD, csD, csD}, src: "collect"},
		{name: "collect partial, default fills", cfg: allGranted, cats: collectCats("ad_user_data", "denied"), want: [4]ConsentState{csG, csG, csD, csG}, src: "collect"},
		// CMP cookies
		{name: "onetrust mixed", cfg: withCMP("OptanonConsent", "onetrust", nil), cookie: [2]string{"OptanonConsent", otMixed}, want: [4]ConsentState{csG, csD, csD, csD}, src: "cmp_cookie"},
		{name: "onetrust all", cfg: withCMP("OptanonConsent", "onetrust", nil), cookie: [2]string{"OptanonConsent", otAll}, want: all, src: "cmp_cookie"},
		{name: "onetrust none", cfg: both(allGranted, withCMP("OptanonConsent", "onetrust", nil)), cookie: [2]string{"OptanonConsent", otNone}, want: dflt, src: "cmp_cookie"},
		{name: "onetrust custom map", cfg: allGranted2(withCMP("OptanonConsent", "onetrust", map[string][]string{"C0003": {"analytics"}, "C0004": {"ads"}})),
			cookie: [2]string{"OptanonConsent", otMixed}, want: [4]ConsentState{csD, csD, csG, csG}, src: "cmp_cookie"},
		{name: "onetrust cookie absent", cfg: both(allGranted, withCMP("OptanonConsent", "onetrust", nil)), want: all, src: "default"},
		{name: "onetrust cookie garbage", cfg: both(allGranted, withCMP("OptanonConsent", "onetrust", nil)), cookie: [2]string{"OptanonConsent", "%%%garbage"}, want: all, src: "default"},
		{name: "cookiebot mixed", cfg: withCMP("CookieConsent", "cookiebot", nil), cookie: [2]string{"CookieConsent", cbMixed}, want: [4]ConsentState{csG, csD, csD, csD}, src: "cmp_cookie"},
		{name: "cookiebot none", cfg: both(allGranted, withCMP("CookieConsent", "cookiebot", nil)), cookie: [2]string{"CookieConsent", cbNone}, want: dflt, src: "cmp_cookie"},
		{name: "cookiebot not required", cfg: withCMP("CookieConsent", "cookiebot", nil), cookie: [2]string{"CookieConsent", "-1"}, want: all, src: "cmp_cookie"},
		{name: "tcf all (real)", cfg: withCMP("euconsent-v2", "tcf", nil), cookie: [2]string{"euconsent-v2", tcfRealAll11}, want: all, src: "cmp_cookie"},
		{name: "tcf none (real)", cfg: both(allGranted, withCMP("euconsent-v2", "tcf", nil)), cookie: [2]string{"euconsent-v2", tcfRealNone}, want: dflt, src: "cmp_cookie"},
		{name: "tcf 1-8 (real)", cfg: withCMP("euconsent-v2", "tcf", nil), cookie: [2]string{"euconsent-v2", tcfReal1to8}, want: all, src: "cmp_cookie"},
		{name: "tcf purpose one treatment (real)", cfg: both(allGranted, withCMP("euconsent-v2", "tcf", nil)), cookie: [2]string{"euconsent-v2", tcfRealP1T}, want: [4]ConsentState{csD, csG, csD, csD}, src: "cmp_cookie"},
		{name: "tcf storage and measurement only", cfg: withCMP("euconsent-v2", "tcf", nil), cookie: [2]string{"euconsent-v2", tcfString(false, 1, 7, 8)}, want: [4]ConsentState{csG, csG, csG, csD}, src: "cmp_cookie"},
		{name: "tcf profiles without storage", cfg: allGranted2(withCMP("euconsent-v2", "tcf", nil)), cookie: [2]string{"euconsent-v2", tcfString(false, 3, 4, 7, 8)}, want: [4]ConsentState{csD, csD, csD, csG}, src: "cmp_cookie"},
		{name: "tcf custom map", cfg: withCMP("euconsent-v2", "tcf", map[string][]string{"1": {"ads"}, "9": {"analytics"}}), cookie: [2]string{"euconsent-v2", tcfString(false, 1, 9)}, want: [4]ConsentState{csG, csG, csD, csD}, src: "cmp_cookie"},
		{name: "tcf v1 string ignored", cfg: both(allGranted, withCMP("euconsent-v2", "tcf", nil)), cookie: [2]string{"euconsent-v2", "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"}, want: all, src: "default"},
		// GPC
		{name: "gpc", cfg: allGranted, gpc: true, want: [4]ConsentState{csG, csD, csD, csD}, src: "gpc", gpcRec: true},
		{name: "gpc not honoured", cfg: both(allGranted, func(c *config.Consent) { c.HonorGPC = false }), gpc: true, want: all, src: "default", gpcRec: true},
		{name: "gpc beats gcs grant", gcs: "G111", gpc: true, want: [4]ConsentState{csG, csD, csD, csD}, src: "gpc", gpcRec: true},
		{name: "gpc beats collect grant", cats: collectCats("analytics", "granted", "ads", "granted", "ad_user_data", "granted", "ad_personalization", "granted"), gpc: true, want: [4]ConsentState{csG, csD, csD, csD}, src: "gpc", gpcRec: true},
		{name: "gcd denying all beats gpc", gcd: "13p3p3p3p5", gpc: true, want: dflt, src: "gcd", gpcRec: true},
		// server requests
		{name: "server default", server: true, want: all, src: "server"},
		{name: "server with payload consent", server: true, cats: collectCats("analytics", "denied"), want: [4]ConsentState{csD, csG, csG, csG}, src: "collect"},
		{name: "server with gcs", server: true, gcs: "G100", want: [4]ConsentState{csD, csD, csG, csG}, src: "gcs"},
		{name: "server ignores gpc and cmp cookie", server: true, gpc: true, cfg: withCMP("OptanonConsent", "onetrust", nil), cookie: [2]string{"OptanonConsent", otNone}, want: all, src: "server"},
		{name: "server default denied", server: true, cfg: func(c *config.Consent) { c.ServerDefault.Ads = "denied" }, want: [4]ConsentState{csG, csD, csG, csG}, src: "server"},
		// conflicting sources
		{name: "gcs grants, segment denies", gcs: "G111", cats: segCats("Analytics", false), cfg: allGranted, want: [4]ConsentState{csD, csG, csG, csG}, src: "segment"},
		{name: "cmp denies, gcs grants", cfg: withCMP("OptanonConsent", "onetrust", nil), gcs: "G111", cookie: [2]string{"OptanonConsent", otMixed}, want: [4]ConsentState{csG, csD, csD, csD}, src: "cmp_cookie"},
		{name: "everything grants", cfg: withCMP("OptanonConsent", "onetrust", nil), gcd: "13t3t3t3t5", cookie: [2]string{"OptanonConsent", otAll}, cats: collectCats("analytics", "granted"), want: all, src: "gcd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := csNew(t, tc.cfg)
			req := &Request{Server: tc.server, GPC: tc.gpc}
			if tc.cookie[0] != "" {
				req.Cookies = []Cookie{{Name: tc.cookie[0], Value: tc.cookie[1]}}
			}
			e := &Event{Consent: Consent{GCS: tc.gcs, GCD: tc.gcd, NPA: tc.npa, Categories: tc.cats}}
			s.Apply(req, e, &EventResult{})
			c := e.Consent
			got := [4]ConsentState{c.Analytics, c.Ads, c.AdUserData, c.AdPersonalization}
			if got != tc.want || c.Source != tc.src || c.GPC != tc.gpcRec {
				t.Errorf("got %v source %q gpc %v, want %v source %q gpc %v", got, c.Source, c.GPC, tc.want, tc.src, tc.gpcRec)
			}
			for i, st := range got {
				if st == Unknown {
					t.Errorf("purpose %d left unknown", i)
				}
			}
		})
	}
}

func allGranted2(f func(*config.Consent)) func(*config.Consent) { return both(allGranted, f) }

func TestNewConsentErrors(t *testing.T) {
	cfg := config.Default()
	cfg.Consent.Default.Ads = "maybe"
	cfg.Consent.ServerDefault.Analytics = ""
	cfg.Consent.CMPCookie = config.CMPCookie{Name: "x", Format: "didomi", Map: map[string][]string{"C1": {"ads", "sale"}}}
	_, err := NewConsent(cfg)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`consent.default: ads is "maybe"`, "consent.server_default: analytics", `"didomi"`, `unknown purpose "sale"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestConsentBeforeIdentity: with the consent stage first, identity sees
// decided purposes: denied analytics gets the cookieless id and no
// cookies, granted analytics a device cookie.
func TestConsentBeforeIdentity(t *testing.T) {
	cfg := idConfig("consent-identity-secret-0123456789")
	cs, err := NewConsent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &idClock{t: idT0}
	id := idNew(t, cfg, clk)
	p := NewPipeline(clk.now, cs, id)
	for _, tc := range []struct {
		gcs        string
		wantCookie bool
	}{{"G100", false}, {"G111", true}, {"", false}} {
		req := idReq("shop.example.com")
		e := &Event{Source: SourceGA4, Consent: Consent{GCS: tc.gcs}}
		var res Result
		p.Process(req, []*Event{e}, &res)
		got := false
		for _, c := range res.Cookies {
			if c.Name == "stk_did" && c.MaxAge > 0 {
				got = true
			}
		}
		if got != tc.wantCookie || e.DeviceID == "" {
			t.Errorf("gcs %q: device cookie %v (want %v), device id %q", tc.gcs, got, tc.wantCookie, e.DeviceID)
		}
	}
}

func TestParseGCDLetters(t *testing.T) {
	for c := byte(0); c < 128; c++ {
		st := gcdLetter(c)
		switch c {
		case 'n', 'r', 't', 'v', 'N', 'R', 'T', 'V':
			if st != Granted {
				t.Errorf("%q: %v", c, st)
			}
		case 'm', 'p', 'q', 'u', 'M', 'P', 'Q', 'U':
			if st != Denied {
				t.Errorf("%q: %v", c, st)
			}
		default:
			if st != Unknown {
				t.Errorf("%q: %v", c, st)
			}
		}
	}
}

// TestConsentNoAlloc: the common GA4 hit (gcs, gcd, npa) and the CMP
// cookie paths decide without allocating.
func TestConsentNoAlloc(t *testing.T) {
	s := csNew(t, withCMP("OptanonConsent", "onetrust", nil))
	req := &Request{Cookies: []Cookie{{Name: "OptanonConsent", Value: otMixed}}}
	e := &Event{Consent: Consent{GCS: "G111", GCD: "13t3t3t3t5l1", NPA: "1"}}
	var r EventResult
	if n := testing.AllocsPerRun(200, func() { s.Apply(req, e, &r) }); n != 0 {
		t.Errorf("GA4 hit with OneTrust cookie: %v allocs", n)
	}
	for _, tc := range []struct{ name, format, value string }{
		{"CookieConsent", "cookiebot", cbMixed},
		{"euconsent-v2", "tcf", tcfRealAll11},
	} {
		s := csNew(t, withCMP(tc.name, tc.format, nil))
		req := &Request{Cookies: []Cookie{{Name: tc.name, Value: tc.value}}}
		if n := testing.AllocsPerRun(200, func() { s.Apply(req, e, &r) }); n != 0 {
			t.Errorf("%s: %v allocs", tc.format, n)
		}
	}
	seg := &Event{Consent: Consent{Categories: segCats("Analytics", true, "Advertising", false)}}
	if n := testing.AllocsPerRun(200, func() { s.Apply(&Request{}, seg, &r) }); n != 0 {
		t.Errorf("segment categories: %v allocs", n)
	}
}

// BenchmarkConsentGA4: a GA4 hit with gcs and gcd (target: 0 allocs).
func BenchmarkConsentGA4(b *testing.B) {
	s := csNew(b, nil)
	req := &Request{}
	e := &Event{Consent: Consent{GCS: "G111", GCD: "13t3t3t3t5l1"}}
	var r EventResult
	b.ReportAllocs()
	for b.Loop() {
		s.Apply(req, e, &r)
	}
}

// BenchmarkConsentOneTrust: a browser hit whose consent is in a OneTrust
// cookie.
func BenchmarkConsentOneTrust(b *testing.B) {
	s := csNew(b, withCMP("OptanonConsent", "onetrust", nil))
	req := &Request{Cookies: []Cookie{{Name: "OptanonConsent", Value: otMixed}}}
	e := &Event{}
	var r EventResult
	b.ReportAllocs()
	for b.Loop() {
		s.Apply(req, e, &r)
	}
}

func FuzzGCD(f *testing.F) {
	for _, s := range []string{"13t3t3t3t5l1", "11p1p1p1p5", "13l3l3l2l1", "13t3tPt2t5l1", "13r3r3r3r5", "", "1", "11q1u1m1n5", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseGCD(s)
		if v.granted&v.denied != 0 || (v.granted|v.denied)&^purposeAll != 0 {
			t.Fatalf("%q: %+v", s, v)
		}
		for i, bit := range []uint8{purposeAds, purposeAnalytics, purposeAdUserData, purposeAdPersonalization} {
			want := Unknown
			if pos := 2 + 2*i; pos < len(s) {
				want = gcdLetter(s[pos])
			}
			if got := stateOf(bit, v.granted, v.denied); got != want {
				t.Fatalf("%q purpose %d: %v, want %v", s, i, got, want)
			}
		}
	})
}

func FuzzGCS(f *testing.F) {
	for _, s := range []string{"G100", "G111", "G110", "G101", "G1--", "G1", "", "G2111", "G1119"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseGCS(s)
		if v.granted&v.denied != 0 || (v.granted|v.denied)&^(purposeAds|purposeAnalytics) != 0 {
			t.Fatalf("%q: %+v", s, v)
		}
		if v.spoke() && !strings.HasPrefix(s, "G1") {
			t.Fatalf("%q spoke without the G1 prefix", s)
		}
	})
}

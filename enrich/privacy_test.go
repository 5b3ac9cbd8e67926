package enrich

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

const pvSecret = "privacy-test-secret-0123456789"

// pvConfig is the default config with one secret and the given IP
// policies.
func pvConfig(granted, denied string, secrets ...string) *config.Config {
	cfg := config.Default()
	cfg.Privacy.IP = config.IPPolicy{Granted: granted, Denied: denied}
	cfg.Secrets = nil
	if len(secrets) == 0 {
		secrets = []string{pvSecret}
	}
	for _, s := range secrets {
		cfg.Secrets = append(cfg.Secrets, config.Secret(s))
	}
	return cfg
}

func pvNew(t testing.TB, cfg *config.Config, clk *idClock) *Privacy {
	t.Helper()
	p, err := NewPrivacy(cfg, NewDailySalt(nil, clk.now, nil), clk.now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pvReq(ip string, at time.Time) *Request {
	return &Request{ClientIP: netip.MustParseAddr(ip), ReceivedAt: at}
}

func pvEvent(analytics, adUserData ConsentState) *Event {
	return &Event{Consent: Consent{Analytics: analytics, Ads: Denied, AdUserData: adUserData, AdPersonalization: Denied}}
}

func TestPrivacyIPPolicies(t *testing.T) {
	clk := &idClock{t: saltT0}
	for _, tc := range []struct {
		name, granted, denied string
		analytics             ConsentState
		ip                    string
		hash                  bool
		trunc                 string
		keep                  bool
	}{
		{name: "granted hash v4", granted: "hash", denied: "drop", analytics: Granted, ip: "203.0.113.77", hash: true},
		{name: "granted hash v6", granted: "hash", denied: "drop", analytics: Granted, ip: "2001:db8:1234:5678::9", hash: true},
		{name: "denied truncate v4", granted: "hash", denied: "truncate", analytics: Denied, ip: "203.0.113.77", trunc: "203.0.113.0"},
		{name: "denied truncate v6", granted: "hash", denied: "truncate", analytics: Denied, ip: "2001:db8:1234:5678::9", trunc: "2001:db8:1234::"},
		{name: "v4-mapped is v4", granted: "truncate", denied: "drop", analytics: Granted, ip: "::ffff:203.0.113.77", trunc: "203.0.113.0"},
		{name: "denied drop", granted: "keep", denied: "drop", analytics: Denied, ip: "203.0.113.77"},
		{name: "granted keep", granted: "keep", denied: "drop", analytics: Granted, ip: "203.0.113.77", keep: true},
		{name: "granted keep v6", granted: "keep", denied: "drop", analytics: Granted, ip: "2001:db8::1", keep: true},
		{name: "unknown counts as default (denied)", granted: "hash", denied: "truncate", analytics: Unknown, ip: "203.0.113.77", trunc: "203.0.113.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pvNew(t, pvConfig(tc.granted, tc.denied), clk)
			e := pvEvent(tc.analytics, Denied)
			e.Context.IPHash = "forged" // only the stage writes these
			p.Apply(pvReq(tc.ip, clk.now()), e, &EventResult{})
			c := e.Context
			if (c.IPHash != "") != tc.hash || c.IPTruncated != tc.trunc || (c.IP != "") != tc.keep {
				t.Fatalf("context %+v", c)
			}
			if tc.hash && (len(c.IPHash) != 32 || !isHexLower(c.IPHash)) {
				t.Fatalf("ip_hash %q", c.IPHash)
			}
			if tc.keep {
				ip, err := p.OpenIP(c.IP)
				if err != nil || ip != netip.MustParseAddr(tc.ip) {
					t.Fatalf("OpenIP %v %v", ip, err)
				}
			}
		})
	}
}

func isHexLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// TestPrivacyIPHashDays: the hash links a visitor within a UTC day and not
// across days, and after the second rotation nobody can recompute it.
func TestPrivacyIPHashDays(t *testing.T) {
	clk := &idClock{t: saltT0.Add(-time.Hour)}
	p := pvNew(t, pvConfig("hash", "hash"), clk)
	hash := func(ip string) string {
		e := pvEvent(Granted, Denied)
		p.Apply(pvReq(ip, clk.now()), e, &EventResult{})
		return e.Context.IPHash
	}
	a := hash("203.0.113.77")
	if hash("203.0.113.77") != a {
		t.Fatal("not stable within a day")
	}
	if hash("203.0.113.78") == a {
		t.Fatal("neighbour address, same hash")
	}
	clk.add(2 * time.Hour)
	if hash("203.0.113.77") == a {
		t.Fatal("linkable across days")
	}
	// A second instance (a restart) makes a new salt: even the same day
	// cannot be recomputed from the config.
	clk2 := &idClock{t: saltT0.Add(-time.Hour)}
	p2 := pvNew(t, pvConfig("hash", "hash"), clk2)
	e := pvEvent(Granted, Denied)
	p2.Apply(pvReq("203.0.113.77", clk2.now()), e, &EventResult{})
	if e.Context.IPHash == a {
		t.Fatal("the hash is derivable from the config")
	}
}

func TestPrivacyOpenIPRotatedSecret(t *testing.T) {
	clk := &idClock{t: saltT0}
	old := pvNew(t, pvConfig("keep", "keep", "old-secret-0123456789abcdef"), clk)
	e := pvEvent(Granted, Denied)
	old.Apply(pvReq("198.51.100.23", clk.now()), e, &EventResult{})
	sealed := e.Context.IP
	if sealed == "" || strings.Contains(sealed, "198.51") {
		t.Fatalf("sealed %q", sealed)
	}
	rotated := pvNew(t, pvConfig("keep", "keep", "new-secret-0123456789abcdef", "old-secret-0123456789abcdef"), clk)
	if ip, err := rotated.OpenIP(sealed); err != nil || ip.String() != "198.51.100.23" {
		t.Fatalf("after rotation: %v %v", ip, err)
	}
	// New seals use the newest secret.
	e2 := pvEvent(Granted, Denied)
	rotated.Apply(pvReq("198.51.100.23", clk.now()), e2, &EventResult{})
	if _, err := old.OpenIP(e2.Context.IP); err == nil {
		t.Fatal("sealed with the old secret after rotation")
	}
	if e2.Context.IP == sealed {
		t.Fatal("nonce reused")
	}
	dropped := pvNew(t, pvConfig("keep", "keep", "new-secret-0123456789abcdef"), clk)
	if _, err := dropped.OpenIP(sealed); err == nil {
		t.Fatal("opened with a secret that was removed")
	}
	for _, bad := range []string{"", "!!", sealed[:20], sealed[:len(sealed)-2] + "AA"} {
		if _, err := rotated.OpenIP(bad); err == nil {
			t.Errorf("OpenIP(%q) succeeded", bad)
		}
	}
}

func TestPrivacyServerRequestHasNoIP(t *testing.T) {
	clk := &idClock{t: saltT0}
	p := pvNew(t, pvConfig("keep", "hash"), clk)
	for _, st := range []ConsentState{Granted, Denied} {
		e := pvEvent(st, Granted)
		req := pvReq("10.1.2.3", clk.now())
		req.Server = true
		p.Apply(req, e, &EventResult{})
		if e.Context.IP != "" || e.Context.IPHash != "" || e.Context.IPTruncated != "" {
			t.Fatalf("server event got the backend's IP: %+v", e.Context)
		}
	}
}

func TestNewPrivacyErrors(t *testing.T) {
	cfg := pvConfig("hash", "obfuscate")
	if _, err := NewPrivacy(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), `privacy.ip.denied: "obfuscate"`) {
		t.Errorf("bad policy: %v", err)
	}
	cfg = pvConfig("keep", "drop")
	cfg.Secrets = nil
	if _, err := NewPrivacy(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "keep needs a secret") {
		t.Errorf("keep without secret: %v", err)
	}
	cfg = pvConfig("hash", "truncate")
	cfg.Secrets = nil
	if _, err := NewPrivacy(cfg, nil, nil); err != nil {
		t.Errorf("hash/truncate need no secret: %v", err)
	}
}

func TestPrivacyPIIGating(t *testing.T) {
	clk := &idClock{t: saltT0}
	pii := PII{Email: "Jane.Doe@Example.com", Phone: "+1 415 555 2671", FirstName: "Jane"}
	for _, tc := range []struct {
		name    string
		cfg     func(*config.Config)
		aud     ConsentState
		server  bool
		hashed  bool
		flagged bool
	}{
		{name: "granted: hashed", aud: Granted, hashed: true},
		{name: "denied: dropped", aud: Denied, flagged: true},
		{name: "unknown, default denied: dropped", aud: Unknown, flagged: true},
		{name: "unknown, default granted: hashed", aud: Unknown, hashed: true, cfg: func(c *config.Config) { c.Consent.Default.AdUserData = "granted" }},
		{name: "unknown, server default granted: hashed", aud: Unknown, server: true, hashed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pvConfig("hash", "truncate")
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			p := pvNew(t, cfg, clk)
			e := pvEvent(Granted, tc.aud)
			e.PII = pii
			req := pvReq("203.0.113.7", clk.now())
			req.Server = tc.server
			p.Apply(req, e, &EventResult{})
			if !e.PII.IsZero() {
				t.Fatal("raw PII left in the event")
			}
			if got := e.UserData.EM == sha("jane.doe@example.com") && e.UserData.PH == sha("14155552671") && e.UserData.FN == sha("jane"); got != tc.hashed {
				t.Fatalf("hashed %v, want %v: %+v", got, tc.hashed, e.UserData)
			}
			if !tc.hashed && e.UserData != (UserData{}) {
				t.Fatalf("user data kept: %+v", e.UserData)
			}
			if e.Quality.Has(FlagDroppedPII) != tc.flagged {
				t.Fatalf("dropped_pii %v", e.Quality.Has(FlagDroppedPII))
			}
		})
	}
	// A value that does not normalize is dropped and flagged even with
	// consent.
	p := pvNew(t, pvConfig("hash", "truncate"), clk)
	e := pvEvent(Granted, Granted)
	e.PII = PII{Email: "jane@example.com", Phone: "12"}
	p.Apply(pvReq("203.0.113.7", clk.now()), e, &EventResult{})
	if e.UserData.EM == "" || e.UserData.PH != "" || !e.Quality.Has(FlagDroppedPII) {
		t.Fatalf("%+v %v", e.UserData, e.Quality)
	}
}

func TestPrivacyScrubEvent(t *testing.T) {
	clk := &idClock{t: saltT0}
	p := pvNew(t, pvConfig("hash", "truncate"), clk)
	e := pvEvent(Granted, Granted)
	e.URL = "https://shop.example/thanks?email=jane%40example.com&order=42"
	e.Path = "/thanks"
	e.Referrer = "https://mail.example/inbox?from=+14155552671"
	e.Title = "Thanks Jane (jane@example.com)"
	e.UserID = " Jane@Example.com "
	e.AnonymousID = "585712067.1795442481"
	e.Attribution.UTMCampaign = "spring_jane@example.com"
	e.Attribution.Campaign = "spring_jane@example.com"
	e.Attribution.LastTouch.Campaign = "call +44 20 7946 0958"
	e.Properties = Props{
		{Key: "note", Kind: PropString, Str: "reach me at +49 30 901820"},
		{Key: "phone", Kind: PropString, Str: "5552671"},
		{Key: "sku", Kind: PropString, Str: "SKU-100012345678"},
		{Key: "n", Kind: PropNumber, Num: 4155552671},
	}
	p.Apply(pvReq("203.0.113.7", clk.now()), e, &EventResult{})
	for _, c := range []struct{ got, want string }{
		{e.URL, "https://shop.example/thanks?email=[redacted]&order=42"},
		{e.Path, "/thanks"},
		{e.Referrer, "https://mail.example/inbox?from=[redacted]"},
		{e.Title, "Thanks Jane ([redacted])"},
		{e.UserID, sha("jane@example.com")},
		{e.AnonymousID, "585712067.1795442481"},
		{e.Attribution.UTMCampaign, "[redacted]"}, // '_' belongs to an address
		{e.Attribution.Campaign, "[redacted]"},
		{e.Attribution.LastTouch.Campaign, "call [redacted]"},
		{e.Properties[0].Str, "reach me at [redacted]"},
		{e.Properties[1].Str, "[redacted]"},
		{e.Properties[2].Str, "SKU-100012345678"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if !e.Quality.Has(FlagPIIScrubbed) {
		t.Error("pii_scrubbed not set")
	}

	clean := pvEvent(Granted, Granted)
	clean.URL = "https://shop.example/p/shoe-42?utm_source=google&gclid=abc&_=1699999999999"
	clean.Title = "Shoe 42 – Summer Sale 2024-06-01"
	clean.UserID = "user-1234"
	p.Apply(pvReq("203.0.113.7", clk.now()), clean, &EventResult{})
	if clean.Quality.Has(FlagPIIScrubbed) || clean.URL != "https://shop.example/p/shoe-42?utm_source=google&gclid=abc&_=1699999999999" {
		t.Errorf("clean event changed: %q %v", clean.URL, clean.Quality)
	}
	// A user id that is a phone number is hashed as digits.
	ph := pvEvent(Granted, Granted)
	ph.UserID = "+1 415 555 2671"
	p.Apply(pvReq("203.0.113.7", clk.now()), ph, &EventResult{})
	if ph.UserID != sha("+14155552671") {
		t.Errorf("phone user id %q", ph.UserID)
	}
}

// TestReliabilityPrivacyCanary pushes known personal data through consent and
// privacy (and the pipeline) and checks that the stored form of the event
// contains none of it, raw or encoded, whatever the consent.
func TestReliabilityPrivacyCanary(t *testing.T) {
	const (
		email  = "Canary.Person+tag@Example.org"
		phone  = "+1 (415) 555-0134"
		digits = "4155550134"
		ipv4   = "198.51.100.201"
		ipv6   = "2001:db8:abcd:12::7"
		locNum = "555-0134"
	)
	forms := []string{
		email, strings.ToLower(email), url.QueryEscape(email), url.QueryEscape(strings.ToLower(email)),
		"canary.person", phone, digits, locNum, "14155550134", url.QueryEscape(phone),
		ipv4, ipv6, "Canary Person",
	}
	clk := &idClock{t: saltT0}
	for _, policy := range []string{"hash", "truncate", "keep", "drop"} {
		for _, gcs := range []string{"G111", "G100", ""} {
			for _, ip := range []string{ipv4, ipv6} {
				cfg := pvConfig(policy, policy)
				cfg.Consent.Default.AdUserData = "granted"
				cs, err := NewConsent(cfg)
				if err != nil {
					t.Fatal(err)
				}
				p := NewPipeline(clk.now, cs, pvNew(t, cfg, clk))
				e := &Event{
					Name: "lead_submitted", Source: SourceCollect,
					URL:      "https://shop.example/thanks?email=" + url.QueryEscape(email) + "&tel=" + url.QueryEscape(phone),
					Referrer: "https://shop.example/contact?phone=" + digits,
					Title:    "Thanks " + email + " / " + phone,
					UserID:   email,
					Consent:  Consent{GCS: gcs},
					PII: PII{Email: email, Phone: phone, FirstName: "Canary", LastName: "Person",
						City: "London", Zip: "E14 5AB", Country: "GB"},
					Properties: Props{{Key: "message", Kind: PropString, Str: "call " + phone + " or mail " + email}},
				}
				e.Attribution.UTMContent = email
				req := pvReq(ip, clk.now())
				var res Result
				p.Process(req, []*Event{e}, &res)
				out := string(e.AppendJSON(nil))
				for _, f := range forms {
					if strings.Contains(strings.ToLower(out), strings.ToLower(f)) {
						t.Errorf("policy %s gcs %q ip %s: %q leaked in %s", policy, gcs, ip, f, out)
					}
				}
			}
		}
	}
}

// BenchmarkPrivacyClean: an event with nothing to scrub and an IP to
// hash (target: 0 allocs; the hash is interned into the event's arena).
func BenchmarkPrivacyClean(b *testing.B) {
	clk := &idClock{t: saltT0}
	p := pvNew(b, pvConfig("hash", "truncate"), clk)
	req := pvReq("203.0.113.77", clk.now())
	var pool EventPool
	var r EventResult
	b.ReportAllocs()
	for b.Loop() {
		e := pool.Get()
		e.Consent.Analytics = Granted
		e.URL = "https://shop.example/products/shoe-42?utm_source=google&utm_medium=cpc&gclid=Cj0KCQjw-abc123"
		e.Path = "/products/shoe-42"
		e.Referrer = "https://www.google.com/"
		e.Title = "Shoe 42 – Summer Sale"
		e.Attribution.UTMSource, e.Attribution.UTMMedium = "google", "cpc"
		p.Apply(req, e, &r)
		pool.Put(e)
	}
}

// BenchmarkPrivacyPII: hashing a typical set of personal data.
func BenchmarkPrivacyPII(b *testing.B) {
	clk := &idClock{t: saltT0}
	p := pvNew(b, pvConfig("hash", "truncate"), clk)
	req := pvReq("203.0.113.77", clk.now())
	var pool EventPool
	var r EventResult
	b.ReportAllocs()
	for b.Loop() {
		e := pool.Get()
		e.Consent.Analytics, e.Consent.AdUserData = Granted, Granted
		e.PII = PII{Email: "Jane.Doe@Example.com", Phone: "+1 415 555 2671", FirstName: "Jane", LastName: "Doe", Zip: "94043", Country: "US"}
		p.Apply(req, e, &r)
		pool.Put(e)
	}
}

func TestPrivacyCleanNoAlloc(t *testing.T) {
	clk := &idClock{t: saltT0}
	p := pvNew(t, pvConfig("hash", "truncate"), clk)
	req := pvReq("203.0.113.77", clk.now())
	e := &Event{}
	fill := func() {
		e.Reset()
		e.Consent.Analytics = Granted
		e.URL = "https://shop.example/products/shoe-42?utm_source=google&gclid=Cj0KCQjw-abc123&_=1699999999999"
		e.Title = "Shoe 42 – Order 100012345678"
		e.UserID = "user-1234"
	}
	fill()
	p.Apply(req, e, &EventResult{}) // grow the arena
	if n := testing.AllocsPerRun(100, func() {
		fill()
		p.Apply(req, e, &EventResult{})
	}); n != 0 {
		t.Fatalf("%v allocs", n)
	}
	if e.Context.IPHash == "" {
		t.Fatal("no hash")
	}
}

// BenchmarkPrivacyPIIDistinct is BenchmarkPrivacyPII with a different
// phone number on every event, so no normalization is ever repeated.
func BenchmarkPrivacyPIIDistinct(b *testing.B) {
	clk := &idClock{t: saltT0}
	p := pvNew(b, pvConfig("hash", "truncate"), clk)
	req := pvReq("203.0.113.77", clk.now())
	var pool EventPool
	var r EventResult
	phones := make([]string, 1<<16)
	for i := range phones {
		phones[i] = fmt.Sprintf("+1 415 555 %04d", i%10000) + strings.Repeat(" ", i/10000)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := pool.Get()
		e.Consent.Analytics, e.Consent.AdUserData = Granted, Granted
		e.PII = PII{Email: "Jane.Doe@Example.com", Phone: phones[i%len(phones)], FirstName: "Jane", LastName: "Doe", Zip: "94043", Country: "US"}
		i++
		p.Apply(req, e, &r)
		pool.Put(e)
	}
}

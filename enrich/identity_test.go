package enrich

import (
	"bytes"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// idClock is a settable test clock.
type idClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *idClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *idClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var idT0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func idConfig(secrets ...string) *config.Config {
	cfg := config.Default()
	cfg.Secrets = nil
	for _, s := range secrets {
		cfg.Secrets = append(cfg.Secrets, config.Secret(s))
	}
	return cfg
}

func idNew(t testing.TB, cfg *config.Config, clk *idClock) *Identity {
	t.Helper()
	id, err := NewIdentity(cfg, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// idReq builds a browser request carrying the given cookies.
func idReq(host string, cookies ...SetCookie) *Request {
	r := &Request{
		Host: host, Secure: true, UserAgent: "Mozilla/5.0 test",
		ClientIP: netip.MustParseAddr("203.0.113.7"),
	}
	for _, c := range cookies {
		if c.MaxAge >= 0 {
			r.Cookies = append(r.Cookies, Cookie{Name: c.Name, Value: c.Value})
		}
	}
	return r
}

func idEvent(src Source) *Event {
	return &Event{Name: "page_viewed", Source: src}
}

// idRun runs identity over events of one request, as the pipeline does.
func idRun(id *Identity, clk *idClock, req *Request, events ...*Event) *Result {
	res := &Result{}
	if req.ReceivedAt.IsZero() {
		req.ReceivedAt = clk.now()
	}
	for _, e := range events {
		res.Events = append(res.Events, EventResult{})
		id.Apply(req, e, &res.Events[len(res.Events)-1])
	}
	id.Finish(req, events, res)
	return res
}

func idCookie(t testing.TB, res *Result, name string) (SetCookie, bool) {
	t.Helper()
	var found SetCookie
	n := 0
	for _, c := range res.Cookies {
		if c.Name == name {
			found = c
			n++
		}
	}
	if n > 1 {
		t.Fatalf("cookie %s set %d times in one answer", name, n)
	}
	return found, n == 1
}

var idUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestIdentityNewVisitor(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	e := idEvent(SourceGA4)
	res := idRun(id, clk, idReq("shop.example.com"), e)

	if !idUUID.MatchString(e.DeviceID) {
		t.Errorf("device id %q is not a UUIDv4", e.DeviceID)
	}
	if !idUUID.MatchString(e.SessionID) || e.SessionID == e.DeviceID {
		t.Errorf("session id %q", e.SessionID)
	}
	did, ok := idCookie(t, res, "stk_did")
	if !ok {
		t.Fatal("no stk_did cookie")
	}
	want := SetCookie{Name: "stk_did", Value: did.Value, Domain: "example.com", MaxAge: 400 * 24 * time.Hour, HTTPOnly: true, Secure: true}
	if did != want {
		t.Errorf("stk_did = %+v, want %+v", did, want)
	}
	if len(did.Value) != 44 {
		t.Errorf("stk_did value length %d", len(did.Value))
	}
	ses, ok := idCookie(t, res, "stk_ses")
	if !ok || ses.MaxAge != 30*time.Minute || !ses.HTTPOnly || ses.Domain != "example.com" {
		t.Errorf("stk_ses = %+v", ses)
	}
	if _, ok := idCookie(t, res, "stk_tch"); ok {
		t.Error("stk_tch set without touches")
	}
	fbp, ok := idCookie(t, res, "_fbp")
	if !ok {
		t.Fatal("no _fbp created")
	}
	if fbp.HTTPOnly || fbp.MaxAge != 90*24*time.Hour || fbp.Domain != "example.com" {
		t.Errorf("_fbp attributes %+v", fbp)
	}
	if !regexp.MustCompile(`^fb\.1\.` + "1741944413000" + `\.[1-9][0-9]{9}$`).MatchString(fbp.Value) {
		t.Errorf("_fbp = %q, want fb.1.<ms>.<10 digits>", fbp.Value)
	}
	if e.Attribution.FBP != fbp.Value {
		t.Errorf("event fbp %q, cookie %q", e.Attribution.FBP, fbp.Value)
	}
	if _, ok := idCookie(t, res, "_fbc"); ok {
		t.Error("_fbc set without a click")
	}
}

func TestIdentityReturningVisitorAndSession(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	e1 := idEvent(SourceCollect)
	res := idRun(id, clk, idReq("shop.example.com"), e1)

	steps := []struct {
		after       time.Duration
		sameSession bool
	}{
		{20 * time.Minute, true},  // within idle
		{29 * time.Minute, true},  // activity refreshed the session
		{31 * time.Minute, false}, // idle timeout: new session
		{time.Minute, true},
	}
	prevSession := e1.SessionID
	for i, s := range steps {
		clk.add(s.after)
		e := idEvent(SourceCollect)
		next := idRun(id, clk, idReq("shop.example.com", res.Cookies...), e)
		if e.DeviceID != e1.DeviceID {
			t.Fatalf("step %d: device id changed %q → %q", i, e1.DeviceID, e.DeviceID)
		}
		if got := e.SessionID == prevSession; got != s.sameSession {
			t.Errorf("step %d (+%s): same session = %v, want %v", i, s.after, got, s.sameSession)
		}
		if d, _ := idCookie(t, next, "stk_did"); d.MaxAge != 400*24*time.Hour {
			t.Errorf("step %d: device cookie not refreshed: %+v", i, d)
		}
		if _, ok := idCookie(t, next, "_fbp"); !ok {
			t.Errorf("step %d: _fbp not re-set", i)
		}
		if e.Attribution.FBP != e1.Attribution.FBP {
			t.Errorf("step %d: _fbp changed", i)
		}
		prevSession = e.SessionID
		res = next
	}
}

func TestIdentityOldSecretVerifies(t *testing.T) {
	clk := &idClock{t: idT0}
	old := idNew(t, idConfig("old-secret-0123456789"), clk)
	e1 := idEvent(SourceCollect)
	res1 := idRun(old, clk, idReq("shop.example.com"), e1)

	rotated := idNew(t, idConfig("new-secret-0123456789", "old-secret-0123456789"), clk)
	e2 := idEvent(SourceCollect)
	res2 := idRun(rotated, clk, idReq("shop.example.com", res1.Cookies...), e2)
	if e2.DeviceID != e1.DeviceID || e2.SessionID != e1.SessionID {
		t.Fatalf("rotation lost ids: %q/%q → %q/%q", e1.DeviceID, e1.SessionID, e2.DeviceID, e2.SessionID)
	}
	d1, _ := idCookie(t, res1, "stk_did")
	d2, _ := idCookie(t, res2, "stk_did")
	if d1.Value == d2.Value {
		t.Fatal("device cookie not re-issued with the newest secret")
	}
	// The re-issued cookies verify with the new secret alone.
	newOnly := idNew(t, idConfig("new-secret-0123456789"), clk)
	e3 := idEvent(SourceCollect)
	idRun(newOnly, clk, idReq("shop.example.com", res2.Cookies...), e3)
	if e3.DeviceID != e1.DeviceID || e3.SessionID != e1.SessionID {
		t.Errorf("re-issued cookies do not verify with the new secret: %q/%q", e3.DeviceID, e3.SessionID)
	}
	// And a cookie signed with the old secret only does not verify there.
	e4 := idEvent(SourceCollect)
	idRun(newOnly, clk, idReq("shop.example.com", res1.Cookies...), e4)
	if e4.DeviceID == e1.DeviceID {
		t.Error("cookie signed with a removed secret still verifies")
	}
}

func TestIdentityBadCookiesReplaced(t *testing.T) {
	clk := &idClock{t: idT0}
	cfg := idConfig("secret-one-0123456789")
	id := idNew(t, cfg, clk)
	e0 := idEvent(SourceCollect)
	good := idRun(id, clk, idReq("shop.example.com"), e0)
	gd, _ := idCookie(t, good, "stk_did")
	gs, _ := idCookie(t, good, "stk_ses")

	foreign := idNew(t, idConfig("someone-else-0123456789"), clk)
	fo := idRun(foreign, clk, idReq("shop.example.com"), idEvent(SourceCollect))
	fd, _ := idCookie(t, fo, "stk_did")
	other := idRun(id, clk, idReq("shop.example.com"), idEvent(SourceCollect))
	os, _ := idCookie(t, other, "stk_ses")

	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name, device, session string
		newDevice, newSession bool
	}{
		{"valid", gd.Value, gs.Value, false, false},
		{"tampered device tag", flip(gd.Value, 40), gs.Value, true, true},
		{"tampered device id", flip(gd.Value, 5), gs.Value, true, true},
		{"foreign device", fd.Value, gs.Value, true, true},
		{"garbled device", "not-a-cookie", gs.Value, true, true},
		{"empty device", "", gs.Value, true, true},
		{"huge device", strings.Repeat("A", 5000), gs.Value, true, true},
		{"device as session", gd.Value, gd.Value, false, true},
		{"session from another device", gd.Value, os.Value, false, true},
		{"tampered session", gd.Value, flip(gs.Value, 30), false, true},
		{"session as device", gs.Value, gs.Value, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := idEvent(SourceCollect)
			req := idReq("shop.example.com")
			req.Cookies = []Cookie{{"stk_did", tc.device}, {"stk_ses", tc.session}}
			res := idRun(id, clk, req, e)
			if got := e.DeviceID != e0.DeviceID; got != tc.newDevice {
				t.Errorf("new device = %v, want %v", got, tc.newDevice)
			}
			if got := e.SessionID != e0.SessionID; got != tc.newSession {
				t.Errorf("new session = %v, want %v", got, tc.newSession)
			}
			d, _ := idCookie(t, res, "stk_did")
			if tc.newDevice && d.Value == tc.device {
				t.Error("bad device cookie re-set as is")
			}
			// The replacement verifies.
			e2 := idEvent(SourceCollect)
			idRun(id, clk, idReq("shop.example.com", res.Cookies...), e2)
			if e2.DeviceID != e.DeviceID || e2.SessionID != e.SessionID {
				t.Error("replacement cookies do not verify")
			}
		})
	}
}

func TestIdentityBatchSharesIDs(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	events := []*Event{idEvent(SourceGA4), idEvent(SourceGA4), idEvent(SourceGA4)}
	res := idRun(id, clk, idReq("shop.example.com"), events...)
	for i, e := range events[1:] {
		if e.DeviceID != events[0].DeviceID || e.SessionID != events[0].SessionID || e.Attribution.FBP != events[0].Attribution.FBP {
			t.Errorf("event %d has its own ids", i+1)
		}
	}
	for _, n := range []string{"stk_did", "stk_ses", "_fbp"} {
		if _, ok := idCookie(t, res, n); !ok { // idCookie fails on duplicates
			t.Errorf("%s not set", n)
		}
	}
	if len(res.Cookies) != 3 {
		t.Errorf("cookies = %+v", res.Cookies)
	}
}

func TestIdentityServerRequest(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	browser := idRun(id, clk, idReq("shop.example.com"), idEvent(SourceCollect))
	req := idReq("shop.example.com", browser.Cookies...)
	req.Server = true
	e := idEvent(SourceBackend)
	e.DeviceID = "from-payload"
	res := idRun(id, clk, req, e)
	if len(res.Cookies) != 0 {
		t.Errorf("server request got cookies %+v", res.Cookies)
	}
	if e.DeviceID != "from-payload" || e.SessionID != "" || e.Attribution.FBP != "" {
		t.Errorf("server event touched: %+v", e)
	}
	if got := id.PageCookies(nil, req, Granted); len(got) != 0 {
		t.Errorf("PageCookies on a server request: %+v", got)
	}
}

func TestIdentityConsentDenied(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	granted := idEvent(SourceGA4)
	granted.Attribution.LastTouch = Touch{Source: "google", Medium: "cpc", At: idT0}
	first := idRun(id, clk, idReq("shop.example.com"), granted)
	first.Cookies = append(first.Cookies, SetCookie{Name: "_fbc", Value: "fb.1.1741944413000.IwAR2abc"})

	denied := func(r *Request) *Event {
		e := idEvent(SourceGA4)
		e.Consent.Analytics, e.Consent.Ads = Denied, Denied
		return e
	}
	req := idReq("shop.example.com", first.Cookies...)
	e := denied(req)
	res := idRun(id, clk, req, e)

	if !strings.HasPrefix(e.DeviceID, "d1.") || len(e.DeviceID) != 25 {
		t.Errorf("cookieless id %q", e.DeviceID)
	}
	if e.SessionID != "" || e.Attribution.FBP != "" || e.Attribution.FBC != "" || !e.Attribution.LastTouch.IsZero() {
		t.Errorf("denied event carries cookie data: %+v", e)
	}
	names := map[string]bool{}
	for _, c := range res.Cookies {
		if c.MaxAge >= 0 || c.Value != "" {
			t.Errorf("cookie %s set while denied: %+v", c.Name, c)
		}
		if c.Domain != "example.com" {
			t.Errorf("expiry of %s on domain %q", c.Name, c.Domain)
		}
		names[c.Name] = true
	}
	for _, n := range []string{"stk_did", "stk_ses", "stk_tch", "_fbp", "_fbc"} {
		if !names[n] {
			t.Errorf("%s not expired (got %v)", n, names)
		}
	}

	// Nothing to expire: nothing set.
	if res := idRun(id, clk, idReq("shop.example.com"), denied(nil)); len(res.Cookies) != 0 {
		t.Errorf("cookies for a cookieless visitor: %+v", res.Cookies)
	}

	// Stable within the UTC day, different the next day and for another client.
	at := func(d time.Duration, ip, ua string) string {
		c := &idClock{t: idT0.Add(d)}
		r := idReq("shop.example.com")
		r.ClientIP, r.UserAgent = netip.MustParseAddr(ip), ua
		ev := denied(r)
		idRun(id, c, r, ev)
		return ev.DeviceID
	}
	base := at(0, "203.0.113.7", "UA")
	if got := at(14*time.Hour, "203.0.113.7", "UA"); got != base {
		t.Errorf("cookieless id changed within the day: %q vs %q", base, got)
	}
	if got := at(15*time.Hour, "203.0.113.7", "UA"); got == base {
		t.Error("cookieless id did not change the next UTC day")
	}
	if got := at(time.Hour, "203.0.113.8", "UA"); got == base {
		t.Error("cookieless id ignores the IP")
	}
	if got := at(time.Hour, "203.0.113.7", "UA2"); got == base {
		t.Error("cookieless id ignores the user agent")
	}
	// Another secret gives another id.
	other := idNew(t, idConfig("secret-two-0123456789"), clk)
	r := idReq("shop.example.com")
	ev := denied(r)
	r.UserAgent = "UA"
	idRun(other, &idClock{t: idT0}, r, ev)
	if ev.DeviceID == base {
		t.Error("cookieless id does not depend on the secret")
	}
}

func TestIdentityAdsDeniedOnly(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	e := idEvent(SourceCollect)
	e.Consent.Analytics, e.Consent.Ads = Granted, Denied
	res := idRun(id, clk, idReq("shop.example.com", SetCookie{Name: "_fbp", Value: "fb.1.1700000000000.1234567890"}), e)
	if _, ok := idCookie(t, res, "stk_did"); !ok {
		t.Error("analytics granted but no device cookie")
	}
	fbp, ok := idCookie(t, res, "_fbp")
	if !ok || fbp.MaxAge != -1 || fbp.HTTPOnly {
		t.Errorf("_fbp not expired: %+v", fbp)
	}
	if e.Attribution.FBP != "" {
		t.Error("_fbp read without ad consent")
	}
}

func TestIdentityMetaCookies(t *testing.T) {
	clk := &idClock{t: idT0}
	cfg := idConfig("secret-one-0123456789")
	id := idNew(t, cfg, clk)
	const fbp = "fb.1.1700000000000.1234567890"
	const fbc = "fb.1.1700000000001.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"

	t.Run("kept", func(t *testing.T) {
		e := idEvent(SourceCollect)
		res := idRun(id, clk, idReq("shop.example.com", SetCookie{Name: "_fbp", Value: fbp}, SetCookie{Name: "_fbc", Value: fbc}), e)
		if e.Attribution.FBP != fbp || e.Attribution.FBC != fbc {
			t.Errorf("fbp/fbc = %q/%q", e.Attribution.FBP, e.Attribution.FBC)
		}
		p, _ := idCookie(t, res, "_fbp")
		c, _ := idCookie(t, res, "_fbc")
		if p.Value != fbp || c.Value != fbc || c.HTTPOnly || c.MaxAge != 90*24*time.Hour {
			t.Errorf("re-set %+v %+v", p, c)
		}
	})
	t.Run("malformed not used nor overwritten", func(t *testing.T) {
		e := idEvent(SourceCollect)
		res := idRun(id, clk, idReq("shop.example.com", SetCookie{Name: "_fbp", Value: "garbage"}, SetCookie{Name: "_fbc", Value: "fb.x.1.y"}), e)
		if e.Attribution.FBP != "" || e.Attribution.FBC != "" {
			t.Errorf("malformed meta cookies used: %q %q", e.Attribution.FBP, e.Attribution.FBC)
		}
		if _, ok := idCookie(t, res, "_fbp"); ok {
			t.Error("malformed _fbp overwritten")
		}
	})
	t.Run("new click wins", func(t *testing.T) {
		e := idEvent(SourceCollect)
		req := idReq("shop.example.com", SetCookie{Name: "_fbc", Value: fbc})
		req.ReceivedAt = clk.now()
		id.Apply(req, e, &EventResult{})
		// attribution saw a new fbclid on this page
		newFBC := "fb.1.1741944413000.newclick"
		e.Attribution.FBC = newFBC
		e2 := idEvent(SourceCollect)
		id.Apply(req, e2, &EventResult{}) // a later event of the batch still has the cookie's
		res := &Result{}
		id.Finish(req, []*Event{e, e2}, res)
		if c, _ := idCookie(t, res, "_fbc"); c.Value != newFBC {
			t.Errorf("_fbc = %q, want the new click", c.Value)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		cfg := idConfig("secret-one-0123456789")
		cfg.Cookies.Meta.Enabled = false
		off := idNew(t, cfg, clk)
		e := idEvent(SourceCollect)
		res := idRun(off, clk, idReq("shop.example.com", SetCookie{Name: "_fbc", Value: fbc}), e)
		if _, ok := idCookie(t, res, "_fbp"); ok {
			t.Error("_fbp created with meta disabled")
		}
		if _, ok := idCookie(t, res, "_fbc"); ok {
			t.Error("_fbc re-set with meta disabled")
		}
		if e.Attribution.FBC != fbc {
			t.Error("_fbc not read with meta disabled")
		}
	})
}

func TestValidFBCookie(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
		ms int64
	}{
		{"fb.1.1554763741205.1098115397", true, 1554763741205},
		{"fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk", true, 1554763741205},
		{"fb.2.1554763741205.abc.AQ", true, 1554763741205}, // fbclid byte for byte, with a dot
		{"fb.0.1.x", true, 1},
		{"fb.1.1554763741205.", false, 0},
		{"fb.1.1554763741205", false, 0},
		{"fb.a.1554763741205.1", false, 0},
		{"fb.1.15547637412x5.1", false, 0},
		{"fb.1.1.a b", false, 0},
		{"fb.1.1.a;b", false, 0},
		{"fb.1.1.\u00e9", false, 0},
		{"FB.1.1.1", false, 0},
		{"", false, 0},
		{"fb.1.1." + strings.Repeat("a", 600), false, 0},
	}
	for _, tc := range tests {
		if got := ValidFBCookie(tc.v); got != tc.ok {
			t.Errorf("ValidFBCookie(%q) = %v", tc.v, got)
		}
		if got := FBCookieMillis(tc.v); got != tc.ms {
			t.Errorf("FBCookieMillis(%q) = %d", tc.v, got)
		}
	}
}

func TestCookieScope(t *testing.T) {
	tests := []struct {
		host, domain string
		fbIndex      int
	}{
		{"shop.example.com", "example.com", 1},
		{"Shop.Example.COM:8443", "example.com", 1},
		{"example.com", "example.com", 1},
		{"example.com.", "example.com", 1},
		{"www.example.co.uk", "example.co.uk", 2},
		{"track.shop.example.co.uk:443", "example.co.uk", 2},
		{"my-shop.myshopify.com", "", 2},
		{"me.github.io", "", 2},
		{"app-123.vercel.app", "", 2},
		{"myshopify.com", "", 1},
		{"co.uk", "", 1},
		{"127.0.0.1", "", 0},
		{"127.0.0.1:8080", "", 0},
		{"[::1]:8080", "", 0},
		{"::1", "", 0},
		{"[2001:db8::1]", "", 0},
		{"localhost", "", 0},
		{"localhost:3000", "", 0},
		{"shop.localhost:3000", "", 0},
		{"intranet", "", 0},
		{"", "", 0},
		{"shop.test", "shop.test", 1}, // unlisted TLD: default rule
	}
	for _, tc := range tests {
		got := cookieScopeOf(tc.host)
		if got.domain != tc.domain || got.fbIndex != tc.fbIndex {
			t.Errorf("cookieScopeOf(%q) = %+v, want domain %q index %d", tc.host, got, tc.domain, tc.fbIndex)
		}
	}
	// The scope reaches the cookies, including _fbp's subdomain index.
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	res := idRun(id, clk, idReq("my-shop.myshopify.com"), idEvent(SourceCollect))
	for _, c := range res.Cookies {
		if c.Domain != "" {
			t.Errorf("%s has Domain %q on a private suffix", c.Name, c.Domain)
		}
	}
	if p, _ := idCookie(t, res, "_fbp"); !strings.HasPrefix(p.Value, "fb.2.") {
		t.Errorf("_fbp %q: subdomain index for a host-only cookie on a.b.c", p.Value)
	}
}

func TestIdentitySecureFlag(t *testing.T) {
	tests := []struct {
		cfgSecure, reqSecure, want bool
	}{
		{true, true, true},
		{true, false, false}, // plain http from a trusted proxy / dev
		{false, true, false},
		{false, false, false},
	}
	for _, tc := range tests {
		clk := &idClock{t: idT0}
		cfg := idConfig("secret-one-0123456789")
		cfg.Cookies.Secure = tc.cfgSecure
		id := idNew(t, cfg, clk)
		req := idReq("shop.example.com")
		req.Secure = tc.reqSecure
		res := idRun(id, clk, req, idEvent(SourceCollect))
		if len(res.Cookies) == 0 {
			t.Fatal("no cookies")
		}
		for _, c := range res.Cookies {
			if c.Secure != tc.want {
				t.Errorf("cfg %v req %v: %s Secure = %v", tc.cfgSecure, tc.reqSecure, c.Name, c.Secure)
			}
		}
	}
}

func TestIdentityTouches(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	first := Touch{Source: "google", Medium: "cpc", Campaign: "spring_sale", Channel: "Paid Search", ClickIDKind: "gclid", At: idT0.Add(-48 * time.Hour)}
	last := Touch{Source: "newsletter", Medium: "email", Campaign: "march", Channel: "Email", At: idT0}

	// Attribution (after identity) sets the touches; Finish writes them.
	req := idReq("shop.example.com")
	req.ReceivedAt = clk.now()
	e := idEvent(SourceCollect)
	id.Apply(req, e, &EventResult{})
	if !e.Attribution.FirstTouch.IsZero() {
		t.Fatal("touches from nowhere")
	}
	e.Attribution.FirstTouch, e.Attribution.LastTouch = first, last
	res := &Result{}
	id.Finish(req, []*Event{e}, res)
	tch, ok := idCookie(t, res, "stk_tch")
	if !ok || !tch.HTTPOnly || tch.MaxAge != 400*24*time.Hour {
		t.Fatalf("stk_tch = %+v", tch)
	}

	// The next request reads them back.
	clk.add(time.Minute)
	e2 := idEvent(SourceCollect)
	res2 := idRun(id, clk, idReq("shop.example.com", res.Cookies...), e2)
	if e2.Attribution.FirstTouch != first || e2.Attribution.LastTouch != last {
		t.Errorf("touches read back\n got %+v %+v\nwant %+v %+v", e2.Attribution.FirstTouch, e2.Attribution.LastTouch, first, last)
	}
	if _, ok := idCookie(t, res2, "stk_tch"); ok {
		t.Error("unchanged touches re-written")
	}
	// Weeks later, unchanged touches are re-written so they do not expire.
	clk.add(40 * 24 * time.Hour)
	cookies := append([]SetCookie{tch}, res2.Cookies...)
	res3 := idRun(id, clk, idReq("shop.example.com", cookies...), idEvent(SourceCollect))
	if _, ok := idCookie(t, res3, "stk_tch"); !ok {
		t.Error("old touches cookie not refreshed")
	}
	// A touches cookie of another device is ignored.
	other := idRun(id, clk, idReq("shop.example.com"), idEvent(SourceCollect))
	od, _ := idCookie(t, other, "stk_did")
	e4 := idEvent(SourceCollect)
	idRun(id, clk, idReq("shop.example.com", od, tch), e4)
	if !e4.Attribution.FirstTouch.IsZero() {
		t.Error("touches cookie of another device accepted")
	}
}

func TestIdentityTouchesBounded(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	long := strings.Repeat("é", 400) // 800 bytes, 2-byte runes
	tc := Touch{Source: long, Medium: long, Campaign: "x" + long, Channel: long, ClickIDKind: long, At: idT0}
	req := idReq("shop.example.com")
	req.ReceivedAt = clk.now()
	e := idEvent(SourceCollect)
	id.Apply(req, e, &EventResult{})
	e.Attribution.FirstTouch, e.Attribution.LastTouch = tc, tc
	res := &Result{}
	id.Finish(req, []*Event{e}, res)
	c, ok := idCookie(t, res, "stk_tch")
	if !ok {
		t.Fatal("no stk_tch")
	}
	if len(c.Value) > 1024 {
		t.Errorf("stk_tch is %d bytes", len(c.Value))
	}
	e2 := idEvent(SourceCollect)
	idRun(id, clk, idReq("shop.example.com", res.Cookies...), e2)
	ft := e2.Attribution.FirstTouch
	if ft.Campaign == "" || !strings.HasPrefix(tc.Campaign, ft.Campaign) || len(ft.Campaign) > 150 {
		t.Errorf("campaign truncated to %d bytes: %q", len(ft.Campaign), ft.Campaign)
	}
	for _, s := range []string{ft.Source, ft.Medium, ft.Campaign, ft.Channel, ft.ClickIDKind} {
		if !strings.HasPrefix(long, strings.TrimPrefix(s, "x")) || strings.ContainsRune(s, '\uFFFD') {
			t.Errorf("field cut inside a rune: %q", s)
		}
	}
}

func TestIdentityFoldsBatchTouches(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	req := idReq("shop.example.com")
	req.ReceivedAt = clk.now()
	a, b := idEvent(SourceGA4), idEvent(SourceGA4)
	id.Apply(req, a, &EventResult{})
	id.Apply(req, b, &EventResult{})
	click := Touch{Source: "google", Medium: "cpc", At: idT0}
	a.Attribution.FirstTouch, a.Attribution.LastTouch = click, click // the landing hit
	res := &Result{}
	id.Finish(req, []*Event{a, b}, res) // b, later, saw no campaign
	e := idEvent(SourceGA4)
	idRun(id, clk, idReq("shop.example.com", res.Cookies...), e)
	if e.Attribution.LastTouch != click || e.Attribution.FirstTouch != click {
		t.Errorf("batch touch lost: %+v", e.Attribution)
	}
}

func TestIdentityGAFill(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789"), clk)
	cookies := []SetCookie{
		{Name: "_ga", Value: "GA1.1.585712067.1795442481"},
		{Name: "_ga_TEST123", Value: "GS2.1.s1795442481$o3$g0$t1795442483$j58$l0$h679041404"},
		{Name: "_ga_OTHER", Value: "GS1.1.1689765380.9.1.1689766550.0.0.0"},
	}
	tests := []struct {
		name    string
		ev      Event
		cid     string
		sid     string
		sct     int64
		consent ConsentState
	}{
		{"fills all", Event{Source: SourceGA4, GAMeasurementID: "G-TEST123"}, "585712067.1795442481", "1795442481", 3, Unknown},
		{"other stream GS1", Event{Source: SourceGA4, GAMeasurementID: "G-OTHER"}, "585712067.1795442481", "1689765380", 9, Unknown},
		{"keeps hit values", Event{Source: SourceGA4, GAMeasurementID: "G-TEST123", AnonymousID: "1.2", GASessionID: "77", GASessionNumber: 5}, "1.2", "77", 5, Unknown},
		{"unknown stream", Event{Source: SourceGA4, GAMeasurementID: "G-NOPE"}, "585712067.1795442481", "", 0, Unknown},
		{"not ga4", Event{Source: SourceSegment, GAMeasurementID: "G-TEST123"}, "", "", 0, Unknown},
		{"analytics denied", Event{Source: SourceGA4, GAMeasurementID: "G-TEST123"}, "", "", 0, Denied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.ev
			e.Consent.Analytics = tc.consent
			idRun(id, clk, idReq("shop.example.com", cookies...), &e)
			if e.AnonymousID != tc.cid || e.GASessionID != tc.sid || e.GASessionNumber != tc.sct {
				t.Errorf("got cid %q sid %q sct %d", e.AnonymousID, e.GASessionID, e.GASessionNumber)
			}
		})
	}
}

func TestParseGACookie(t *testing.T) {
	tests := []struct{ v, cid string }{
		{"GA1.1.585712067.1795442481", "585712067.1795442481"},
		{"GA1.2.1827526090.1689745728", "1827526090.1689745728"},
		{"GA1.3.6542754367.1545651155", "6542754367.1545651155"},
		{"GA1.1.585712067", ""},
		{"GA1.1.585712067.17954x2481", ""},
		{"GA1.1..1795442481", ""},
		{"GA2.1.585712067.1795442481", ""},
		{"GA1.1.585712067.1795442481.9", ""},
		{"FPID2.2.abc", ""},
		{"", ""},
	}
	for _, tc := range tests {
		cid, ok := ParseGACookie(tc.v)
		if cid != tc.cid || ok != (tc.cid != "") {
			t.Errorf("ParseGACookie(%q) = %q, %v", tc.v, cid, ok)
		}
	}
}

func TestParseGASessionCookie(t *testing.T) {
	tests := []struct {
		v    string
		want GASession
		ok   bool
	}{
		// GS1, from gtag.js before 2025.
		{"GS1.1.1689765380.3.1.1689766550.0.0.0", GASession{"1689765380", 3, true, 1689766550}, true},
		{"GS1.1.1689828668.4.0.1689828668.0.0.0", GASession{"1689828668", 4, false, 1689828668}, true},
		{"GS1.2.1689828668.4", GASession{"1689828668", 4, false, 0}, true},
		// GS2, from the gtag.js fixtures (shared/fixtures/ga4/gtag.ndjson).
		{"GS2.1.s1795442481$o1$g0$t1795442481$j60$l0$h679041404", GASession{"1795442481", 1, false, 1795442481}, true},
		{"GS2.1.s1795442481$o1$g1$t1795442493$j48$l0$h679041404", GASession{"1795442481", 1, true, 1795442493}, true},
		{"GS2.1.s1795442496$o12$g0$t1795442496$j60$l0$h1719889105$dAbC", GASession{"1795442496", 12, false, 1795442496}, true},
		{"GS2.1.o2$s1795442496", GASession{"1795442496", 2, false, 0}, true}, // order-independent
		{"GS2.1.s1795442481", GASession{}, false},                            // no session number
		{"GS2.1.sabc$o1", GASession{}, false},
		{"GS2.1.s1$oX", GASession{}, false},
		{"GS1.1.abc.1", GASession{}, false},
		{"GS1.1.1689765380", GASession{}, false},
		{"GS1.1.1689765380.0.1", GASession{}, false},
		{"GS3.1.s1$o1", GASession{}, false},
		{"GS1", GASession{}, false},
		{"", GASession{}, false},
	}
	for _, tc := range tests {
		got, ok := ParseGASessionCookie(tc.v)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseGASessionCookie(%q) = %+v, %v; want %+v, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

func TestIdentityPageCookies(t *testing.T) {
	clk := &idClock{t: idT0}
	cfg := idConfig("secret-one-0123456789")
	tests := []struct {
		dflt    string
		consent ConsentState
		want    int
	}{
		{"denied", Unknown, 0},
		{"denied", Denied, 0},
		{"denied", Granted, 2},
		{"granted", Unknown, 2},
		{"granted", Denied, 0},
	}
	for _, tc := range tests {
		cfg.Consent.Default.Analytics = tc.dflt
		id := idNew(t, cfg, clk)
		got := id.PageCookies(nil, idReq("shop.example.com"), tc.consent)
		if len(got) != tc.want {
			t.Errorf("default %s consent %v: %d cookies", tc.dflt, tc.consent, len(got))
		}
	}
	// A page view's cookies carry into the first beacon.
	cfg.Consent.Default.Analytics = "granted"
	id := idNew(t, cfg, clk)
	page := id.PageCookies(nil, idReq("www.example.com"), Unknown)
	for _, c := range page {
		if !c.HTTPOnly || c.Domain != "example.com" || !c.Secure {
			t.Errorf("page cookie %+v", c)
		}
	}
	clk.add(time.Minute)
	e := idEvent(SourceGA4)
	idRun(id, clk, idReq("www.example.com", page...), e)
	e2 := idEvent(SourceGA4)
	idRun(id, clk, idReq("www.example.com", page...), e2)
	if e.DeviceID != e2.DeviceID || e.SessionID != e2.SessionID {
		t.Error("page cookies not honoured by beacons")
	}
}

func TestIdentityConfig(t *testing.T) {
	if _, err := NewIdentity(idConfig(), nil, nil); err == nil {
		t.Error("no error without secrets")
	}
	if _, err := NewIdentity(idConfig(""), nil, nil); err == nil {
		t.Error("no error with an empty secret")
	}
	cfg := idConfig("secret-one-0123456789")
	cfg.Cookies.Device.Name, cfg.Cookies.Session.Name, cfg.Cookies.Touches.Name = "d", "s", "t"
	id, err := NewIdentity(cfg, nil, nil) // crypto/rand and the wall clock
	if err != nil {
		t.Fatal(err)
	}
	res := &Result{}
	e := idEvent(SourceCollect)
	req := idReq("example.com")
	id.Apply(req, e, &EventResult{})
	id.Finish(req, []*Event{e}, res)
	if _, ok := idCookie(t, res, "d"); !ok {
		t.Error("configured device cookie name not used")
	}
	if _, ok := idCookie(t, res, "s"); !ok {
		t.Error("configured session cookie name not used")
	}
	for name, want := range map[string]bool{"d": true, "s": true, "t": true, "_fbp": true, "_fbc": true, "_ga": true, "_ga_ABC": true, "_gid": false, "stk_did": false, "_ga_": false} {
		if got := id.WantsCookie(name); got != want {
			t.Errorf("WantsCookie(%q) = %v", name, got)
		}
	}
}

// failingReader has no entropy to give.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, bytes.ErrTooLarge }

func TestIdentityNoEntropy(t *testing.T) {
	id, err := NewIdentity(idConfig("secret-one-0123456789"), nil, failingReader{})
	if err != nil {
		t.Fatal(err)
	}
	e := idEvent(SourceCollect)
	req := idReq("example.com")
	res := &Result{}
	id.Apply(req, e, &EventResult{})
	id.Finish(req, []*Event{e}, res)
	if !strings.HasPrefix(e.DeviceID, "d1.") {
		t.Errorf("without entropy the device id should be cookieless, got %q", e.DeviceID)
	}
	for _, c := range res.Cookies {
		if c.Name == "stk_did" {
			t.Errorf("device cookie without entropy: %+v", c)
		}
	}
}

func TestIdentityConcurrent(t *testing.T) {
	clk := &idClock{t: idT0}
	id := idNew(t, idConfig("secret-one-0123456789", "secret-old-0123456789"), clk)
	seed := idRun(id, clk, idReq("shop.example.com"), idEvent(SourceCollect))
	var wg sync.WaitGroup
	want := ""
	{
		e := idEvent(SourceCollect)
		idRun(id, clk, idReq("shop.example.com", seed.Cookies...), e)
		want = e.DeviceID
	}
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				e := idEvent(SourceCollect)
				idRun(id, clk, idReq("shop.example.com", seed.Cookies...), e)
				if e.DeviceID != want {
					errs <- e.DeviceID
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for got := range errs {
		t.Errorf("concurrent device id %q, want %q", got, want)
	}
}

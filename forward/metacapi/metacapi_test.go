package metacapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/metacapi"
)

// destination is the shape of forward.Destination; guard_test.go checks
// against the real interface.
type destination interface {
	Name() string
	Limits() metacapi.Limits
	GroupKey(*enrich.Event) string
	Prepare(*enrich.Event) error
	Send(context.Context, []*enrich.Event) ([]error, error)
	Close() error
}

var _ destination = (*metacapi.Adapter)(nil)

// The behaviour interfaces the delivery core reads errors through.
type (
	retryable  interface{ Retryable() bool }
	retryAfter interface{ RetryAfter() time.Duration }
	permanent  interface{ Permanent() bool }
	paused     interface{ Paused() bool }
	tooLarge   interface{ TooLarge() bool }
)

// class names what the delivery core will do with err.
func class(err error) string {
	if err == nil {
		return "delivered"
	}
	var (
		r  retryable
		p  permanent
		pa paused
		tl tooLarge
	)
	switch {
	case errors.As(err, &tl) && tl.TooLarge():
		return "too large"
	case errors.As(err, &pa) && pa.Paused():
		return "paused"
	case errors.As(err, &p) && p.Permanent():
		return "permanent"
	case errors.As(err, &r) && r.Retryable():
		return "retry"
	}
	return "unclassified: " + err.Error()
}

var t0 = time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

const (
	fbc = "fb.1.1763900000000.IwAR2xYz_abc"
	fbp = "fb.1.1763800000000.1234567890"
	ua  = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)

// granted is consent as a shop with a consenting visitor has it.
var granted = enrich.Consent{Analytics: enrich.Granted, Ads: enrich.Granted, AdUserData: enrich.Granted, AdPersonalization: enrich.Granted}

func purchase(id, tid string) *enrich.Event {
	return &enrich.Event{
		EventID: id, Name: "order_completed", OriginalName: "purchase", Source: enrich.SourceGA4,
		ReceivedAt: t0, OccurredAt: t0.Add(-2 * time.Second),
		URL:         "https://shop.example/checkout/thanks?order=" + tid,
		Host:        "shop.example",
		Attribution: enrich.Attribution{FBC: fbc, FBP: fbp},
		Context:     enrich.Context{UserAgent: ua, IP: "sealed:203.0.113.7"},
		Consent:     granted,
		UserData: enrich.UserData{
			EM: sha("jane.doe@example.com"), PH: sha("4915123456789"), FN: sha("jane"), LN: sha("doe"),
			CT: sha("berlin"), ST: sha("be"), ZP: sha("10115"), Country: sha("de"), DB: sha("19900115"),
			GE: sha("f"), ExternalID: sha("cust-42"),
		},
		Commerce: enrich.Commerce{
			Value: enrich.Some(59.97), Currency: "EUR", TransactionID: tid,
			Items: []enrich.Item{
				{ID: "SKU-1", Name: "Mug", Price: enrich.Some(19.99), Quantity: enrich.Some(2)},
				{ID: "SKU-2", Name: "Tee", Price: enrich.Some(19.99)},
			},
		},
	}
}

func lead(id string) *enrich.Event {
	return &enrich.Event{
		EventID: id, Name: "lead_submitted", Source: enrich.SourceForm,
		ReceivedAt: t0, OccurredAt: t0,
		URL:      "https://shop.example/contact",
		Context:  enrich.Context{UserAgent: ua},
		Consent:  granted,
		UserData: enrich.UserData{EM: sha("lead@example.com")},
	}
}

func pageViews(prefix string, n int) []*enrich.Event {
	out := make([]*enrich.Event, n)
	for i := range out {
		out[i] = &enrich.Event{
			EventID: fmt.Sprintf("%s-%d", prefix, i), Name: "page_viewed", Source: enrich.SourceGA4,
			ReceivedAt: t0, OccurredAt: t0.Add(-time.Duration(i) * time.Second),
			URL:         fmt.Sprintf("https://shop.example/p/%d", i),
			Attribution: enrich.Attribution{FBP: fbp},
			Context:     enrich.Context{UserAgent: ua},
			Consent:     granted,
		}
	}
	return out
}

// opener stands in for enrich.Privacy.OpenIP.
func opener(sealed string) (netip.Addr, error) {
	if ip, ok := strings.CutPrefix(sealed, "sealed:"); ok {
		return netip.ParseAddr(ip)
	}
	return netip.Addr{}, errors.New("open ip: tampered")
}

func metaCfg(f *fakeMeta, x config.DestinationX) config.Destination {
	if x.PixelID == "" {
		x.PixelID = f.pixel
	}
	if x.AccessToken == "" {
		x.AccessToken = config.Secret(f.token)
	}
	if x.APIVersion == "" {
		x.APIVersion = f.version
	}
	x.Endpoint = f.URL
	return config.Destination{Name: "meta", Type: config.TypeMetaCAPI, Timeout: config.Duration(10 * time.Second), Options: x}
}

func newMeta(t testing.TB, cfg config.Destination, opts ...metacapi.Option) *metacapi.Adapter {
	t.Helper()
	a, err := metacapi.New(cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func sendAll(t *testing.T, a *metacapi.Adapter, events []*enrich.Event) []error {
	t.Helper()
	per, err := a.Send(context.Background(), events)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(per) != len(events) {
		t.Fatalf("%d results for %d events", len(per), len(events))
	}
	return per
}

func sendOK(t *testing.T, a *metacapi.Adapter, events []*enrich.Event) {
	t.Helper()
	for i, err := range sendAll(t, a, events) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

// canon re-encodes v so maps compare regardless of key order and number
// representation.
func canon(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		t.Fatal(err)
	}
	b, _ = json.MarshalIndent(x, "", "  ")
	return string(b)
}

func TestPurchaseMapping(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{TestEventCode: "TEST4242"}), metacapi.WithClock(clock(t0)), metacapi.WithIPOpener(opener))
	if a.Name() != "meta" || a.Limits() != (metacapi.Limits{MaxEvents: 1000}) || a.GroupKey(purchase("e", "T1")) != "" {
		t.Fatal("unexpected Name/Limits/GroupKey")
	}
	e := purchase("pix-evt-1", "T-1001")
	if err := a.Prepare(e); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	sendOK(t, a, []*enrich.Event{e})

	got := f.events()
	if len(got) != 1 {
		t.Fatalf("Meta accepted %d events", len(got))
	}
	want := map[string]any{
		"event_name":       "Purchase",
		"event_time":       t0.Add(-2 * time.Second).Unix(),
		"event_id":         "T-1001", // a Purchase dedups on its order id
		"action_source":    "website",
		"event_source_url": "https://shop.example/checkout/thanks?order=T-1001",
		"user_data": map[string]any{
			"em": []string{sha("jane.doe@example.com")}, "ph": []string{sha("4915123456789")},
			"fn": []string{sha("jane")}, "ln": []string{sha("doe")}, "ct": []string{sha("berlin")},
			"st": []string{sha("be")}, "zp": []string{sha("10115")}, "country": []string{sha("de")},
			"db": []string{sha("19900115")}, "ge": []string{sha("f")}, "external_id": []string{sha("cust-42")},
			"client_ip_address": "203.0.113.7", "client_user_agent": ua, "fbc": fbc, "fbp": fbp,
		},
		"custom_data": map[string]any{
			"value": 59.97, "currency": "EUR", "order_id": "T-1001",
			"contents": []any{
				map[string]any{"id": "SKU-1", "quantity": 2, "item_price": 19.99},
				map[string]any{"id": "SKU-2", "quantity": 1, "item_price": 19.99},
			},
			"content_ids": []string{"SKU-1", "SKU-2"}, "content_type": "product", "num_items": 3,
		},
	}
	if g, w := canon(t, got[0]), canon(t, want); g != w {
		t.Fatalf("event:\n%s\nwant:\n%s", g, w)
	}
	if f.testCode[0] != "TEST4242" {
		t.Fatalf("test_event_code %q", f.testCode[0])
	}
}

func TestLead(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	sendOK(t, a, []*enrich.Event{lead("lead-77")})
	want := map[string]any{
		"event_name": "Lead", "event_time": t0.Unix(), "event_id": "lead-77", "action_source": "website",
		"event_source_url": "https://shop.example/contact",
		"user_data":        map[string]any{"em": []string{sha("lead@example.com")}, "client_user_agent": ua},
	}
	if g, w := canon(t, f.events()[0]), canon(t, want); g != w {
		t.Fatalf("event:\n%s\nwant:\n%s", g, w)
	}
	if strings.Contains(string(f.lastBody()), "test_event_code") {
		t.Fatal("test_event_code sent without being configured")
	}
}

func TestEventName(t *testing.T) {
	for in, want := range map[string]string{
		"order_completed": "Purchase", "lead_submitted": "Lead", "product_added": "AddToCart",
		"checkout_started": "InitiateCheckout", "product_viewed": "ViewContent", "page_viewed": "PageView",
		"signed_up": "CompleteRegistration", "products_searched": "Search", "payment_info_entered": "AddPaymentInfo",
		"product_wishlisted": "AddToWishlist", "contact_submitted": "Contact", "subscription_started": "Subscribe",
		"trial_started": "StartTrial", "product_removed": "product_removed", "quiz_finished": "quiz_finished",
		"order_refunded": "order_refunded",
	} {
		if got := metacapi.EventName(in); got != want {
			t.Errorf("EventName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEventIDAndSourceURL(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))

	noTID := purchase("pix-9", "")
	noTID.Commerce.TransactionID = ""
	cart := pageViews("c", 1)[0]
	cart.Name, cart.EventID = "product_added", "ajs-next-1f2e"
	backend := purchase("0193f1c2-7b1a-7c3d-9e4f-0123456789ab", "T-2002")
	backend.Source, backend.URL, backend.Host = enrich.SourceBackend, "", "shop.example"
	internal := lead("srv-1")
	internal.Source, internal.URL, internal.Host = enrich.SourceBackend, "", "10.0.0.7:8080"
	nonHTTP := lead("app-1")
	nonHTTP.URL = "android-app://com.shop/x"

	sendOK(t, a, []*enrich.Event{noTID, cart, backend, internal, nonHTTP})
	got := f.events()
	for i, w := range []struct{ id, action, url string }{
		{"pix-9", "website", noTID.URL},
		{"ajs-next-1f2e", "website", cart.URL},
		{"T-2002", "website", "https://shop.example/"},
		{"srv-1", "other", ""},
		{"app-1", "other", ""},
	} {
		if got[i]["event_id"] != w.id || got[i]["action_source"] != w.action || fmt.Sprint(got[i]["event_source_url"]) != fmt.Sprint(w.url) && w.url != "" {
			t.Errorf("event %d: id %v action %v url %v, want %+v", i, got[i]["event_id"], got[i]["action_source"], got[i]["event_source_url"], w)
		}
		if _, ok := got[i]["event_source_url"]; ok == (w.url == "") {
			t.Errorf("event %d: event_source_url %v, want %q", i, got[i]["event_source_url"], w.url)
		}
	}
}

func TestPrepare(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)), metacapi.WithIPOpener(opener))
	mod := func(fn func(*enrich.Event)) *enrich.Event {
		e := lead("x")
		fn(e)
		return e
	}
	cases := []struct {
		name string
		e    *enrich.Event
		ok   bool
		msg  string
	}{
		{"lead", lead("x"), true, ""},
		{"six days old", mod(func(e *enrich.Event) { e.OccurredAt = t0.Add(-6 * 24 * time.Hour) }), true, ""},
		{"eight days old", mod(func(e *enrich.Event) { e.OccurredAt = t0.Add(-8 * 24 * time.Hour) }), false, "7-day"},
		{"at the 7-day edge", mod(func(e *enrich.Event) { e.OccurredAt = t0.Add(-7 * 24 * time.Hour) }), false, "7-day"},
		{"no occurred_at uses received_at", mod(func(e *enrich.Event) { e.OccurredAt = time.Time{} }), true, ""},
		{"no time", mod(func(e *enrich.Event) { e.OccurredAt, e.ReceivedAt = time.Time{}, time.Time{} }), false, "no time"},
		{"2 min ahead", mod(func(e *enrich.Event) { e.OccurredAt = t0.Add(2 * time.Minute) }), true, ""},
		{"1 h ahead", mod(func(e *enrich.Event) { e.OccurredAt = t0.Add(time.Hour) }), false, "future"},
		{"no identifiers", mod(func(e *enrich.Event) { e.UserData = enrich.UserData{} }), false, "customer information"},
		{"names only", mod(func(e *enrich.Event) { e.UserData = enrich.UserData{FN: sha("a"), LN: sha("b")} }), false, "customer information"},
		{"raw email is not a hash", mod(func(e *enrich.Event) { e.UserData.EM = "lead@example.com" }), false, "customer information"},
		{"upper-case hash", mod(func(e *enrich.Event) { e.UserData.EM = strings.ToUpper(sha("a@b.c")) }), false, "customer information"},
		{"ad_user_data denied", mod(func(e *enrich.Event) { e.Consent.AdUserData = enrich.Denied }), false, "ad_user_data"},
		{"ad_user_data denied, fbp", mod(func(e *enrich.Event) {
			e.Consent.AdUserData = enrich.Denied
			e.Attribution.FBP = fbp
		}), true, ""},
		{"ads denied, fbp only", mod(func(e *enrich.Event) {
			e.UserData = enrich.UserData{}
			e.Attribution.FBP = fbp
			e.Consent.Ads = enrich.Denied
		}), false, "customer information"},
		{"malformed fbc", mod(func(e *enrich.Event) { e.UserData = enrich.UserData{}; e.Attribution.FBC = "IwAR2xYz" }), false, "customer information"},
		{"external id", mod(func(e *enrich.Event) { e.UserData = enrich.UserData{ExternalID: "cust-9"} }), true, ""},
		{"ip and ua", mod(func(e *enrich.Event) { e.UserData = enrich.UserData{}; e.Context.IP = "sealed:2001:db8::1" }), true, ""},
		{"ip without ua", mod(func(e *enrich.Event) {
			e.UserData = enrich.UserData{}
			e.Context = enrich.Context{IP: "sealed:2001:db8::1"}
		}), false, "customer information"},
		{"ip that does not open", mod(func(e *enrich.Event) { e.UserData = enrich.UserData{}; e.Context.IP = "garbage" }), false, "customer information"},
		{"purchase", purchase("p", "T"), true, ""},
		{"purchase without currency", func() *enrich.Event { e := purchase("p", "T"); e.Commerce.Currency = ""; return e }(), false, "currency"},
		{"purchase without value", func() *enrich.Event { e := purchase("p", "T"); e.Commerce.Value = enrich.OptFloat{}; return e }(), false, "value"},
		{"no name", mod(func(e *enrich.Event) { e.Name = "" }), false, "no name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := a.Prepare(c.e)
			if c.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if class(err) != "permanent" || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v (%s), want permanent mentioning %q", err, class(err), c.msg)
			}
		})
	}
	// Whatever Prepare accepts, the fake Meta accepts too.
	var ok []*enrich.Event
	for _, c := range cases {
		if c.ok {
			ok = append(ok, c.e)
		}
	}
	sendOK(t, a, ok)
	if n := len(f.events()); n != len(ok) {
		t.Fatalf("Meta accepted %d of %d", n, len(ok))
	}
}

// One invalid event makes Meta refuse the whole request; Send isolates it
// by bisection, delivers the rest and dead-letters only the bad one.
func TestBisectionIsolatesBadEvents(t *testing.T) {
	for _, c := range []struct {
		n   int
		bad []int
	}{
		{16, []int{11}},
		{16, []int{0}},
		{16, []int{15}},
		{1000, []int{617}},
		{9, []int{2, 7}},
		{2, []int{0, 1}},
		{1, []int{0}},
	} {
		t.Run(fmt.Sprint(c.n, c.bad), func(t *testing.T) {
			f := newFakeMeta(t, clock(t0))
			a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
			events := pageViews("b", c.n)
			for _, i := range c.bad {
				// Passes Prepare, but Meta does not know the currency.
				events[i].Commerce = enrich.Commerce{Value: enrich.Some(1), Currency: "EUX"}
			}
			per := sendAll(t, a, events)
			accepted := map[any]bool{}
			for _, e := range f.events() {
				if accepted[e["event_id"]] {
					t.Fatalf("event %v delivered twice", e["event_id"])
				}
				accepted[e["event_id"]] = true
			}
			for i, err := range per {
				isBad := false
				for _, b := range c.bad {
					isBad = isBad || b == i
				}
				switch {
				case isBad && (class(err) != "permanent" || !strings.Contains(err.Error(), "Invalid Currency Code")):
					t.Errorf("bad event %d: %v (%s)", i, err, class(err))
				case !isBad && err != nil:
					t.Errorf("good event %d: %v", i, err)
				case isBad == accepted[events[i].EventID]:
					t.Errorf("event %d: bad %v, accepted %v", i, isBad, accepted[events[i].EventID])
				}
			}
			if len(accepted) != c.n-len(c.bad) {
				t.Fatalf("Meta accepted %d, want %d", len(accepted), c.n-len(c.bad))
			}
			t.Logf("%d events, bad %v: %d requests", c.n, c.bad, f.count())
			// One refused request, then about two requests per level per
			// bad event.
			if limit := 1 + 2*len(c.bad)*bits.Len(uint(c.n)); f.count() > limit {
				t.Fatalf("%d requests, want at most %d", f.count(), limit)
			}
			if c.n > 1 && f.count() < 2 {
				t.Fatalf("%d requests: the whole batch was never refused", f.count())
			}
		})
	}
}

// Events that aged past Meta's window while they waited for a retry are
// refused before sending, so they cannot sink the whole request.
func TestAgedEventsRefusedInSend(t *testing.T) {
	now := t0
	f := newFakeMeta(t, func() time.Time { return now })
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(func() time.Time { return now }))
	events := pageViews("a", 3)
	events[1].OccurredAt = t0.Add(-7*24*time.Hour + time.Hour)
	for _, e := range events {
		if err := a.Prepare(e); err != nil {
			t.Fatal(err)
		}
	}
	now = t0.Add(2 * time.Hour)
	per := sendAll(t, a, events)
	if per[0] != nil || per[2] != nil || class(per[1]) != "permanent" {
		t.Fatalf("results %v", per)
	}
	if f.count() != 1 || len(f.events()) != 2 {
		t.Fatalf("%d requests, %d accepted", f.count(), len(f.events()))
	}
	// All refused: no request at all.
	per = sendAll(t, a, events[1:2])
	if class(per[0]) != "permanent" || f.count() != 1 {
		t.Fatalf("%v, %d requests", per, f.count())
	}
}

func TestAnswerClassification(t *testing.T) {
	graph := func(code int, transient bool, sub int) string {
		return fmt.Sprintf(`{"error":{"message":"m","type":"OAuthException","code":%d,"error_subcode":%d,"is_transient":%v,"fbtrace_id":"X1"}}`, code, sub, transient)
	}
	cases := []struct {
		name  string
		f     fault
		class string
		wait  time.Duration
		msg   string
	}{
		{"application rate limit", fault{400, graph(4, true, 0), nil}, "retry", 0, "rate limit"},
		{"user rate limit", fault{400, graph(17, false, 2446079), nil}, "retry", 0, "rate limit"},
		{"page rate limit", fault{403, graph(32, false, 0), nil}, "retry", 0, "rate limit"},
		{"custom rate limit", fault{400, graph(613, false, 0), nil}, "retry", 0, "rate limit"},
		{"business rate limit", fault{400, graph(80004, false, 0), []string{"Retry-After", "30"}}, "retry", 30 * time.Second, "rate limit"},
		{"invalid token", fault{400, graph(190, false, 463), nil}, "paused", 0, "access token"},
		{"invalid token 401", fault{401, graph(190, false, 0), nil}, "paused", 0, "access token"},
		{"no permission", fault{403, graph(10, false, 0), nil}, "paused", 0, "pixel"},
		{"pixel not found", fault{400, graph(100, false, 33), nil}, "paused", 0, "pixel"},
		{"transient", fault{400, graph(2, true, 0), nil}, "retry", 0, "temporary"},
		{"server error json", fault{500, graph(1, false, 0), nil}, "retry", 0, "HTTP 500"},
		{"bad gateway html", fault{502, "<html>bad gateway</html>", nil}, "retry", 0, "HTTP 502"},
		{"unavailable", fault{503, "", []string{"Retry-After", "7"}}, "retry", 7 * time.Second, "HTTP 503"},
		{"too large", fault{413, "", nil}, "too large", 0, "HTTP 413"},
		{"redirect", fault{302, "", []string{"Location", "https://elsewhere.example/x?access_token=1"}}, "permanent", 0, "HTTP 302"},
		{"teapot", fault{418, "", nil}, "permanent", 0, "HTTP 418"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeMeta(t, clock(t0))
			a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
			f.fail(c.f)
			per, err := a.Send(context.Background(), pageViews("c", 3))
			if per != nil || class(err) != c.class || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("per %v err %v (%s), want %s mentioning %q", per, err, class(err), c.class, c.msg)
			}
			var ra retryAfter
			if got := time.Duration(0); errors.As(err, &ra) {
				if got = ra.RetryAfter(); got != c.wait {
					t.Fatalf("wait %v, want %v", got, c.wait)
				}
			}
			if f.count() != 1 {
				t.Fatalf("%d requests: only an event-level refusal is bisected", f.count())
			}
		})
	}
}

// A request that fails as a whole while bisecting gives its events that
// failure; events already delivered stay delivered.
func TestFailureWhileBisecting(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	events := pageViews("w", 4)
	events[3].Commerce = enrich.Commerce{Value: enrich.Some(1), Currency: "EUX"}
	// The whole request is refused, then the left half meets a 503.
	f.fail(fault{400, `{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804003,"error_user_title":"Invalid Currency Code","error_user_msg":"bad","fbtrace_id":"T"}}`, nil},
		fault{503, "", nil})
	per := sendAll(t, a, events)
	want := []string{"retry", "retry", "delivered", "permanent"}
	for i := range per {
		if class(per[i]) != want[i] {
			t.Errorf("event %d: %v (%s), want %s", i, per[i], class(per[i]), want[i])
		}
	}
}

func TestConsentGating(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)), metacapi.WithIPOpener(opener))
	denied := purchase("d", "T-9")
	denied.Consent.AdUserData = enrich.Denied
	noAds := purchase("n", "T-10")
	noAds.Consent.Ads = enrich.Denied
	unknown := purchase("u", "T-11")
	unknown.Consent = enrich.Consent{}
	sendOK(t, a, []*enrich.Event{denied, noAds, unknown})
	got := f.events()

	ud := got[0]["user_data"].(map[string]any)
	for _, k := range []string{"em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge", "external_id", "client_ip_address"} {
		if _, ok := ud[k]; ok {
			t.Errorf("ad_user_data denied: %s sent", k)
		}
	}
	if ud["fbc"] != fbc || ud["fbp"] != fbp || ud["client_user_agent"] != ua {
		t.Errorf("ad_user_data denied: cookies and user agent should remain: %v", ud)
	}
	ud = got[1]["user_data"].(map[string]any)
	if _, ok := ud["fbc"]; ok || ud["fbp"] != nil || ud["em"] == nil || ud["client_ip_address"] != "203.0.113.7" {
		t.Errorf("ads denied: %v", ud)
	}
	ud = got[2]["user_data"].(map[string]any)
	if ud["em"] == nil || ud["fbp"] == nil {
		t.Errorf("unknown consent (the delivery core gates it) should not strip: %v", ud)
	}
}

func TestClientIP(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	with := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)), metacapi.WithIPOpener(opener))
	without := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	v6 := lead("v6")
	v6.Context.IP = "sealed:2001:db8::7"
	mapped := lead("mapped")
	mapped.Context.IP = "sealed:::ffff:198.51.100.4"
	bad := lead("bad")
	bad.Context.IP = "tampered"
	none := lead("none")
	sendOK(t, with, []*enrich.Event{v6, mapped, bad, none})
	sendOK(t, without, []*enrich.Event{v6})
	var got []any
	for _, e := range f.events() {
		got = append(got, e["user_data"].(map[string]any)["client_ip_address"])
	}
	if want := []any{"2001:db8::7", "198.51.100.4", nil, nil, nil}; !reflect.DeepEqual(got, want) {
		t.Fatalf("client_ip_address %v, want %v", got, want)
	}
}

func TestLimitedDataUse(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	ldu := newMeta(t, metaCfg(f, config.DestinationX{LimitedDataUse: true}), metacapi.WithClock(clock(t0)))
	plain := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	sendOK(t, ldu, []*enrich.Event{lead("l")})
	sendOK(t, plain, []*enrich.Event{lead("p")})
	got := f.events()
	if canon(t, got[0]["data_processing_options"]) != canon(t, []string{"LDU"}) ||
		fmt.Sprint(got[0]["data_processing_options_country"]) != "0" || fmt.Sprint(got[0]["data_processing_options_state"]) != "0" {
		t.Fatalf("LDU event: %v", got[0])
	}
	for _, k := range []string{"data_processing_options", "data_processing_options_country", "data_processing_options_state"} {
		if _, ok := got[1][k]; ok {
			t.Fatalf("%s sent without limited_data_use", k)
		}
	}
}

func TestCustomData(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	view := lead("v")
	view.Name = "product_viewed"
	view.Commerce = enrich.Commerce{Value: enrich.Some(19.99), Currency: "usd", Items: []enrich.Item{{ID: "SKU-1", Name: "Mug", Category: "Kitchen", Price: enrich.Some(19.99)}}}
	search := lead("s")
	search.Name = "products_searched"
	search.Properties = enrich.Props{{Key: "query", Kind: enrich.PropString, Str: "blue mug"}}
	noID := lead("n")
	noID.Name = "checkout_started"
	noID.Commerce = enrich.Commerce{Items: []enrich.Item{{Name: "no id", Quantity: enrich.Some(2)}, {ID: "SKU-3"}}}
	sendOK(t, a, []*enrich.Event{view, search, noID})
	got := f.events()
	for i, want := range []map[string]any{
		{"value": 19.99, "currency": "USD", "contents": []any{map[string]any{"id": "SKU-1", "quantity": 1, "item_price": 19.99}},
			"content_ids": []string{"SKU-1"}, "content_type": "product", "content_name": "Mug", "content_category": "Kitchen", "num_items": 1},
		{"search_string": "blue mug"},
		{"contents": []any{map[string]any{"id": "SKU-3", "quantity": 1}}, "content_ids": []string{"SKU-3"}, "content_type": "product", "num_items": 3},
	} {
		if g, w := canon(t, got[i]["custom_data"]), canon(t, want); g != w {
			t.Errorf("event %d custom_data:\n%s\nwant:\n%s", i, g, w)
		}
	}
}

func TestNetworkAndCancel(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	f.Close()
	per, err := a.Send(context.Background(), pageViews("n", 2))
	if per != nil || class(err) != "retry" {
		t.Fatalf("closed server: %v %v (%s)", per, err, class(err))
	}
	if strings.Contains(err.Error(), "/events") {
		t.Fatalf("error quotes the URL path: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Send(ctx, pageViews("n", 2))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNew(t *testing.T) {
	ok := config.DestinationX{PixelID: "123", AccessToken: "tok"}
	for _, c := range []struct {
		name string
		x    func(config.DestinationX) config.DestinationX
		msg  string
	}{
		{"no pixel", func(x config.DestinationX) config.DestinationX { x.PixelID = ""; return x }, "pixel_id"},
		{"pixel not numeric", func(x config.DestinationX) config.DestinationX { x.PixelID = "12a"; return x }, "pixel_id"},
		{"no token", func(x config.DestinationX) config.DestinationX { x.AccessToken = ""; return x }, "access_token"},
		{"bad version", func(x config.DestinationX) config.DestinationX { x.APIVersion = "21"; return x }, "api_version"},
		{"bad endpoint", func(x config.DestinationX) config.DestinationX { x.Endpoint = "graph.facebook.com"; return x }, "endpoint"},
		{"endpoint with query", func(x config.DestinationX) config.DestinationX { x.Endpoint = "https://g.example/?a=1"; return x }, "endpoint"},
	} {
		_, err := metacapi.New(config.Destination{Name: "meta", Options: c.x(ok)}, nil)
		if err == nil || !strings.Contains(err.Error(), c.msg) || strings.Contains(err.Error(), "tok\"") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	a, err := metacapi.New(config.Destination{Name: "meta", Options: ok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}

// The endpoint may end with a slash; the path is built from api_version
// and pixel_id.
func TestEndpointPath(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	f.version = "v22.0"
	cfg := metaCfg(f, config.DestinationX{APIVersion: "v22.0"})
	cfg.Options.Endpoint = f.URL + "/"
	a := newMeta(t, cfg, metacapi.WithClock(clock(t0)))
	sendOK(t, a, []*enrich.Event{lead("e")})
}

// The access token appears in no log line, no log field and no error, in
// success, refusal, token and network failures.
func TestTokenNeverLeaks(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	f := newFakeMeta(t, clock(t0))
	cfg := metaCfg(f, config.DestinationX{})
	a, err := metacapi.New(cfg, log, metacapi.WithClock(clock(t0)), metacapi.WithIPOpener(opener))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var errs []error
	collect := func(per []error, err error) {
		errs = append(errs, err)
		errs = append(errs, per...)
	}
	bad := pageViews("t", 4)
	bad[2].Commerce = enrich.Commerce{Value: enrich.Some(1), Currency: "EUX"}
	collect(a.Send(context.Background(), bad))
	// An answer that echoes the token must not carry it further.
	f.fail(fault{400, `{"error":{"message":"Invalid OAuth access token: ` + f.token + `","type":"OAuthException","code":190}}`, nil})
	collect(a.Send(context.Background(), pageViews("t", 2)))
	f.fail(fault{500, "upstream said " + f.token, nil})
	collect(a.Send(context.Background(), pageViews("t", 2)))
	f.fail(fault{400, `{"error":{"message":"m","code":100,"error_user_title":"T","error_user_msg":"token ` + f.token + `"}}`, nil})
	collect(a.Send(context.Background(), pageViews("t", 1)))
	old := lead("o")
	old.OccurredAt = t0.Add(-30 * 24 * time.Hour)
	errs = append(errs, a.Prepare(old))
	f.Close()
	collect(a.Send(context.Background(), pageViews("t", 2)))
	_, err = metacapi.New(config.Destination{Name: "x", Options: config.DestinationX{PixelID: "x", AccessToken: cfg.Options.AccessToken}}, log)
	errs = append(errs, err)

	nonNil := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		nonNil++
		if strings.Contains(err.Error(), f.token) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), f.token) {
			t.Errorf("error carries the token: %v", err)
		}
	}
	if nonNil < 6 {
		t.Fatalf("only %d errors: the scenarios did not fail", nonNil)
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the check would prove nothing")
	}
	for _, entry := range logs.All() {
		line := entry.Message + fmt.Sprint(entry.ContextMap())
		if strings.Contains(line, f.token) {
			t.Errorf("log line carries the token: %s", line)
		}
	}
}

// Many bad events: bisection stops at MaxRequestsPerSend; what is still
// unresolved is dead-lettered with Meta's message, nothing is lost or
// delivered twice.
func TestBisectionBudget(t *testing.T) {
	f := newFakeMeta(t, clock(t0))
	a := newMeta(t, metaCfg(f, config.DestinationX{}), metacapi.WithClock(clock(t0)))
	events := pageViews("g", 256)
	for i := 0; i < len(events); i += 4 {
		events[i].Commerce = enrich.Commerce{Value: enrich.Some(1), Currency: "EUX"}
	}
	per := sendAll(t, a, events)
	if f.count() != metacapi.MaxRequestsPerSend {
		t.Fatalf("%d requests, want the budget %d", f.count(), metacapi.MaxRequestsPerSend)
	}
	accepted := map[any]int{}
	for _, e := range f.events() {
		accepted[e["event_id"]]++
	}
	unresolved, delivered := 0, 0
	for i, err := range per {
		switch {
		case err == nil:
			delivered++
			if i%4 == 0 || accepted[events[i].EventID] != 1 {
				t.Fatalf("event %d reported delivered, accepted %d times", i, accepted[events[i].EventID])
			}
		case class(err) != "permanent" || accepted[events[i].EventID] != 0:
			t.Fatalf("event %d: %v (%s), accepted %d", i, err, class(err), accepted[events[i].EventID])
		case strings.Contains(err.Error(), "could not be isolated"):
			unresolved++
		}
	}
	if unresolved == 0 || delivered == 0 || len(f.events()) != delivered {
		t.Fatalf("unresolved %d, delivered %d, accepted %d", unresolved, delivered, len(f.events()))
	}
}

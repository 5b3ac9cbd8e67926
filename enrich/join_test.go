package enrich

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

func joinNew(t testing.TB) *Join {
	t.Helper()
	cfg := config.Default()
	cfg.Join.Capacity = 10000
	j, err := NewJoin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Close)
	return j
}

// joinBrowser builds a browser event in the event's own arena, as a
// decoder would, so the test can prove the cache keeps copies.
func joinBrowser(pool *EventPool, name, device, user, tx string) *Event {
	e := pool.Get()
	e.Name, e.Source = name, SourceGA4
	e.DeviceID = e.InternString(device)
	e.UserID = e.InternString(user)
	e.Commerce.TransactionID = e.InternString(tx)
	e.AnonymousID = e.InternString("585712067.1795442481")
	e.SessionID = e.InternString("sess-" + device)
	e.GASessionID = e.InternString("1795442481")
	e.GASessionNumber = 3
	e.Attribution.FBP = e.InternString("fb.1.1700000000000.1234567890")
	e.Consent = Consent{Analytics: Granted, Ads: Granted, AdUserData: Granted, AdPersonalization: Denied}
	e.Attribution.FirstTouch = Touch{Source: e.InternString("google"), Medium: e.InternString("cpc"), At: idT0}
	e.Attribution.LastTouch = e.Attribution.FirstTouch
	return e
}

func joinServer(tx, user, device string) *Event {
	return &Event{
		Name: "order_completed", Source: SourceBackend, UserID: user, DeviceID: device,
		Commerce: Commerce{TransactionID: tx, Value: Some(10), Currency: "USD"},
		Consent:  Consent{Analytics: Granted, Ads: Granted, AdUserData: Granted, AdPersonalization: Granted, Source: "server"},
	}
}

func TestJoinFillsServerEvents(t *testing.T) {
	j := joinNew(t)
	var pool EventPool
	browserReq := &Request{ReceivedAt: idT0}
	serverReq := &Request{Server: true, ReceivedAt: idT0}

	// The landing page carries the click; the thank-you page does not.
	landing := joinBrowser(&pool, "page_viewed", "dev-1", "", "")
	landing.Attribution.ClickIDs.GCLID = landing.InternString("Cj0KCQ-gclid")
	j.Apply(browserReq, landing, &EventResult{})
	j.cache.Wait()
	thanks := joinBrowser(&pool, "order_completed", "dev-1", "user-9", "T1")
	thanks.Attribution.FBC = thanks.InternString("fb.1.1700000000001.IwAR")
	j.Apply(browserReq, thanks, &EventResult{})
	j.cache.Wait()
	// Events are released and their arenas reused: the cache must not care.
	for _, e := range []*Event{landing, thanks} {
		pool.Put(e)
	}
	for i := 0; i < 4; i++ {
		junk := pool.Get()
		junk.InternString(strings.Repeat("X", 4096))
		pool.Put(junk)
	}

	tests := []struct {
		name   string
		server *Event
		joined bool
	}{
		{"by transaction id", joinServer("T1", "", ""), true},
		{"by user id", joinServer("T-unknown", "user-9", ""), true},
		{"by device id", joinServer("", "", "dev-1"), true},
		{"no match", joinServer("T2", "user-2", ""), false},
		{"no key", joinServer("", "", ""), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.server
			j.Apply(serverReq, e, &EventResult{})
			if e.Quality.Has(FlagJoined) != tc.joined {
				t.Fatalf("joined = %v", e.Quality.Has(FlagJoined))
			}
			if !tc.joined {
				if e.DeviceID != "" || e.Attribution.ClickIDs.GCLID != "" {
					t.Errorf("unmatched event filled: %+v", e)
				}
				return
			}
			a := e.Attribution
			if e.DeviceID != "dev-1" || e.SessionID != "sess-dev-1" || e.AnonymousID != "585712067.1795442481" ||
				e.GASessionID != "1795442481" || e.GASessionNumber != 3 {
				t.Errorf("ids not filled: %+v", e)
			}
			if a.ClickIDs.GCLID != "Cj0KCQ-gclid" {
				t.Errorf("gclid from the landing page not carried to the order: %q", a.ClickIDs.GCLID)
			}
			if a.FBP != "fb.1.1700000000000.1234567890" || (tc.name != "by device id" && a.FBC != "fb.1.1700000000001.IwAR") {
				t.Errorf("fbp/fbc %q %q", a.FBP, a.FBC)
			}
			if a.FirstTouch.Source != "google" || a.LastTouch.Medium != "cpc" {
				t.Errorf("touches %+v", a)
			}
			// The browser denied ad personalization: the server default
			// does not override it.
			if e.Consent.AdPersonalization != Denied || e.Consent.Ads != Granted || e.Consent.Source != "server" {
				t.Errorf("consent %+v", e.Consent)
			}
		})
	}
	if got, want := j.Stats(), (JoinStats{Matched: 3, Unmatched: 1, NoKey: 1, Remembered: 2}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

func TestJoinKeepsServerValues(t *testing.T) {
	j := joinNew(t)
	var pool EventPool
	b := joinBrowser(&pool, "order_completed", "dev-1", "", "T1")
	j.Apply(&Request{}, b, &EventResult{})
	j.cache.Wait()
	s := joinServer("T1", "", "")
	s.AnonymousID = "server-cid"
	s.Attribution.ClickIDs.MSCLKID = "ms-1"
	s.Consent.Analytics = Unknown
	j.Apply(&Request{Server: true}, s, &EventResult{})
	if s.AnonymousID != "server-cid" || s.Attribution.ClickIDs != (ClickIDs{MSCLKID: "ms-1"}) {
		t.Errorf("server values overwritten: %q %+v", s.AnonymousID, s.Attribution.ClickIDs)
	}
	if s.DeviceID != "dev-1" || s.Consent.Analytics != Granted {
		t.Errorf("missing values not filled: %q %v", s.DeviceID, s.Consent.Analytics)
	}
}

func TestJoinBrowserEventsNeverFilled(t *testing.T) {
	j := joinNew(t)
	var pool EventPool
	j.Apply(&Request{}, joinBrowser(&pool, "order_completed", "dev-1", "u", "T1"), &EventResult{})
	j.cache.Wait()
	e := &Event{Name: "order_completed", Source: SourceCollect, UserID: "u", Commerce: Commerce{TransactionID: "T1"}}
	j.Apply(&Request{}, e, &EventResult{})
	if e.Quality.Has(FlagJoined) || e.DeviceID != "" {
		t.Error("a browser event was joined")
	}
}

func TestJoinStaleClicksNotInherited(t *testing.T) {
	cfg := config.Default()
	cfg.Join.Capacity, cfg.Join.TTL = 1000, config.Duration(time.Hour)
	j, err := NewJoin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var pool EventPool
	click := joinBrowser(&pool, "page_viewed", "dev-1", "", "")
	click.Attribution.ClickIDs.GCLID = "old-click"
	j.Apply(&Request{ReceivedAt: idT0}, click, &EventResult{})
	j.cache.Wait()
	// Two hours later (the device entry was refreshed by other page views
	// in between), an order: the click is older than the TTL.
	later := joinBrowser(&pool, "page_viewed", "dev-1", "", "")
	later.SessionID = "other"
	j.Apply(&Request{ReceivedAt: idT0.Add(30 * time.Minute)}, later, &EventResult{})
	j.cache.Wait()
	order := joinBrowser(&pool, "order_completed", "dev-1", "", "T9")
	j.Apply(&Request{ReceivedAt: idT0.Add(2 * time.Hour)}, order, &EventResult{})
	j.cache.Wait()
	s := joinServer("T9", "", "")
	j.Apply(&Request{Server: true}, s, &EventResult{})
	if !s.Quality.Has(FlagJoined) {
		t.Fatal("not joined")
	}
	if s.Attribution.ClickIDs.GCLID != "" {
		t.Errorf("stale click inherited: %q", s.Attribution.ClickIDs.GCLID)
	}
	// Within the TTL it is inherited.
	order2 := joinBrowser(&pool, "order_completed", "dev-1", "", "T10")
	click2 := joinBrowser(&pool, "page_viewed", "dev-1", "", "")
	click2.Attribution.ClickIDs.GCLID = "new-click"
	j.Apply(&Request{ReceivedAt: idT0.Add(3 * time.Hour)}, click2, &EventResult{})
	j.cache.Wait()
	j.Apply(&Request{ReceivedAt: idT0.Add(3*time.Hour + time.Minute)}, order2, &EventResult{})
	j.cache.Wait()
	s2 := joinServer("T10", "", "")
	j.Apply(&Request{Server: true}, s2, &EventResult{})
	if s2.Attribution.ClickIDs.GCLID != "new-click" {
		t.Errorf("recent click not inherited: %q", s2.Attribution.ClickIDs.GCLID)
	}
}

func TestJoinDisabled(t *testing.T) {
	cfg := config.Default()
	cfg.Join.Capacity = 0
	j, err := NewJoin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e := joinServer("T1", "", "")
	j.Apply(&Request{Server: true}, e, &EventResult{})
	if e.Quality.Has(FlagJoined) || j.Stats() != (JoinStats{}) {
		t.Error("disabled join did something")
	}
	cfg.Join.Capacity, cfg.Join.TTL = 10, 0
	if _, err := NewJoin(cfg); err == nil {
		t.Error("zero ttl accepted")
	}
}

func TestJoinConcurrent(t *testing.T) {
	j := joinNew(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var pool EventPool
			for i := 0; i < 300; i++ {
				e := joinBrowser(&pool, "page_viewed", "dev-"+string(rune('a'+i%7)), "", "")
				j.Apply(&Request{}, e, &EventResult{})
				pool.Put(e)
				s := joinServer("", "", "dev-"+string(rune('a'+i%5)))
				j.Apply(&Request{Server: true}, s, &EventResult{})
			}
		}()
	}
	wg.Wait()
	st := j.Stats()
	if st.Matched+st.Unmatched != 1200 {
		t.Errorf("stats %+v", st)
	}
}

// BenchmarkJoinBrowserSteady: a browser event whose context is already
// cached (the common page view): lookups only, no Set.
func BenchmarkJoinBrowserSteady(b *testing.B) {
	j := joinNew(b)
	var pool EventPool
	e := joinBrowser(&pool, "page_viewed", "dev-1", "user-1", "")
	req := &Request{ReceivedAt: idT0}
	j.Apply(req, e, &EventResult{})
	j.cache.Wait()
	var r EventResult
	b.ReportAllocs()
	done := benchCPU(b)
	for b.Loop() {
		j.Apply(req, e, &r)
	}
	done()
}

// BenchmarkJoinBrowserNewDevice: a browser event from a device the cache
// does not know yet (a first visit): its context is copied and stored.
func BenchmarkJoinBrowserNewDevice(b *testing.B) {
	j := joinNew(b)
	var pool EventPool
	req := &Request{ReceivedAt: idT0}
	var r EventResult
	var dev []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := joinBrowser(&pool, "page_viewed", "", "", "")
		dev = strconv.AppendInt(append(dev[:0], "dev-"...), int64(i), 10)
		e.DeviceID = e.Intern(dev)
		e.Attribution.ClickIDs.GCLID = e.Intern(dev)
		i++
		j.Apply(req, e, &r)
		pool.Put(e)
	}
}

// BenchmarkJoinServerMatch: a server order joined by transaction id.
func BenchmarkJoinServerMatch(b *testing.B) {
	j := joinNew(b)
	var pool EventPool
	j.Apply(&Request{}, joinBrowser(&pool, "order_completed", "dev-1", "", "T1"), &EventResult{})
	j.cache.Wait()
	req := &Request{Server: true}
	var r EventResult
	b.ReportAllocs()
	for b.Loop() {
		e := pool.Get()
		e.Commerce.TransactionID = "T1"
		j.Apply(req, e, &r)
		pool.Put(e)
	}
}

// TestIdentityValidationJoinPipeline runs the three stages through the
// Pipeline: a browser order sets cookies and teaches the join, the
// backend's confirmation of the same order is joined, and an invalid
// backend event is rejected with its field errors.
func TestIdentityValidationJoinPipeline(t *testing.T) {
	cfg := idConfig("secret-one-0123456789")
	cfg.Join.Capacity = 1000
	clk := &idClock{t: idT0}
	id, err := NewIdentity(cfg, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	val, err := NewValidation(cfg)
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJoin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	p := NewPipeline(clk.now, id, val, j)

	browser := valOrder()
	browser.Consent.Analytics, browser.Consent.Ads = Granted, Granted
	var res Result
	breq := idReq("www.shop.example.com")
	p.Process(breq, []*Event{browser}, &res)
	if res.Events[0].Outcome != Accepted || len(res.Cookies) != 3 {
		t.Fatalf("browser: %+v", res)
	}
	j.cache.Wait()

	server := valOrder()
	server.Source = SourceBackend
	bad := valOrder()
	bad.Source, bad.Commerce.Currency = SourceBackend, "dollars"
	sreq := &Request{Server: true, Host: "www.shop.example.com"}
	p.Process(sreq, []*Event{server, bad}, &res)
	if len(res.Cookies) != 0 {
		t.Errorf("server answer sets cookies: %+v", res.Cookies)
	}
	if res.Events[0].Outcome != Accepted || !server.Quality.Has(FlagJoined) || server.DeviceID != browser.DeviceID {
		t.Errorf("server order not joined: %+v %q", res.Events[0], server.DeviceID)
	}
	if res.Events[1].Outcome != Invalid || len(res.Events[1].Errors) != 1 ||
		res.Events[1].Errors[0] != (FieldError{Index: 1, Field: "commerce.currency", Message: msgISO4217}) {
		t.Errorf("invalid backend event: %+v", res.Events[1])
	}
}

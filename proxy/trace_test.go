package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// traceClock is a settable clock.
type traceClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *traceClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *traceClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeExplainer stands in for forward's Spool with three destinations:
// meta needs ads consent, ga4 excludes page_viewed, dry is in dry run.
// forward's own tests check the real rules; here only what the trace
// does with the answer matters.
type fakeExplainer struct{}

func (fakeExplainer) Explain(e *enrich.Event, dst []Admission) []Admission {
	meta := Admission{Destination: "meta", Admitted: true, Reason: "admitted"}
	if e.Consent.Ads != enrich.Granted {
		meta = Admission{Destination: "meta", Reason: "consent", Detail: "needs ads consent; it is denied (consent source: " + e.Consent.Source + ")"}
	}
	ga4 := Admission{Destination: "ga4", Admitted: true, Reason: "admitted"}
	if e.Name == "page_viewed" {
		ga4 = Admission{Destination: "ga4", Reason: "excluded", Detail: `event "page_viewed" is in events.exclude`}
	}
	return append(dst, meta, ga4, Admission{Destination: "dry", Admitted: true, Reason: "dry_run"})
}

func traceEvent(now time.Time, name string, mut func(e *enrich.Event)) *enrich.Event {
	e := &enrich.Event{Name: name, Source: enrich.SourceCollect, ReceivedAt: now, EventID: "ev-" + name}
	e.Consent = enrich.Consent{Analytics: enrich.Granted, Ads: enrich.Granted, AdUserData: enrich.Granted,
		AdPersonalization: enrich.Granted, Source: "collect"}
	if mut != nil {
		mut(e)
	}
	return e
}

func TestTraceEntries(t *testing.T) {
	clock := &traceClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	now := clock.Now()
	key := [16]byte{0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xff}
	cases := []struct {
		name    string
		e       *enrich.Event
		outcome enrich.Outcome
		reason  string
		check   func(t *testing.T, x TraceEntry)
	}{
		{"purchase, ads denied: meta refuses", traceEvent(now, "order_completed", func(e *enrich.Event) {
			e.Consent.Ads, e.Consent.Source = enrich.Denied, "gcs"
			e.Commerce = enrich.Commerce{Value: enrich.Some(42.5), Currency: "EUR", TransactionID: "T-1001"}
			e.Notes = enrich.StageNotes{DedupKey: key, DedupBy: enrich.DedupByOrder}
			e.DedupKey = key
		}), enrich.Accepted, "", func(t *testing.T, x TraceEntry) {
			if x.Consent.Ads != "denied" || x.Consent.Source != "gcs" {
				t.Errorf("consent %+v", x.Consent)
			}
			if len(x.Destinations) != 3 || x.Destinations[0].Admitted || x.Destinations[0].Reason != "consent" ||
				!strings.Contains(x.Destinations[0].Detail, "ads") || !x.Destinations[1].Admitted {
				t.Errorf("destinations %+v", x.Destinations)
			}
			if x.Dedup != (TraceDedup{Result: "new", By: "transaction_id", Key: "abcdef0123456789"}) {
				t.Errorf("dedup %+v", x.Dedup)
			}
			if x.Commerce.Value == nil || *x.Commerce.Value != 42.5 || x.Commerce.Currency != "EUR" || x.Commerce.TransactionID != "T-1001" {
				t.Errorf("commerce %+v", x.Commerce)
			}
		}},
		{"excluded name", traceEvent(now, "page_viewed", nil), enrich.Accepted, "", func(t *testing.T, x TraceEntry) {
			if d := x.Destinations[1]; d.Admitted || d.Reason != "excluded" {
				t.Errorf("ga4 %+v", d)
			}
			if x.Dedup.Result != "no_id" {
				t.Errorf("dedup %+v, want no_id for an accepted event without key", x.Dedup)
			}
		}},
		{"dry run", traceEvent(now, "add_to_cart", nil), enrich.Accepted, "", func(t *testing.T, x TraceEntry) {
			if d := x.Destinations[2]; !d.Admitted || d.Reason != "dry_run" {
				t.Errorf("dry %+v", d)
			}
		}},
		{"duplicate", traceEvent(now, "order_completed", func(e *enrich.Event) {
			e.Notes = enrich.StageNotes{DedupKey: key, DedupBy: enrich.DedupByOrder}
		}), enrich.Duplicate, "", func(t *testing.T, x TraceEntry) {
			if x.Outcome != "duplicate" || x.Dedup.Result != "duplicate" || x.Dedup.Key != "abcdef0123456789" {
				t.Errorf("outcome %s, dedup %+v", x.Outcome, x.Dedup)
			}
			if len(x.Destinations) != 0 {
				t.Errorf("a duplicate has destinations: %+v", x.Destinations)
			}
		}},
		{"quarantined with reason", traceEvent(now, "", func(e *enrich.Event) {
			e.Notes = enrich.StageNotes{DedupKey: key, DedupBy: enrich.DedupByEventID}
		}), enrich.Quarantined, "decode:en", func(t *testing.T, x TraceEntry) {
			if x.Outcome != "quarantined" || x.Reason != "decode:en" || x.Dedup.Result != "released" {
				t.Errorf("%s %q dedup %+v", x.Outcome, x.Reason, x.Dedup)
			}
		}},
		{"bot", traceEvent(now, "page_viewed", func(e *enrich.Event) {
			e.Context.Bot, e.Context.BotReason = true, enrich.BotReasonHeadless
		}), enrich.Bot, enrich.BotReasonHeadless, func(t *testing.T, x TraceEntry) {
			if x.Bot != "headless" || x.Outcome != "bot" || x.Dedup.Result != "not_checked" {
				t.Errorf("bot %q outcome %s dedup %+v", x.Bot, x.Outcome, x.Dedup)
			}
		}},
		{"identity", traceEvent(now, "page_viewed", func(e *enrich.Event) {
			e.DeviceID = "d2.AbCdEfGhIjKlMnOp"
			e.SessionID = "0f8fad5b-d9cb-469f-a165-70867728950e"
			e.UserID = "u-42"
			e.Context.IPHash = "0123456789abcdef0123456789abcdef"
			e.UserData.EM = strings.Repeat("a", 64)
			e.Attribution = enrich.Attribution{Channel: "Paid Search", Source: "google", Medium: "cpc",
				ClickIDs: enrich.ClickIDs{GCLID: "Cj0KCQ"}, FBP: "fb.1.1.2",
				LastTouch: enrich.Touch{Channel: "Paid Search", Source: "google", Medium: "cpc"}}
			e.Quality.Add(enrich.FlagJoined)
			e.Quality.Add(enrich.FlagPIIScrubbed)
		}), enrich.Accepted, "", func(t *testing.T, x TraceEntry) {
			id := x.Identity
			if id.DeviceKind != "cookieless" || id.Device != "d2.AbCdE…" || id.Session != "0f8fad5b…" || !id.UserID ||
				id.IP != "hashed" || len(id.UserData) != 1 || id.UserData[0] != "em" || !id.FBP || id.FBC || !id.Joined {
				t.Errorf("identity %+v", id)
			}
			a := x.Attribution
			if a.Channel != "Paid Search" || len(a.ClickIDs) != 1 || a.ClickIDs[0] != "gclid" || a.LastTouch != "Paid Search (google / cpc)" {
				t.Errorf("attribution %+v", a)
			}
			if strings.Join(x.Quality, ",") != "joined,pii_scrubbed" {
				t.Errorf("quality %v", x.Quality)
			}
		}},
	}
	tr := NewTracer(config.Debug{TraceEvents: 50, TraceWindow: config.Duration(time.Minute)}, fakeExplainer{}, clock.Now)
	tr.until.Store(now.Add(time.Minute).UnixNano())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr.ObserveEvent(tc.e, tc.outcome, tc.reason)
			got, _ := tr.snapshot(traceFilter{limit: 1})
			if len(got) != 1 {
				t.Fatalf("%d entries", len(got))
			}
			tc.check(t, got[0])
		})
	}
}

// TestTraceNoPII feeds an event that never went through the privacy stage
// (what a 422 on /collect observes) and checks the entry holds none of it.
func TestTraceNoPII(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tr := NewTracer(config.Debug{TraceEvents: 5}, fakeExplainer{}, func() time.Time { return now })
	tr.until.Store(now.Add(time.Minute).UnixNano())
	e := traceEvent(now, "lead_submitted", func(e *enrich.Event) {
		e.URL = "https://shop.example/u/jo.canary@example.com/orders?email=jo.canary%40example.com&tel=%2B14155550123"
		e.Title = "Hello jo.canary@example.com"
		e.UserID = "jo.canary@example.com"
		e.AnonymousID = "+1 415 555 0123"
		e.EventID = "jo.canary@example.com"
		e.PII = enrich.PII{Email: "jo.canary@example.com", Phone: "+14155550123", FirstName: "Canaryname"}
		e.Context.IPTruncated = "203.0.113.0"
		e.Context.IP = "sealed-203.0.113.77"
		e.UserData.EM = "hashcanary0123456789"
		e.Attribution.UTMCampaign = "jo.canary@example.com"
		e.Attribution.Campaign = "call +1 415 555 0123 now"
	})
	tr.ObserveEvent(e, enrich.Invalid, "invalid")
	got, _ := tr.snapshot(traceFilter{limit: 5})
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, canary := range []string{"canary@", "jo.canary", "415", "14155550123", "Canaryname", "203.0.113", "hashcanary"} {
		if strings.Contains(string(b), canary) {
			t.Errorf("trace holds %q: %s", canary, b)
		}
	}
	if got[0].Page != "https://shop.example/u/[redacted]/orders" {
		t.Errorf("page %q", got[0].Page)
	}
}

func TestTraceRecordsOnlyWhileWatched(t *testing.T) {
	clock := &traceClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	cfg := testConfig("http://" + closedAddr(t))
	cfg.Admin.Token = config.Secret("trace-token")
	tr := NewTracer(config.Debug{TraceEvents: 3, TraceWindow: config.Duration(time.Minute)}, fakeExplainer{}, clock.Now)
	p := startProxy(t, cfg, Options{}, func(s *Server) { s.HandleTrace(tr) })
	url := "http://" + p.adminAddr + "/debug/events"

	send := func(name string) { tr.ObserveEvent(traceEvent(clock.Now(), name, nil), enrich.Accepted, "") }
	fetch := func(query string) traceAnswer {
		t.Helper()
		code, body, _ := httpGet(t, url+query, "trace-token")
		if code != 200 {
			t.Fatalf("GET %s: %d %s", query, code, body)
		}
		var a traceAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	send("before_anyone_looked")
	if a := fetch(""); len(a.Events) != 0 || a.Recorded != 0 || !a.RecordingUntil.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("first look: %+v", a)
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		send(n)
	}
	a := fetch("")
	if a.Recorded != 4 || len(a.Events) != 3 || a.Events[0].Name != "d" || a.Events[2].Name != "b" || a.Events[0].Seq != 4 {
		t.Fatalf("ring of 3 after 4 events: recorded %d, %+v", a.Recorded, a.Events)
	}
	clock.Advance(2 * time.Minute) // the window (opened again by the last fetch) is over
	send("after_the_window")
	if a := fetch("?limit=1"); a.Recorded != 4 || a.Events[0].Name != "d" {
		t.Fatalf("recorded after the window: %d, newest %q", a.Recorded, a.Events[0].Name)
	}
	// A name filter only filters what is shown; record restricts what the
	// window records, until record=* or a new window.
	fetch("?name=order_completed")
	send("page_viewed")
	if a := fetch("?record=order_completed"); a.Recorded != 5 || strings.Join(a.RecordingOnly, ",") != "order_completed" {
		t.Fatalf("after a name filter: recorded %d, only %v", a.Recorded, a.RecordingOnly)
	}
	send("page_viewed")
	send("order_completed")
	if a := fetch(""); a.Recorded != 6 || a.Events[0].Name != "order_completed" || a.Events[1].Name != "page_viewed" {
		t.Fatalf("recording only order_completed: recorded %d, %+v", a.Recorded, a.Events)
	}
	fetch("?record=*")
	send("page_viewed")
	if a := fetch(""); a.Recorded != 7 || len(a.RecordingOnly) != 0 {
		t.Fatalf("record=*: recorded %d, only %v", a.Recorded, a.RecordingOnly)
	}
	fetch("?record=order_completed")
	clock.Advance(2 * time.Minute)
	if a := fetch(""); len(a.RecordingOnly) != 0 {
		t.Fatalf("a new window kept the old one's record filter %v", a.RecordingOnly)
	}
}

func TestTraceEndpoint(t *testing.T) {
	clock := &traceClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	cfg := testConfig("http://" + closedAddr(t))
	cfg.Admin.Token = config.Secret("trace-token")
	tr := NewTracer(config.Debug{TraceEvents: 10, TraceWindow: config.Duration(time.Minute)}, fakeExplainer{}, clock.Now)
	p := startProxy(t, cfg, Options{}, func(s *Server) { s.HandleTrace(tr) })
	base := "http://" + p.adminAddr + "/debug/events"
	httpGet(t, base, "trace-token") // opens the window
	tr.ObserveEvent(traceEvent(clock.Now(), "page_viewed", nil), enrich.Accepted, "")
	tr.ObserveEvent(traceEvent(clock.Now(), "order_completed", func(e *enrich.Event) { e.Consent.Ads = enrich.Denied }), enrich.Accepted, "")
	tr.ObserveEvent(traceEvent(clock.Now(), "order_completed", nil), enrich.Accepted, "")
	tr.ObserveEvent(traceEvent(clock.Now(), "order_completed", nil), enrich.Duplicate, "")

	cases := []struct {
		query, token string
		code         int
		// names are the entries' outcomes/destination reasons, newest first.
		want string
	}{
		{"", "", 401, ""},
		{"", "wrong", 401, ""},
		{"", "trace-token", 200, "duplicate order_completed,accepted order_completed meta:admitted,accepted order_completed meta:consent,accepted page_viewed meta:admitted"},
		{"?name=order_completed&outcome=accepted", "trace-token", 200, "accepted order_completed meta:admitted,accepted order_completed meta:consent"},
		{"?outcome=duplicate", "trace-token", 200, "duplicate order_completed"},
		{"?name=order_completed&destination=meta&admitted=false", "trace-token", 200, "duplicate order_completed,accepted order_completed meta:consent"},
		{"?destination=ga4&admitted=true", "trace-token", 200, "accepted order_completed ga4:admitted,accepted order_completed ga4:admitted"},
		{"?destination=nope", "trace-token", 200, "duplicate order_completed"},
		{"?limit=1", "trace-token", 200, "duplicate order_completed"},
		{"?limit=0", "trace-token", 400, ""},
		{"?admitted=false", "trace-token", 400, ""},
	}
	for _, tc := range cases {
		code, body, hdr := httpGet(t, base+tc.query, tc.token)
		if code != tc.code {
			t.Errorf("%q: %d %s, want %d", tc.query, code, body, tc.code)
			continue
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate")
		}
		if code != 200 {
			continue
		}
		var a traceAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, x := range a.Events {
			s := x.Outcome + " " + x.Name
			if len(x.Destinations) > 0 {
				d := x.Destinations[0]
				if strings.Contains(tc.query, "destination=") || d.Destination == "meta" {
					s += " " + d.Destination + ":" + d.Reason
				}
			}
			got = append(got, s)
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.query, strings.Join(got, ","), tc.want)
		}
		if hdr.Get("Cache-Control") != "no-store" || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%q: headers %v", tc.query, hdr)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, base, nil)
	req.Header.Set("Authorization", "Bearer trace-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

// TestTraceNeedsToken: without admin.token the admin port is open, but the
// trace is not; with debug.trace_events 0 there is no route at all.
func TestTraceNeedsToken(t *testing.T) {
	tr := NewTracer(config.Debug{TraceEvents: 10}, nil, nil)
	p := startProxy(t, testConfig("http://"+closedAddr(t)), Options{}, func(s *Server) { s.HandleTrace(tr) })
	if code, body, _ := httpGet(t, "http://"+p.adminAddr+"/debug/events", ""); code != 403 || !strings.Contains(body, "admin.token") {
		t.Errorf("no token configured: %d %q, want 403", code, body)
	}
	if tr.until.Load() != 0 {
		t.Error("a refused request opened a recording window")
	}
	off := startProxy(t, testConfig("http://"+closedAddr(t)), Options{}, func(s *Server) { s.HandleTrace(nil) })
	if code, _, _ := httpGet(t, "http://"+off.adminAddr+"/debug/events", ""); code != 404 {
		t.Errorf("trace off: %d, want 404", code)
	}
}

func TestTraceObserveIdleAllocs(t *testing.T) {
	tr := NewTracer(config.Debug{TraceEvents: 10}, fakeExplainer{}, nil)
	e := traceEvent(time.Now(), "page_viewed", nil)
	if n := testing.AllocsPerRun(100, func() { tr.ObserveEvent(e, enrich.Accepted, "") }); n != 0 {
		t.Errorf("idle ObserveEvent allocates %v times", n)
	}
	tr.until.Store(time.Now().Add(-time.Second).UnixNano()) // a window that is over
	if n := testing.AllocsPerRun(100, func() { tr.ObserveEvent(e, enrich.Accepted, "") }); n != 0 {
		t.Errorf("ObserveEvent after the window allocates %v times", n)
	}
}

// BenchmarkTraceObserveIdle is the cost every event pays when nobody is
// watching (after a window closed: the worse of the two idle cases).
func BenchmarkTraceObserveIdle(b *testing.B) {
	tr := NewTracer(config.Debug{TraceEvents: 200}, fakeExplainer{}, nil)
	tr.until.Store(time.Now().Add(-time.Second).UnixNano())
	e := traceEvent(time.Now(), "page_viewed", nil)
	b.ReportAllocs()
	for b.Loop() {
		tr.ObserveEvent(e, enrich.Accepted, "")
	}
}

// BenchmarkTraceObserveRecording is the cost per event while a window is
// open, for a GA4-like page view with attribution.
func BenchmarkTraceObserveRecording(b *testing.B) {
	tr := NewTracer(config.Debug{TraceEvents: 200}, fakeExplainer{}, nil)
	tr.until.Store(time.Now().Add(time.Hour).UnixNano())
	e := traceEvent(time.Now(), "page_viewed", func(e *enrich.Event) {
		e.URL = "https://shop.example/products/blue-shirt?gclid=Cj0KCQ&utm_source=google"
		e.DeviceID = "0f8fad5b-d9cb-469f-a165-70867728950e"
		e.SessionID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
		e.Context.IPHash = "0123456789abcdef0123456789abcdef"
		e.Attribution = enrich.Attribution{Channel: "Paid Search", Source: "google", Medium: "cpc", ClickIDs: enrich.ClickIDs{GCLID: "Cj0KCQ"}}
		e.Notes = enrich.StageNotes{DedupKey: [16]byte{1, 2, 3}, DedupBy: enrich.DedupByDerived}
	})
	b.ReportAllocs()
	for b.Loop() {
		tr.ObserveEvent(e, enrich.Accepted, "")
	}
}

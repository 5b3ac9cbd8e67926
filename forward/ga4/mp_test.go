package ga4_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/ga4"
)

func mpCfg(endpoint string, x config.DestinationX) config.Destination {
	x.Mode = ga4.ModeMP
	if x.APISecret == "" {
		x.APISecret = secret
	}
	return gaCfg(endpoint, x)
}

// checkValid fails the test when Google's documented rules find anything
// wrong with a body sidetrack sent.
func checkValid(t *testing.T, r mpRequest) {
	t.Helper()
	if msgs := validateMP(r.raw, t0); len(msgs) > 0 {
		t.Fatalf("the Measurement Protocol would refuse this body: %+v\n%s", msgs, r.raw)
	}
	if r.query.Get("measurement_id") != mid || r.query.Get("api_secret") != secret {
		t.Fatalf("query %q", r.rawQuery)
	}
}

func purchase() *enrich.Event {
	return &enrich.Event{
		EventID: "ord-1", AnonymousID: "585712067.1795442481", GASessionID: "1795442481", UserID: "u-42",
		Name: "order_completed", OriginalName: "Order Completed", Source: enrich.SourceSegment,
		ReceivedAt: t0.Add(-time.Minute), OccurredAt: t0.Add(-90 * time.Second),
		URL: "https://shop.example/thanks", Title: "Thanks",
		GA:      enrich.GAHit{EngagementMS: 2500},
		Context: enrich.Context{Locale: "en-us", Screen: "1280x720", Country: "DE", Region: "BE", IPTruncated: "203.0.113.0"},
		Consent: enrich.Consent{Analytics: enrich.Granted, Ads: enrich.Granted, AdUserData: enrich.Granted, AdPersonalization: enrich.Denied},
		Commerce: enrich.Commerce{
			Value: enrich.Some(59.97), Currency: "USD", TransactionID: "T1", Tax: enrich.Some(4.5),
			Shipping: enrich.Some(5), Coupon: "SPRING",
			Items: []enrich.Item{
				{ID: "SKU-1", Name: "Blue T-Shirt", Brand: "Acme", Category: "Apparel", Category2: "Men", Variant: "blue",
					Price: enrich.Some(19.99), Quantity: enrich.Some(2), Discount: enrich.Some(1), Affiliation: "web",
					Index: enrich.Some(0), ListID: "l1", ListName: "Spring", LocationID: "store-1", Coupon: "C1"},
				{ID: "SKU-2", Name: "Canvas Tote", Category: "Bags", Price: enrich.Some(19.99), Quantity: enrich.Some(1)},
			},
		},
		UserData: enrich.UserData{Google: enrich.GoogleUserData{
			EM: strings.Repeat("a", 64), PH: strings.Repeat("b", 64), FN: strings.Repeat("c", 64), LN: strings.Repeat("d", 64),
			CT: strings.Repeat("e", 64),
		}},
		Properties:     enrich.Props{{Key: "payment_type", Kind: enrich.PropString, Str: "card"}},
		UserProperties: enrich.Props{{Key: "plan", Kind: enrich.PropString, Str: "pro"}, {Key: "ltv", Kind: enrich.PropNumber, Num: 120}},
	}
}

func TestMPPurchase(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
	sendAll(t, a, []*enrich.Event{purchase()})
	reqs := f.mpRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	checkValid(t, reqs[0])
	b := reqs[0].body
	if b.ClientID != "585712067.1795442481" || b.UserID != "u-42" {
		t.Errorf("client_id %q user_id %q", b.ClientID, b.UserID)
	}
	if b.Consent["ad_user_data"] != "GRANTED" || b.Consent["ad_personalization"] != "DENIED" {
		t.Errorf("consent %v", b.Consent)
	}
	if b.NonPersonalizedAds == nil || !*b.NonPersonalizedAds {
		t.Errorf("non_personalized_ads not set with ad_personalization denied")
	}
	if b.IPOverride != "203.0.113.0" || b.UserLocation["country_id"] != "DE" || b.UserLocation["region_id"] != "DE-BE" {
		t.Errorf("ip_override %q user_location %v", b.IPOverride, b.UserLocation)
	}
	if b.Device["language"] != "en-us" || b.Device["screen_resolution"] != "1280x720" {
		t.Errorf("device %v", b.Device)
	}
	if string(b.UserProperties["plan"]) != `{"value":"pro"}` || string(b.UserProperties["ltv"]) != `{"value":120}` {
		t.Errorf("user_properties %s", b.UserProperties)
	}
	if ud := b.UserData; ud == nil || len(ud.Email) != 1 || ud.Email[0] != strings.Repeat("a", 64) ||
		ud.Phone[0] != strings.Repeat("b", 64) || ud.Address[0]["sha256_first_name"] != strings.Repeat("c", 64) ||
		ud.Address[0]["sha256_last_name"] != strings.Repeat("d", 64) || len(ud.Address[0]) != 2 {
		t.Errorf("user_data %+v", ud)
	}
	if len(b.Events) != 1 {
		t.Fatalf("%d events", len(b.Events))
	}
	ev := b.Events[0]
	if ev.Name != "purchase" {
		t.Errorf("name %q", ev.Name)
	}
	if ts, _ := ev.TimestampMicros.Int64(); ts != t0.Add(-90*time.Second).UnixMicro() {
		t.Errorf("event timestamp_micros %d", ts)
	}
	if ts, _ := b.TimestampMicros.Int64(); ts != t0.Add(-90*time.Second).UnixMicro() {
		t.Errorf("request timestamp_micros %d", ts)
	}
	for k, want := range map[string]string{
		"session_id": "1795442481", "currency": "USD", "transaction_id": "T1", "coupon": "SPRING",
		"page_location": "https://shop.example/thanks", "page_title": "Thanks", "event_id": "ord-1", "payment_type": "card",
	} {
		if got := ev.str(t, k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	for k, want := range map[string]float64{"value": 59.97, "tax": 4.5, "shipping": 5, "engagement_time_msec": 2500} {
		if got := ev.num(t, k); got != want {
			t.Errorf("%s=%v, want %v", k, got, want)
		}
	}
	var items []map[string]any
	if err := json.Unmarshal(ev.Params["items"], &items); err != nil || len(items) != 2 {
		t.Fatalf("items %s", ev.Params["items"])
	}
	want := map[string]any{
		"item_id": "SKU-1", "item_name": "Blue T-Shirt", "item_brand": "Acme", "item_category": "Apparel",
		"item_category2": "Men", "item_variant": "blue", "price": 19.99, "quantity": 2.0, "discount": 1.0,
		"affiliation": "web", "index": 0.0, "item_list_id": "l1", "item_list_name": "Spring",
		"location_id": "store-1", "coupon": "C1",
	}
	if fmt.Sprint(items[0]) != fmt.Sprint(want) {
		t.Errorf("item %v\nwant %v", items[0], want)
	}
}

func TestMPLeadFromBackend(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
	lead := serverEvent("lead-1", "lead_submitted")
	lead.OriginalName = "Lead"
	lead.SessionID = "stk-session-9"
	lead.Commerce = enrich.Commerce{Value: enrich.Some(100), Currency: "EUR"}
	again := serverEvent("lead-2", "lead_submitted")
	again.DeviceID = lead.DeviceID
	sendAll(t, a, []*enrich.Event{lead, again})
	reqs := f.mpRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests: one device's events share one", len(reqs))
	}
	checkValid(t, reqs[0])
	b := reqs[0].body
	if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(b.ClientID) {
		t.Errorf("derived client_id %q is not in GA's format", b.ClientID)
	}
	if len(b.Events) != 2 || b.Events[0].Name != "generate_lead" {
		t.Fatalf("events %+v", b.Events)
	}
	ev := b.Events[0]
	if ev.num(t, "value") != 100 || ev.str(t, "currency") != "EUR" || ev.num(t, "engagement_time_msec") != 1 {
		t.Errorf("params %s", reqs[0].raw)
	}
	if sid := ev.str(t, "session_id"); !regexp.MustCompile(`^\d+$`).MatchString(sid) {
		t.Errorf("session_id %q derived from sidetrack's session is not a number", sid)
	}
	if b.Consent != nil || b.UserData != nil || b.IPOverride != "" {
		t.Errorf("nothing known, nothing sent: %s", reqs[0].raw)
	}

	// Stable: the same device gives the same client id in a later request,
	// another device another one.
	f2 := newFakeGoogle(t, clock)
	a2 := newAdapter(t, mpCfg(f2.URL, config.DestinationX{}))
	other := serverEvent("lead-3", "lead_submitted")
	sendAll(t, a2, []*enrich.Event{again, other})
	got := f2.mpRequests()
	if len(got) != 2 || got[0].body.ClientID != b.ClientID || got[1].body.ClientID == b.ClientID {
		t.Errorf("client ids %q then %q, %q", b.ClientID, got[0].body.ClientID, got[len(got)-1].body.ClientID)
	}
}

// TestMPUserDataConsent: hashed user data only with ad_user_data granted.
func TestMPUserDataConsent(t *testing.T) {
	for _, st := range []enrich.ConsentState{enrich.Granted, enrich.Denied, enrich.Unknown} {
		t.Run(st.String(), func(t *testing.T) {
			f := newFakeGoogle(t, clock)
			a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
			e := purchase()
			e.Consent.AdUserData = st
			sendAll(t, a, []*enrich.Event{e})
			r := f.mpRequests()[0]
			checkValid(t, r)
			if has := r.body.UserData != nil; has != (st == enrich.Granted) {
				t.Errorf("ad_user_data %s: user_data sent %v: %s", st, has, r.raw)
			}
			if strings.Contains(string(r.raw), strings.Repeat("a", 64)) != (st == enrich.Granted) {
				t.Errorf("ad_user_data %s: hashed email in body: %s", st, r.raw)
			}
			if _, ok := r.body.Consent["ad_user_data"]; ok != (st != enrich.Unknown) {
				t.Errorf("consent %v", r.body.Consent)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	old := serverEvent("old", "order_completed")
	old.OccurredAt = t0.Add(-72*time.Hour - time.Minute)
	recent := serverEvent("recent", "order_completed")
	recent.OccurredAt = t0.Add(-71 * time.Hour)
	otherTID := serverEvent("tid", "page_viewed")
	otherTID.GAMeasurementID = "G-OTHER99"
	noTID := serverEvent("notid", "page_viewed")
	bad := serverEvent("bad", "9 lives!")
	bad.OriginalName = "9 lives!"
	long := serverEvent("long", strings.Repeat("x", 60))
	engagement := serverEvent("eng", "user_engaged")
	engagement.Source = enrich.SourceGA4
	noIDs := &enrich.Event{Name: "page_viewed", OccurredAt: t0}
	custom := serverEvent("custom", "coupon_applied")
	custom.OriginalName = "Coupon Applied"
	for _, tc := range []struct {
		name  string
		mode  string
		e     *enrich.Event
		class string
		msg   string
	}{
		{"older than 72h", ga4.ModeMP, old, "permanent", "72h"},
		{"older than 72h, relay", ga4.ModeRelay, old, "permanent", "72h"},
		{"71h old", ga4.ModeMP, recent, "delivered", ""},
		{"another property's hit", ga4.ModeRelay, otherTID, "permanent", "measurement id \"G-OTHER99\" not configured"},
		{"no tid: the configured one", ga4.ModeRelay, noTID, "delivered", ""},
		{"name cannot be made valid", ga4.ModeMP, bad, "permanent", "valid GA4 event name"},
		{"long name is cut", ga4.ModeMP, long, "delivered", ""},
		{"reserved name, mp", ga4.ModeMP, engagement, "permanent", "reserve"},
		{"reserved name, relay (gtag sends it)", ga4.ModeRelay, engagement, "delivered", ""},
		{"no ids", ga4.ModeMP, noIDs, "permanent", "client id"},
		{"unknown name: the canonical snake form", ga4.ModeMP, custom, "delivered", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeGoogle(t, clock)
			a := newAdapter(t, gaCfg(f.URL, config.DestinationX{Mode: tc.mode, APISecret: secret}))
			err := a.Prepare(tc.e)
			if got := class(err); got != tc.class {
				t.Fatalf("class %s, want %s (%v)", got, tc.class, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			// Send refuses the same events on its own (time passes, replays).
			per, err := a.Send(context.Background(), []*enrich.Event{tc.e})
			if err != nil {
				t.Fatal(err)
			}
			if got := class(per[0]); got != tc.class {
				t.Errorf("Send: class %s, want %s (%v)", got, tc.class, per[0])
			}
			if tc.class == "delivered" && tc.mode == ga4.ModeMP {
				r := f.mpRequests()
				if len(r) != 1 {
					t.Fatalf("%d requests", len(r))
				}
				checkValid(t, r[0])
				if tc.e == custom && r[0].body.Events[0].Name != "coupon_applied" {
					t.Errorf("name %q", r[0].body.Events[0].Name)
				}
			}
		})
	}
}

// TestSendRefusesWhatAgedInTheQueue: an event that passed Prepare but is
// past 72h when sent is dead-lettered; the rest of the batch goes.
func TestSendRefusesWhatAgedInTheQueue(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
	fresh := serverEvent("fresh", "order_completed")
	stale := serverEvent("stale", "order_completed")
	stale.DeviceID = fresh.DeviceID
	stale.OccurredAt = t0.Add(-73 * time.Hour)
	per, err := a.Send(context.Background(), []*enrich.Event{fresh, stale})
	if err != nil {
		t.Fatal(err)
	}
	if class(per[0]) != "delivered" || class(per[1]) != "permanent" {
		t.Fatalf("results %v", per)
	}
	if r := f.mpRequests(); len(r) != 1 || len(r[0].body.Events) != 1 {
		t.Fatalf("requests %v", r)
	}
}

func TestLimits(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
	lim := a.Limits()
	if lim.MaxEvents != 25 || lim.MaxBytes != 130000 {
		t.Fatalf("Limits %+v", lim)
	}
	events := make([]*enrich.Event, 26)
	for i := range events {
		events[i] = serverEvent(fmt.Sprint("e", i), "page_viewed")
		events[i].DeviceID = "one-device"
	}
	t.Run("26 events are 2 batches", func(t *testing.T) {
		// As the delivery core cuts batches at Limits().MaxEvents.
		for start := 0; start < len(events); start += lim.MaxEvents {
			sendAll(t, a, events[start:min(start+lim.MaxEvents, len(events))])
		}
		reqs := f.mpRequests()
		if len(reqs) != 2 || len(reqs[0].body.Events) != 25 || len(reqs[1].body.Events) != 1 {
			t.Fatalf("%d requests", len(reqs))
		}
		for _, r := range reqs {
			checkValid(t, r)
		}
	})
	t.Run("Send splits a larger batch itself", func(t *testing.T) {
		f := newFakeGoogle(t, clock)
		a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
		sendAll(t, a, events)
		reqs := f.mpRequests()
		if len(reqs) != 2 || len(reqs[0].body.Events) != 25 {
			t.Fatalf("%d requests", len(reqs))
		}
	})
	t.Run("bodies stay under 130 kB", func(t *testing.T) {
		f := newFakeGoogle(t, clock)
		a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
		var big []*enrich.Event
		for i := range 10 {
			e := serverEvent(fmt.Sprint("big", i), "order_completed")
			e.DeviceID = "one-device"
			for n := range 40 {
				s := strings.Repeat(string(rune('a'+n%26)), 100)
				e.Commerce.Items = append(e.Commerce.Items, enrich.Item{ID: s, Name: s, Brand: s, Category: s, Variant: s})
			}
			big = append(big, e)
		}
		sendAll(t, a, big)
		reqs := f.mpRequests()
		if len(reqs) < 2 {
			t.Fatalf("%d requests for ~230 kB of events", len(reqs))
		}
		n := 0
		for _, r := range reqs {
			if len(r.raw) >= 130000 {
				t.Errorf("body of %d bytes", len(r.raw))
			}
			checkValid(t, r)
			n += len(r.body.Events)
		}
		if n != len(big) {
			t.Errorf("%d events arrived of %d", n, len(big))
		}
	})
	t.Run("one event over 130 kB is refused", func(t *testing.T) {
		f := newFakeGoogle(t, clock)
		a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
		e := serverEvent("huge", "order_completed")
		s := strings.Repeat("z", 100)
		for range 200 {
			e.Commerce.Items = append(e.Commerce.Items, enrich.Item{ID: s, Name: s, Brand: s, Category: s, Category2: s, Variant: s, Coupon: s})
		}
		small := serverEvent("small", "page_viewed")
		per, err := a.Send(context.Background(), []*enrich.Event{e, small})
		if err != nil {
			t.Fatal(err)
		}
		if class(per[0]) != "permanent" || !strings.Contains(per[0].Error(), "130000") || per[1] != nil {
			t.Fatalf("results %v", per)
		}
		if len(f.mpRequests()) != 1 {
			t.Errorf("the small event was not sent")
		}
	})
}

// TestMPParamLimits: whatever the event holds, what is sent passes GA4's
// limits, and the parameters GA4 needs win over custom ones.
func TestMPParamLimits(t *testing.T) {
	f := newFakeGoogle(t, clock)
	a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
	e := purchase()
	e.Properties = nil
	for i := range 40 {
		e.Properties = append(e.Properties, enrich.Prop{Key: fmt.Sprintf("p%02d", i), Kind: enrich.PropString, Str: strings.Repeat("v", 150)})
	}
	e.Properties = append(enrich.Props{
		{Key: "bad name", Kind: enrich.PropString, Str: "x"},
		{Key: "ga_reserved", Kind: enrich.PropString, Str: "x"},
		{Key: "value", Kind: enrich.PropNumber, Num: 1},
		{Key: strings.Repeat("k", 41), Kind: enrich.PropString, Str: "x"},
	}, e.Properties...)
	e.URL = "https://shop.example/" + strings.Repeat("p", 1200)
	e.Title = strings.Repeat("ü", 400)
	e.UserProperties = nil
	for i := range 30 {
		e.UserProperties = append(e.UserProperties, enrich.Prop{Key: fmt.Sprintf("u%02d", i), Kind: enrich.PropString, Str: strings.Repeat("w", 50)})
	}
	e.UserProperties = append(e.UserProperties, enrich.Prop{Key: "first_open_time", Kind: enrich.PropNumber, Num: 1},
		enrich.Prop{Key: strings.Repeat("n", 25), Kind: enrich.PropString, Str: "x"})
	sendAll(t, a, []*enrich.Event{e})
	r := f.mpRequests()[0]
	checkValid(t, r)
	ev := r.body.Events[0]
	if len(ev.Params) != 25 {
		t.Errorf("%d params", len(ev.Params))
	}
	for _, k := range []string{"session_id", "engagement_time_msec", "page_location", "value", "currency", "items", "transaction_id", "event_id", "p00"} {
		if _, ok := ev.Params[k]; !ok {
			t.Errorf("param %s was dropped for custom ones", k)
		}
	}
	if v := ev.num(t, "value"); v != 59.97 {
		t.Errorf("a property named value replaced the order value: %v", v)
	}
	if got := ev.str(t, "page_title"); got != strings.Repeat("ü", 300) {
		t.Errorf("page_title cut to %d runes", len([]rune(got)))
	}
	if got := ev.str(t, "p00"); got != strings.Repeat("v", 100) {
		t.Errorf("p00 %q", got)
	}
	if len(r.body.UserProperties) != 25 {
		t.Errorf("%d user properties", len(r.body.UserProperties))
	}
}

func TestValidateMode(t *testing.T) {
	mk := func() []*enrich.Event {
		var out []*enrich.Event
		for i, cur := range []string{"USD", "usd", "EUR"} {
			e := serverEvent(fmt.Sprint("v", i), "order_completed")
			e.DeviceID = "one"
			e.Commerce = enrich.Commerce{Value: enrich.Some(10), Currency: cur, TransactionID: fmt.Sprint("T", i)}
			out = append(out, e)
		}
		return out
	}
	t.Run("invalid events are dead-lettered, the rest sent", func(t *testing.T) {
		f := newFakeGoogle(t, clock)
		a := newAdapter(t, mpCfg(f.URL, config.DestinationX{Validate: true}))
		per, err := a.Send(context.Background(), mk())
		if err != nil {
			t.Fatal(err)
		}
		if class(per[0]) != "delivered" || class(per[1]) != "permanent" || class(per[2]) != "delivered" {
			t.Fatalf("results %v", per)
		}
		if !strings.Contains(per[1].Error(), "VALUE_INVALID") || !strings.Contains(per[1].Error(), "currency") {
			t.Errorf("dead letter reason %q", per[1])
		}
		if d := f.debugRequests(); len(d) != 1 || len(d[0].body.Events) != 3 {
			t.Fatalf("debug requests %d", len(d))
		}
		live := f.mpRequests()
		if len(live) != 1 || len(live[0].body.Events) != 2 {
			t.Fatalf("live requests %+v", live)
		}
		checkValid(t, live[0])
	})
	t.Run("a problem with the request refuses all its events", func(t *testing.T) {
		f := newFakeGoogle(t, clock)
		f.setRespond(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/debug/mp/collect" {
				fmt.Fprint(w, `{"validationMessages":[{"fieldPath":"client_id","description":"Measurement requires a client_id.","validationCode":"VALUE_REQUIRED"}]}`)
			}
		})
		a := newAdapter(t, mpCfg(f.URL, config.DestinationX{Validate: true}))
		per, err := a.Send(context.Background(), mk())
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range per {
			if class(e) != "permanent" || !strings.Contains(e.Error(), "VALUE_REQUIRED") {
				t.Errorf("event %d: %v", i, e)
			}
		}
		if n := len(f.mpRequests()); n != 0 {
			t.Errorf("%d live requests", n)
		}
	})
	for _, tc := range []struct {
		name    string
		respond http.HandlerFunc
	}{
		{"debug endpoint down", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }},
		{"debug endpoint answers nonsense", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "<html>") }},
	} {
		t.Run(tc.name+": retried, nothing sent live", func(t *testing.T) {
			f := newFakeGoogle(t, clock)
			f.setRespond(tc.respond)
			a := newAdapter(t, mpCfg(f.URL, config.DestinationX{Validate: true}))
			_, err := a.Send(context.Background(), mk())
			if class(err) != "retry" {
				t.Fatalf("class %s (%v)", class(err), err)
			}
			if n := len(f.mpRequests()); n != 0 {
				t.Errorf("%d live requests", n)
			}
		})
	}
	t.Run("valid batch passes", func(t *testing.T) {
		f := newFakeGoogle(t, clock)
		a := newAdapter(t, mpCfg(f.URL, config.DestinationX{Validate: true}))
		sendAll(t, a, []*enrich.Event{purchase()})
		if len(f.debugRequests()) != 1 || len(f.mpRequests()) != 1 {
			t.Fatalf("debug %d live %d", len(f.debugRequests()), len(f.mpRequests()))
		}
	})
}

// TestRelayModeSendsServerEventsByMP: in relay mode with an api_secret,
// gtag events are relayed and the others use the Measurement Protocol;
// without one, everything is relayed.
func TestRelayModeSendsServerEventsByMP(t *testing.T) {
	hit := serverEvent("hit", "page_viewed")
	hit.Source = enrich.SourceGA4
	hit.AnonymousID = "1.2"
	order := serverEvent("order", "order_completed")
	order.AnonymousID = "1.2"

	f := newFakeGoogle(t, clock)
	a := newAdapter(t, gaCfg(f.URL, config.DestinationX{Mode: ga4.ModeRelay, APISecret: secret}))
	if a.GroupKey(hit) == a.GroupKey(order) {
		t.Errorf("relay and MP events share group %q", a.GroupKey(hit))
	}
	sendAll(t, a, []*enrich.Event{hit, order})
	if len(f.relayHits()) != 1 || len(f.mpRequests()) != 1 {
		t.Fatalf("relay %d, mp %d", len(f.relayHits()), len(f.mpRequests()))
	}
	if f.mpRequests()[0].body.ClientID != "1.2" {
		t.Errorf("client id %q", f.mpRequests()[0].body.ClientID)
	}

	// One way fails, the other not: per-event results.
	f.setRespond(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mp/collect" {
			w.WriteHeader(500)
		}
	})
	per, err := a.Send(context.Background(), []*enrich.Event{hit, order})
	if err != nil || class(per[0]) != "delivered" || class(per[1]) != "retry" {
		t.Fatalf("per %v err %v", per, err)
	}

	f2 := newFakeGoogle(t, clock)
	a2 := newAdapter(t, gaCfg(f2.URL, config.DestinationX{Mode: ga4.ModeRelay}))
	sendAll(t, a2, []*enrich.Event{hit, order})
	if len(f2.relayHits()) != 1 || len(f2.mpRequests()) != 0 {
		t.Fatalf("relay %d, mp %d", len(f2.relayHits()), len(f2.mpRequests()))
	}
}

// TestConcurrentSends: the delivery core sends from several goroutines;
// each request holds exactly its own batch.
func TestConcurrentSends(t *testing.T) {
	f := newFakeGoogle(t, clock)
	for _, mode := range []string{ga4.ModeRelay, ga4.ModeMP} {
		a := newAdapter(t, gaCfg(f.URL, config.DestinationX{Mode: mode, APISecret: secret}))
		done := make(chan error)
		for g := range 8 {
			go func() {
				var events []*enrich.Event
				for i := range 5 {
					e := serverEvent(fmt.Sprintf("%s-%d-%d", mode, g, i), "page_viewed")
					e.Source, e.AnonymousID = enrich.SourceGA4, fmt.Sprintf("%d.1", g)
					events = append(events, e)
				}
				per, err := a.Send(context.Background(), events)
				if err == nil {
					for _, e := range per {
						if e != nil {
							err = e
						}
					}
				}
				done <- err
			}()
		}
		for range 8 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range f.relayHits() {
		cid := r.query.Get("cid")
		for _, h := range r.events() {
			if !strings.HasPrefix(h["ep.event_id"], "relay-"+strings.TrimSuffix(cid, ".1")+"-") {
				t.Errorf("hit %s in a request for client %s", h["ep.event_id"], cid)
			}
		}
	}
	for _, r := range f.mpRequests() {
		for _, e := range r.body.Events {
			if !strings.HasPrefix(e.str(t, "event_id"), "mp-"+strings.TrimSuffix(r.body.ClientID, ".1")+"-") {
				t.Errorf("event %s in a request for client %s", e.str(t, "event_id"), r.body.ClientID)
			}
		}
	}
	if len(f.relayHits()) != 8 || len(f.mpRequests()) != 8 {
		t.Errorf("relay %d mp %d requests, want 8 each", len(f.relayHits()), len(f.mpRequests()))
	}
}

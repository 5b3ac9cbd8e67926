package enrich

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fastjson"
)

// fullEvent returns an event with every kind of field set.
func fullEvent() *Event {
	e := &Event{}
	ts := time.Date(2026, 11, 23, 14, 5, 6, 789_000_000, time.UTC)
	e.EventID = "0193-abc"
	e.DeviceID = "d1"
	e.AnonymousID = "123.456"
	e.UserID = "u\"1"
	e.SessionID = "s1"
	e.GASessionID = "1700000000"
	e.GASessionNumber = 3
	e.GAMeasurementID = "G-TEST"
	e.PageLoadID = "p1"
	e.HitSeq = 2
	e.Name = "order_completed"
	e.OriginalName = "purchase"
	e.Source = SourceGA4
	e.ReceivedAt = ts
	e.OccurredAt = ts.Add(-time.Second)
	e.URL = "https://shop.example/thanks?x=<1>&y=2"
	e.Path = "/thanks"
	e.Referrer = "https://www.google.com/"
	e.Title = "Thanks — ✓\n"
	e.Host = "shop.example"
	e.Attribution = Attribution{UTMSource: "google", Channel: "Paid Search", ClickIDs: ClickIDs{GCLID: "abc"},
		FBC: "fb.1.1.x", FirstTouch: Touch{Source: "google", At: ts}, LastTouch: Touch{Medium: "cpc"}}
	e.Context = Context{UserAgent: "Mozilla/5.0", IPHash: "ff", Locale: "en-us", Bot: true, BotReason: "crawler"}
	e.Consent = Consent{Analytics: Granted, Ads: Denied, GPC: true, Source: "gcs", GCS: "G101",
		Categories: Props{{Key: "marketing", Kind: PropBool, Bool: true}}}
	e.UserData = UserData{EM: "aa", Google: GoogleUserData{EM: "bb"}}
	e.Commerce = Commerce{Value: Some(59.97), Currency: "USD", TransactionID: "T1", Tax: Some(0),
		Items: []Item{{ID: "SKU1", Name: "Mug", Price: Some(19.99), Quantity: Some(3)}, {ID: "SKU2"}}}
	e.GA = GAHit{Version: "2", SessionEngaged: true, EngagementMS: 120}
	e.Properties = Props{{Key: "s", Kind: PropString, Str: "v"}, {Key: "n", Kind: PropNumber, Num: 1.5e-7},
		{Key: "b", Kind: PropBool, Bool: false}, {Key: "big", Kind: PropNumber, Num: 1e21}}
	e.UserProperties = Props{{Key: "tier", Kind: PropString, Str: "gold"}}
	e.Quality.Add(FlagRenamedEvent)
	e.Quality.Add(FlagJoined)
	e.Destinations = []string{"local", "meta"}
	e.PII = PII{Email: "secret@example.com"}
	return e
}

func TestAppendJSONRoundTrip(t *testing.T) {
	e := fullEvent()
	b := e.AppendJSON(nil)
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	if bytes.Contains(b, []byte("secret@example.com")) {
		t.Fatal("raw PII serialized")
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	want := *e
	want.PII = PII{}
	want.arena = nil
	if !reflect.DeepEqual(&want, &back) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", back, want)
	}
}

func TestAppendJSONMatchesEncodingJSONShape(t *testing.T) {
	e := fullEvent()
	type plain Event // encoding/json view through the struct tags
	std, err := json.Marshal((*plain)(e))
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(e.AppendJSON(nil), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(std, &b); err != nil {
		t.Fatal(err)
	}
	// encoding/json writes RFC 3339 with nanosecond precision trimmed;
	// compare times by value, the rest by deep equality.
	for _, m := range []map[string]any{a, b} {
		for _, k := range []string{"received_at", "occurred_at"} {
			tm, err := time.Parse(time.RFC3339Nano, m[k].(string))
			if err != nil {
				t.Fatal(err)
			}
			m[k] = tm.UnixMilli()
		}
		at := m["attribution"].(map[string]any)["first_touch"].(map[string]any)
		tm, _ := time.Parse(time.RFC3339Nano, at["at"].(string))
		at["at"] = tm.UnixMilli()
	}
	if !reflect.DeepEqual(a, b) {
		ja, _ := json.MarshalIndent(a, "", " ")
		jb, _ := json.MarshalIndent(b, "", " ")
		t.Errorf("AppendJSON and encoding/json disagree:\n%s\nvs\n%s", ja, jb)
	}
}

func TestAppendJSONMinimal(t *testing.T) {
	e := &Event{Name: "page_view", Source: SourceCollect}
	got := string(e.AppendJSON(nil))
	want := `{"event_id":"","name":"page_view","source":"collect","received_at":"0001-01-01T00:00:00.000Z","occurred_at":"0001-01-01T00:00:00.000Z","consent":{"analytics":"unknown","ads":"unknown","ad_user_data":"unknown","ad_personalization":"unknown"}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestAppendQuoted(t *testing.T) {
	cases := []string{"", "plain", "q\"b\\", "\x00\x1f\t\n\r", "<a&b>", "\u2028\u2029", "é✓😀", "bad\xffutf8", string([]byte{0xed, 0xa0, 0x80})}
	for c := range 256 { // every byte alone and inside plain text, short and long
		b := string([]byte{byte(c)})
		cases = append(cases, b, "ab"+b+"cd", "0123456789abcdef"+b+"ghijklmnopqrstuvwxyz", "abcdefg"+b+b+"hijklmnopq")
	}
	for _, s := range cases {
		got := appendQuoted(nil, s)
		want, _ := json.Marshal(s)
		if !bytes.Equal(got, want) {
			t.Errorf("appendQuoted(%q) = %s, want %s", s, got, want)
		}
	}
}

// FuzzAppendQuoted: appendQuoted agrees with encoding/json on any input.
func FuzzAppendQuoted(f *testing.F) {
	for _, s := range []string{"", "plain ascii text of some length", "q\"b\\<a&b>\u2028", "bad\xffutf8 and more text", "é✓😀 unicode"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendQuoted(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendQuoted(%q) = %s, want %s", s, got, want)
		}
	})
}

func TestAppendFloat(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 59.97, 1e-7, 1.5e-7, 1e20, 1e21, 123456789.125, -0.000001} {
		got := appendFloat(nil, f)
		want, _ := json.Marshal(f)
		if !bytes.Equal(got, want) {
			t.Errorf("appendFloat(%v) = %s, want %s", f, got, want)
		}
	}
}

func TestInternOwnsBytes(t *testing.T) {
	e := &Event{}
	src := []byte("hello")
	s := e.Intern(src)
	copy(src, "XXXXX")
	if s != "hello" {
		t.Fatalf("interned string changed with its source: %q", s)
	}
	// Growing past the first chunk must not move strings handed out.
	big := bytes.Repeat([]byte("a"), 5000)
	s2 := e.Intern(big)
	if s != "hello" || s2 != strings.Repeat("a", 5000) {
		t.Fatal("strings changed when the arena grew")
	}
}

func TestResetKeepsCapacity(t *testing.T) {
	var p EventPool
	e := p.Get()
	e.Name = e.Intern([]byte("x"))
	e.Properties = append(e.Properties, Prop{Key: "k"})
	e.Commerce.Items = append(e.Commerce.Items, Item{ID: "i"})
	e.Reset()
	if !reflect.DeepEqual(e.Properties, Props{}) || len(e.Commerce.Items) != 0 || cap(e.Properties) == 0 || e.Name != "" {
		t.Fatalf("reset left state: %+v", e)
	}
}

func TestPropsUnmarshalKeepsOrder(t *testing.T) {
	var p Props
	if err := json.Unmarshal([]byte(`{"z":1,"a":"x","m":true,"o":{"k":1}}`), &p); err != nil {
		t.Fatal(err)
	}
	want := Props{{Key: "z", Kind: PropNumber, Num: 1}, {Key: "a", Str: "x"}, {Key: "m", Kind: PropBool, Bool: true}, {Key: "o", Str: `{"k":1}`}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got %+v", p)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := fullEvent()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func TestDecodeJSONRoundTrip(t *testing.T) {
	e := fullEvent()
	b := e.AppendJSON(nil)
	var p fastjson.Parser
	got := &Event{}
	if err := got.DecodeJSON(&p, b); err != nil {
		t.Fatal(err)
	}
	var want Event
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	got.arena, want.arena = nil, nil
	if !reflect.DeepEqual(got, &want) {
		t.Errorf("DecodeJSON and encoding/json disagree:\n got %+v\nwant %+v", got, want)
	}
	if again := got.AppendJSON(nil); !bytes.Equal(again, b) {
		t.Errorf("re-encoded event differs:\n%s\n%s", again, b)
	}
	// A reused event keeps nothing of its previous content.
	if err := got.DecodeJSON(&p, []byte(`{"event_id":"x","name":"n","source":"collect","received_at":"2026-01-01T00:00:00.000Z","occurred_at":"2026-01-01T00:00:00.000Z","consent":{"analytics":"granted","ads":"unknown","ad_user_data":"unknown","ad_personalization":"unknown"}}`)); err != nil {
		t.Fatal(err)
	}
	if got.URL != "" || len(got.Commerce.Items) != 0 || got.Consent.Analytics != Granted || got.Name != "n" {
		t.Errorf("reused event: %+v", got)
	}
	for _, bad := range []string{`[]`, `{"received_at":"yesterday"}`, `{"consent":{"ads":"maybe"}}`, `{`} {
		if err := got.DecodeJSON(&p, []byte(bad)); err == nil {
			t.Errorf("DecodeJSON(%s) accepted", bad)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add(fullEvent().AppendJSON(nil))
	f.Add([]byte(`{"name":"x","properties":{"a":[1,2],"b":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p fastjson.Parser
		e := &Event{}
		if err := e.DecodeJSON(&p, b); err != nil {
			return
		}
		if out := e.AppendJSON(nil); !json.Valid(out) {
			t.Fatalf("decoded event encodes to invalid JSON: %s", out)
		}
	})
}

func BenchmarkDecodeJSON(b *testing.B) {
	src := fullEvent().AppendJSON(nil)
	var p fastjson.Parser
	e := &Event{}
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := e.DecodeJSON(&p, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalJSON(b *testing.B) {
	src := fullEvent().AppendJSON(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		var e Event
		if err := json.Unmarshal(src, &e); err != nil {
			b.Fatal(err)
		}
	}
}

package enrich

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/valyala/fastjson"
)

func TestLoadStoredJSON(t *testing.T) {
	full := fullEvent().AppendJSON(nil)
	for _, tc := range []struct {
		name       string
		js         string
		ok         bool
		id, evName string
	}{
		{name: "canonical", js: string(full), ok: true, id: "0193-abc", evName: "order_completed"},
		{name: "spaces", js: " {\n\"name\" : \"a\" ,\t\"event_id\":\"x\"}\r\n", ok: true, id: "x", evName: "a"},
		{name: "nested names skipped", js: `{"properties":{"name":"inner","event_id":"no"},"items":[{"name":"i"}],"name":"top"}`, ok: true, evName: "top"},
		{name: "last wins", js: `{"name":"a","name":"b","event_id":"1","event_id":"2"}`, ok: true, id: "2", evName: "b"},
		{name: "strings with quotes and brackets", js: `{"title":"a \"}\" ]","event_id":"e","x":[1,"]",{"y":"}"}],"name":"n"}`, ok: true, id: "e", evName: "n"},
		{name: "absent", js: `{"source":"ga4"}`, ok: true},
		{name: "escaped key", js: `{"event\u005fid":"x","name":"n"}`},
		{name: "escaped id", js: `{"event_id":"a\"b","name":"n"}`},
		{name: "id not a string", js: `{"event_id":12,"name":"n"}`},
		{name: "name null", js: `{"event_id":"e","name":null}`},
		{name: "array", js: `["event_id"]`},
		{name: "invalid", js: `{"event_id":"e"`},
		{name: "trailing garbage", js: `{"event_id":"e"} x`},
		{name: "empty", js: ``},
		{name: "control byte in a string", js: "{\"event_id\":\"a\x01\"}"},
		{name: "bad escape", js: `{"event_id":"e","t":"\x"}`},
		{name: "bad number", js: `{"event_id":"e","v":01}`},
		{name: "numbers and literals", js: `{"event_id":"e","v":[-0.5e+10,0,12,true,false,null],"w":"\u00e9\/"}`, ok: true, id: "e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			e.Properties = append(e.Properties, Prop{Key: "stale"})
			err := e.LoadStoredJSON([]byte(tc.js))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				if e.StoredJSON() != nil || len(e.Properties) != 0 {
					t.Fatalf("a failed load left state: %q %v", e.StoredJSON(), e.Properties)
				}
				return
			}
			if e.EventID != tc.id || e.Name != tc.evName {
				t.Errorf("id, name = %q, %q; want %q, %q", e.EventID, e.Name, tc.id, tc.evName)
			}
			if got := e.AppendJSON([]byte("x")); string(got) != "x"+tc.js {
				t.Errorf("AppendJSON = %q, want the stored bytes", got)
			}
			e.Reset()
			if e.StoredJSON() != nil {
				t.Error("Reset kept the stored JSON")
			}
		})
	}
}

// TestLoadStoredJSONCopies checks that the light event owns its bytes:
// the spool's buffer is only valid during its read transaction.
func TestLoadStoredJSONCopies(t *testing.T) {
	js := fullEvent().AppendJSON(nil)
	want := bytes.Clone(js)
	var e Event
	if err := e.LoadStoredJSON(js); err != nil {
		t.Fatal(err)
	}
	for i := range js {
		js[i] = 'x'
	}
	if got := e.AppendJSON(nil); !bytes.Equal(got, want) || e.EventID != "0193-abc" {
		t.Fatalf("light event changed with the caller's buffer: %q", got)
	}
}

// TestLoadStoredJSONMatchesDecode: for canonical events the light form
// sends what decoding and encoding again would.
func TestLoadStoredJSONMatchesDecode(t *testing.T) {
	var p fastjson.Parser
	for _, e := range []*Event{fullEvent(), {EventID: "e1", Name: "page_view", Source: SourceCollect}} {
		js := e.AppendJSON(nil)
		var full, light Event
		if err := full.DecodeJSON(&p, js); err != nil {
			t.Fatal(err)
		}
		if err := light.LoadStoredJSON(js); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(full.AppendJSON(nil), light.AppendJSON(nil)) {
			t.Errorf("payloads differ:\n%s\n%s", full.AppendJSON(nil), light.AppendJSON(nil))
		}
		if full.EventID != light.EventID || full.Name != light.Name {
			t.Errorf("fields differ: %q/%q vs %q/%q", full.EventID, full.Name, light.EventID, light.Name)
		}
	}
}

func TestLoadStoredJSONAllocs(t *testing.T) {
	js := fullEvent().AppendJSON(nil)
	var e Event
	_ = e.LoadStoredJSON(js) // grows the arena once
	if n := testing.AllocsPerRun(100, func() {
		if err := e.LoadStoredJSON(js); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("LoadStoredJSON allocates %v times", n)
	}
}

// FuzzLoadStoredJSON: whatever the input, the one-pass check agrees with
// encoding/json.Valid (short of fastjson's nesting bound), and a
// successful light load keeps the input as its JSON and finds the
// top-level event_id and name that a full parse finds (the last of each,
// as DecodeJSON takes them).
func FuzzLoadStoredJSON(f *testing.F) {
	f.Add(fullEvent().AppendJSON(nil))
	f.Add([]byte(`{"name":"a","event_id":"b","p":{"name":"c"},"q":["]}"]}`))
	f.Add([]byte(`{"event_id":"a\\","name":"x"}`))
	f.Add([]byte(`{"event_id":1}`))
	f.Add([]byte(`[1.5e+3,-0,true,false,null,"\u00e9\n"]`))
	f.Fuzz(func(t *testing.T, js []byte) {
		var e Event
		err := e.LoadStoredJSON(js)
		valid := !errors.Is(err, errStoredInvalid)
		if nesting(js) < maxStoredDepth && valid != json.Valid(js) {
			t.Fatalf("valid %v, encoding/json says %v: %q", valid, json.Valid(js), js)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(e.StoredJSON(), js) {
			t.Fatalf("stored %q, input %q", e.StoredJSON(), js)
		}
		var p fastjson.Parser
		v, err := p.ParseBytes(js)
		if err != nil {
			t.Fatalf("loaded JSON that fastjson refuses: %v", err)
		}
		o, err := v.Object()
		if err != nil {
			t.Fatalf("loaded a non-object: %q", js)
		}
		var id, name string
		o.Visit(func(k []byte, v *fastjson.Value) {
			switch string(k) {
			case "event_id":
				id = string(v.GetStringBytes())
			case "name":
				name = string(v.GetStringBytes())
			}
		})
		if e.EventID != id || e.Name != name {
			t.Fatalf("light %q/%q, parsed %q/%q from %q", e.EventID, e.Name, id, name, js)
		}
	})
}

// nesting counts the brackets of js, a bound of its nesting depth.
func nesting(js []byte) int {
	return bytes.Count(js, []byte("{")) + bytes.Count(js, []byte("["))
}

func BenchmarkLoadStoredJSON(b *testing.B) {
	js := fullEvent().AppendJSON(nil)
	b.Run("light", func(b *testing.B) {
		var e Event
		b.SetBytes(int64(len(js)))
		b.ReportAllocs()
		for b.Loop() {
			if err := e.LoadStoredJSON(js); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		var e Event
		var p fastjson.Parser
		b.SetBytes(int64(len(js)))
		b.ReportAllocs()
		for b.Loop() {
			if err := e.DecodeJSON(&p, js); err != nil {
				b.Fatal(err)
			}
		}
	})
}

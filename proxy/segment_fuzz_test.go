package proxy

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/sidetrack/sidetrack/enrich"
)

// FuzzSegmentDecode checks that no body panics the decoder, that failures
// are request-level decodeErrors that add no event, and that every event
// it returns encodes to valid JSON with in-range problem indexes.
func FuzzSegmentDecode(f *testing.F) {
	for _, reqs := range segFixtures(f) {
		for _, fx := range reqs {
			f.Add("batch", []byte(fx.Body))
		}
	}
	seeds := []struct{ call, body string }{
		{"t", segBenchTrack},
		{"p", `{"name":"Home","properties":{"url":"https://shop.example/?a=1","path":"/","search":"?a=1"},"context":{"page":{"referrer":"r"}}}`},
		{"i", `{"userId":7,"traits":{"email":"a@b.c","name":"A B","address":{"city":"X","street":"Y"},"plan":"p"},"context":{"traits":{"phone":"1"}}}`},
		{"g", `{"groupId":"g","traits":{"name":"ACME","email":"x@y.z","nested":{"a":[1,{"phone":"2"}]}}}`},
		{"a", `{"previousId":1e400,"userId":"NaN"}`},
		{"s", `{"name":"S","properties":{"n":NaN,"i":-Inf,"big":{"k":"v"}}}`},
		{"track", `{"event":"Order Completed","properties":{"value":"12.5","total":"x","products":[{"id":1,"price":"2","quantity":null,"position":"1e3"},1,null]}}`},
		{"batch", `{"batch":[{"type":"track","event":"e","timestamp":"2026-01-01T00:00:00+05:30","sentAt":"2026-01-01T00:00:01Z"},null,{"type":"x"}],"context":{"locale":"de","campaign":{"source":1}},"sentAt":"bad","writeKey":"k"}`},
		{"batch", `{"b\u0061tch":[{"type":"page"}],"batch":[]}`},
		{"import", `{"batch":[{"type":"identify","context":{"consent":{"categoryPreferences":{"A":true,"B":null}}}}]}`},
		{"b", `[]`},
		{"m", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.call, []byte(s.body))
	}
	dec := newSegmentDecoder(4<<10, 64<<10)
	pool := &enrich.EventPool{}
	f.Fuzz(func(t *testing.T, call string, body []byte) {
		d := &decoded{pool: pool}
		err := dec.decode(d, call, body, segNow)
		defer d.release()
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) || (de.status != 400 && de.status != 413) {
				t.Fatalf("error %v is not a 400/413 decodeError", err)
			}
			if len(d.events) != 0 {
				t.Fatalf("%d events added on error", len(d.events))
			}
			return
		}
		for _, p := range d.problems {
			if p.Index < 0 || p.Index >= len(d.events) {
				t.Fatalf("problem index %d out of range (%d events)", p.Index, len(d.events))
			}
		}
		var buf []byte
		for i, e := range d.events {
			if e.Index != i {
				t.Fatalf("event %d has Index %d", i, e.Index)
			}
			if e.OccurredAt.After(segNow) {
				t.Fatalf("OccurredAt %s after now", e.OccurredAt)
			}
			buf = e.AppendJSON(buf[:0])
			if !json.Valid(buf) {
				t.Fatalf("event %d encodes to invalid JSON: %s", i, buf)
			}
		}
	})
}

package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzTraceQuery feeds /debug/events query strings to the filter parser
// and applies what it accepts: no panic, limits within the ring, and every
// entry shown matches the filters asked for.
func FuzzTraceQuery(f *testing.F) {
	for _, s := range []string{
		"", "name=order_completed", "name=a,,b,%20c&outcome=accepted&limit=3",
		"destination=meta&admitted=false", "admitted=true", "limit=0", "limit=-1", "limit=99999999999999999999",
		"record=*", "record=", "record=a,b&name=a", "%zz=%&&&=&name", "destination=&admitted=maybe",
	} {
		f.Add(s)
	}
	entries := []TraceEntry{
		{Name: "order_completed", Outcome: "accepted", Destinations: []Admission{
			{Destination: "meta", Reason: "consent"}, {Destination: "local", Admitted: true, Reason: "admitted"}}},
		{Name: "order_completed", Outcome: "duplicate"},
		{Name: "purchase_x", OriginalName: "purchase", Outcome: "accepted", Destinations: []Admission{
			{Destination: "meta", Admitted: true, Reason: "admitted"}}},
	}
	const capacity = 10
	f.Fuzz(func(t *testing.T, q string) {
		var args fasthttp.Args
		args.Parse(q)
		flt, msg := parseTraceFilter(&args, capacity)
		if msg != "" {
			return
		}
		if flt.limit < 1 || flt.limit > capacity {
			t.Fatalf("limit %d outside [1, %d]", flt.limit, capacity)
		}
		if flt.admitted != "" && flt.destination == "" {
			t.Fatal("admitted accepted without destination")
		}
		for _, e := range entries {
			x, ok := flt.match(e)
			if !ok {
				continue
			}
			if flt.outcome != "" && x.Outcome != flt.outcome {
				t.Fatalf("outcome %q shown for filter %q", x.Outcome, flt.outcome)
			}
			if flt.destination != "" {
				for _, a := range x.Destinations {
					if a.Destination != flt.destination {
						t.Fatalf("destination %q shown for filter %q", a.Destination, flt.destination)
					}
				}
			}
		}
	})
}

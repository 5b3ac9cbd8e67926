package enrich

import (
	"testing"
)

// TestStageNotesDedup checks that the live trace learns which id a key was
// derived from, and keeps the key of a duplicate (whose DedupKey dedup
// clears) so the trace can show both events share it.
func TestStageNotesDedup(t *testing.T) {
	env := newDDEnv(t, false, nil)
	idem := ev(SourceCollect, "lead_submitted", "")
	idem.IdempotencyKey = "k-1"
	ga := ev(SourceGA4, "page_viewed", "")
	ga.AnonymousID = "123.456"
	cases := []struct {
		name string
		e    *Event
		want DedupBy
	}{
		{"order", order(SourceSegment, "order_completed", "T-1", "m-1"), DedupByOrder},
		{"event id", ev(SourceSegment, "product_viewed", "m-2"), DedupByEventID},
		{"idempotency key", idem, DedupByIdempotency},
		{"ga4 hit", ga, DedupByDerived},
		{"nothing", ev(SourceCollect, "lead_submitted", ""), DedupByNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env.send(false, tc.e)
			if got := tc.e.Notes.DedupBy; got != tc.want {
				t.Errorf("DedupBy = %v, want %v", got, tc.want)
			}
			if tc.want != DedupByNone && tc.e.Notes.DedupKey != tc.e.DedupKey {
				t.Errorf("Notes.DedupKey %x != DedupKey %x", tc.e.Notes.DedupKey, tc.e.DedupKey)
			}
			if tc.want == DedupByNone && tc.e.Notes.DedupKey != ([16]byte{}) {
				t.Errorf("key noted for an event without id: %x", tc.e.Notes.DedupKey)
			}
		})
	}
	first := ev(SourceSegment, "product_viewed", "m-dup")
	again := ev(SourceSegment, "product_viewed", "m-dup")
	env.send(false, first)
	if out := env.send(false, again); out[0] != Duplicate {
		t.Fatalf("second send: %v, want duplicate", out[0])
	}
	if again.DedupKey != ([16]byte{}) {
		t.Error("a duplicate kept its DedupKey (the spool would commit it)")
	}
	if again.Notes.DedupKey != first.Notes.DedupKey || again.Notes.DedupBy != DedupByEventID {
		t.Errorf("duplicate notes %x/%v, want the first event's key %x by event_id", again.Notes.DedupKey, again.Notes.DedupBy, first.Notes.DedupKey)
	}
	e := ev(SourceSegment, "x", "m-reset")
	env.send(false, e)
	e.Reset()
	if e.Notes != (StageNotes{}) {
		t.Error("Reset kept the notes")
	}
}

func TestRedact(t *testing.T) {
	cases := []struct {
		name, in, want string
		url            bool
	}{
		{"clean text", "Thank you", "Thank you", false},
		{"email in text", "Welcome jo@example.com!", "Welcome [redacted]!", false},
		{"clean url", "https://shop.example/p?id=1", "https://shop.example/p?id=1", true},
		{"email in query", "https://shop.example/a?email=jo%40example.com&x=1", "https://shop.example/a?email=[redacted]&x=1", true},
		{"phone in path", "https://shop.example/u/+14155550123/orders", "https://shop.example/u/[redacted]/orders", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := RedactText(tc.in)
			if tc.url {
				got = RedactURL(tc.in)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { _ = RedactURL("https://shop.example/p?id=1") }); n != 0 {
		t.Errorf("RedactURL of a clean URL allocates %v times", n)
	}
}

//go:build !race

package proxy

import "testing"

// TestCollectDecodeAllocs holds the /collect decoder to the allocation
// budget of DESIGN §8: a single event (with items, properties, consent and
// user data) decoded into a reused pooled event allocates at most once.
// The race detector allocates on its own, hence the build tag.
func TestCollectDecodeAllocs(t *testing.T) {
	body := readCollectFixture(t, "order.json")
	c := newCollectDecoder(0)
	d := newCollectDecoded()
	run := func() {
		if err := c.decodeJSON(d, body, collectNow); err != nil {
			t.Fatal(err)
		}
		if len(d.problems) != 0 {
			t.Fatalf("problems: %+v", d.problems)
		}
		d.release()
	}
	run() // warm the parser, the event's arena and its slices
	if n := testing.AllocsPerRun(200, run); n > 1 {
		t.Fatalf("%.1f allocations per single-event decode, want ≤ 1", n)
	}
}

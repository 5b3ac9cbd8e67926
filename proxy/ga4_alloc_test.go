//go:build !race

package proxy

import (
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/enrich"
)

// TestGA4DecodeAllocs guards the hot path's allocation budget (DESIGN §8):
// a usual single-hit GET decoded into a pooled event that was used before
// allocates nothing; one allocation is tolerated for a sync.Pool miss
// after a GC. The race detector allocates on its own, hence the build tag.
func TestGA4DecodeAllocs(t *testing.T) {
	var reqs []ga4Request
	for _, r := range ga4Fixtures(t) {
		if r.file == "gtag.ndjson" && r.method == "GET" {
			reqs = append(reqs, r)
		}
	}
	if len(reqs) == 0 {
		t.Fatal("no GET fixtures")
	}
	for _, r := range reqs {
		name := r.label
		if i := strings.Index(r.query, "&en="); i >= 0 {
			name += "/" + strings.SplitN(r.query[i+4:], "&", 2)[0]
		}
		t.Run(name, func(t *testing.T) {
			g := newGA4Decoder(0)
			d := &decoded{pool: &enrich.EventPool{}}
			q := []byte(r.query)
			run := func() {
				if err := g.decode(d, q, nil, ga4Now); err != nil {
					t.Fatal(err)
				}
				d.release()
			}
			run() // warm the pools and the event's arena
			if n := testing.AllocsPerRun(200, run); n > 1 {
				t.Errorf("%.1f allocs/op, want ≤ 1", n)
			}
		})
	}
	t.Run("isGA4Hit", func(t *testing.T) {
		wrapped := []byte(reqs[0].query)
		for _, r := range ga4Fixtures(t) {
			if strings.Contains(r.notes, "base64") {
				wrapped = []byte(r.query)
			}
		}
		if n := testing.AllocsPerRun(100, func() { isGA4Hit(wrapped) }); n != 0 {
			t.Errorf("%.1f allocs/op, want 0", n)
		}
	})
}

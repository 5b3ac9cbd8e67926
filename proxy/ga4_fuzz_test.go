package proxy

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/sidetrack/sidetrack/enrich"
)

// FuzzGA4Decode feeds arbitrary query/body pairs to the decoder, seeded
// with every recorded request: it must not panic, must fail only with a
// request-level decodeError (leaving nothing in d), and every event it
// returns must encode to valid JSON and stay within the limits.
func FuzzGA4Decode(f *testing.F) {
	for _, r := range ga4Fixtures(f) {
		f.Add(r.query, r.body)
	}
	f.Add("v=2&tid=G-X&en=x&pr1=id~~~nm%zz~pr1e999&pr2=~~~~&epn.v=-0.5e-3", "en=a%\r\n\r\nen=%C3%28&ep.x=%FF")
	f.Add("k="+"L2cvY29sbGVjdD92PTImdGlkPUctWA", "")
	f.Add("v=2&tid=G-X&em=tv.1~em.~pn.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA~fn00.x~co.", "")

	const maxLines = 50
	g := newGA4Decoder(maxLines)
	pool := &enrich.EventPool{}
	f.Fuzz(func(t *testing.T, query, body string) {
		d := &decoded{pool: pool}
		err := g.decode(d, []byte(query), []byte(body), ga4Now)
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("error is not a decodeError: %v", err)
			}
			if len(d.events) != 0 || len(d.problems) != 0 {
				t.Fatalf("error %v left %d events, %d problems", err, len(d.events), len(d.problems))
			}
			return
		}
		if len(d.events) == 0 || len(d.events) > maxLines {
			t.Fatalf("%d events", len(d.events))
		}
		if len(d.problems) > ga4MaxProblems {
			t.Fatalf("%d problems", len(d.problems))
		}
		var buf []byte
		for i, e := range d.events {
			if e.Index != i || e.Source != enrich.SourceGA4 {
				t.Fatalf("event %d: index %d source %q", i, e.Index, e.Source)
			}
			if len(e.Commerce.Items) > ga4MaxItems || len(e.Properties) > ga4MaxProps ||
				len(e.UserProperties) > ga4MaxProps {
				t.Fatalf("event %d over limits: %d items, %d props, %d user props", i,
					len(e.Commerce.Items), len(e.Properties), len(e.UserProperties))
			}
			for _, s := range []string{e.Name, e.URL, e.Title, e.Referrer, e.AnonymousID, e.PII.Email} {
				if len(s) > ga4MaxValue {
					t.Fatalf("event %d: value of %d bytes", i, len(s))
				}
			}
			buf = e.AppendJSON(buf[:0])
			if !json.Valid(buf) {
				t.Fatalf("event %d: invalid JSON %s", i, buf)
			}
		}
		for _, p := range d.problems {
			if p.Index < 0 || p.Index >= len(d.events) || p.Field == "" || p.Message == "" {
				t.Fatalf("bad problem %+v", p)
			}
		}
		d.release()
	})
}

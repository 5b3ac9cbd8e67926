package enrich

import (
	"testing"
	"time"
)

// TestJoinBlobRoundTrip: every field survives the blob, times as UTC
// instants, and the zero context stays zero.
func TestJoinBlobRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 30, 0, 123456789, time.FixedZone("x", 3600))
	full := joinCtx{
		deviceID: "dev", anonymousID: "anon", sessionID: "sess", gaSessionID: "1795442481", gaSessionNumber: -7,
		clickIDs: ClickIDs{GCLID: "g", GBRAID: "gb", WBRAID: "wb", DCLID: "dc", SRSLTID: "sr", FBCLID: "fb",
			MSCLKID: "ms", TTCLID: "tt", LiFatID: "li", TWCLID: "tw"},
		clickAt: at, fbc: "fb.1.2.3", fbp: "fb.1.4.5",
		analytics: Granted, ads: Denied, adUserData: Unknown, adPers: Granted, gpc: true,
		firstTouch: Touch{Source: "google", Medium: "cpc", Campaign: "spring", Channel: "Paid Search", ClickIDKind: "gclid", At: at},
		lastTouch:  Touch{Source: "newsletter", Medium: "email", At: at.Add(time.Hour)},
	}
	for _, tc := range []struct {
		name string
		c    joinCtx
	}{{"full", full}, {"zero", joinCtx{}}, {"device only", joinCtx{deviceID: "d"}}} {
		t.Run(tc.name, func(t *testing.T) {
			var got joinCtx
			if !got.fromBlob(tc.c.appendBlob(nil)) {
				t.Fatal("fromBlob rejected appendBlob's output")
			}
			want := tc.c
			for _, p := range []*time.Time{&want.clickAt, &want.firstTouch.At, &want.lastTouch.At} {
				if !p.IsZero() {
					*p = p.UTC()
				}
			}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// FuzzJoinBlob: fromBlob never panics on arbitrary bytes, and what it
// accepts encodes back to the same bytes.
func FuzzJoinBlob(f *testing.F) {
	c := joinCtx{deviceID: "dev", gaSessionNumber: 3, clickAt: time.Unix(1700000000, 0), firstTouch: Touch{Source: "s"}}
	f.Add(c.appendBlob(nil))
	f.Add([]byte{})
	f.Add([]byte{0xff, 1, 2, 3, 4, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c joinCtx
		if !c.fromBlob(b) {
			return
		}
		if got := c.appendBlob(nil); string(got) != string(b) {
			// Non-minimal varints decode too; only the decoded value
			// must be stable.
			var again joinCtx
			if !again.fromBlob(got) || again != c {
				t.Fatalf("re-encoding changed the context: %+v vs %+v", again, c)
			}
		}
	})
}

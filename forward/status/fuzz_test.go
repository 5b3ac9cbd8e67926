package status

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetryAfter: any header value gives a wait in [0, forever),
// never a panic; delta seconds are capped at a year.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 23, 14, 1, 21, 0, time.UTC)
	for _, s := range []string{
		"", "0", "1", "7", "120", "-5", "+5", " 30 ", "1.5", "0x10", "99999999999999999999",
		"31536001", now.Add(42 * time.Second).Format(http.TimeFormat),
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Fri, 31 Dec 9999 23:59:59 GMT",
		"Wed, 21 Oct 2015 07:28:00 GMT", "soon", "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v < 0", v, d)
		}
		if e := FromHTTP(503, v, now, ""); e.(*Error).RetryAfter() != d {
			t.Fatalf("FromHTTP(503, %q) waits %v, ParseRetryAfter %v", v, e.(*Error).RetryAfter(), d)
		}
		if strings.Trim(v, " \t0123456789") == "" && d > 365*24*time.Hour {
			t.Fatalf("delta seconds %q gave %v, past the one-year cap", v, d)
		}
	})
}

// FuzzExcerpt: whatever a destination answers, the DLQ keeps at most 256
// printable ASCII bytes of it.
func FuzzExcerpt(f *testing.F) {
	for _, s := range []string{"", `{"error":"invalid token"}`, "ok\r\n", "\xff\xfe<html>", strings.Repeat("é", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ex := Excerpt(s)
		if len(ex) > 256 {
			t.Fatalf("excerpt of %d bytes", len(ex))
		}
		for i := 0; i < len(ex); i++ {
			if ex[i] < 0x20 || ex[i] > 0x7e {
				t.Fatalf("excerpt byte %#x at %d is not printable ASCII: %q", ex[i], i, ex)
			}
		}
	})
}

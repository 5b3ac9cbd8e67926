package proxy

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzCORSAllowed: any Origin and Host header gives a yes or no, never a
// panic; the answer ignores ASCII case, a wildcard entry only admits
// https origins, and an Origin no browser could send (over 256 bytes) is
// refused. Seeds include the Origin of the gtag captures.
func FuzzCORSAllowed(f *testing.F) {
	for _, s := range []struct{ origin, host string }{
		{"http://www.shop.test", "sgtm.shop.test"},
		{"https://shop.example", "shop.example"},
		{"https://www.shop.example", "shop.example"},
		{"https://evil.example", "shop.example"},
		{"https://shop.example.evil", "shop.example"},
		{"https://evilshop.example", "shop.example"},
		{"https://shop.example:8443", "shop.example:8443"},
		{"HTTPS://WWW.SHOP.EXAMPLE", ""},
		{"null", "shop.example"},
		{"https://[::1]:443", "[::1]:443"},
		{"http://a.shop.example", "x"},
		{"https://", ""},
		{"://", "x"},
	} {
		f.Add(s.origin, s.host)
	}
	policies := []*corsPolicy{
		newCORSPolicy(nil, []string{"shop.example", "shop.test."}),
		newCORSPolicy([]string{"https://*.shop.example", "http://localhost:3000", "HTTPS://Partner.Example/"}, nil),
	}
	f.Fuzz(func(t *testing.T, origin, host string) {
		for i, p := range policies {
			ok := p.allowed([]byte(origin), []byte(host))
			if ok != p.allowed(bytes.ToUpper([]byte(origin)), []byte(host)) {
				t.Fatalf("policy %d: %q and its upper case differ", i, origin)
			}
			if ok && len(origin) > 256 {
				t.Fatalf("policy %d: allowed a %d-byte Origin", i, len(origin))
			}
			if !ok {
				continue
			}
			lo := strings.ToLower(origin)
			_, exact := p.exact[lo]
			sameHost := host != "" && strings.Contains(lo, "://") && strings.EqualFold(lo[strings.Index(lo, "://")+3:], host)
			if !exact && !sameHost && !strings.HasPrefix(lo, "https://") {
				t.Fatalf("policy %d: %q (host %q) allowed by a wildcard without https", i, origin, host)
			}
		}
	})
}

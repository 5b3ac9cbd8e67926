package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func mustTrusted(t testing.TB, list ...string) *TrustedProxies {
	t.Helper()
	tp, err := ParseTrustedProxies(list)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestParseTrustedProxies(t *testing.T) {
	tp := mustTrusted(t, "10.0.0.0/8", " 192.0.2.7 ", "2001:db8::/32", "::ffff:172.16.0.0/108", "10.1.2.3/8")
	tests := []struct {
		ip   string
		want bool
	}{
		{"10.200.1.1", true},
		{"10.1.2.3", true},
		{"11.0.0.1", false},
		{"192.0.2.7", true},
		{"192.0.2.8", false},
		{"2001:db8::1", true},
		{"2001:db9::1", false},
		{"172.16.5.5", true},
		{"::ffff:10.0.0.1", true},
	}
	for _, tc := range tests {
		if got := tp.Contains(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("Contains(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	var none *TrustedProxies
	if none.Contains(netip.MustParseAddr("127.0.0.1")) || none.Len() != 0 {
		t.Error("nil list trusts someone")
	}
	_, err := ParseTrustedProxies([]string{"10.0.0.0/8", "bogus", "1.2.3.4/40"})
	if err == nil || !strings.Contains(err.Error(), `"bogus"`) || !strings.Contains(err.Error(), `"1.2.3.4/40"`) {
		t.Errorf("bad entries not all reported: %v", err)
	}
}

func TestClientIP(t *testing.T) {
	trusted := mustTrusted(t, "10.0.0.0/8", "2001:db8::/32")
	tests := []struct {
		name, remote, xff, want string
	}{
		{"untrusted peer ignores XFF", "203.0.113.5", "1.2.3.4", "203.0.113.5"},
		{"trusted peer, one hop", "10.0.0.1", "198.51.100.7", "198.51.100.7"},
		{"rightmost untrusted wins over spoofed left", "10.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"},
		{"trusted hops skipped", "10.0.0.1", "198.51.100.7, 10.0.0.9, 10.2.2.2", "198.51.100.7"},
		{"all trusted: leftmost", "10.0.0.1", "10.9.9.9, 10.0.0.2", "10.9.9.9"},
		{"empty XFF", "10.0.0.1", "", "10.0.0.1"},
		{"ports stripped", "10.0.0.1", "198.51.100.7:4711", "198.51.100.7"},
		{"bracketed v6 with port", "10.0.0.1", "[2001:db9::7]:443", "2001:db9::7"},
		{"v6 chain", "2001:db8::1", "2001:db9::7, 2001:db8::2", "2001:db9::7"},
		{"garbage stops the scan", "10.0.0.1", "198.51.100.7, garbage, 10.0.0.3", "10.0.0.3"},
		{"garbage right after peer", "10.0.0.1", "198.51.100.7, unknown", "10.0.0.1"},
		{"mapped v4", "::ffff:10.0.0.1", "::ffff:198.51.100.7", "198.51.100.7"},
		{"empty entries ignored", "10.0.0.1", " , 198.51.100.7 ,, ", "198.51.100.7"},
	}
	for _, tc := range tests {
		got := ClientIP(netip.MustParseAddr(tc.remote), []byte(tc.xff), trusted)
		if got.String() != tc.want {
			t.Errorf("%s: ClientIP = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestClientIPFromSeveralHeaders(t *testing.T) {
	trusted := mustTrusted(t, "10.0.0.0/8")
	peer := netip.MustParseAddr("10.0.0.1")
	got := clientIPFromHeaders(peer, [][]byte{[]byte("198.51.100.7"), []byte("10.3.3.3")}, trusted)
	if got.String() != "198.51.100.7" {
		t.Errorf("got %s", got)
	}
	got = clientIPFromHeaders(peer, [][]byte{[]byte("6.6.6.6"), []byte("198.51.100.7, 10.3.3.3")}, trusted)
	if got.String() != "198.51.100.7" {
		t.Errorf("got %s, want the rightmost untrusted across lines", got)
	}
}

func TestClientIPDoesNotAllocate(t *testing.T) {
	trusted := mustTrusted(t, "10.0.0.0/8")
	peer := netip.MustParseAddr("10.0.0.1")
	xff := []byte("203.0.113.1, 198.51.100.7:80, 10.0.0.9")
	if n := testing.AllocsPerRun(1000, func() { ClientIP(peer, xff, trusted) }); n != 0 {
		t.Errorf("ClientIP allocates %.1f times", n)
	}
}

func TestServerClientIP(t *testing.T) {
	s := &Server{trusted: mustTrusted(t, "0.0.0.0/0")} // in-memory ctx peers are 0.0.0.0
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Add("X-Forwarded-For", "203.0.113.9")
	ctx.Request.Header.Add("X-Forwarded-For", "198.51.100.7")
	// Every address is trusted here, so the leftmost one is the client.
	if got := s.clientIP(&ctx); got.String() != "203.0.113.9" {
		t.Errorf("clientIP = %s", got)
	}
	s.trusted = mustTrusted(t)
	if got := s.clientIP(&ctx); got.String() != "0.0.0.0" {
		t.Errorf("untrusted clientIP = %s, want the peer", got)
	}
}

func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "1.2.3.4, 10.0.0.1", "[::1]:80", "garbage", ",,", "2001:db8::1%eth0"} {
		f.Add([]byte(s))
	}
	trusted := mustTrusted(f, "10.0.0.0/8")
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, xff []byte) {
		keep := string(xff)
		got := ClientIP(peer, xff, trusted)
		if !got.IsValid() {
			t.Fatalf("invalid result for %q", xff)
		}
		if got.Zone() != "" || got.Is4In6() {
			t.Fatalf("result %s not normalised", got)
		}
		if got != peer && !strings.Contains(keep, got.String()) && !strings.Contains(strings.ToLower(keep), got.String()) {
			// The result is the peer or came out of the header.
			if _, ok := parseForwardedAddr([]byte(strings.TrimSpace(keep))); !ok && !strings.Contains(keep, ",") {
				t.Fatalf("result %s from nowhere in %q", got, keep)
			}
		}
		if string(xff) != keep {
			t.Fatal("ClientIP modified its input")
		}
	})
}

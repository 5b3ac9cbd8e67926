package proxy

import (
	"net/netip"
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	l := newRateLimiter(2, 3, clock)
	a := netip.MustParseAddr("203.0.113.7")
	b := netip.MustParseAddr("2001:db8::1")

	for i := range 3 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("burst request %d refused", i)
		}
	}
	ok, wait := l.allow(a)
	if ok {
		t.Fatal("request past the burst allowed")
	}
	if wait <= 0 || wait > time.Second {
		t.Fatalf("wait = %v, want (0, 500ms]", wait)
	}
	if ok, _ := l.allow(b); !ok {
		t.Fatal("another client was limited by the first one's traffic")
	}
	now = now.Add(500 * time.Millisecond) // one token at 2/s
	if ok, _ := l.allow(a); !ok {
		t.Fatal("refill did not happen")
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("more than the refilled token allowed")
	}
	now = now.Add(time.Hour)
	for i := range 3 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("after idle, burst request %d refused (bucket must cap at burst, not grow)", i)
		}
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("bucket grew past burst while idle")
	}
}

func TestRateLimiterDisabled(t *testing.T) {
	var l *rateLimiter = newRateLimiter(0, 10, nil)
	for range 1000 {
		if ok, _ := l.allow(netip.MustParseAddr("192.0.2.1")); !ok {
			t.Fatal("disabled limiter refused")
		}
	}
}

func BenchmarkRateLimiter(b *testing.B) {
	l := newRateLimiter(1e9, 1e9, nil)
	ip := netip.MustParseAddr("198.51.100.23")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.allow(ip)
		}
	})
}

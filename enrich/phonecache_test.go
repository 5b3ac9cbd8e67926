package enrich

import (
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
)

// TestPhoneCacheAgrees: a cached answer (first lookup fills, second hits)
// is exactly what normalizing and hashing gives, for valid and invalid
// numbers, and the region is part of the key.
func TestPhoneCacheAgrees(t *testing.T) {
	c := newPhoneCache()
	for _, tc := range []struct {
		phone, region string
		ok            bool
	}{
		{"+1 415 555 2671", "", true},
		{"(415) 555-2671", "US", true},
		{"030 1234567", "DE", true},
		{"030 1234567", "de", true},
		{"030 1234567", "", false},
		{"0049 30 1234567", "", true},
		{"12", "US", false},
		{"not a phone", "", false},
	} {
		for round := range 2 {
			meta, google, ok := c.hashed(tc.phone, tc.region)
			if ok != tc.ok {
				t.Fatalf("%q in %q (round %d): ok %v, want %v", tc.phone, tc.region, round, ok, tc.ok)
			}
			v, vok := normPhone(tc.phone, strings.ToUpper(tc.region))
			if vok != ok {
				t.Fatalf("%q in %q: cache says %v, normPhone %v", tc.phone, tc.region, ok, vok)
			}
			if !ok {
				continue
			}
			if meta != sha256.Sum256([]byte(v[1:])) || google != sha256.Sum256([]byte(v)) {
				t.Errorf("%q in %q (round %d): digests differ from normPhone's %q", tc.phone, tc.region, round, v)
			}
		}
	}
}

// TestPhoneCacheNoAlloc: a repeated number costs no allocation.
func TestPhoneCacheNoAlloc(t *testing.T) {
	c := newPhoneCache()
	c.hashed("+49 30 1234567", "")
	if n := testing.AllocsPerRun(100, func() { c.hashed("+49 30 1234567", "") }); n != 0 {
		t.Errorf("%.1f allocs per cached lookup, want 0", n)
	}
}

// TestPhoneCacheConcurrent: goroutines sharing slots always get the
// answer of their own number (run with -race).
func TestPhoneCacheConcurrent(t *testing.T) {
	c := newPhoneCache()
	phones := []string{"+1 415 555 2671", "+49 30 1234567", "+44 20 7946 0958", "+33 1 42 68 53 00"}
	want := make([][sha256.Size]byte, len(phones))
	for i, p := range phones {
		v, ok := normPhone(p, "")
		if !ok {
			t.Fatalf("%q does not normalize", p)
		}
		want[i] = sha256.Sum256([]byte(v))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 200 {
				i := (g + n) % len(phones)
				if _, google, ok := c.hashed(phones[i], ""); !ok || google != want[i] {
					t.Errorf("%q: wrong digest", phones[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}

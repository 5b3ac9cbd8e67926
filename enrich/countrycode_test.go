package enrich

import (
	"strings"
	"testing"
)

func TestCountryCode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"DE", "de"},
		{"de", "de"},
		{" Germany ", "de"},
		{"DEU", "de"},
		{"fra", "fr"},
		{"ZZ", ""},
		{"XX", ""},
		{"Atlantis", ""},
		{"", ""},
	} {
		if got := countryCode(tc.in); got != tc.want {
			t.Errorf("countryCode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLowerCode(t *testing.T) {
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			code := string([]rune{a, b})
			if got := lowerCode(code); got != strings.ToLower(code) {
				t.Fatalf("lowerCode(%q) = %q", code, got)
			}
		}
	}
	if got := lowerCode("a1"); got != "a1" {
		t.Errorf("lowerCode(a1) = %q", got)
	}
}

func TestCountryCodeAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = countryCode("DE") }); n != 0 {
		t.Errorf("countryCode allocates %v times", n)
	}
}

package enrich

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestParseOneTrust(t *testing.T) {
	for _, tc := range []struct {
		name, v string
		want    verdict
	}{
		{"mixed", otMixed, verdict{granted: purposeAnalytics, denied: purposeAdsTrio}},
		{"all", otAll, verdict{granted: purposeAll}},
		{"none", otNone, verdict{denied: purposeAll}},
		{"not encoded", "groups=C0001:1,C0002:0,C0004:1&x=1", verdict{granted: purposeAdsTrio, denied: purposeAnalytics}},
		{"double encoded", "groups=C0001%253A1%252CC0002%253A1", verdict{granted: purposeAnalytics}},
		{"no groups", "isGpcEnabled=0&version=6.1", verdict{}},
		{"empty groups", "groups=&x=1", verdict{}},
		{"bad status", "groups=C0002:2,C0004:yes", verdict{}},
		{"duplicate group, denial wins", "groups=C0002:1,C0002:0", verdict{denied: purposeAnalytics}},
	} {
		if got := parseOneTrust(tc.v, nil); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	m := map[string]uint8{"C0002": purposeAnalytics | purposeAdUserData, "C0005": purposeAds}
	if got, want := parseOneTrust("groups=C0002%3A1%2CC0004%3A0%2CC0005%3A0", m), (verdict{granted: purposeAnalytics | purposeAdUserData, denied: purposeAds}); got != want {
		t.Errorf("mapped: %+v, want %+v", got, want)
	}
}

func TestParseCookiebot(t *testing.T) {
	for _, tc := range []struct {
		name, v string
		want    verdict
	}{
		{"mixed encoded", cbMixed, verdict{granted: purposeAnalytics, denied: purposeAdsTrio}},
		{"none", cbNone, verdict{denied: purposeAll}},
		{"json-ish quoted keys", `{"necessary":true,"statistics":false,"marketing":true}`, verdict{granted: purposeAdsTrio, denied: purposeAnalytics}},
		{"no consent required", "-1", verdict{granted: purposeAll}},
		{"not an object", "necessary:true,marketing:true", verdict{}},
		{"empty object", "{}", verdict{}},
		{"spaces", "{ statistics : true , marketing : 'false' }", verdict{granted: purposeAnalytics, denied: purposeAdsTrio}},
	} {
		if got := parseCookiebot(tc.v, nil); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	m := map[string]uint8{"preferences": purposeAdPersonalization}
	if got, want := parseCookiebot(cbMixed, m), (verdict{granted: purposeAdPersonalization}); got != want {
		t.Errorf("mapped: %+v, want %+v", got, want)
	}
}

func TestParseTCF(t *testing.T) {
	for _, tc := range []struct {
		name, v string
		want    verdict
	}{
		{"real, purposes 1-11", tcfRealAll11, verdict{granted: purposeAll}},
		{"real, none (with more segments)", tcfRealNone, verdict{denied: purposeAll}},
		{"real, purposes 1-8", tcfReal1to8, verdict{granted: purposeAll}},
		{"real, purpose one treatment", tcfRealP1T, verdict{denied: purposeAnalytics | purposeAdUserData | purposeAdPersonalization}},
		{"storage only", tcfString(false, 1), verdict{granted: purposeAds, denied: purposeAnalytics | purposeAdUserData | purposeAdPersonalization}},
		{"ads without personalisation", tcfString(false, 1, 2, 7), verdict{granted: purposeAds | purposeAdUserData, denied: purposeAnalytics | purposeAdPersonalization}},
		{"one profile purpose missing", tcfString(false, 1, 3, 7, 8), verdict{granted: purposeAds | purposeAdUserData | purposeAnalytics, denied: purposeAdPersonalization}},
		{"padded standard base64", strings.ReplaceAll(strings.ReplaceAll(tcfRealAll11, "-", "+"), "_", "/"), verdict{granted: purposeAll}},
		{"too short", tcfRealAll11[:30], verdict{}},
		{"v1 string", "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", verdict{}},
		{"not base64", "C!!!" + tcfRealAll11[4:], verdict{}},
		{"empty", "", verdict{}},
	} {
		if got := parseTCF(tc.v, nil); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// tcfReference decodes a TC string's purposes with encoding/base64, an
// implementation independent of tcfBits.
func tcfReference(s string) (purposes uint32, p1t bool, ok bool) {
	core, _, _ := strings.Cut(strings.TrimSpace(s), ".")
	if strings.ContainsAny(core, "\r\n") { // encoding/base64 skips them
		return 0, false, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(core)
	if err != nil {
		// tcfBits also reads a partial trailing character; compare only
		// strings that decode cleanly.
		return 0, false, false
	}
	bit := func(i int) uint32 { return uint32(raw[i/8]>>(7-i%8)) & 1 }
	if len(raw)*8 < tcfPurposeOneTreatmentBit+1 {
		return 0, false, false
	}
	ver := uint32(0)
	for i := 0; i < 6; i++ {
		ver = ver<<1 | bit(i)
	}
	if ver != 2 {
		return 0, false, false
	}
	for i := 0; i < tcfPurposes; i++ {
		purposes = purposes<<1 | bit(tcfPurposesConsentBit+i)
	}
	return purposes, bit(tcfPurposeOneTreatmentBit) == 1, true
}

func FuzzTCF(f *testing.F) {
	for _, s := range []string{tcfRealAll11, tcfRealNone, tcfReal1to8, tcfRealP1T, tcfString(false, 1, 3, 4, 7), "", "C", "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseTCF(s, nil)
		if v.granted&v.denied != 0 || (v.granted|v.denied)&^purposeAll != 0 {
			t.Fatalf("%q: %+v", s, v)
		}
		purposes, p1t, ok := tcfReference(s)
		if !ok {
			return
		}
		has := func(p int) bool { return purposes>>(tcfPurposes-p)&1 == 1 }
		p1 := has(1) || p1t
		check := func(bit uint8, want bool, known bool) {
			got := stateOf(bit, v.granted, v.denied)
			switch {
			case !known && got != Unknown, known && want && got != Granted, known && !want && got != Denied:
				t.Fatalf("%q purpose bit %b: %v, want known=%v granted=%v", s, bit, got, known, want)
			}
		}
		check(purposeAds, has(1), !p1t)
		check(purposeAnalytics, p1 && has(8), true)
		check(purposeAdUserData, p1 && has(7), true)
		check(purposeAdPersonalization, has(3) && has(4), true)
	})
}

func FuzzOneTrust(f *testing.F) {
	for _, s := range []string{otMixed, otAll, otNone, "groups=C0002:1", "groups=%", "groups=C0002%3", "&&==,,::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseOneTrust(s, nil)
		if v.granted&v.denied != 0 || (v.granted|v.denied)&^purposeAll != 0 {
			t.Fatalf("%q: %+v", s, v)
		}
		if v.spoke() && !strings.Contains(s, "groups") {
			t.Fatalf("%q spoke without groups", s)
		}
	})
}

func FuzzCookiebot(f *testing.F) {
	for _, s := range []string{cbMixed, cbNone, "-1", "{}", "{statistics:true}", "{:,:}", "%7B%7D"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseCookiebot(s, nil)
		if v.granted&v.denied != 0 || (v.granted|v.denied)&^purposeAll != 0 {
			t.Fatalf("%q: %+v", s, v)
		}
	})
}

// BenchmarkParseTCF: reading purposes from a real TC string.
func BenchmarkParseTCF(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		parseTCF(tcfRealAll11, nil)
	}
}

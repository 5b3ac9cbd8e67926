package enrich

import (
	"strconv"
	"strings"
	"unsafe"
)

// Consent-management (CMP) cookies. Each parser turns the cookie into a
// verdict per purpose: every category the cookie records is an
// observation (granted or denied) that applies to the purposes the
// category maps to, and a purpose any of its observed categories denies
// is denied. consent.cmp_cookie.map, when set, replaces the format's
// default mapping below (category → purposes); categories it does not
// name say nothing. A cookie that does not parse says nothing.
//
//   - onetrust: OptanonConsent, a URL-encoded query string whose groups
//     parameter lists "<group>:<0|1>" pairs. Default mapping (OneTrust's
//     standard groups): C0002 (performance) → analytics; C0004 (targeting)
//     → ads, ad_user_data, ad_personalization. C0001 (strictly necessary),
//     C0003 (functional) and C0005 (social media) say nothing.
//   - cookiebot: CookieConsent, a JavaScript object literal, usually
//     URL-encoded: {stamp:'…',necessary:true,preferences:false,
//     statistics:true,marketing:false,…}. Default mapping: statistics →
//     analytics; marketing → ads, ad_user_data, ad_personalization. The
//     value "-1" is Cookiebot's "no consent required in this region": every
//     category granted.
//   - tcf: an IAB TCF v2 TC string (euconsent-v2). Only the core segment's
//     PurposesConsent bits are read, straight from the base64url text (no
//     decoding buffer). Default mapping, following Google's own TCF
//     integration for the three ads purposes plus measurement for
//     analytics: purpose 1 (store and/or access information on a device)
//     → analytics, ads, ad_user_data; purposes 3 and 4 (create / use
//     profiles for personalised advertising) → ad_personalization; purpose
//     7 (measure advertising performance) → ad_user_data; purpose 8
//     (measure content performance) → analytics. So ads needs purpose 1,
//     ad_user_data purposes 1 and 7, ad_personalization purposes 3 and 4,
//     analytics purposes 1 and 8. When PurposeOneTreatment is set (the
//     publisher's country does not let purpose 1 be asked through TCF),
//     purpose 1 says nothing: what only it decides (ads) falls to the
//     other signals or the default. Map keys for tcf are purpose numbers
//     ("1" … "24").

// maxCMPCookie bounds the bytes a CMP cookie parser looks at; real ones
// are well under 2 KiB (browsers cap a cookie at 4 KiB).
const maxCMPCookie = 4096

// parseCMP reads the configured CMP cookie.
func (c *ConsentStage) parseCMP(v string) verdict {
	if len(v) > maxCMPCookie {
		return verdict{}
	}
	switch c.cmpFormat {
	case cmpOneTrust:
		return parseOneTrust(v, c.catMap)
	case cmpCookiebot:
		return parseCookiebot(v, c.catMap)
	case cmpTCF:
		return parseTCF(v, c.catMap)
	}
	return verdict{}
}

// observe records that category cat is granted or denied, through the
// configured map when there is one, else through def.
func (v *verdict) observe(catMap map[string]uint8, cat string, granted bool, def func(string) uint8) {
	var m uint8
	if catMap != nil {
		m = catMap[cat]
	} else {
		m = def(cat)
	}
	if granted {
		v.granted |= m
	} else {
		v.denied |= m
	}
}

// cmpUnescape percent-decodes s into buf (twice when the cookie was
// encoded twice, which some tag managers do) and returns a view of it
// that is valid while buf is.
func cmpUnescape(buf []byte, s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	buf = appendPercentDecoded(buf[:0], s, false)
	if i := strings.IndexByte(unsafe.String(unsafe.SliceData(buf), len(buf)), '%'); i >= 0 {
		n := len(buf)
		buf = appendPercentDecoded(buf, unsafe.String(unsafe.SliceData(buf), n), false)
		buf = buf[n:]
	}
	if len(buf) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(buf), len(buf))
}

func oneTrustDefault(group string) uint8 {
	switch group {
	case "C0002":
		return purposeAnalytics
	case "C0004":
		return purposeAdsTrio
	}
	return 0
}

// parseOneTrust reads OptanonConsent's groups parameter.
func parseOneTrust(v string, catMap map[string]uint8) verdict {
	// The parameter separators are literal in the cookie: decode only the
	// groups value when it can be found undecoded.
	if i := strings.Index(v, "groups="); i >= 0 && (i == 0 || v[i-1] == '&') {
		v = v[i:]
		if j := strings.IndexByte(v, '&'); j >= 0 {
			v = v[:j]
		}
	}
	var buf [1024]byte
	s := cmpUnescape(buf[:], v)
	var out verdict
	for s != "" {
		var kv string
		kv, s, _ = strings.Cut(s, "&")
		k, groups, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) != "groups" {
			continue
		}
		for groups != "" {
			var item string
			item, groups, _ = strings.Cut(groups, ",")
			g, st, ok := strings.Cut(item, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(st) {
			case "1":
				out.observe(catMap, strings.TrimSpace(g), true, oneTrustDefault)
			case "0":
				out.observe(catMap, strings.TrimSpace(g), false, oneTrustDefault)
			}
		}
	}
	return out.norm()
}

func cookiebotDefault(cat string) uint8 {
	switch cat {
	case "statistics":
		return purposeAnalytics
	case "marketing":
		return purposeAdsTrio
	}
	return 0
}

// parseCookiebot reads CookieConsent's category flags.
func parseCookiebot(v string, catMap map[string]uint8) verdict {
	var buf [1024]byte
	s := strings.TrimSpace(cmpUnescape(buf[:], v))
	var out verdict
	if s == "-1" {
		for _, cat := range [...]string{"necessary", "preferences", "statistics", "marketing"} {
			out.observe(catMap, cat, true, cookiebotDefault)
		}
		return out.norm()
	}
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return out
	}
	s = s[1 : len(s)-1]
	for s != "" {
		var item string
		item, s, _ = strings.Cut(s, ",")
		k, val, ok := strings.Cut(item, ":")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `'"`)
		switch strings.Trim(strings.TrimSpace(val), `'"`) {
		case "true":
			out.observe(catMap, k, true, cookiebotDefault)
		case "false":
			out.observe(catMap, k, false, cookiebotDefault)
		}
	}
	return out.norm()
}

// TCF v2 core segment layout (IAB TCF v2 "TC string" spec): Version(6)
// Created(36) LastUpdated(36) CmpId(12) CmpVersion(12) ConsentScreen(6)
// ConsentLanguage(12) VendorListVersion(12) TcfPolicyVersion(6)
// IsServiceSpecific(1) UseNonStandardTexts(1) SpecialFeatureOptIns(12)
// PurposesConsent(24) PurposesLITransparency(24) PurposeOneTreatment(1) …
const (
	tcfPurposesConsentBit     = 152
	tcfPurposes               = 24
	tcfPurposeOneTreatmentBit = 200
)

// tcfB64 returns the 6-bit value of a base64url (or standard base64)
// character, or -1.
func tcfB64(c byte) int {
	switch {
	case 'A' <= c && c <= 'Z':
		return int(c - 'A')
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 26
	case '0' <= c && c <= '9':
		return int(c-'0') + 52
	case c == '-' || c == '+':
		return 62
	case c == '_' || c == '/':
		return 63
	}
	return -1
}

// tcfBits reads n (≤ 32) bits at bit offset off of the base64 text s.
func tcfBits(s string, off, n int) (uint32, bool) {
	var v uint32
	for i := off; i < off+n; i++ {
		ci := i / 6
		if ci >= len(s) {
			return 0, false
		}
		d := tcfB64(s[ci])
		if d < 0 {
			return 0, false
		}
		v = v<<1 | uint32(d>>(5-i%6))&1
	}
	return v, true
}

func tcfDefault(purpose string) uint8 {
	switch purpose {
	case "1":
		return purposeAnalytics | purposeAds | purposeAdUserData
	case "3", "4":
		return purposeAdPersonalization
	case "7":
		return purposeAdUserData
	case "8":
		return purposeAnalytics
	}
	return 0
}

// parseTCF reads the PurposesConsent bits of a TC string's core segment.
func parseTCF(v string, catMap map[string]uint8) verdict {
	core, _, _ := strings.Cut(strings.TrimSpace(v), ".")
	core = strings.TrimRight(core, "=")
	var out verdict
	for i := 0; i < len(core); i++ {
		if tcfB64(core[i]) < 0 {
			return out // not a TC string: it says nothing
		}
	}
	if ver, ok := tcfBits(core, 0, 6); !ok || ver != 2 {
		return out
	}
	consents, ok := tcfBits(core, tcfPurposesConsentBit, tcfPurposes)
	if !ok {
		return out
	}
	p1t, ok := tcfBits(core, tcfPurposeOneTreatmentBit, 1)
	if !ok {
		return out
	}
	for p := 1; p <= tcfPurposes; p++ {
		if p == 1 && p1t == 1 {
			continue
		}
		out.observe(catMap, strconv.Itoa(p), consents>>(tcfPurposes-p)&1 == 1, tcfDefault)
	}
	return out.norm()
}

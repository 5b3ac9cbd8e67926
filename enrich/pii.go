package enrich

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/language"
)

// Personal data normalization and hashing (DESIGN §3 user_data, §4
// Privacy). Every value is normalized per the vendor's published rules and
// then hashed with SHA-256 (lower-case hex). A value that does not
// normalize (an email without a domain, an invalid phone number, a date
// that is no date) is dropped, never hashed as is: a hash of garbage
// matches nobody and only leaks entropy.
//
// Meta (UserData's top-level fields, Conversions API "customer information
// parameters"):
//   - em: trimmed, lower-case.
//   - ph: E.164 digits without '+' (country code included); parsed with
//     github.com/nyaruka/phonenumbers in the region of the address's
//     country, else the event's geo country, else the locale's region
//     ("en-us" → US); a number written internationally (+…, 00…) needs
//     no region. Invalid numbers are dropped.
//   - fn, ln: lower-case, punctuation and symbols removed, spaces
//     collapsed; other scripts kept as UTF-8.
//   - ct: lower-case letters only (no spaces, digits or punctuation).
//   - st: for the US (or no known country) a state name becomes its
//     two-letter code; then lower-case letters only.
//   - zp: lower-case, no spaces or dashes; US ZIP+4 → the first 5 digits.
//   - country: ISO 3166-1 alpha-2, lower-case (alpha-3 codes and common
//     English and native names accepted).
//   - db: YYYYMMDD (from YYYYMMDD, YYYY-MM-DD, YYYY/MM/DD, MM/DD/YYYY or
//     DD.MM.YYYY).
//   - ge: f or m.
//   - external_id: trimmed.
//
// Google (UserData.Google; Google Ads enhanced conversions and the GA4
// Measurement Protocol user_data use the same rules):
//   - em: trimmed, lower-case, and for gmail.com / googlemail.com the dots
//     of the local part removed (a "+tag" is kept).
//   - ph: E.164 with the leading '+'.
//   - fn, ln: lower-case, digits, punctuation and symbols removed, trimmed.
//   - ct: lower-case, digits, punctuation and symbols removed, spaces kept.
//   - st, zp, country: as for Meta.
//
// Google wants city, region, postal code and country unhashed in the GA4
// Measurement Protocol; sidetrack stores only hashes, so an adapter that
// needs the plain values cannot have them (by design: plain address data
// never reaches the spool).
//
// A value that already is a SHA-256 (64 hex digits, e.g. from GA4's
// sha256_* parameters or gtag's hashed user-provided data) is kept as the
// hash (lower-cased) for both vendors, never hashed again.

// isSHA256Hex reports whether s is 64 hex digits.
func isSHA256Hex(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !utmIsHex(s[i]) {
			return false
		}
	}
	return true
}

// internSHA256 interns the lower-case hex SHA-256 of b.
func internSHA256(e *Event, b []byte) string {
	sum := sha256.Sum256(b)
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return e.Intern(h[:])
}

// internDigest interns the lower-case hex of a SHA-256 digest.
func internDigest(e *Event, sum *[sha256.Size]byte) string {
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return e.Intern(h[:])
}

// internHashed interns an already hashed value, lower-cased.
func internHashed(e *Event, s string) string {
	var h [2 * sha256.Size]byte
	for i := 0; i < len(h); i++ {
		c := s[i]
		if 'A' <= c && c <= 'F' {
			c += 'a' - 'A'
		}
		h[i] = c
	}
	return e.Intern(h[:])
}

// appendLower appends s lower-cased (Unicode-aware).
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		i += n
	}
	return dst
}

// bstr views b as a string without copying; valid while b is unchanged.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// normEmail appends the Meta form of an email address (trimmed,
// lower-case) and reports whether it looks like an address.
func normEmail(dst []byte, s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n,;<>") {
		return dst, false
	}
	dom := s[at+1:]
	dot := strings.LastIndexByte(dom, '.')
	if dot <= 0 || dot == len(dom)-1 {
		return dst, false
	}
	return appendLower(dst, s), true
}

// googleEmail rewrites a normalized address in place for Google: dots
// removed from the local part of gmail.com and googlemail.com addresses.
func googleEmail(b []byte) []byte {
	at := strings.LastIndexByte(bstr(b), '@')
	if at < 0 {
		return b
	}
	switch bstr(b[at+1:]) {
	case "gmail.com", "googlemail.com":
	default:
		return b
	}
	out := b[:0]
	for i, c := range b {
		if c == '.' && i < at {
			continue
		}
		out = append(out, c)
	}
	return out
}

// nameMode selects what normText removes besides punctuation and symbols.
type nameMode uint8

const (
	keepSpaces  nameMode = 1 << iota // collapse runs of spaces to one
	dropDigits                       // remove digits
	lettersOnly                      // remove everything but letters
)

// normText lower-cases s and removes punctuation and symbols, plus
// digits and spaces per mode; it reports whether anything is left.
func normText(dst []byte, s string, mode nameMode) ([]byte, bool) {
	start := len(dst)
	space := false
	for _, r := range strings.TrimSpace(s) {
		switch {
		case unicode.IsLetter(r) || unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Mc, r):
		case unicode.IsDigit(r):
			if mode&(dropDigits|lettersOnly) != 0 {
				continue
			}
		case unicode.IsSpace(r):
			if mode&keepSpaces != 0 && mode&lettersOnly == 0 {
				space = len(dst) > start
			}
			continue
		default: // punctuation, symbols, controls
			continue
		}
		if space {
			dst = append(dst, ' ')
			space = false
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
	}
	return dst, len(dst) > start
}

// normName is the Meta form of a first or last name.
func normName(dst []byte, s string) ([]byte, bool) { return normText(dst, s, keepSpaces) }

// googleName is Google's form of a first or last name.
func googleName(dst []byte, s string) ([]byte, bool) {
	return normText(dst, s, keepSpaces|dropDigits)
}

// normCity is the Meta form of a city.
func normCity(dst []byte, s string) ([]byte, bool) { return normText(dst, s, lettersOnly) }

// googleCity is Google's form of a city.
func googleCity(dst []byte, s string) ([]byte, bool) {
	return normText(dst, s, keepSpaces|dropDigits)
}

// normState is the state or region: a US state name becomes its code
// when the country is the US or unknown.
func normState(dst []byte, s, country string) ([]byte, bool) {
	start := len(dst)
	dst, ok := normText(dst, s, lettersOnly)
	if !ok {
		return dst, false
	}
	if country == "" || country == "us" {
		if code := usStateCode(bstr(dst[start:])); code != "" {
			dst = append(dst[:start], code...)
		}
	}
	return dst, true
}

// normZip is the postal code: lower-case, no spaces or dashes; a US
// ZIP+4 keeps its first five digits.
func normZip(dst []byte, s, country string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	start := len(dst)
	if country == "" || country == "us" {
		if n := leadingDigits(s); n == 5 && (len(s) == 5 || (s[5] == '-' || s[5] == ' ') && leadingDigits(s[6:]) == len(s)-6) {
			return append(dst, s[:5]...), true
		}
	}
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			dst = utf8.AppendRune(dst, unicode.ToLower(r))
		}
	}
	return dst, len(dst) > start
}

func leadingDigits(s string) int {
	n := 0
	for n < len(s) && '0' <= s[n] && s[n] <= '9' {
		n++
	}
	return n
}

// countryCode returns the lower-case ISO 3166-1 alpha-2 code of a country
// code (alpha-2 or alpha-3, any case) or a common name, or "".
func countryCode(s string) string {
	var buf [64]byte
	b, ok := normText(buf[:0], s, lettersOnly)
	if !ok || len(b) > len(buf) {
		return ""
	}
	name := bstr(b)
	if c := countryByName(name); c != "" {
		return c
	}
	if len(name) != 2 && len(name) != 3 {
		return ""
	}
	r, err := language.ParseRegion(name)
	if err != nil || !r.IsCountry() || r.ISO3() == "ZZZ" {
		return ""
	}
	code := r.String()
	if len(code) != 2 {
		return ""
	}
	return lowerCode(code)
}

// lowerCode lower-cases a two-letter upper-case region code without
// allocating: the result is a constant's substring.
func lowerCode(code string) string {
	a, b := code[0]-'A', code[1]-'A'
	if a >= 26 || b >= 26 {
		return strings.ToLower(code)
	}
	i := (int(a)*26 + int(b)) * 2
	return letterPairs[i : i+2]
}

// letterPairs is every pair of lower-case letters, "aa" to "zz", in
// order: lowerCode slices country codes out of it.
const letterPairs = "aaabacadaeafagahaiajakalamanaoapaqarasatauavawaxayaz" +
	"babbbcbdbebfbgbhbibjbkblbmbnbobpbqbrbsbtbubvbwbxbybz" +
	"cacbcccdcecfcgchcicjckclcmcncocpcqcrcsctcucvcwcxcycz" +
	"dadbdcdddedfdgdhdidjdkdldmdndodpdqdrdsdtdudvdwdxdydz" +
	"eaebecedeeefegeheiejekelemeneoepeqereseteuevewexeyez" +
	"fafbfcfdfefffgfhfifjfkflfmfnfofpfqfrfsftfufvfwfxfyfz" +
	"gagbgcgdgegfggghgigjgkglgmgngogpgqgrgsgtgugvgwgxgygz" +
	"hahbhchdhehfhghhhihjhkhlhmhnhohphqhrhshthuhvhwhxhyhz" +
	"iaibicidieifigihiiijikiliminioipiqirisitiuiviwixiyiz" +
	"jajbjcjdjejfjgjhjijjjkjljmjnjojpjqjrjsjtjujvjwjxjyjz" +
	"kakbkckdkekfkgkhkikjkkklkmknkokpkqkrksktkukvkwkxkykz" +
	"lalblcldlelflglhliljlklllmlnlolplqlrlsltlulvlwlxlylz" +
	"mambmcmdmemfmgmhmimjmkmlmmmnmompmqmrmsmtmumvmwmxmymz" +
	"nanbncndnenfngnhninjnknlnmnnnonpnqnrnsntnunvnwnxnynz" +
	"oaobocodoeofogohoiojokolomonooopoqorosotouovowoxoyoz" +
	"papbpcpdpepfpgphpipjpkplpmpnpopppqprpsptpupvpwpxpypz" +
	"qaqbqcqdqeqfqgqhqiqjqkqlqmqnqoqpqqqrqsqtquqvqwqxqyqz" +
	"rarbrcrdrerfrgrhrirjrkrlrmrnrorprqrrrsrtrurvrwrxryrz" +
	"sasbscsdsesfsgshsisjskslsmsnsospsqsrssstsusvswsxsysz" +
	"tatbtctdtetftgthtitjtktltmtntotptqtrtstttutvtwtxtytz" +
	"uaubucudueufuguhuiujukulumunuoupuqurusutuuuvuwuxuyuz" +
	"vavbvcvdvevfvgvhvivjvkvlvmvnvovpvqvrvsvtvuvvvwvxvyvz" +
	"wawbwcwdwewfwgwhwiwjwkwlwmwnwowpwqwrwswtwuwvwwwxwywz" +
	"xaxbxcxdxexfxgxhxixjxkxlxmxnxoxpxqxrxsxtxuxvxwxxxyxz" +
	"yaybycydyeyfygyhyiyjykylymynyoypyqyrysytyuyvywyxyyyz" +
	"zazbzczdzezfzgzhzizjzkzlzmznzozpzqzrzsztzuzvzwzxzyzz"

// normDOB appends a date of birth as YYYYMMDD.
func normDOB(dst []byte, s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 10 && s[10] == 'T' { // an ISO timestamp: its date
		s = s[:10]
	}
	var y, m, d string
	switch {
	case len(s) == 8 && leadingDigits(s) == 8:
		y, m, d = s[:4], s[4:6], s[6:]
	case len(s) == 10 && (s[4] == '-' || s[4] == '/') && s[7] == s[4]:
		y, m, d = s[:4], s[5:7], s[8:]
	case len(s) == 10 && s[2] == '/' && s[5] == '/':
		m, d, y = s[:2], s[3:5], s[6:]
	case len(s) == 10 && s[2] == '.' && s[5] == '.':
		d, m, y = s[:2], s[3:5], s[6:]
	default:
		return dst, false
	}
	if leadingDigits(y) != 4 || leadingDigits(m) != 2 || leadingDigits(d) != 2 {
		return dst, false
	}
	yi := int(y[0]-'0')*1000 + int(y[1]-'0')*100 + int(y[2]-'0')*10 + int(y[3]-'0')
	mi := int(m[0]-'0')*10 + int(m[1]-'0')
	di := int(d[0]-'0')*10 + int(d[1]-'0')
	if yi < 1850 || yi > 2100 || mi < 1 || mi > 12 || di < 1 || di > daysIn(mi, yi) {
		return dst, false
	}
	dst = append(dst, y...)
	dst = append(dst, m...)
	return append(dst, d...), true
}

func daysIn(m, y int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// normGender appends f or m.
func normGender(dst []byte, s string) ([]byte, bool) {
	var buf [16]byte
	b := appendLower(buf[:0], strings.TrimSpace(s))
	switch bstr(b) {
	case "f", "female", "w", "woman", "weiblich", "femme", "femenino", "mujer":
		return append(dst, 'f'), true
	case "m", "male", "man", "männlich", "homme", "masculino", "hombre":
		return append(dst, 'm'), true
	}
	return dst, false
}

// normPhone returns the E.164 form of a phone number ("+14155552671"),
// parsed in region (upper-case alpha-2, may be "") unless written
// internationally. Digits without '+' and without a region are tried as
// an international number (Meta's own rule: "include the country code").
func normPhone(s, region string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 64 {
		return "", false
	}
	if strings.HasPrefix(s, "00") {
		s = "+" + s[2:]
	}
	try := func(num, reg string) (string, bool) {
		n, err := phonenumbers.Parse(num, reg)
		if err != nil || !phonenumbers.IsValidNumber(n) {
			return "", false
		}
		return phonenumbers.Format(n, phonenumbers.E164), true
	}
	if strings.HasPrefix(s, "+") {
		return try(s, "")
	}
	if region != "" {
		if v, ok := try(s, region); ok {
			return v, true
		}
	}
	return try("+"+s, "")
}

// regionFromLocale returns the upper-case region of a locale such as
// "en-us" or "de_DE", or "".
func regionFromLocale(loc string) string {
	i := strings.LastIndexAny(loc, "-_")
	if i < 0 || len(loc)-i-1 != 2 {
		return ""
	}
	r := loc[i+1:]
	if c := countryCode(r); c != "" {
		return strings.ToUpper(c)
	}
	return ""
}

// countryByName maps common country names (lower-case letters only, as
// normText makes them) to alpha-2 codes.
func countryByName(n string) string {
	switch n {
	case "unitedstates", "unitedstatesofamerica", "usa", "america", "us":
		return "us"
	case "unitedkingdom", "uk", "greatbritain", "england", "scotland", "wales", "northernireland", "britain":
		return "gb"
	case "germany", "deutschland":
		return "de"
	case "austria", "österreich", "osterreich", "oesterreich":
		return "at"
	case "switzerland", "schweiz", "suisse", "svizzera":
		return "ch"
	case "france":
		return "fr"
	case "spain", "españa", "espana":
		return "es"
	case "italy", "italia":
		return "it"
	case "netherlands", "thenetherlands", "holland", "nederland":
		return "nl"
	case "belgium", "belgië", "belgie", "belgique":
		return "be"
	case "luxembourg":
		return "lu"
	case "portugal":
		return "pt"
	case "ireland":
		return "ie"
	case "denmark", "danmark":
		return "dk"
	case "sweden", "sverige":
		return "se"
	case "norway", "norge":
		return "no"
	case "finland", "suomi":
		return "fi"
	case "iceland":
		return "is"
	case "poland", "polska":
		return "pl"
	case "czechia", "czechrepublic", "česko", "cesko":
		return "cz"
	case "slovakia":
		return "sk"
	case "hungary", "magyarország":
		return "hu"
	case "romania", "românia":
		return "ro"
	case "bulgaria":
		return "bg"
	case "greece", "ελλάδα":
		return "gr"
	case "croatia", "hrvatska":
		return "hr"
	case "slovenia":
		return "si"
	case "estonia":
		return "ee"
	case "latvia":
		return "lv"
	case "lithuania":
		return "lt"
	case "cyprus":
		return "cy"
	case "malta":
		return "mt"
	case "turkey", "türkiye", "turkiye":
		return "tr"
	case "ukraine":
		return "ua"
	case "russia", "russianfederation":
		return "ru"
	case "canada":
		return "ca"
	case "mexico", "méxico":
		return "mx"
	case "brazil", "brasil":
		return "br"
	case "argentina":
		return "ar"
	case "chile":
		return "cl"
	case "colombia":
		return "co"
	case "peru", "perú":
		return "pe"
	case "australia":
		return "au"
	case "newzealand":
		return "nz"
	case "japan":
		return "jp"
	case "china", "peoplesrepublicofchina":
		return "cn"
	case "southkorea", "korea", "republicofkorea":
		return "kr"
	case "india":
		return "in"
	case "singapore":
		return "sg"
	case "hongkong":
		return "hk"
	case "taiwan":
		return "tw"
	case "israel":
		return "il"
	case "unitedarabemirates", "uae":
		return "ae"
	case "saudiarabia":
		return "sa"
	case "southafrica":
		return "za"
	case "egypt":
		return "eg"
	case "nigeria":
		return "ng"
	case "indonesia":
		return "id"
	case "thailand":
		return "th"
	case "vietnam":
		return "vn"
	case "philippines":
		return "ph"
	case "malaysia":
		return "my"
	}
	return ""
}

// usStateCode maps a US state, district or territory name (lower-case
// letters only) to its lower-case two-letter code.
func usStateCode(n string) string {
	switch n {
	case "alabama":
		return "al"
	case "alaska":
		return "ak"
	case "arizona":
		return "az"
	case "arkansas":
		return "ar"
	case "california":
		return "ca"
	case "colorado":
		return "co"
	case "connecticut":
		return "ct"
	case "delaware":
		return "de"
	case "districtofcolumbia", "washingtondc":
		return "dc"
	case "florida":
		return "fl"
	case "georgia":
		return "ga"
	case "hawaii":
		return "hi"
	case "idaho":
		return "id"
	case "illinois":
		return "il"
	case "indiana":
		return "in"
	case "iowa":
		return "ia"
	case "kansas":
		return "ks"
	case "kentucky":
		return "ky"
	case "louisiana":
		return "la"
	case "maine":
		return "me"
	case "maryland":
		return "md"
	case "massachusetts":
		return "ma"
	case "michigan":
		return "mi"
	case "minnesota":
		return "mn"
	case "mississippi":
		return "ms"
	case "missouri":
		return "mo"
	case "montana":
		return "mt"
	case "nebraska":
		return "ne"
	case "nevada":
		return "nv"
	case "newhampshire":
		return "nh"
	case "newjersey":
		return "nj"
	case "newmexico":
		return "nm"
	case "newyork":
		return "ny"
	case "northcarolina":
		return "nc"
	case "northdakota":
		return "nd"
	case "ohio":
		return "oh"
	case "oklahoma":
		return "ok"
	case "oregon":
		return "or"
	case "pennsylvania":
		return "pa"
	case "rhodeisland":
		return "ri"
	case "southcarolina":
		return "sc"
	case "southdakota":
		return "sd"
	case "tennessee":
		return "tn"
	case "texas":
		return "tx"
	case "utah":
		return "ut"
	case "vermont":
		return "vt"
	case "virginia":
		return "va"
	case "washington":
		return "wa"
	case "westvirginia":
		return "wv"
	case "wisconsin":
		return "wi"
	case "wyoming":
		return "wy"
	case "puertorico":
		return "pr"
	case "guam":
		return "gu"
	case "americansamoa":
		return "as"
	case "virginislands", "usvirginislands":
		return "vi"
	case "northernmarianaislands":
		return "mp"
	}
	return ""
}

// hashPII normalizes and hashes e.PII into e.UserData (both vendor forms)
// and reports whether some value had to be dropped because it did not
// normalize. It does not clear e.PII.
func hashPII(e *Event) (dropped bool) { return hashPIIWith(e, nil, new([256]byte)) }

// hashPIIWith is hashPII with a cache of phone normalizations (nil: none)
// and a scratch buffer: the normalizers are called through func values, so
// a buffer of hashPII's own would be moved to the heap on every call.
func hashPIIWith(e *Event, phones *phoneCache, buf *[256]byte) (dropped bool) {
	p, u := &e.PII, &e.UserData

	country := ""
	if p.Country != "" {
		if isSHA256Hex(strings.TrimSpace(p.Country)) {
			h := internHashed(e, strings.TrimSpace(p.Country))
			u.Country, u.Google.Country = h, h
		} else if country = countryCode(p.Country); country != "" {
			h := internSHA256(e, []byte(country))
			u.Country, u.Google.Country = h, h
		} else {
			dropped = true
		}
	}
	if country == "" && e.Context.Country != "" {
		country = countryCode(e.Context.Country)
	}

	// one hashes a field whose Meta and Google forms may differ.
	one := func(v string, meta, google *string, nm func([]byte, string) ([]byte, bool), ng func([]byte, string) ([]byte, bool)) {
		if v == "" {
			return
		}
		if t := strings.TrimSpace(v); isSHA256Hex(t) {
			h := internHashed(e, t)
			*meta = h
			if google != nil {
				*google = h
			}
			return
		}
		b, ok := nm(buf[:0], v)
		if !ok {
			dropped = true
			return
		}
		*meta = internSHA256(e, b)
		if google == nil {
			return
		}
		if ng == nil {
			*google = *meta
			return
		}
		if b, ok = ng(buf[:0], v); ok {
			*google = internSHA256(e, b)
		}
	}

	one(p.Email, &u.EM, &u.Google.EM, normEmail, func(dst []byte, s string) ([]byte, bool) {
		b, ok := normEmail(dst, s)
		return googleEmail(b), ok
	})
	if p.Phone != "" {
		if t := strings.TrimSpace(p.Phone); isSHA256Hex(t) {
			h := internHashed(e, t)
			u.PH, u.Google.PH = h, h
		} else {
			region := country // upper-cased only when normalizing (a cache miss)
			if region == "" {
				region = regionFromLocale(e.Context.Locale)
			}
			if meta, google, ok := phones.hashed(p.Phone, region); ok {
				u.Google.PH = internDigest(e, &google)
				u.PH = internDigest(e, &meta)
			} else {
				dropped = true
			}
		}
	}
	one(p.FirstName, &u.FN, &u.Google.FN, normName, googleName)
	one(p.LastName, &u.LN, &u.Google.LN, normName, googleName)
	one(p.City, &u.CT, &u.Google.CT, normCity, googleCity)
	one(p.State, &u.ST, &u.Google.ST, func(dst []byte, s string) ([]byte, bool) { return normState(dst, s, country) }, nil)
	one(p.Zip, &u.ZP, &u.Google.ZP, func(dst []byte, s string) ([]byte, bool) { return normZip(dst, s, country) }, nil)
	one(p.DateOfBirth, &u.DB, nil, normDOB, nil)
	one(p.Gender, &u.GE, nil, normGender, nil)
	one(p.ExternalID, &u.ExternalID, nil, func(dst []byte, s string) ([]byte, bool) {
		s = strings.TrimSpace(s)
		return append(dst, s...), s != ""
	}, nil)
	return dropped
}

// ---- finding emails and phone numbers in free text (scrubbing) ----

// redacted replaces personal data found in URLs, titles, referrers and
// campaign values.
const redacted = "[redacted]"

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c >= utf8.RuneSelf
}

// isEmailLocal accepts the local-part characters real addresses use
// (RFC 5322 allows more, e.g. / = ? {, which in text and URLs are far more
// often delimiters than part of an address).
func isEmailLocal(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '+' || c == '-' || c == '\''
}

func isEmailDomain(c byte) bool { return isAlnum(c) || c == '.' || c == '-' }

func isPhoneSep(c byte) bool {
	return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/'
}

// mayHavePII is the cheap pre-check: an '@' (or %40) or a run of at least
// seven digits among phone punctuation. It never misses what findPII
// finds (a phone has ≥ 8 digits, an email an '@').
func mayHavePII(s string) bool {
	digits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '@':
			return true
		case c == '%':
			if i+2 < len(s) && s[i+1] == '4' && s[i+2] == '0' {
				return true
			}
		case isDigit(c):
			if digits++; digits >= 7 {
				return true
			}
		case isPhoneSep(c) || c == '+':
		default:
			digits = 0
		}
	}
	return false
}

// emailAt reports the span of an email address around the '@' at i,
// starting no earlier than lo.
func emailAt(s string, lo, i int) (start, end int, ok bool) {
	l := i
	for l > lo && isEmailLocal(s[l-1]) {
		l--
	}
	for l < i && (s[l] == '.' || s[l] == '\'') {
		l++
	}
	r := i + 1
	for r < len(s) && isEmailDomain(s[r]) {
		r++
	}
	for r > i+1 && (s[r-1] == '.' || s[r-1] == '-') {
		r--
	}
	if l == i || r == i+1 {
		return 0, 0, false
	}
	dom := s[i+1 : r]
	dot := strings.LastIndexByte(dom, '.')
	if dot <= 0 || len(dom)-dot-1 < 2 {
		return 0, 0, false
	}
	for j := dot + 1; j < len(dom); j++ {
		if c := dom[j] | 0x20; c < 'a' || c > 'z' {
			return 0, 0, false
		}
	}
	return l, r, true
}

// phoneAt reports the span of a phone number starting at i ('+', '(' or
// a digit, not preceded by a letter or digit), and the end of what it
// examined so the caller can skip it. Accepted: '+' and 8–15 digits, or
// 10–15 digits with at least one separator (space - . ( ) /) between
// them that do not start like a date (YYYY-MM-DD, DD.MM.YYYY,
// MM/DD/YYYY) or a decimal number. Bare digit runs are ids and
// timestamps far more often than phone numbers: never taken.
func phoneAt(s string, i int) (start, end, skip int, ok bool) {
	j := i
	plus := s[j] == '+'
	if plus {
		j++
	}
	digits, seps, dots, sepsAtLast, dotsAtLast, run, lastDigit := 0, 0, 0, 0, 0, 0, -1
	for ; j < len(s); j++ {
		c := s[j]
		if isDigit(c) {
			digits++
			run = 0
			lastDigit = j
			sepsAtLast, dotsAtLast = seps, dots
			continue
		}
		if isPhoneSep(c) && run < 2 {
			run++
			if digits > 0 {
				seps++
				if c == '.' {
					dots++
				}
			}
			continue
		}
		break
	}
	if lastDigit < 0 {
		return 0, 0, j, false
	}
	end = lastDigit + 1
	if end < len(s) && (isAlnum(s[end]) || s[end] == '@') {
		return 0, 0, j, false // part of a word or of an email address
	}
	first := i
	for first < end && !isDigit(s[first]) && s[first] != '+' {
		first++
	}
	switch {
	case plus && digits >= 8 && digits <= 15:
	case !plus && digits >= 10 && digits <= 15 && (sepsAtLast > 0 || s[i] == '(') &&
		!(sepsAtLast == 1 && dotsAtLast == 1) && // a decimal number (1699999999.123)
		!looksLikeDate(s[first:end]):
	default:
		return 0, 0, j, false
	}
	return i, end, end, true
}

// looksLikeDate reports whether s starts like a date (possibly followed
// by a time).
func looksLikeDate(s string) bool {
	g1 := leadingDigits(s)
	if g1 >= len(s) || (s[g1] != '-' && s[g1] != '/' && s[g1] != '.') {
		return false
	}
	sep := s[g1]
	rest := s[g1+1:]
	g2 := leadingDigits(rest)
	if g2 < 1 || g2 > 2 || g2 >= len(rest) || rest[g2] != sep {
		return false
	}
	g3 := leadingDigits(rest[g2+1:])
	return g1 == 4 && (g3 == 1 || g3 == 2) || (g1 == 1 || g1 == 2) && g3 == 4
}

// findPII returns the first email address or phone number in s at or
// after from. Position from counts as the start of a word (scrubText
// calls it right after a replacement, which ends in ']'), so scrubbing
// its own output finds nothing new.
func findPII(s string, from int) (start, end int, ok bool) {
	for i := from; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '@':
			if l, r, ok := emailAt(s, from, i); ok {
				return l, r, true
			}
		case (c == '+' || c == '(') && i+1 < len(s) && isDigit(s[i+1]) && (i == from || !isAlnum(s[i-1])),
			isDigit(c) && (i == from || !isAlnum(s[i-1]) && s[i-1] != '+' && s[i-1] != '('):
			l, r, skip, ok := phoneAt(s, i)
			if ok {
				return l, r, true
			}
			i = skip - 1
		}
	}
	return 0, 0, false
}

// hasPII reports whether s contains an email address or phone number.
func hasPII(s string) bool {
	if !mayHavePII(s) {
		return false
	}
	_, _, ok := findPII(s, 0)
	return ok
}

// scrubText appends s with every email address and phone number replaced
// by "[redacted]", and reports whether it replaced any.
func scrubText(dst []byte, s string) ([]byte, bool) {
	if !mayHavePII(s) {
		return dst, false
	}
	changed := false
	from := 0
	for {
		l, r, ok := findPII(s, from)
		if !ok {
			break
		}
		if !changed {
			dst = append(dst, s[:l]...)
			changed = true
		} else {
			dst = append(dst, s[from:l]...)
		}
		dst = append(dst, redacted...)
		from = r
	}
	if changed {
		dst = append(dst, s[from:]...)
	}
	return dst, changed
}

// isPhoneKey reports whether a query parameter name says its value is a
// phone number, so even an unformatted one ("5552671") is redacted.
func isPhoneKey(k string) bool {
	var buf [32]byte
	if len(k) > len(buf) {
		return false
	}
	b := appendLower(buf[:0], k)
	n := bstr(b)
	switch n {
	case "tel", "ph", "mobile", "cell", "fax", "handy", "msisdn":
		return true
	}
	return strings.Contains(n, "phone")
}

// countDigits returns the number of ASCII digits in s.
func countDigits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			n++
		}
	}
	return n
}

// piiInEncoded reports whether a percent-encoded URL component holds an
// email address or phone number once decoded. In a query (plus) a '+'
// means a space, but clients also send a phone's '+' unencoded: both
// readings are checked.
func piiInEncoded(s string, plus bool) bool {
	if !mayHavePII(s) {
		return false
	}
	hasPlus := plus && strings.IndexByte(s, '+') >= 0
	if strings.IndexByte(s, '%') < 0 && !hasPlus {
		return hasPII(s)
	}
	var buf [512]byte
	if hasPII(bstr(appendPercentDecoded(buf[:0], s, plus))) {
		return true
	}
	return hasPlus && hasPII(bstr(appendPercentDecoded(buf[:0], s, false)))
}

// scrubURL appends u with personal data removed: a path segment holding
// an email or phone number becomes "[redacted]", a query (or fragment)
// parameter's value becomes "[redacted]" (its key kept), a parameter whose
// key says phone loses even an unformatted number. It reports whether it
// changed anything; when it did not, dst is returned untouched.
func scrubURL(dst []byte, u string) ([]byte, bool) {
	if !mayHavePII(u) {
		return dst, false
	}
	path, query, frag := u, "", ""
	hasQ, hasF := false, false
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path, frag, hasF = path[:i], path[i+1:], true
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query, hasQ = path[:i], path[i+1:], true
	}
	pathPII := segmentsHavePII(path)
	queryPII := hasQ && paramsHavePII(query)
	fragParams := strings.IndexByte(frag, '=') >= 0
	fragPII := hasF && (fragParams && paramsHavePII(frag) || !fragParams && piiInEncoded(frag, false))
	if !pathPII && !queryPII && !fragPII {
		return dst, false
	}
	if pathPII {
		// Keep scheme://host; redact the segments that carry the data.
		rest := path
		if i := strings.Index(rest, "://"); i > 0 && isScheme(rest[:i]) {
			j := strings.IndexByte(rest[i+3:], '/')
			if j < 0 {
				j = len(rest) - i - 3
			}
			// Drop user info (user:password@) from the authority: it is
			// personal data or a credential, never needed.
			auth := rest[i+3 : i+3+j]
			if at := strings.LastIndexByte(auth, '@'); at >= 0 {
				auth = auth[at+1:]
			}
			if piiInEncoded(auth, false) {
				auth = redacted
			}
			dst = append(dst, rest[:i+3]...)
			dst = append(dst, auth...)
			rest = rest[i+3+j:]
		}
		for k := 0; rest != ""; k++ {
			seg, more, found := strings.Cut(rest, "/")
			if k > 0 {
				dst = append(dst, '/')
			}
			if piiInEncoded(seg, false) {
				dst = append(dst, redacted...)
			} else {
				dst = append(dst, seg...)
			}
			rest = more
			if found && rest == "" {
				dst = append(dst, '/')
			}
		}
	} else {
		dst = append(dst, path...)
	}
	if hasQ {
		dst = append(dst, '?')
		dst = appendScrubbedParams(dst, query)
	}
	if hasF {
		dst = append(dst, '#')
		switch {
		case fragParams:
			dst = appendScrubbedParams(dst, frag)
		case fragPII:
			dst = append(dst, redacted...)
		default:
			dst = append(dst, frag...)
		}
	}
	return dst, true
}

// isScheme reports whether s is a URL scheme (RFC 3986: a letter, then
// letters, digits, + - .).
func isScheme(s string) bool {
	if s == "" || 'a' > s[0]|0x20 || s[0]|0x20 > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// segmentsHavePII reports whether a path segment carries personal data
// (what scrubURL redacts: a number split across segments is not one).
func segmentsHavePII(path string) bool {
	if !mayHavePII(path) {
		return false
	}
	for path != "" {
		var seg string
		seg, path, _ = strings.Cut(path, "/")
		if piiInEncoded(seg, false) {
			return true
		}
	}
	return false
}

// paramPII reports whether one "k=v" parameter carries personal data.
func paramPII(kv string) bool {
	k, v, _ := strings.Cut(kv, "=")
	if piiInEncoded(k, true) || piiInEncoded(v, true) {
		return true
	}
	return isPhoneKey(k) && countDigits(v) >= 7
}

func paramsHavePII(q string) bool {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if paramPII(kv) {
			return true
		}
	}
	return false
}

func appendScrubbedParams(dst []byte, q string) []byte {
	for first := true; q != "" || first; first = false {
		var kv string
		var more bool
		kv, q, more = strings.Cut(q, "&")
		if !first {
			dst = append(dst, '&')
		}
		if paramPII(kv) {
			k, _, hasV := strings.Cut(kv, "=")
			if hasV && !piiInEncoded(k, true) {
				dst = append(dst, k...)
				dst = append(dst, '=')
			}
			dst = append(dst, redacted...)
		} else {
			dst = append(dst, kv...)
		}
		if more && q == "" {
			dst = append(dst, '&')
		}
	}
	return dst
}

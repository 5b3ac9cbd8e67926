package enrich

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"
)

// timeLayout is RFC 3339 in UTC with milliseconds (DESIGN §3).
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// AppendJSON appends e as one JSON object (the NDJSON shape of
// docs/event.md) to dst. It is the hot-path encoder: it does not allocate
// beyond growing dst. encoding/json produces the same document (the types'
// MarshalJSON methods agree with it), which tests check. For a light event
// (LoadStoredJSON) it appends the stored bytes.
func (e *Event) AppendJSON(dst []byte) []byte {
	if e.stored != nil {
		return append(dst, e.stored...)
	}
	w := jw{b: dst}
	w.open('{')
	w.str("event_id", e.EventID, true)
	w.str("device_id", e.DeviceID, false)
	w.str("anonymous_id", e.AnonymousID, false)
	w.str("user_id", e.UserID, false)
	w.str("session_id", e.SessionID, false)
	w.str("ga_session_id", e.GASessionID, false)
	w.int("ga_session_number", e.GASessionNumber)
	w.str("ga_measurement_id", e.GAMeasurementID, false)
	w.str("page_load_id", e.PageLoadID, false)
	w.int("hit_seq", e.HitSeq)
	w.str("name", e.Name, true)
	w.str("original_name", e.OriginalName, false)
	w.str("source", string(e.Source), true)
	w.time("received_at", e.ReceivedAt, true)
	w.time("occurred_at", e.OccurredAt, true)
	w.str("url", e.URL, false)
	w.str("path", e.Path, false)
	w.str("referrer", e.Referrer, false)
	w.str("title", e.Title, false)
	w.str("host", e.Host, false)
	if a := &e.Attribution; !isZeroAttribution(a) {
		w.key("attribution")
		w.open('{')
		w.str("utm_source", a.UTMSource, false)
		w.str("utm_medium", a.UTMMedium, false)
		w.str("utm_campaign", a.UTMCampaign, false)
		w.str("utm_term", a.UTMTerm, false)
		w.str("utm_content", a.UTMContent, false)
		w.str("utm_id", a.UTMID, false)
		w.str("source", a.Source, false)
		w.str("medium", a.Medium, false)
		w.str("campaign", a.Campaign, false)
		w.str("channel", a.Channel, false)
		if c := &a.ClickIDs; *c != (ClickIDs{}) {
			w.key("click_ids")
			w.open('{')
			w.str("gclid", c.GCLID, false)
			w.str("gbraid", c.GBRAID, false)
			w.str("wbraid", c.WBRAID, false)
			w.str("dclid", c.DCLID, false)
			w.str("srsltid", c.SRSLTID, false)
			w.str("fbclid", c.FBCLID, false)
			w.str("msclkid", c.MSCLKID, false)
			w.str("ttclid", c.TTCLID, false)
			w.str("li_fat_id", c.LiFatID, false)
			w.str("twclid", c.TWCLID, false)
			w.close('}')
		}
		w.str("fbc", a.FBC, false)
		w.str("fbp", a.FBP, false)
		w.str("referrer_kind", a.ReferrerKind, false)
		w.touch("first_touch", &a.FirstTouch)
		w.touch("last_touch", &a.LastTouch)
		w.close('}')
	}
	if c := &e.Context; *c != (Context{}) {
		w.key("context")
		w.open('{')
		w.str("user_agent", c.UserAgent, false)
		w.str("ip", c.IP, false)
		w.str("ip_hash", c.IPHash, false)
		w.str("ip_truncated", c.IPTruncated, false)
		w.str("country", c.Country, false)
		w.str("region", c.Region, false)
		w.str("locale", c.Locale, false)
		w.str("screen", c.Screen, false)
		w.bool("bot", c.Bot)
		w.str("bot_reason", c.BotReason, false)
		w.close('}')
	}
	{
		c := &e.Consent
		w.key("consent")
		w.open('{')
		w.str("analytics", c.Analytics.String(), true)
		w.str("ads", c.Ads.String(), true)
		w.str("ad_user_data", c.AdUserData.String(), true)
		w.str("ad_personalization", c.AdPersonalization.String(), true)
		w.bool("gpc", c.GPC)
		w.str("consent_source", c.Source, false)
		w.str("gcs", c.GCS, false)
		w.str("gcd", c.GCD, false)
		w.str("npa", c.NPA, false)
		w.props("categories", c.Categories)
		w.close('}')
	}
	if u := &e.UserData; *u != (UserData{}) {
		w.key("user_data")
		w.open('{')
		w.str("em", u.EM, false)
		w.str("ph", u.PH, false)
		w.str("fn", u.FN, false)
		w.str("ln", u.LN, false)
		w.str("ct", u.CT, false)
		w.str("st", u.ST, false)
		w.str("zp", u.ZP, false)
		w.str("country", u.Country, false)
		w.str("db", u.DB, false)
		w.str("ge", u.GE, false)
		w.str("external_id", u.ExternalID, false)
		if g := &u.Google; *g != (GoogleUserData{}) {
			w.key("google")
			w.open('{')
			w.str("em", g.EM, false)
			w.str("ph", g.PH, false)
			w.str("fn", g.FN, false)
			w.str("ln", g.LN, false)
			w.str("ct", g.CT, false)
			w.str("st", g.ST, false)
			w.str("zp", g.ZP, false)
			w.str("country", g.Country, false)
			w.close('}')
		}
		w.close('}')
	}
	if c := &e.Commerce; !isZeroCommerce(c) {
		w.key("commerce")
		w.open('{')
		w.opt("value", c.Value)
		w.str("currency", c.Currency, false)
		w.str("transaction_id", c.TransactionID, false)
		w.opt("tax", c.Tax)
		w.opt("shipping", c.Shipping)
		w.str("coupon", c.Coupon, false)
		if len(c.Items) > 0 {
			w.key("items")
			w.open('[')
			for i := range c.Items {
				it := &c.Items[i]
				w.comma()
				w.open('{')
				w.str("id", it.ID, false)
				w.str("name", it.Name, false)
				w.str("brand", it.Brand, false)
				w.str("category", it.Category, false)
				w.str("category2", it.Category2, false)
				w.str("category3", it.Category3, false)
				w.str("category4", it.Category4, false)
				w.str("category5", it.Category5, false)
				w.str("variant", it.Variant, false)
				w.opt("price", it.Price)
				w.opt("quantity", it.Quantity)
				w.str("coupon", it.Coupon, false)
				w.opt("discount", it.Discount)
				w.str("affiliation", it.Affiliation, false)
				w.str("list_id", it.ListID, false)
				w.str("list_name", it.ListName, false)
				w.str("location_id", it.LocationID, false)
				w.opt("index", it.Index)
				w.close('}')
			}
			w.close(']')
		}
		w.close('}')
	}
	if g := &e.GA; *g != (GAHit{}) {
		w.key("ga")
		w.open('{')
		w.str("v", g.Version, false)
		w.str("gtm", g.GTM, false)
		w.bool("seg", g.SessionEngaged)
		w.bool("fv", g.FirstVisit)
		w.bool("ss", g.SessionStart)
		w.int("et", g.EngagementMS)
		w.bool("debug", g.Debug)
		w.close('}')
	}
	w.props("properties", e.Properties)
	w.props("user_properties", e.UserProperties)
	if e.Quality != 0 {
		w.key("quality")
		w.b = e.Quality.appendJSON(w.b)
		w.first = false
	}
	if len(e.Destinations) > 0 {
		w.key("destinations")
		w.open('[')
		for _, d := range e.Destinations {
			w.comma()
			w.b = appendQuoted(w.b, d)
		}
		w.close(']')
	}
	w.close('}')
	return w.b
}

func isZeroAttribution(a *Attribution) bool {
	return a.UTMSource == "" && a.UTMMedium == "" && a.UTMCampaign == "" && a.UTMTerm == "" &&
		a.UTMContent == "" && a.UTMID == "" && a.Source == "" && a.Medium == "" &&
		a.Campaign == "" && a.Channel == "" && a.ClickIDs == (ClickIDs{}) && a.FBC == "" &&
		a.FBP == "" && a.ReferrerKind == "" && a.FirstTouch.IsZero() && a.LastTouch.IsZero()
}

func isZeroCommerce(c *Commerce) bool {
	return !c.Value.Set && c.Currency == "" && c.TransactionID == "" && !c.Tax.Set &&
		!c.Shipping.Set && c.Coupon == "" && len(c.Items) == 0
}

// IsZero makes `omitzero` omit an empty touch.
func (t Touch) IsZero() bool { return t == Touch{} }

// IsZero makes `omitzero` omit an empty attribution.
func (a Attribution) IsZero() bool { return isZeroAttribution(&a) }

// IsZero makes `omitzero` omit empty commerce data.
func (c Commerce) IsZero() bool { return isZeroCommerce(&c) }

// jw is a minimal JSON object writer: it tracks whether a comma is due.
type jw struct {
	b     []byte
	first bool
}

func (w *jw) open(c byte) { w.b = append(w.b, c); w.first = true }

func (w *jw) close(c byte) { w.b = append(w.b, c); w.first = false }

func (w *jw) comma() {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
}

func (w *jw) key(k string) {
	w.comma()
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *jw) str(k, v string, always bool) {
	if v == "" && !always {
		return
	}
	w.key(k)
	w.b = appendQuoted(w.b, v)
}

func (w *jw) int(k string, v int64) {
	if v == 0 {
		return
	}
	w.key(k)
	w.b = strconv.AppendInt(w.b, v, 10)
}

func (w *jw) bool(k string, v bool) {
	if !v {
		return
	}
	w.key(k)
	w.b = append(w.b, "true"...)
}

func (w *jw) opt(k string, v OptFloat) {
	if !v.Set {
		return
	}
	w.key(k)
	w.b = appendFloat(w.b, v.V)
}

func (w *jw) time(k string, t time.Time, always bool) {
	if t.IsZero() && !always {
		return
	}
	w.key(k)
	w.b = append(w.b, '"')
	w.b = appendTime(w.b, t)
	w.b = append(w.b, '"')
}

func (w *jw) touch(k string, t *Touch) {
	if t.IsZero() {
		return
	}
	w.key(k)
	w.open('{')
	w.str("source", t.Source, false)
	w.str("medium", t.Medium, false)
	w.str("campaign", t.Campaign, false)
	w.str("channel", t.Channel, false)
	w.str("click_id_kind", t.ClickIDKind, false)
	w.time("at", t.At, false)
	w.close('}')
}

func (w *jw) props(k string, p Props) {
	if len(p) == 0 {
		return
	}
	w.key(k)
	w.b = p.appendJSON(w.b)
	w.first = false
}

func (p Props) appendJSON(b []byte) []byte {
	b = append(b, '{')
	for i := range p {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, p[i].Key)
		b = append(b, ':')
		switch p[i].Kind {
		case PropNumber:
			b = appendFloat(b, p[i].Num)
		case PropBool:
			b = strconv.AppendBool(b, p[i].Bool)
		default:
			b = appendQuoted(b, p[i].Str)
		}
	}
	return append(b, '}')
}

func (s Flags) appendJSON(b []byte) []byte {
	b = append(b, '[')
	n := 0
	for i := range flagNames {
		if s.Has(Flag(1 << i)) {
			if n > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, flagNames[i])
			n++
		}
	}
	return append(b, ']')
}

// appendFloat formats like encoding/json: shortest representation, no
// exponent for ordinary magnitudes. NaN and Inf are not JSON; they become 0
// (decoders never produce them).
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	abs := math.Abs(f)
	fmtc := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmtc = 'e'
	}
	b = strconv.AppendFloat(b, f, fmtc, -1, 64)
	if fmtc == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// jsonPlainLo and jsonPlainHi are bit sets of the bytes 0–63 and 64–127
// that appendQuoted copies as they are: printable ASCII other than '"',
// '\\' and the HTML-sensitive <, > and &.
const (
	jsonPlainLo uint64 = 0xFFFFFFFF00000000 &^ (1<<'"' | 1<<'&' | 1<<'<' | 1<<'>')
	jsonPlainHi uint64 = ^uint64(0) &^ (1 << ('\\' - 64))
)

// plainWord reports whether all eight bytes of w (a little-endian load of
// eight string bytes) are plain, without a branch per byte: no high bit
// (non-ASCII), none below 0x20, none equal to a special. The classic
// "has a zero byte" and "has a byte less than n" tests are exact when only
// asked whether any byte matches.
func plainWord(w uint64) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - lsb) & ^v & msb }
	bad := w & msb
	bad |= (w - lsb*0x20) & ^w & msb
	bad |= hasZero(w^(lsb*'"')) | hasZero(w^(lsb*'\\')) | hasZero(w^(lsb*'<')) |
		hasZero(w^(lsb*'>')) | hasZero(w^(lsb*'&'))
	return bad == 0
}

func jsonPlain(c byte) bool {
	if c < 64 {
		return jsonPlainLo>>c&1 != 0
	}
	return c < utf8.RuneSelf && jsonPlainHi>>(c-64)&1 != 0
}

// AppendJSONString appends s as a JSON string to dst, escaped like
// encoding/json (HTML-safe, invalid UTF-8 replaced by U+FFFD). Adapters use
// it to build vendor payloads without allocating.
func AppendJSONString(dst []byte, s string) []byte { return appendQuoted(dst, s) }

// AppendJSONNumber appends f as encoding/json formats a float64 (NaN and
// infinities, which JSON cannot carry, become 0).
func AppendJSONNumber(dst []byte, f float64) []byte { return appendFloat(dst, f) }

// appendQuoted appends s as a JSON string, escaping like encoding/json
// (including <, >, & and U+2028/2029, so the output is safe in HTML) and
// replacing invalid UTF-8 with U+FFFD.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Runs of plain ASCII, the usual content, are checked eight bytes
		// at a time, then byte by byte, and copied once.
		for i+8 <= len(s) && plainWord(binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8))) {
			i += 8
		}
		for i < len(s) && jsonPlain(s[i]) {
			i++
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// MarshalJSON encodes the event with AppendJSON.
func (e *Event) MarshalJSON() ([]byte, error) { return e.AppendJSON(nil), nil }

// UnmarshalJSON decodes the NDJSON shape. It is for the read side (spool
// replay, tests, CLI), not the ingest hot path.
func (e *Event) UnmarshalJSON(b []byte) error {
	type plain Event // no methods: avoids recursion
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	arena := e.arena
	*e = Event(p)
	e.arena = arena
	return nil
}

// MarshalJSON encodes the state as its name.
func (s ConsentState) MarshalJSON() ([]byte, error) {
	return appendQuoted(nil, s.String()), nil
}

// UnmarshalJSON accepts granted, denied and unknown.
func (s *ConsentState) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	st, ok := ParseConsentState(v)
	if !ok {
		return fmt.Errorf("consent state %q: want granted, denied or unknown", v)
	}
	*s = st
	return nil
}

// ParseConsentState parses granted, denied or unknown.
func ParseConsentState(v string) (ConsentState, bool) {
	switch v {
	case "granted":
		return Granted, true
	case "denied":
		return Denied, true
	case "unknown", "":
		return Unknown, true
	}
	return Unknown, false
}

// MarshalJSON encodes a present number, or null.
func (o OptFloat) MarshalJSON() ([]byte, error) {
	if !o.Set {
		return []byte("null"), nil
	}
	return appendFloat(nil, o.V), nil
}

// UnmarshalJSON accepts a number or null.
func (o *OptFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*o = OptFloat{}
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*o = Some(v)
	return nil
}

// MarshalJSON encodes the properties as an object in insertion order.
func (p Props) MarshalJSON() ([]byte, error) { return p.appendJSON(nil), nil }

// UnmarshalJSON decodes an object of strings, numbers and booleans, keeping
// the document's key order. Nested values are kept as their JSON text.
func (p *Props) UnmarshalJSON(b []byte) error {
	// fastjson keeps the document's key order and reads scalars without
	// the reflection and per-value decoders of encoding/json; this runs for
	// every stored event delivery reads back.
	var parser fastjson.Parser
	v, err := parser.ParseBytes(b)
	if err != nil {
		return err
	}
	if v.Type() == fastjson.TypeNull {
		*p = (*p)[:0]
		return nil
	}
	o, err := v.Object()
	if err != nil {
		return errors.New("properties: want a JSON object")
	}
	out := (*p)[:0]
	o.Visit(func(k []byte, x *fastjson.Value) {
		key := string(k)
		switch x.Type() {
		case fastjson.TypeString:
			out = append(out, Prop{Key: key, Kind: PropString, Str: string(x.GetStringBytes())})
		case fastjson.TypeNumber:
			out = append(out, Prop{Key: key, Kind: PropNumber, Num: x.GetFloat64()})
		case fastjson.TypeTrue, fastjson.TypeFalse:
			out = append(out, Prop{Key: key, Kind: PropBool, Bool: x.GetBool()})
		default:
			out = append(out, Prop{Key: key, Kind: PropString, Str: string(x.MarshalTo(nil))})
		}
	})
	*p = out
	return nil
}

// MarshalJSON encodes the flags as an array of names.
func (s Flags) MarshalJSON() ([]byte, error) { return s.appendJSON(nil), nil }

// UnmarshalJSON decodes an array of flag names; unknown names are ignored
// so that old binaries read new spools.
func (s *Flags) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return err
	}
	*s = 0
	for _, n := range names {
		for i, fn := range flagNames {
			if fn == n {
				s.Add(Flag(1 << i))
			}
		}
	}
	return nil
}

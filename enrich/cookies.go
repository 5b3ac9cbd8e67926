package enrich

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/net/publicsuffix"
)

// Cookie codecs for the first-party identity cookies (DESIGN §4 "Identity").
//
// Every value is base64url (no padding) of
//
//	payload ‖ tag
//
// where payload starts with a format version byte and tag is the first 16
// bytes of HMAC-SHA256 over (kind ‖ len(bind) ‖ bind ‖ payload). kind keeps a
// value of one cookie from verifying as another; bind ties the session and
// touch cookies to the device id they were issued with, so pasting another
// browser's session cookie yields a new session, not someone else's. The
// HMAC keys are derived from cfg.Secrets (never the raw secret), newest
// first: values signed with an older secret still verify and are re-issued
// with the newest.
//
// Layouts (after the version byte 1):
//
//	device  : id[16]                               → 44 characters
//	session : id[16] last_activity_unix_s[8]       → 55 characters
//	touches : flags[1] written_unix_day(uvarint) touch? touch?  → ≤ 1 KiB
//	touch   : at_unix_s(uvarint) then source, medium, campaign, channel,
//	          click_id_kind, each len[1] ‖ bytes
const (
	ckVersion = 1
	ckTagLen  = 16
	ckIDLen   = 16

	ckKindDevice  = 'd'
	ckKindSession = 's'
	ckKindTouches = 't'

	ckDevicePayload  = 1 + ckIDLen
	ckSessionPayload = 1 + ckIDLen + 8
	ckDeviceRaw      = ckDevicePayload + ckTagLen
	ckSessionRaw     = ckSessionPayload + ckTagLen

	// ckTouchesMax bounds the decoded touches cookie so its base64 value
	// stays within 1 KiB (browsers cap a cookie at 4 KiB including the
	// name, and every byte rides on every request to the shop).
	ckTouchesMax = 768

	// Per-field caps of the touches cookie. Their sum keeps two touches
	// under ckTouchesMax even with the largest varint; campaign names are
	// the long ones, so they get the most room and are cut at a rune
	// boundary when longer.
	ckMaxSource   = 64
	ckMaxMedium   = 64
	ckMaxCampaign = 150
	ckMaxChannel  = 40
	ckMaxClickKin = 16
)

var ckB64 = base64.RawURLEncoding

// ckKeyLabel and ckCookielessLabel separate the derived keys from every
// other use of the same secrets (AES sealing, IP hashing).
const (
	ckKeyLabel        = "sidetrack/identity/cookies/v1"
	ckCookielessLabel = "sidetrack/identity/cookieless/v1"
)

// ckVerify is the result of verifying a signed cookie.
type ckVerify uint8

const (
	ckMissing ckVerify = iota // no cookie
	ckBad                     // garbled, foreign, tampered or expired
	ckStale                   // valid, signed with an older secret: re-issue
	ckOK                      // valid, signed with the newest secret
)

// cookieSigner signs and verifies cookie values. It is safe for concurrent
// use; the HMAC states are pooled so verification does not allocate.
type cookieSigner struct {
	keys       [][]byte // derived, newest first
	cookieless []byte
	pool       sync.Pool // *ckScratch
}

// ckScratch is the per-call working memory: one reusable HMAC per key and
// buffers, so the hot path neither allocates nor re-derives HMAC pads.
type ckScratch struct {
	macs       []hash.Hash
	cookieless hash.Hash
	sum        [sha256.Size]byte
	raw        [ckTouchesMax + 64]byte // decoded cookie bytes
	out        [1100]byte              // encoded value
	tmp        [ckTouchesMax + 64]byte // payload under construction
	rnd        [16]byte
	bind       [ckIDLen]byte // device id the session/touches are bound to
}

func newCookieSigner(secrets []string) *cookieSigner {
	s := &cookieSigner{}
	for _, sec := range secrets {
		m := hmac.New(sha256.New, []byte(sec))
		m.Write([]byte(ckKeyLabel))
		s.keys = append(s.keys, m.Sum(nil))
	}
	if len(secrets) > 0 {
		m := hmac.New(sha256.New, []byte(secrets[0]))
		m.Write([]byte(ckCookielessLabel))
		s.cookieless = m.Sum(nil)
	}
	s.pool.New = func() any {
		sc := &ckScratch{}
		for _, k := range s.keys {
			sc.macs = append(sc.macs, hmac.New(sha256.New, k))
		}
		if s.cookieless != nil {
			sc.cookieless = hmac.New(sha256.New, s.cookieless)
		}
		return sc
	}
	return s
}

func (s *cookieSigner) get() *ckScratch   { return s.pool.Get().(*ckScratch) }
func (s *cookieSigner) put(sc *ckScratch) { s.pool.Put(sc) }

// ckBytes views a string as bytes without copying; the result must not be
// written to.
func ckBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// tag computes the truncated MAC of payload with key i into sc.sum.
func (sc *ckScratch) tag(i int, kind byte, bind, payload []byte) []byte {
	m := sc.macs[i]
	m.Reset()
	sc.sum[0], sc.sum[1] = kind, byte(len(bind))
	m.Write(sc.sum[:2])
	m.Write(bind)
	m.Write(payload)
	return m.Sum(sc.sum[:0])[:ckTagLen]
}

// open decodes value into sc.raw and verifies it; it returns the payload
// (aliasing sc.raw) and how it verified.
func (sc *ckScratch) open(value string, kind byte, bind []byte, minRaw, maxRaw int) ([]byte, ckVerify) {
	if value == "" {
		return nil, ckMissing
	}
	if len(sc.macs) == 0 || len(value) > ckB64.EncodedLen(maxRaw) || len(value) < ckB64.EncodedLen(minRaw) {
		return nil, ckBad
	}
	n, err := ckB64.Decode(sc.raw[:], ckBytes(value))
	if err != nil || n < minRaw || n > maxRaw {
		return nil, ckBad
	}
	payload, got := sc.raw[:n-ckTagLen], sc.raw[n-ckTagLen:n]
	if payload[0] != ckVersion {
		return nil, ckBad
	}
	for i := range sc.macs {
		if subtle.ConstantTimeCompare(sc.tag(i, kind, bind, payload), got) == 1 {
			if i == 0 {
				return payload, ckOK
			}
			return payload, ckStale
		}
	}
	return nil, ckBad
}

// seal appends the tag to payload (which must be sc.tmp[:n]) and returns
// the base64 value in sc.out.
func (sc *ckScratch) seal(kind byte, bind []byte, n int) []byte {
	t := sc.tag(0, kind, bind, sc.tmp[:n])
	copy(sc.tmp[n:], t)
	n += ckTagLen
	m := ckB64.EncodedLen(n)
	ckB64.Encode(sc.out[:m], sc.tmp[:n])
	return sc.out[:m]
}

// openDevice returns the device id in a device cookie value.
func (sc *ckScratch) openDevice(value string) (id [ckIDLen]byte, v ckVerify) {
	p, v := sc.open(value, ckKindDevice, nil, ckDeviceRaw, ckDeviceRaw)
	if v >= ckStale {
		copy(id[:], p[1:])
	}
	return id, v
}

// sealDevice returns the device cookie value for id (aliasing sc.out).
func (sc *ckScratch) sealDevice(id [ckIDLen]byte) []byte {
	sc.tmp[0] = ckVersion
	copy(sc.tmp[1:], id[:])
	return sc.seal(ckKindDevice, nil, ckDevicePayload)
}

// openSession returns the session id and last activity in a session cookie
// issued for device.
func (sc *ckScratch) openSession(value string, device [ckIDLen]byte) (id [ckIDLen]byte, last time.Time, v ckVerify) {
	sc.bind = device // an array argument sliced for an interface call would escape
	p, v := sc.open(value, ckKindSession, sc.bind[:], ckSessionRaw, ckSessionRaw)
	if v >= ckStale {
		copy(id[:], p[1:])
		last = time.Unix(int64(binary.BigEndian.Uint64(p[1+ckIDLen:])), 0)
	}
	return id, last, v
}

// sealSession returns the session cookie value (aliasing sc.out).
func (sc *ckScratch) sealSession(id, device [ckIDLen]byte, last time.Time) []byte {
	sc.tmp[0] = ckVersion
	copy(sc.tmp[1:], id[:])
	binary.BigEndian.PutUint64(sc.tmp[1+ckIDLen:], uint64(max(last.Unix(), 0)))
	sc.bind = device
	return sc.seal(ckKindSession, sc.bind[:], ckSessionPayload)
}

// touchView is a decoded touch whose strings alias the scratch buffer.
type touchView struct {
	source, medium, campaign, channel, clickKind []byte
	at                                           int64
	ok                                           bool
}

// openTouches decodes a touches cookie issued for device; written is the
// day (unix days) it was last written.
func (sc *ckScratch) openTouches(value string, device [ckIDLen]byte) (first, last touchView, written int64, v ckVerify) {
	sc.bind = device
	p, v := sc.open(value, ckKindTouches, sc.bind[:], 1+2+ckTagLen, ckTouchesMax)
	if v < ckStale {
		return first, last, 0, v
	}
	first, last, written, ok := decodeTouchesPayload(p)
	if !ok {
		return touchView{}, touchView{}, 0, ckBad
	}
	return first, last, written, v
}

// decodeTouchesPayload parses a verified touches payload (version byte
// first). A signed payload that does not parse is treated as garbage: it
// can only come from a future format.
func decodeTouchesPayload(p []byte) (first, last touchView, written int64, ok bool) {
	if len(p) < 3 {
		return first, last, 0, false
	}
	flags := p[1]
	if flags&^3 != 0 {
		return first, last, 0, false
	}
	w, n := binary.Uvarint(p[2:])
	if n <= 0 || w > 1<<30 {
		return first, last, 0, false
	}
	p = p[2+n:]
	if flags&1 != 0 {
		if first, p, ok = decodeTouch(p); !ok {
			return first, last, 0, false
		}
	}
	if flags&2 != 0 {
		if last, p, ok = decodeTouch(p); !ok {
			return first, last, 0, false
		}
	}
	return first, last, int64(w), len(p) == 0
}

func decodeTouch(p []byte) (t touchView, rest []byte, ok bool) {
	at, n := binary.Uvarint(p)
	if n <= 0 || at > 1<<40 {
		return t, nil, false
	}
	p = p[n:]
	fields := [...]*[]byte{&t.source, &t.medium, &t.campaign, &t.channel, &t.clickKind}
	for _, f := range fields {
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return t, nil, false
		}
		l := int(p[0])
		*f = p[1 : 1+l]
		p = p[1+l:]
	}
	t.at, t.ok = int64(at), true
	return t, p, true
}

// sealTouches encodes first/last touch for device, written on day (unix
// days); zero touches are left out. It returns nil when both are zero.
func (sc *ckScratch) sealTouches(first, last *Touch, device [ckIDLen]byte, day int64) []byte {
	var flags byte
	if !first.IsZero() {
		flags |= 1
	}
	if !last.IsZero() {
		flags |= 2
	}
	if flags == 0 {
		return nil
	}
	b := sc.tmp[:0]
	b = append(b, ckVersion, flags)
	b = binary.AppendUvarint(b, uint64(max(day, 0)))
	if flags&1 != 0 {
		b = appendTouch(b, first)
	}
	if flags&2 != 0 {
		b = appendTouch(b, last)
	}
	sc.bind = device
	return sc.seal(ckKindTouches, sc.bind[:], len(b))
}

func appendTouch(b []byte, t *Touch) []byte {
	var at uint64
	if !t.At.IsZero() && t.At.Unix() > 0 {
		at = uint64(t.At.Unix())
	}
	b = binary.AppendUvarint(b, at)
	b = appendCapped(b, t.Source, ckMaxSource)
	b = appendCapped(b, t.Medium, ckMaxMedium)
	b = appendCapped(b, t.Campaign, ckMaxCampaign)
	b = appendCapped(b, t.Channel, ckMaxChannel)
	b = appendCapped(b, t.ClickIDKind, ckMaxClickKin)
	return b
}

// appendCapped appends len ‖ s, cutting s to at most n bytes at a rune
// boundary.
func appendCapped(b []byte, s string, n int) []byte {
	s = truncateUTF8(s, n)
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cookielessID computes the consent-free daily id: HMAC(key derived from
// secrets[0], UTC date ‖ IP ‖ user agent), 16 bytes, as "d1." + base64url.
// It links the hits of one browser within one UTC day and cannot be linked
// across days without the secret.
func (sc *ckScratch) cookielessID(dst []byte, day time.Time, ip netip.Addr, ua string) []byte {
	m := sc.cookieless
	if m == nil {
		return dst
	}
	m.Reset()
	y, mo, d := day.UTC().Date()
	b := sc.tmp[:0]
	b = binary.BigEndian.AppendUint16(b, uint16(y))
	b = append(b, byte(mo), byte(d))
	a16 := ip.As16()
	if !ip.IsValid() {
		a16 = [16]byte{}
	}
	b = append(b, a16[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ua)))
	m.Write(b)
	m.Write(ckBytes(ua))
	sum := m.Sum(sc.sum[:0])[:16]
	dst = append(dst, "d1."...)
	return ckB64.AppendEncode(dst, sum)
}

// formatUUID writes id as a canonical 36-character UUID.
func formatUUID(dst *[36]byte, id [ckIDLen]byte) {
	const hexd = "0123456789abcdef"
	j := 0
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hexd[c>>4], hexd[c&0x0f]
		j += 2
	}
}

// --- Meta cookies ---------------------------------------------------------

// ValidFBCookie reports whether v is a well-formed Meta _fbp/_fbc value:
// "fb.<subdomain index>.<creation ms>.<rest>", where rest is the random
// number (_fbp) or the fbclid (_fbc, byte for byte, which may itself hold
// dots). Meta's own values are short ASCII; anything with spaces, quotes,
// separators or over 512 bytes is refused so it is never re-set.
func ValidFBCookie(v string) bool {
	if len(v) > 512 || !strings.HasPrefix(v, "fb.") {
		return false
	}
	v = v[3:]
	idx, rest, ok := strings.Cut(v, ".")
	if !ok || !ckDigits(idx, 1, 3) {
		return false
	}
	ms, rest, ok := strings.Cut(rest, ".")
	if !ok || !ckDigits(ms, 1, 16) || rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// FBCookieMillis returns the creation time in ms of a valid _fbp/_fbc
// value, or 0.
func FBCookieMillis(v string) int64 {
	if !ValidFBCookie(v) {
		return 0
	}
	_, rest, _ := strings.Cut(v[3:], ".")
	ms, _, _ := strings.Cut(rest, ".")
	var n int64
	for i := 0; i < len(ms); i++ {
		n = n*10 + int64(ms[i]-'0')
	}
	return n
}

// ckDigits reports whether s is between lo and hi ASCII digits.
func ckDigits(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// appendFBP appends a new _fbp value in Meta's format:
// fb.<subdomain index>.<ms>.<random 10-digit number>.
func appendFBP(dst []byte, index int, now time.Time, rnd uint64) []byte {
	dst = append(dst, "fb."...)
	dst = appendUint(dst, uint64(index))
	dst = append(dst, '.')
	dst = appendUint(dst, uint64(max(now.UnixMilli(), 0)))
	dst = append(dst, '.')
	return appendUint(dst, 1_000_000_000+rnd%9_000_000_000)
}

func appendUint(dst []byte, n uint64) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

// --- cookie domain --------------------------------------------------------

// cookieScope is where the identity cookies of one Host live.
type cookieScope struct {
	// domain is the Domain attribute ("" = host-only).
	domain string
	// fbIndex is Meta's subdomain index of the cookie's domain: the
	// number of dots ("example.com" → 1, host-only "shop.myshopify.com"
	// → 2, localhost and IPs → 0).
	fbIndex int
}

// cookieScopeOf derives the cookie scope of a Host header value: the
// registrable domain (eTLD+1 by the public suffix list), so every subdomain
// of the shop shares one device id. Host-only instead for IP addresses,
// localhost, single-label names, hosts that are themselves a public suffix,
// and hosts under a private suffix (*.myshopify.com, *.github.io,
// *.vercel.app): there the registrable domain belongs to another tenant's
// neighbour or to the platform, and browsers would refuse it anyway.
func cookieScopeOf(host string) cookieScope {
	h := strings.ToLower(strings.TrimSpace(host))
	if strings.HasPrefix(h, "[") { // [v6]:port
		return cookieScope{}
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if strings.IndexByte(h, ':') != i { // bare IPv6
			return cookieScope{}
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return cookieScope{}
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return cookieScope{}
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || !strings.Contains(h, ".") {
		return cookieScope{}
	}
	hostOnly := cookieScope{fbIndex: strings.Count(h, ".")}
	suffix, icann := publicsuffix.PublicSuffix(h)
	if suffix == h {
		return hostOnly
	}
	// A non-ICANN suffix with a dot is a listed private rule; a single
	// label without ICANN backing is just an unlisted TLD (".test",
	// ".internal"), where the default "*" rule applies.
	if !icann && strings.Contains(suffix, ".") {
		return hostOnly
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(h)
	if err != nil {
		return hostOnly
	}
	return cookieScope{domain: d, fbIndex: strings.Count(d, ".")}
}

// scopeCache memoizes cookieScopeOf per Host. It is bounded: without
// `hosts` configured any Host header reaches us, and past the bound scopes
// are computed per call rather than stored.
type scopeCache struct {
	mu sync.RWMutex
	m  map[string]cookieScope
}

const scopeCacheMax = 1024

func (c *scopeCache) get(host string) cookieScope {
	c.mu.RLock()
	s, ok := c.m[host]
	c.mu.RUnlock()
	if ok {
		return s
	}
	s = cookieScopeOf(host)
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]cookieScope)
	}
	if len(c.m) < scopeCacheMax {
		c.m[strings.Clone(host)] = s
	}
	c.mu.Unlock()
	return s
}

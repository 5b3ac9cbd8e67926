package enrich

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// ipAction is what the privacy stage does with the client IP.
type ipAction uint8

const (
	ipHash ipAction = iota
	ipTruncate
	ipDrop
	ipKeep
)

func parseIPAction(path, s string) (ipAction, error) {
	switch s {
	case "hash":
		return ipHash, nil
	case "truncate":
		return ipTruncate, nil
	case "drop":
		return ipDrop, nil
	case "keep":
		return ipKeep, nil
	}
	return 0, fmt.Errorf("%s: %q is not one of hash, truncate, drop, keep", path, s)
}

// ipSealInfo is the HKDF info of the IP sealing key, and ipSealAD the
// AES-GCM additional data: a sealed IP opens only as a sealed IP.
const (
	ipSealInfo = "sidetrack ip seal v1"
	ipSealAD   = "sidetrack/ip/v1"
	ipNonceLen = 12
)

// Privacy is the privacy stage (DESIGN §4 "Privacy"). It runs after
// consent, identity, attribution and geo, and leaves nothing personal in
// the event in the clear:
//
//   - The client IP (req.ClientIP) is treated per the analytics decision,
//     privacy.ip.granted or .denied: hash → Context.IPHash, the first 16
//     bytes (32 hex digits) of HMAC-SHA256("ip\x00" ‖ address) under the
//     DailySalt (stable within a UTC day, unlinkable across days);
//     truncate → Context.IPTruncated, the address with the host part
//     zeroed (IPv4 /24, IPv6 /48); keep → Context.IP, sealed with
//     AES-256-GCM under a key derived by HKDF-SHA256 from secrets[0]
//     (random nonce, base64url), opened by OpenIP for adapters that must
//     send the address (Meta's client_ip_address); drop → nothing.
//     Server requests carry the backend's address, not the user's: their
//     IP is never used. (An IP given in a server payload, Segment's
//     context.ip, is not decoded yet, so server events have no IP.)
//   - Raw personal data (e.PII) is normalized and hashed into e.UserData
//     (see pii.go) when ad_user_data is granted, dropped otherwise
//     (quality flag dropped_pii, also set when a value did not
//     normalize). e.PII is zeroed in every case.
//   - Emails and phone numbers found in the page URL and path, referrer,
//     title, campaign values (utm_*, normalized source / medium /
//     campaign, first and last touch) and string properties are replaced
//     by "[redacted]" (URL parameters keep their names); a user_id or
//     anonymous_id that is an email address (or a phone number) is
//     replaced by its SHA-256. Quality flag pii_scrubbed. A cheap
//     pre-check ('@' or a long digit run) keeps the common case free of
//     work and allocations.
//
// A purpose still Unknown (consent stage not wired) counts as its
// configured default, consent.server_default for server requests.
//
// Meta Limited Data Use needs no field here: the metacapi adapter decides
// it per event from Context.Country / Context.Region (geo) and its own
// destination setting.
type Privacy struct {
	salts           *DailySalt
	now             func() time.Time
	granted, denied ipAction
	// aeads seal (the first) and open (all) kept IPs, one per secret,
	// newest first.
	aeads       []cipher.AEAD
	def, server verdict
	// phones caches phone normalizations (digests only).
	phones *phoneCache
	// scratch holds *[256]byte buffers for hashPIIWith.
	scratch sync.Pool
}

// NewPrivacy builds the privacy stage. salts is the daily salt shared with
// other users of it (nil: a new in-process one); now is the clock for
// requests without ReceivedAt (nil: time.Now). It fails on an unknown IP
// policy, and when a policy is keep and there is no secret to seal with.
func NewPrivacy(cfg *config.Config, salts *DailySalt, now func() time.Time) (*Privacy, error) {
	if now == nil {
		now = time.Now
	}
	if salts == nil {
		salts = NewDailySalt(nil, now, nil)
	}
	p := &Privacy{salts: salts, now: now, phones: newPhoneCache()}
	var errs []error
	var err error
	if p.granted, err = parseIPAction("privacy.ip.granted", cfg.Privacy.IP.Granted); err != nil {
		errs = append(errs, err)
	}
	if p.denied, err = parseIPAction("privacy.ip.denied", cfg.Privacy.IP.Denied); err != nil {
		errs = append(errs, err)
	}
	for i, s := range cfg.Secrets {
		a, err := ipAEAD(s.Reveal())
		if err != nil {
			errs = append(errs, fmt.Errorf("secrets[%d]: %w", i, err))
			continue
		}
		p.aeads = append(p.aeads, a)
	}
	if (p.granted == ipKeep || p.denied == ipKeep) && len(cfg.Secrets) == 0 {
		errs = append(errs, errors.New("privacy.ip: keep needs a secret to seal the address with (secrets)"))
	}
	// Unknown purposes fall back to the defaults; invalid ones count as
	// denied (config validation reports them).
	p.def, _ = purposesVerdict(cfg.Consent.Default)
	p.server, _ = purposesVerdict(cfg.Consent.ServerDefault)
	if len(errs) > 0 {
		return nil, fmt.Errorf("privacy: %w", errors.Join(errs...))
	}
	return p, nil
}

// ipAEAD derives the IP sealing cipher from one secret.
func ipAEAD(secret string) (cipher.AEAD, error) {
	if secret == "" {
		return nil, errors.New("empty secret")
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, ipSealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// allowed reports whether purpose bit is granted, an Unknown state
// counting as the configured default.
func (p *Privacy) allowed(req *Request, s ConsentState, bit uint8) bool {
	switch s {
	case Granted:
		return true
	case Denied:
		return false
	}
	if req.Server {
		return p.server.granted&bit != 0
	}
	return p.def.granted&bit != 0
}

// Apply implements Stage.
func (p *Privacy) Apply(req *Request, e *Event, _ *EventResult) {
	p.applyIP(req, e, p.allowed(req, e.Consent.Analytics, purposeAnalytics))
	if !e.PII.IsZero() || e.UserData != (UserData{}) {
		if !p.allowed(req, e.Consent.AdUserData, purposeAdUserData) {
			if !e.PII.IsZero() {
				e.Quality.Add(FlagDroppedPII)
			}
			e.UserData = UserData{}
		} else if !e.PII.IsZero() {
			buf, _ := p.scratch.Get().(*[256]byte)
			if buf == nil {
				buf = new([256]byte)
			}
			if hashPIIWith(e, p.phones, buf) {
				e.Quality.Add(FlagDroppedPII)
			}
			p.scratch.Put(buf)
		}
		e.PII = PII{}
	}
	if p.scrub(e) {
		e.Quality.Add(FlagPIIScrubbed)
	}
}

func (p *Privacy) applyIP(req *Request, e *Event, analytics bool) {
	c := &e.Context
	// Anything here before this stage came from the payload and is
	// untrusted: only this stage writes these fields.
	c.IP, c.IPHash, c.IPTruncated = "", "", ""
	if req.Server || !req.ClientIP.IsValid() {
		return
	}
	ip := req.ClientIP.Unmap().WithZone("")
	act := p.denied
	if analytics {
		act = p.granted
	}
	switch act {
	case ipHash:
		t := req.ReceivedAt
		if t.IsZero() {
			t = p.now()
		}
		var msg [3 + 16]byte
		n := copy(msg[:], "ip\x00")
		if ip.Is4() {
			a := ip.As4()
			n += copy(msg[n:], a[:])
		} else {
			a := ip.As16()
			n += copy(msg[n:], a[:])
		}
		sum, err := p.salts.Sum(t, msg[:n])
		if err != nil {
			return // no salt, no hash: dropping is the safe failure
		}
		var h [32]byte
		hex.Encode(h[:], sum[:16])
		c.IPHash = e.Intern(h[:])
	case ipTruncate:
		bits := 48
		if ip.Is4() {
			bits = 24
		}
		pfx, err := ip.Prefix(bits)
		if err != nil {
			return
		}
		var b [64]byte
		c.IPTruncated = e.Intern(pfx.Addr().AppendTo(b[:0]))
	case ipKeep:
		var b [128]byte
		out, err := p.sealIP(b[:0], ip)
		if err != nil {
			return
		}
		c.IP = e.Intern(out)
	}
}

// sealIP appends the sealed form of ip: base64url(nonce ‖ AES-GCM(ip)).
func (p *Privacy) sealIP(dst []byte, ip netip.Addr) ([]byte, error) {
	if len(p.aeads) == 0 {
		return dst, errors.New("no secret to seal with")
	}
	var buf [ipNonceLen + 16 + 16]byte
	nonce := buf[:ipNonceLen]
	if _, err := rand.Read(nonce); err != nil {
		return dst, err
	}
	var plain []byte
	var a4 [4]byte
	var a16 [16]byte
	if ip.Is4() {
		a4 = ip.As4()
		plain = a4[:]
	} else {
		a16 = ip.As16()
		plain = a16[:]
	}
	sealed := p.aeads[0].Seal(buf[:ipNonceLen], nonce, plain, []byte(ipSealAD))
	return base64.RawURLEncoding.AppendEncode(dst, sealed), nil
}

// OpenIP returns the client IP sealed in Context.IP by the keep policy.
// Every configured secret is tried, newest first, so addresses sealed
// before a secret rotation still open while the old secret is listed.
func (p *Privacy) OpenIP(sealed string) (netip.Addr, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(sealed))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("open ip: not base64url: %w", err)
	}
	if len(raw) < ipNonceLen+16+4 {
		return netip.Addr{}, errors.New("open ip: too short")
	}
	nonce, ct := raw[:ipNonceLen], raw[ipNonceLen:]
	for _, a := range p.aeads {
		plain, err := a.Open(nil, nonce, ct, []byte(ipSealAD))
		if err != nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(plain)
		if !ok {
			return netip.Addr{}, errors.New("open ip: not an address")
		}
		return ip, nil
	}
	return netip.Addr{}, errors.New("open ip: no configured secret opens it (tampered, or sealed under a secret no longer listed)")
}

// scrub removes emails and phone numbers from the event's free-text
// fields and reports whether it changed any.
func (p *Privacy) scrub(e *Event) bool {
	var buf [512]byte
	changed := false
	field := func(v *string, url bool) {
		if *v == "" || !mayHavePII(*v) {
			return
		}
		var out []byte
		var ch bool
		if url {
			out, ch = scrubURL(buf[:0], *v)
		} else {
			out, ch = scrubText(buf[:0], *v)
		}
		if ch {
			*v = e.Intern(out)
			changed = true
		}
	}
	field(&e.URL, true)
	field(&e.Path, true)
	field(&e.Referrer, true)
	field(&e.Title, false)
	a := &e.Attribution
	for _, v := range [...]*string{
		&a.UTMSource, &a.UTMMedium, &a.UTMCampaign, &a.UTMTerm, &a.UTMContent, &a.UTMID,
		&a.Source, &a.Medium, &a.Campaign,
		&a.FirstTouch.Source, &a.FirstTouch.Medium, &a.FirstTouch.Campaign,
		&a.LastTouch.Source, &a.LastTouch.Medium, &a.LastTouch.Campaign,
	} {
		field(v, false)
	}
	for _, props := range [...]Props{e.Properties, e.UserProperties} {
		for i := range props {
			if pr := &props[i]; pr.Kind == PropString {
				if isPhoneKey(pr.Key) && countDigits(pr.Str) >= 7 {
					pr.Str, changed = redacted, true
					continue
				}
				field(&pr.Str, false)
			}
		}
	}
	if hashID(e, &e.UserID) {
		changed = true
	}
	if hashID(e, &e.AnonymousID) {
		changed = true
	}
	return changed
}

// hashID replaces an id that is an email address or a phone number by the
// SHA-256 of its normalized form (so it still identifies the user
// consistently), and scrubs personal data embedded in a longer id.
func hashID(e *Event, id *string) bool {
	v := *id
	if v == "" || !mayHavePII(v) {
		return false
	}
	t := strings.TrimSpace(v)
	var buf [256]byte
	if l, r, ok := findPII(t, 0); ok && l == 0 && r == len(t) {
		if strings.IndexByte(t, '@') >= 0 {
			b, _ := normEmail(buf[:0], t)
			*id = internSHA256(e, b)
			return true
		}
		b := buf[:0]
		if t[0] == '+' {
			b = append(b, '+')
		}
		for i := 0; i < len(t); i++ {
			if isDigit(t[i]) {
				b = append(b, t[i])
			}
		}
		*id = internSHA256(e, b)
		return true
	}
	out, ch := scrubText(buf[:0], v)
	if ch {
		*id = e.Intern(out)
	}
	return ch
}

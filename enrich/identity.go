package enrich

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// Identity is the identity stage (DESIGN §4 "Identity"): it gives browser
// events sidetrack's device and session ids from signed first-party cookies
// (minting them when absent or tampered), attaches the first/last touch and
// Meta's _fbp/_fbc, fills GA ids from `_ga`/`_ga_<ID>` when a hit lacks
// them, and in Finish tells the proxy which cookies to set or expire.
//
// Server requests (req.Server) are left alone: no cookie is read or set and
// no id is minted.
//
// Consent gating: the stk_* cookies need analytics storage, _fbp/_fbc need
// ad storage; a purpose counts as allowed unless the event says Denied (the
// consent stage, which runs first, replaces Unknown with the configured
// default). Without analytics storage the device id is a cookieless daily
// id, "d1." + base64url(HMAC(key from secrets[0], UTC date ‖ IP ‖ UA)[:16]),
// which links one browser's hits within a UTC day and changes the next day;
// the session id is empty; existing stk_* cookies are expired.
//
// All events of one request share one device and session: the first event
// that mints or re-signs a cookie writes the new value into req.Cookies, so
// later events and Finish see it. The request's cookie view is therefore
// "what the browser will have after this answer", not only what it sent.
//
// Cookies are SameSite=Lax: SetCookie has no SameSite field and the proxy
// always writes Lax (DESIGN §4).
type Identity struct {
	signer *cookieSigner
	now    func() time.Time

	randMu sync.Mutex
	rand   io.Reader

	device, session, touches string
	deviceMaxAge, idle       time.Duration
	meta                     bool
	secure                   bool
	pageDenied               bool // consent.default.analytics is denied

	scopes scopeCache

	// salts, when set, keys the cookieless id with the privacy stage's
	// daily salt, which nobody can recompute once it rotated.
	salts *DailySalt
}

// UseDailySalt makes cookieless ids an HMAC under the day's random salt
// (DESIGN §4) instead of a key derived from secrets, so not even the
// operator can link a cookieless visitor across days. Call it before
// serving.
func (id *Identity) UseDailySalt(s *DailySalt) { id.salts = s }

// Meta cookie names and lifetime (Meta's own pixel uses 90 days).
const (
	cookieFBP  = "_fbp"
	cookieFBC  = "_fbc"
	metaMaxAge = 90 * 24 * time.Hour
	// touchesRefresh is how old an unchanged touches cookie may get
	// before it is re-written, so a regular direct visitor's first touch
	// does not expire with the cookie's max age.
	touchesRefresh = 30
)

// NewIdentity builds the identity stage. now is the clock when a request
// carries no ReceivedAt (nil: time.Now); rand is the entropy source for new
// ids (nil: crypto/rand). It fails without secrets: unsigned ids could be
// forged by any page script or proxy.
func NewIdentity(cfg *config.Config, now func() time.Time, rnd io.Reader) (*Identity, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("identity: at least one secret is required to sign cookies")
	}
	secrets := make([]string, 0, len(cfg.Secrets))
	for _, s := range cfg.Secrets {
		if s.Reveal() == "" {
			return nil, errors.New("identity: secrets must not be empty")
		}
		secrets = append(secrets, s.Reveal())
	}
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	c := cfg.Cookies
	id := &Identity{
		signer:       newCookieSigner(secrets),
		now:          now,
		rand:         rnd,
		device:       orDefault(c.Device.Name, "stk_did"),
		session:      orDefault(c.Session.Name, "stk_ses"),
		touches:      orDefault(c.Touches.Name, "stk_tch"),
		deviceMaxAge: c.Device.MaxAge.D(),
		idle:         c.Session.Idle.D(),
		meta:         c.Meta.Enabled,
		secure:       c.Secure,
		pageDenied:   cfg.Consent.Default.Analytics != "granted",
	}
	if id.deviceMaxAge <= 0 {
		id.deviceMaxAge = 400 * 24 * time.Hour
	}
	if id.idle <= 0 {
		id.idle = 30 * time.Minute
	}
	return id, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WantsCookie reports whether the pipeline reads the request cookie name,
// so the proxy copies only those into Request.Cookies: the identity
// cookies, _fbp/_fbc, _ga and every _ga_<ID>.
func (id *Identity) WantsCookie(name string) bool {
	switch name {
	case id.device, id.session, id.touches, cookieFBP, cookieFBC, "_ga":
		return true
	}
	return len(name) > 4 && name[:4] == "_ga_"
}

func (id *Identity) clock(req *Request) time.Time {
	if !req.ReceivedAt.IsZero() {
		return req.ReceivedAt
	}
	return id.now()
}

// Apply implements Stage.
func (id *Identity) Apply(req *Request, e *Event, _ *EventResult) {
	if req.Server {
		return
	}
	now := id.clock(req)
	sc := id.signer.get()
	defer id.signer.put(sc)

	if e.Consent.Analytics != Denied {
		dev, ok := id.ensureDevice(req, sc)
		if !ok {
			id.setCookieless(req, e, sc, now)
		} else {
			var buf [36]byte
			formatUUID(&buf, dev)
			e.DeviceID = e.Intern(buf[:])
			sid := id.ensureSession(req, sc, dev, now)
			formatUUID(&buf, sid)
			e.SessionID = e.Intern(buf[:])
			if v, ok := req.Cookie(id.touches); ok {
				if first, last, _, vr := sc.openTouches(v, dev); vr >= ckStale {
					a := &e.Attribution
					if a.FirstTouch.IsZero() && first.ok {
						internTouch(e, &a.FirstTouch, &first)
					}
					if a.LastTouch.IsZero() && last.ok {
						internTouch(e, &a.LastTouch, &last)
					}
				}
			}
		}
		if e.Source == SourceGA4 {
			id.fillGA(req, e)
		}
	} else {
		id.setCookieless(req, e, sc, now)
	}

	if e.Consent.Ads != Denied {
		a := &e.Attribution
		if a.FBP == "" {
			if v, ok := req.Cookie(cookieFBP); ok && ValidFBCookie(v) {
				a.FBP = e.InternString(v)
			} else if !ok && id.meta {
				if v, ok := id.mintFBP(req, sc, now); ok {
					a.FBP = e.InternString(v)
				}
			}
		}
		if a.FBC == "" {
			if v, ok := req.Cookie(cookieFBC); ok && ValidFBCookie(v) {
				a.FBC = e.InternString(v)
			}
		}
	}
}

func (id *Identity) setCookieless(req *Request, e *Event, sc *ckScratch, now time.Time) {
	var buf [32]byte
	e.SessionID = ""
	if id.salts != nil && len(req.UserAgent) <= len(sc.tmp)-24 {
		msg := append(sc.tmp[:0], "did\x00"...)
		a16 := req.ClientIP.As16()
		if !req.ClientIP.IsValid() {
			a16 = [16]byte{}
		}
		msg = append(msg, a16[:]...)
		msg = append(msg, req.UserAgent...)
		if sum, err := id.salts.Sum(now, msg); err == nil {
			e.DeviceID = e.Intern(ckB64.AppendEncode(append(buf[:0], "d2."...), sum[:16]))
			return
		}
	}
	e.DeviceID = e.Intern(sc.cookielessID(buf[:0], now, req.ClientIP, req.UserAgent))
}

func internTouch(e *Event, t *Touch, v *touchView) {
	t.Source = e.Intern(v.source)
	t.Medium = e.Intern(v.medium)
	t.Campaign = e.Intern(v.campaign)
	t.Channel = e.Intern(v.channel)
	t.ClickIDKind = e.Intern(v.clickKind)
	if v.at > 0 {
		t.At = time.Unix(v.at, 0).UTC()
	}
}

// fillGA fills the GA client and session ids of a hit that lacks them.
func (id *Identity) fillGA(req *Request, e *Event) {
	if e.AnonymousID == "" {
		if v, ok := req.Cookie("_ga"); ok {
			if cid, ok := ParseGACookie(v); ok {
				e.AnonymousID = e.InternString(cid)
			}
		}
	}
	if (e.GASessionID == "" || e.GASessionNumber == 0) && e.GAMeasurementID != "" {
		if v, ok := gaStreamCookie(req, e.GAMeasurementID); ok {
			if s, ok := ParseGASessionCookie(v); ok {
				if e.GASessionID == "" {
					e.GASessionID = e.InternString(s.ID)
				}
				if e.GASessionNumber == 0 {
					e.GASessionNumber = s.Number
				}
			}
		}
	}
}

// ensureDevice returns the request's device id, minting one (or re-signing
// one signed with an older secret) and recording the new cookie value in
// req.Cookies. ok is false only when no entropy could be read.
func (id *Identity) ensureDevice(req *Request, sc *ckScratch) (dev [ckIDLen]byte, ok bool) {
	v, _ := req.Cookie(id.device)
	dev, vr := sc.openDevice(v)
	switch vr {
	case ckOK:
		return dev, true
	case ckStale:
	default:
		if !id.random(sc.rnd[:]) {
			return dev, false
		}
		copy(dev[:], sc.rnd[:])
		dev[6] = dev[6]&0x0f | 0x40 // UUID version 4
		dev[8] = dev[8]&0x3f | 0x80 // RFC 4122 variant
	}
	setReqCookie(req, id.device, req.Intern(sc.sealDevice(dev)))
	return dev, true
}

// ensureSession returns the session id for dev: the cookie's when it is
// valid, was issued for this device and saw activity within the idle
// timeout; a new one otherwise (recorded in req.Cookies with last activity
// now, so the request's other events share it).
func (id *Identity) ensureSession(req *Request, sc *ckScratch, dev [ckIDLen]byte, now time.Time) [ckIDLen]byte {
	v, _ := req.Cookie(id.session)
	sid, last, vr := sc.openSession(v, dev)
	if vr == ckOK && now.Sub(last) <= id.idle {
		return sid
	}
	if vr != ckStale || now.Sub(last) > id.idle {
		if id.random(sc.rnd[:]) {
			copy(sid[:], sc.rnd[:])
		} else {
			// Without entropy, derive from the device id and time: the
			// session stays usable and is still unique per device.
			sid = dev
			binary.BigEndian.PutUint64(sid[8:], uint64(now.UnixNano()))
		}
		sid[6] = sid[6]&0x0f | 0x40
		sid[8] = sid[8]&0x3f | 0x80
	}
	setReqCookie(req, id.session, req.Intern(sc.sealSession(sid, dev, now)))
	return sid
}

// mintFBP creates an _fbp value for a browser without one, records it in
// req.Cookies for the request's other events and returns it.
func (id *Identity) mintFBP(req *Request, sc *ckScratch, now time.Time) (string, bool) {
	if !id.random(sc.rnd[:8]) {
		return "", false
	}
	scope := id.scopes.get(req.Host)
	var buf [48]byte
	v := req.Intern(appendFBP(buf[:0], scope.fbIndex, now, binary.BigEndian.Uint64(sc.rnd[:8])))
	setReqCookie(req, cookieFBP, v)
	return v, true
}

func (id *Identity) random(b []byte) bool {
	id.randMu.Lock()
	_, err := io.ReadFull(id.rand, b)
	id.randMu.Unlock()
	return err == nil
}

// setReqCookie replaces (or adds) a cookie in the request's cookie view.
func setReqCookie(req *Request, name, value string) {
	for i := range req.Cookies {
		if req.Cookies[i].Name == name {
			req.Cookies[i].Value = value
			return
		}
	}
	req.Cookies = append(req.Cookies, Cookie{Name: name, Value: value})
}

// Finish implements RequestStage: it appends the cookies to set (or
// expire) on the beacon answer, one SetCookie per cookie per request. The
// consent of the request's last event decides (a consent update within a
// batch comes last); device and session are refreshed on every answer, the
// touches cookie is written when the touches changed, and _fbp/_fbc are
// re-set with their value so they outlive the 7-day cap Safari puts on
// script-set cookies.
func (id *Identity) Finish(req *Request, events []*Event, res *Result) {
	if req.Server || len(events) == 0 {
		return
	}
	now := id.clock(req)
	last := events[len(events)-1]
	scope := id.scopes.get(req.Host)
	secure := id.secure && req.Secure
	mk := func(name, value string, maxAge time.Duration, httpOnly bool) SetCookie {
		return SetCookie{Name: name, Value: value, Domain: scope.domain, MaxAge: maxAge, HTTPOnly: httpOnly, Secure: secure}
	}
	expire := func(name string) {
		if _, ok := req.Cookie(name); ok {
			res.Cookies = append(res.Cookies, mk(name, "", -1, name != cookieFBP && name != cookieFBC))
		}
	}

	if last.Consent.Analytics != Denied {
		sc := id.signer.get()
		dev, ok := id.ensureDevice(req, sc)
		if ok {
			dv, _ := req.Cookie(id.device)
			res.Cookies = append(res.Cookies, mk(id.device, dv, id.deviceMaxAge, true))
			sid := id.ensureSession(req, sc, dev, now)
			res.Cookies = append(res.Cookies, mk(id.session, req.Intern(sc.sealSession(sid, dev, now)), id.idle, true))
			if v := id.touchesUpdate(req, sc, dev, events, now); v != nil {
				res.Cookies = append(res.Cookies, mk(id.touches, req.Intern(v), id.deviceMaxAge, true))
			}
		}
		id.signer.put(sc)
	} else {
		expire(id.device)
		expire(id.session)
		expire(id.touches)
	}

	if !id.meta {
		return
	}
	if last.Consent.Ads != Denied {
		if v := newestFB(events, func(e *Event) string { return e.Attribution.FBP }); v != "" {
			res.Cookies = append(res.Cookies, mk(cookieFBP, v, metaMaxAge, false))
		}
		if v := newestFB(events, func(e *Event) string { return e.Attribution.FBC }); v != "" {
			res.Cookies = append(res.Cookies, mk(cookieFBC, v, metaMaxAge, false))
		}
	} else {
		expire(cookieFBP)
		expire(cookieFBC)
	}
}

// touchesUpdate returns the touches cookie value to write, or nil when the
// browser's cookie already says the same and was written recently.
func (id *Identity) touchesUpdate(req *Request, sc *ckScratch, dev [ckIDLen]byte, events []*Event, now time.Time) []byte {
	first, last := foldTouches(events)
	today := now.Unix() / 86400
	if old, ok := req.Cookie(id.touches); ok {
		f, l, written, vr := sc.openTouches(old, dev)
		if vr == ckOK && today-written < touchesRefresh && today >= written &&
			sameTouch(&first, &f) && sameTouch(&last, &l) {
			return nil
		}
	}
	return sc.sealTouches(&first, &last, dev, today)
}

// sameTouch reports whether t, as the cookie would store it (fields cut to
// their caps, time in seconds), equals the decoded v.
func sameTouch(t *Touch, v *touchView) bool {
	if t.IsZero() || !v.ok {
		return t.IsZero() && !v.ok
	}
	var at int64
	if !t.At.IsZero() && t.At.Unix() > 0 {
		at = t.At.Unix()
	}
	return at == v.at &&
		truncateUTF8(t.Source, ckMaxSource) == string(v.source) &&
		truncateUTF8(t.Medium, ckMaxMedium) == string(v.medium) &&
		truncateUTF8(t.Campaign, ckMaxCampaign) == string(v.campaign) &&
		truncateUTF8(t.Channel, ckMaxChannel) == string(v.channel) &&
		truncateUTF8(t.ClickIDKind, ckMaxClickKin) == string(v.clickKind)
}

// foldTouches merges the request's events' touches: the earliest first
// touch and the latest last touch. Each event starts from the cookie's
// touches and attribution may update them from its own URL, so the last
// event alone could miss an update made on an earlier one.
func foldTouches(events []*Event) (first, last Touch) {
	for _, e := range events {
		a := &e.Attribution
		if !a.FirstTouch.IsZero() && (first.IsZero() || a.FirstTouch.At.Before(first.At)) {
			first = a.FirstTouch
		}
		if !a.LastTouch.IsZero() && (last.IsZero() || !a.LastTouch.At.Before(last.At)) {
			last = a.LastTouch
		}
	}
	return first, last
}

// newestFB returns the valid _fbp/_fbc value with the latest creation time
// among events (the fbclid of a new click wins over the cookie's older one).
func newestFB(events []*Event, get func(*Event) string) string {
	best, bestMS := "", int64(-1)
	for _, e := range events {
		v := get(e)
		if v == "" {
			continue
		}
		if ms := FBCookieMillis(v); ms > 0 && ms >= bestMS {
			best, bestMS = v, ms
		}
	}
	return best
}

// PageCookies appends the device and session cookies for a pass-through
// HTML answer, so a visitor's first page view already carries a device id
// and the first beacon joins the same session. analytics is the request's
// analytics-storage consent if the caller knows it; Unknown falls back to
// consent.default.analytics, and a denied state sets nothing (nothing is
// expired either: that is the beacon answer's job, where consent is known).
//
// The proxy must call it only when all of these hold, and it checks them:
// the request is a browser request (not server-authenticated); the answer
// is HTML (Content-Type text/html); it is not publicly cacheable
// (Cache-Control has neither public nor s-maxage, and no Vary: *), so a
// shared cache never hands one visitor's cookie to another; and the origin
// did not itself set a cookie of the same name (the origin wins).
func (id *Identity) PageCookies(dst []SetCookie, req *Request, analytics ConsentState) []SetCookie {
	if req.Server {
		return dst
	}
	if analytics == Denied || (analytics == Unknown && id.pageDenied) {
		return dst
	}
	now := id.clock(req)
	scope := id.scopes.get(req.Host)
	secure := id.secure && req.Secure
	sc := id.signer.get()
	defer id.signer.put(sc)
	dev, ok := id.ensureDevice(req, sc)
	if !ok {
		return dst
	}
	dv, _ := req.Cookie(id.device)
	sid := id.ensureSession(req, sc, dev, now)
	sv := req.Intern(sc.sealSession(sid, dev, now))
	return append(dst,
		SetCookie{Name: id.device, Value: dv, Domain: scope.domain, MaxAge: id.deviceMaxAge, HTTPOnly: true, Secure: secure},
		SetCookie{Name: id.session, Value: sv, Domain: scope.domain, MaxAge: id.idle, HTTPOnly: true, Secure: secure},
	)
}

package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/sidetrack/sidetrack/enrich"
)

// GA4 decoding limits. The route's body limit bounds a request; these bound
// what one event may hold, so a request cannot make the decoder build an
// arbitrarily large event or problem list. Values past a limit are cut or
// dropped with quality flag truncated rather than rejected: gtag never
// retries, so rejecting a hit loses it.
const (
	ga4DefaultMaxLines = 1000    // body lines per request when the caller gives none
	ga4MaxValue        = 8 << 10 // bytes per decoded parameter value
	ga4MaxKey          = 100     // bytes per custom parameter name (ep.<k>, up.<k>)
	ga4MaxItems        = 200     // prN items per event (GA4's own limit)
	ga4MaxProps        = 100     // entries in properties / user_properties
	ga4MaxProblems     = 1000    // problems recorded per request
	ga4PeekLen         = 512     // base64 characters isGA4Hit looks at in a wrapped hit
)

// Problem messages: fixed texts that never echo request bytes (only a
// parameter's name does, in the field).
const (
	ga4MsgEncoding = "malformed percent-encoding"
	ga4MsgNumber   = "must be a finite decimal number"
	ga4MsgInteger  = "must be an integer"
	ga4MsgName     = "event name (en) is missing"
	ga4MsgItemNum  = "item price, quantity, discount and index must be decimal numbers"
)

// ga4Decoder turns gtag.js /g/collect hits into events (DESIGN §2, GA4
// row). It is safe for concurrent use; per-request scratch space comes from
// a pool owned by the decoder, so decoding a usual hit allocates nothing
// once the pool and the event's arena are warm.
type ga4Decoder struct {
	maxLines int
	scratch  sync.Pool // *ga4Scratch
}

// newGA4Decoder returns a decoder that accepts at most maxLines body lines
// per request (≤ 0: 1000).
func newGA4Decoder(maxLines int) *ga4Decoder {
	if maxLines <= 0 {
		maxLines = ga4DefaultMaxLines
	}
	return &ga4Decoder{maxLines: maxLines}
}

// ga4Kind says what a parameter maps to; it is worked out once per
// parameter from its name, so ignored parameters cost nothing more.
type ga4Kind uint8

const (
	ga4Ignored ga4Kind = iota
	ga4V
	ga4TID
	ga4GTM
	ga4PageLoad
	ga4CID
	ga4UID
	ga4SID
	ga4SCT
	ga4Seq
	ga4ET
	ga4SEG
	ga4FV
	ga4SS
	ga4DBG
	ga4EN
	ga4DL
	ga4DR
	ga4DT
	ga4UL
	ga4SR
	ga4CU
	ga4GCS
	ga4GCD
	ga4NPA
	ga4EM
	ga4EP            // ep.<name>
	ga4EPN           // epn.<name>
	ga4UP            // up.<name>
	ga4UPN           // upn.<name>
	ga4UserDataParam // user_data.<field>
	ga4PR            // prN, N in 1..ga4MaxItems
	ga4PRExtra       // prN past ga4MaxItems
)

// ga4Param is one key=value pair. key is decoded (it points into the
// request, or into ga4Scratch.keys when it was escaped); val is still
// percent-encoded and is decoded only when the parameter is used.
type ga4Param struct {
	key, val []byte
	kind     ga4Kind
	esc      bool // val needs percent-decoding
	bad      bool // val's percent-encoding is malformed
	n        int  // N of prN
}

type ga4Scratch struct {
	keys   []byte // escaped parameter names, decoded
	buf    []byte // the value being used, decoded
	unwrap []byte // a base64-wrapped hit, decoded
	val    []byte // one item field or wrapped value being unescaped
	query  []ga4Param
	line   []ga4Param
	// The prN parameters of the event being built, by N: itemSet has bit
	// N set when itemByN[N] is current. Indexing by N keeps the items in
	// N order, and a later prN with the same N replacing the earlier, at
	// O(1) per parameter whatever the request holds.
	itemSet [(ga4MaxItems + 64) / 64]uint64
	itemByN [ga4MaxItems + 1]*ga4Param
}

func (g *ga4Decoder) acquire() *ga4Scratch {
	if s, ok := g.scratch.Get().(*ga4Scratch); ok {
		return s
	}
	return &ga4Scratch{}
}

func (g *ga4Decoder) release(s *ga4Scratch) {
	// Drop references into the request's buffers (fasthttp reuses them)
	// and do not pin an outlier's buffers.
	clear(s.query)
	clear(s.line)
	s.query, s.line = s.query[:0], s.line[:0]
	s.itemSet = [len(s.itemSet)]uint64{}
	if cap(s.buf) > 64<<10 {
		s.buf = nil
	}
	if cap(s.keys) > 64<<10 {
		s.keys = nil
	}
	if cap(s.unwrap) > 64<<10 {
		s.unwrap = nil
	}
	if cap(s.val) > 64<<10 {
		s.val = nil
	}
	g.scratch.Put(s)
}

// decode appends one event per hit to d. query is the raw query string
// (shared parameters, percent-encoded); body holds zero or more lines
// ("\n" or "\r\n"), each the query string of one event whose parameters
// override the shared ones. Blank lines are ignored; an empty body is one
// event from the query alone. A query that is a whole hit wrapped in one
// base64 parameter (first-party loaders) is unwrapped first.
//
// Malformed values (bad percent-encoding, numbers that are not numbers)
// become per-event problems in d and the rest of the event is kept. The
// returned error is request-level only: errTooLarge past maxLines body
// lines, errMalformed for a request in which no parameter decodes at all.
// On error no event of this request is left in d.
func (g *ga4Decoder) decode(d *decoded, query, body []byte, now time.Time) error {
	s := g.acquire()
	defer g.release(s)

	if len(query) > 0 && query[0] == '?' {
		query = query[1:]
	}
	if !ga4PlainHit(query) {
		if inner, ok := s.unwrapHit(query); ok {
			query = inner
		}
	}
	body = ga4TrimSpace(body)
	lines := ga4CountLines(body)
	if lines > g.maxLines {
		return errTooLarge("too many events in one GA4 request")
	}
	if len(query) == 0 && lines == 0 {
		return errMalformed("empty GA4 hit")
	}
	s.keys = s.keys[:0]
	var good int
	s.query, good = s.parse(s.query[:0], query)
	qKeys := len(s.keys)

	startEvents, startProblems := len(d.events), len(d.problems)
	if lines == 0 {
		s.line = s.line[:0]
		g.event(d, s, now)
	} else {
		for rest := body; len(rest) > 0; {
			var line []byte
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				line, rest = rest[:i], rest[i+1:]
			} else {
				line, rest = rest, nil
			}
			line = ga4TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			s.keys = s.keys[:qKeys]
			var n int
			s.line, n = s.parse(s.line[:0], line)
			good += n
			g.event(d, s, now)
		}
	}
	if good == 0 {
		for _, e := range d.events[startEvents:] {
			d.pool.Put(e)
		}
		clear(d.events[startEvents:])
		d.events = d.events[:startEvents]
		d.problems = d.problems[:startProblems]
		return errMalformed("malformed GA4 hit: no parameter decodes")
	}
	return nil
}

// event builds one event from s.query overridden by s.line. The line's
// parameters are applied after the shared ones and every mapping is
// last-wins (properties and items replace by name and N), which is the
// override rule at a cost linear in the parameters, whatever a hostile
// request holds. A malformed shared parameter is reported even when the
// line overrides it.
func (g *ga4Decoder) event(d *decoded, s *ga4Scratch, now time.Time) {
	e := d.next()
	e.Source = enrich.SourceGA4
	e.ReceivedAt = now
	e.OccurredAt = now
	s.itemSet = [len(s.itemSet)]uint64{}
	for i := range s.query {
		ga4Apply(d, s, e, &s.query[i])
	}
	for i := range s.line {
		ga4Apply(d, s, e, &s.line[i])
	}
	ga4Items(d, s, e)
	if e.Name == "" {
		ga4Problem(d, e, "en", ga4MsgName)
	}
}

// parse appends the used parameters of a query string to ps and reports
// how many parameters (used or not) are well-formed. Values are checked
// here and decoded later, when used. Parameters with an empty or
// undecodable name are skipped: nothing could use them.
func (s *ga4Scratch) parse(ps []ga4Param, q []byte) ([]ga4Param, int) {
	good := 0
	for len(q) > 0 {
		end := bytes.IndexByte(q, '&')
		if end < 0 {
			end = len(q)
		}
		kv := q[:end]
		if end < len(q) {
			q = q[end+1:]
		} else {
			q = nil
		}
		eq := bytes.IndexByte(kv, '=')
		if len(kv) == 0 || eq == 0 {
			continue
		}
		k := kv
		if eq > 0 {
			k = kv[:eq]
		}
		kesc, kbad := ga4Escaped(k)
		if kbad {
			continue
		}
		vesc, vbad := false, false
		if eq > 0 {
			vesc, vbad = ga4Escaped(kv[eq+1:])
		}
		var p ga4Param
		if eq > 0 {
			p.key, p.val = kv[:eq], kv[eq+1:]
		} else {
			p.key = kv
		}
		if kesc {
			start := len(s.keys)
			s.keys, _ = ga4AppendUnescaped(s.keys, p.key)
			p.key = s.keys[start:len(s.keys):len(s.keys)]
		}
		p.esc, p.bad = vesc, vbad
		if !vbad {
			good++
		}
		if p.kind, p.n = ga4Classify(p.key); p.kind != ga4Ignored {
			ps = append(ps, p)
		}
	}
	return ps, good
}

// ga4Classify maps a parameter name to what it feeds (DESIGN §2, GA4
// row). Unknown parameters (_z, _eu, are, frm, pscdl, tfd, richsstsse,
// dma, tag_exp, the uaa… client hints, sst.*, …) are ignored, not stored.
func ga4Classify(k []byte) (ga4Kind, int) {
	switch string(k) {
	case "v":
		return ga4V, 0
	case "tid":
		return ga4TID, 0
	case "gtm":
		return ga4GTM, 0
	case "_p":
		return ga4PageLoad, 0
	case "cid":
		return ga4CID, 0
	case "uid":
		return ga4UID, 0
	case "sid":
		return ga4SID, 0
	case "sct":
		return ga4SCT, 0
	case "_s":
		return ga4Seq, 0
	case "_et":
		return ga4ET, 0
	case "seg":
		return ga4SEG, 0
	case "_fv":
		return ga4FV, 0
	case "_ss":
		return ga4SS, 0
	case "_dbg":
		return ga4DBG, 0
	case "en":
		return ga4EN, 0
	case "dl":
		return ga4DL, 0
	case "dr":
		return ga4DR, 0
	case "dt":
		return ga4DT, 0
	case "ul":
		return ga4UL, 0
	case "sr":
		return ga4SR, 0
	case "cu":
		return ga4CU, 0
	case "gcs":
		return ga4GCS, 0
	case "gcd":
		return ga4GCD, 0
	case "npa":
		return ga4NPA, 0
	case "em":
		return ga4EM, 0
	}
	switch {
	case ga4HasPrefix(k, "ep."):
		return ga4EP, 0
	case ga4HasPrefix(k, "epn."):
		return ga4EPN, 0
	case ga4HasPrefix(k, "up."):
		return ga4UP, 0
	case ga4HasPrefix(k, "upn."):
		return ga4UPN, 0
	case ga4HasPrefix(k, "user_data."):
		return ga4UserDataParam, 0
	case ga4HasPrefix(k, "pr"):
		n, ok := ga4ItemIndex(k[2:])
		switch {
		case !ok:
			return ga4Ignored, 0
		case n > ga4MaxItems:
			return ga4PRExtra, n
		}
		return ga4PR, n
	}
	return ga4Ignored, 0
}

// ga4Escaped reports whether b needs percent-decoding, and whether its
// encoding is malformed ('%' not followed by two hex digits).
func ga4Escaped(b []byte) (esc, bad bool) {
	i := bytes.IndexByte(b, '%')
	if i < 0 {
		return bytes.IndexByte(b, '+') >= 0, false
	}
	for ; i < len(b); i++ {
		if b[i] == '%' && (i+2 >= len(b) || ga4Unhex(b[i+1]) < 0 || ga4Unhex(b[i+2]) < 0) {
			return true, true
		}
	}
	return true, false
}

// value returns p's value, decoded into s.buf when it was escaped.
func (s *ga4Scratch) value(p *ga4Param) []byte {
	if !p.esc {
		return p.val
	}
	s.buf, _ = ga4AppendUnescaped(s.buf[:0], p.val)
	return s.buf
}

// ga4AppendUnescaped appends the percent-decoded b to dst.
func ga4AppendUnescaped(dst, b []byte) ([]byte, bool) {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(b) {
				return dst, false
			}
			h, l := ga4Unhex(b[i+1]), ga4Unhex(b[i+2])
			if h < 0 || l < 0 {
				return dst, false
			}
			dst = append(dst, byte(h<<4|l))
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}

func ga4Unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ga4Apply maps one parameter onto e.
func ga4Apply(d *decoded, s *ga4Scratch, e *enrich.Event, p *ga4Param) {
	k := p.key
	if p.bad {
		ga4Problem(d, e, ga4Field("", k), ga4MsgEncoding)
		return
	}
	switch p.kind {
	case ga4PR:
		s.itemSet[p.n/64] |= 1 << (p.n % 64)
		s.itemByN[p.n] = p
		return
	case ga4PRExtra:
		e.Quality.Add(enrich.FlagTruncated)
		return
	}
	v := s.value(p)
	if len(v) > ga4MaxValue {
		v = ga4Cut(v, ga4MaxValue)
		e.Quality.Add(enrich.FlagTruncated)
	}
	switch p.kind {
	case ga4V:
		e.GA.Version = e.Intern(v)
	case ga4TID:
		e.GAMeasurementID = e.Intern(v)
	case ga4GTM:
		e.GA.GTM = e.Intern(v)
	case ga4PageLoad:
		e.PageLoadID = e.Intern(v)
	case ga4CID:
		e.AnonymousID = e.Intern(v)
	case ga4UID:
		e.UserID = e.Intern(v)
	case ga4SID:
		e.GASessionID = e.Intern(v)
	case ga4SCT:
		ga4Int(d, e, "sct", v, &e.GASessionNumber)
	case ga4Seq:
		ga4Int(d, e, "_s", v, &e.HitSeq)
	case ga4ET:
		ga4Int(d, e, "_et", v, &e.GA.EngagementMS)
	case ga4SEG:
		e.GA.SessionEngaged = string(v) == "1"
	case ga4FV:
		e.GA.FirstVisit = ga4Flag(v)
	case ga4SS:
		e.GA.SessionStart = ga4Flag(v)
	case ga4DBG:
		e.GA.Debug = ga4Flag(v)
	case ga4EN:
		e.Name = e.Intern(v)
		e.OriginalName = e.Name
	case ga4DL:
		e.URL, e.Path, e.Host = "", "", ""
		setPage(e, v)
	case ga4DR:
		e.Referrer = e.Intern(v)
	case ga4DT:
		e.Title = e.Intern(v)
	case ga4UL:
		e.Context.Locale = e.Intern(v)
	case ga4SR:
		e.Context.Screen = e.Intern(v)
	case ga4CU:
		e.Commerce.Currency = e.Intern(v)
	case ga4GCS:
		e.Consent.GCS = e.Intern(v)
	case ga4GCD:
		e.Consent.GCD = e.Intern(v)
	case ga4NPA:
		e.Consent.NPA = e.Intern(v)
	case ga4EM:
		ga4UserProvided(e, v)
	case ga4EP:
		ga4EventParam(e, k[3:], v)
	case ga4EPN:
		ga4EventNumber(d, e, k, k[4:], v)
	case ga4UP:
		ga4SetProp(e, &e.UserProperties, k[3:], enrich.Prop{Kind: enrich.PropString}, v)
	case ga4UPN:
		f, ok := ga4Number(v)
		if !ok {
			ga4BadNumber(d, e, k, v)
			return
		}
		ga4SetProp(e, &e.UserProperties, k[4:], enrich.Prop{Kind: enrich.PropNumber, Num: f}, nil)
	case ga4UserDataParam:
		ga4UserData(e, k[len("user_data."):], v)
	}
}

// ga4EventParam maps ep.<name>: the canonical ones to their fields, the
// rest to properties. Raw personal data never lands in properties.
func ga4EventParam(e *enrich.Event, name, v []byte) {
	switch string(name) {
	case "transaction_id":
		e.Commerce.TransactionID = e.Intern(v)
		return
	case "coupon":
		e.Commerce.Coupon = e.Intern(v)
		return
	case "event_id":
		e.EventID = e.Intern(v)
		return
	case "currency":
		// cu is gtag's own currency parameter; ep.currency only fills in.
		if e.Commerce.Currency == "" {
			e.Commerce.Currency = e.Intern(v)
		}
		return
	case "debug_mode":
		e.GA.Debug = ga4Flag(v)
		return
	case "value", "tax", "shipping":
		// Sent as a string parameter (a tag passed "12.50"): unambiguous
		// numbers are coerced and flagged; anything else ("NaN") stays a
		// string property for the validation stage to judge.
		if f, ok := ga4Number(v); ok {
			*ga4CommerceNumber(e, name) = enrich.Some(f)
			e.Quality.Add(enrich.FlagCoercedValue)
			return
		}
	}
	if ga4HasPrefix(name, "user_data.") {
		ga4UserData(e, name[len("user_data."):], v)
		return
	}
	if string(name) == "user_data" {
		return // an object gtag failed to flatten; personal data either way
	}
	ga4SetProp(e, &e.Properties, name, enrich.Prop{Kind: enrich.PropString}, v)
}

// ga4EventNumber maps epn.<name>.
func ga4EventNumber(d *decoded, e *enrich.Event, full, name, v []byte) {
	if len(v) == 0 {
		return // gtag sends nothing for an undefined number; nothing to keep
	}
	f, ok := ga4Number(v)
	if !ok {
		ga4BadNumber(d, e, full, v)
		return
	}
	switch string(name) {
	case "value", "tax", "shipping":
		*ga4CommerceNumber(e, name) = enrich.Some(f)
	case "debug_mode":
		e.GA.Debug = f != 0
	default:
		ga4SetProp(e, &e.Properties, name, enrich.Prop{Kind: enrich.PropNumber, Num: f}, nil)
	}
}

func ga4CommerceNumber(e *enrich.Event, name []byte) *enrich.OptFloat {
	switch string(name) {
	case "tax":
		return &e.Commerce.Tax
	case "shipping":
		return &e.Commerce.Shipping
	}
	return &e.Commerce.Value
}

func ga4BadNumber(d *decoded, e *enrich.Event, k, v []byte) {
	if len(v) == 0 {
		return
	}
	ga4Problem(d, e, ga4Field("", k), ga4MsgNumber)
}

// ga4SetProp sets a custom parameter; string values come from v. Past
// ga4MaxProps distinct names the rest are dropped and the event flagged.
func ga4SetProp(e *enrich.Event, props *enrich.Props, name []byte, p enrich.Prop, v []byte) {
	if len(name) == 0 {
		return
	}
	if len(name) > ga4MaxKey {
		name = ga4Cut(name, ga4MaxKey)
		e.Quality.Add(enrich.FlagTruncated)
	}
	i := ga4PropIndex(*props, name)
	if i < 0 && len(*props) >= ga4MaxProps {
		e.Quality.Add(enrich.FlagTruncated)
		return
	}
	if p.Kind == enrich.PropString {
		p.Str = e.Intern(v)
	}
	if i >= 0 {
		p.Key = (*props)[i].Key
		(*props)[i] = p
		return
	}
	p.Key = e.Intern(name)
	*props = append(*props, p)
}

func ga4PropIndex(props enrich.Props, name []byte) int {
	for i := range props {
		if props[i].Key == string(name) {
			return i
		}
	}
	return -1
}

// ga4UserData maps the user_data.* fields of gtag's user-provided data
// (enhanced conversions) into e.PII: raw values stay raw, hashed ones
// (sha256_*) are given as 64 lower-case hex digits, and the privacy stage
// hashes or drops them. Fields without a home in PII (street, _tag_mode,
// …) are dropped; none of them ever becomes a property.
func ga4UserData(e *enrich.Event, name, v []byte) {
	// address.first_name and address.0.first_name (one of several
	// addresses) are the same field here: PII has room for one address.
	if ga4HasPrefix(name, "address.") {
		name = name[len("address."):]
		if i := bytes.IndexByte(name, '.'); i > 0 && ga4AllDigits(name[:i]) {
			name = name[i+1:]
		}
	}
	hashed := false
	if ga4HasPrefix(name, "sha256_") {
		name, hashed = name[len("sha256_"):], true
	}
	var dst *string
	switch string(name) {
	case "email", "email_address":
		dst = &e.PII.Email
	case "phone", "phone_number":
		dst = &e.PII.Phone
	case "first_name":
		dst = &e.PII.FirstName
	case "last_name":
		dst = &e.PII.LastName
	case "city":
		dst = &e.PII.City
	case "region":
		dst = &e.PII.State
	case "postal_code":
		dst = &e.PII.Zip
	case "country":
		dst = &e.PII.Country
	case "street":
		if len(v) > 0 {
			e.Quality.Add(enrich.FlagDroppedPII)
		}
		return
	default:
		return
	}
	if len(v) == 0 {
		return
	}
	if hashed {
		var h [64]byte
		v = ga4HashHex(&h, v)
		*dst = e.Intern(v)
		return
	}
	*dst = e.Intern(v)
}

// ga4UserProvided maps gtag's "em" parameter, user-provided data hashed in
// the browser: "tv.1~em.<h>~pn.<h>~fn0.<h>~ln0.<h>~sa0.<h>~ct0.<h>~rg0.<h>~pc0.<h>~co0.<country>",
// each <h> a base64url SHA-256, given to e.PII as 64 hex digits.
func ga4UserProvided(e *enrich.Event, v []byte) {
	for len(v) > 0 {
		var f []byte
		if i := bytes.IndexByte(v, '~'); i >= 0 {
			f, v = v[:i], v[i+1:]
		} else {
			f, v = v, nil
		}
		dot := bytes.IndexByte(f, '.')
		if dot <= 0 || dot == len(f)-1 {
			continue
		}
		tag, val := f[:dot], f[dot+1:]
		// Address fields carry the address's index (fn0, ct0); the first
		// address wins.
		if n := len(tag); n > 2 && ga4AllDigits(tag[2:]) {
			if !ga4AllZero(tag[2:]) {
				continue
			}
			tag = tag[:2]
		}
		var dst *string
		switch string(tag) {
		case "em":
			dst = &e.PII.Email
		case "pn":
			dst = &e.PII.Phone
		case "fn":
			dst = &e.PII.FirstName
		case "ln":
			dst = &e.PII.LastName
		case "ct":
			dst = &e.PII.City
		case "rg":
			dst = &e.PII.State
		case "pc":
			dst = &e.PII.Zip
		case "co":
			dst = &e.PII.Country
		case "sa":
			e.Quality.Add(enrich.FlagDroppedPII)
			continue
		default:
			continue // tv (format version) and anything newer
		}
		var h [64]byte
		*dst = e.Intern(ga4HashHex(&h, val))
	}
}

// ga4HashHex returns a SHA-256 given as hex or base64 (std or url
// alphabet, padded or not) as 64 lower-case hex digits in h, and anything
// else unchanged.
func ga4HashHex(h *[64]byte, v []byte) []byte {
	if len(v) == 64 {
		for i, c := range v {
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
				h[i] = c
			case c >= 'A' && c <= 'F':
				h[i] = c + ('a' - 'A')
			default:
				return v
			}
		}
		return h[:]
	}
	b := v
	for len(b) > 0 && b[len(b)-1] == '=' {
		b = b[:len(b)-1]
	}
	if len(b) != 43 {
		return v
	}
	var raw [32]byte
	var tmp [43]byte
	for i, c := range b {
		switch c {
		case '-':
			c = '+'
		case '_':
			c = '/'
		}
		tmp[i] = c
	}
	if n, err := base64.RawStdEncoding.Decode(raw[:], tmp[:]); err != nil || n != 32 {
		return v
	}
	hex.Encode(h[:], raw[:])
	return h[:]
}

// ga4Items decodes the collected prN parameters into e.Commerce.Items in
// N order; of two prN with the same N the later wins.
func ga4Items(d *decoded, s *ga4Scratch, e *enrich.Event) {
	for w, set := range s.itemSet {
		for ; set != 0; set &= set - 1 {
			n := w*64 + bits.TrailingZeros64(set)
			p := s.itemByN[n]
			v := s.value(p)
			if len(v) > ga4MaxValue {
				v = ga4Cut(v, ga4MaxValue)
				e.Quality.Add(enrich.FlagTruncated)
			}
			e.Commerce.Items = append(e.Commerce.Items, enrich.Item{})
			it := &e.Commerce.Items[len(e.Commerce.Items)-1]
			if !ga4Item(s, e, it, v) {
				ga4Problem(d, e, ga4ItemField(n), ga4MsgItemNum)
			}
		}
	}
}

// ga4Item decodes one prN value: '~'-separated entries of a two-letter key
// and its value, "~~" standing for a literal '~'. It reports false when a
// numeric entry is not a number (the other entries are kept).
func ga4Item(s *ga4Scratch, e *enrich.Event, it *enrich.Item, v []byte) bool {
	ok := true
	for len(v) > 0 {
		// Find the entry's end: the first '~' not part of "~~".
		end, esc := len(v), false
		for i := 0; i < len(v); i++ {
			if v[i] != '~' {
				continue
			}
			if i+1 < len(v) && v[i+1] == '~' {
				esc = true
				i++
				continue
			}
			end = i
			break
		}
		f := v[:end]
		if end < len(v) {
			v = v[end+1:]
		} else {
			v = nil
		}
		if len(f) < 2 {
			continue
		}
		val := f[2:]
		if esc {
			s.val = s.val[:0]
			for i := 0; i < len(val); i++ {
				s.val = append(s.val, val[i])
				if val[i] == '~' && i+1 < len(val) && val[i+1] == '~' {
					i++
				}
			}
			val = s.val
		}
		switch string(f[:2]) {
		case "id":
			it.ID = e.Intern(val)
		case "nm":
			it.Name = e.Intern(val)
		case "br":
			it.Brand = e.Intern(val)
		case "ca":
			it.Category = e.Intern(val)
		case "c2":
			it.Category2 = e.Intern(val)
		case "c3":
			it.Category3 = e.Intern(val)
		case "c4":
			it.Category4 = e.Intern(val)
		case "c5":
			it.Category5 = e.Intern(val)
		case "va":
			it.Variant = e.Intern(val)
		case "cp":
			it.Coupon = e.Intern(val)
		case "af":
			it.Affiliation = e.Intern(val)
		case "li":
			it.ListID = e.Intern(val)
		case "ln":
			it.ListName = e.Intern(val)
		case "lo":
			it.LocationID = e.Intern(val)
		case "pr":
			ok = ga4ItemNumber(&it.Price, val) && ok
		case "qt":
			ok = ga4ItemNumber(&it.Quantity, val) && ok
		case "ds":
			ok = ga4ItemNumber(&it.Discount, val) && ok
		case "lp":
			// The item's position in its list (GA4 "index"), a number.
			ok = ga4ItemNumber(&it.Index, val) && ok
		}
		// k0…/v0… custom item parameters and unknown keys are ignored.
	}
	return ok
}

func ga4ItemNumber(dst *enrich.OptFloat, v []byte) bool {
	if len(v) == 0 {
		return true
	}
	f, ok := ga4Number(v)
	if ok {
		*dst = enrich.Some(f)
	}
	return ok
}

// ga4ItemIndex parses the N of prN: 1 to 9999 without leading zeros.
func ga4ItemIndex(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 4 || b[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func ga4ItemField(n int) string {
	return "pr" + strconv.Itoa(n)
}

// ga4Int parses gtag's own integer fields (sct, _s, _et). gtag writes
// "NaN" when its engagement timer breaks (seen in real traffic): that is
// no value, not a malformed hit.
func ga4Int(d *decoded, e *enrich.Event, field string, v []byte, dst *int64) {
	if len(v) == 0 || string(v) == "NaN" || string(v) == "undefined" {
		*dst = 0
		return
	}
	n, err := strconv.ParseInt(ga4View(v), 10, 64)
	if err != nil {
		ga4Problem(d, e, field, ga4MsgInteger)
		return
	}
	*dst = n
}

// ga4Flag reads a presence flag such as _fv or _ss: gtag sends "1"; a bare
// key also counts.
func ga4Flag(v []byte) bool {
	return len(v) == 0 || string(v) == "1" || string(v) == "true"
}

// ga4Number parses a decimal number as JavaScript's String(number) writes
// it: optional '-', digits with an optional fraction, optional exponent.
// NaN, Infinity, hex and out-of-range values are not numbers here.
func ga4Number(b []byte) (float64, bool) {
	i, n := 0, len(b)
	if i < n && b[i] == '-' {
		i++
	}
	digits := 0
	for i < n && b[i] >= '0' && b[i] <= '9' {
		i++
		digits++
	}
	if i < n && b[i] == '.' {
		i++
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return 0, false
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		exp := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == exp {
			return 0, false
		}
	}
	if i != n {
		return 0, false
	}
	f, err := strconv.ParseFloat(ga4View(b), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// ga4View looks at b as a string without copying, for parsers that do not
// keep their argument.
func ga4View(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func ga4Problem(d *decoded, e *enrich.Event, field, msg string) {
	if len(d.problems) >= ga4MaxProblems {
		return
	}
	d.problem(e.Index, field, msg)
}

// ga4Field names a parameter in a problem: a copy (problems outlive the
// request's buffers), cut to a sane length.
func ga4Field(prefix string, k []byte) string {
	return prefix + string(ga4Cut(k, 64))
}

// ga4Cut shortens b to at most n bytes without splitting a UTF-8 sequence.
func ga4Cut(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(b[i]) {
		i--
	}
	return b[:i]
}

func ga4HasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

func ga4AllDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func ga4AllZero(b []byte) bool {
	for _, c := range b {
		if c != '0' {
			return false
		}
	}
	return true
}

// ga4TrimSpace trims ASCII white space (raw spaces are never part of a
// form-encoded line, so this cannot cut data).
func ga4TrimSpace(b []byte) []byte {
	for len(b) > 0 && ga4IsSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && ga4IsSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func ga4IsSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'
}

// ga4CountLines counts the non-blank lines of body.
func ga4CountLines(body []byte) (lines int) {
	for rest := body; len(rest) > 0; {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		line = ga4TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		lines++
	}
	return lines
}

// isGA4Hit reports whether a query string is a GA4 hit: v=2 with a tid
// of the form G-…, or such a hit wrapped whole in one base64 parameter.
// The lead's router uses it to send /collect requests that are really
// gtag hits (sGTM set up on /collect) to the GA4 decoder. It does not
// allocate.
func isGA4Hit(query []byte) bool {
	if len(query) > 0 && query[0] == '?' {
		query = query[1:]
	}
	if ga4PlainHit(query) {
		return true
	}
	v, ok := ga4WrappedValue(query)
	if !ok {
		return false
	}
	// Look at the start only: gtag writes v and tid first.
	var enc [ga4PeekLen]byte
	var raw [ga4PeekLen / 4 * 3]byte
	n, i := 0, 0
	for ; i < len(v) && n < len(enc); i++ {
		c := v[i]
		if c == '%' {
			if i+2 >= len(v) {
				return false
			}
			h, l := ga4Unhex(v[i+1]), ga4Unhex(v[i+2])
			if h < 0 || l < 0 {
				return false
			}
			c = byte(h<<4 | l)
			i += 2
		}
		enc[n] = c
		n++
	}
	_, inner, ok := ga4DecodeWrapped(raw[:0], enc[:n], i >= len(v))
	return ok && ga4PlainHit(inner)
}

// ga4PlainHit reports whether q carries v=2 and tid=G-….
func ga4PlainHit(q []byte) bool {
	var v2, tid bool
	for len(q) > 0 && !(v2 && tid) {
		var kv []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			kv, q = q[:i], q[i+1:]
		} else {
			kv, q = q, nil
		}
		switch {
		case string(kv) == "v=2":
			v2 = true
		case ga4HasPrefix(kv, "tid=G-"):
			tid = true
		}
	}
	return v2 && tid
}

// ga4WrappedValue returns the value of q when q is exactly one parameter
// whose value looks like base64: the shape first-party GA4 loaders send, a
// random parameter name holding the whole "/g/collect?v=2&…" base64
// encoded (see testdata/ga4/public-hits.ndjson, the last entry).
func ga4WrappedValue(q []byte) ([]byte, bool) {
	i := bytes.IndexByte(q, '=')
	if i <= 0 || i > 64 || bytes.IndexByte(q, '&') >= 0 {
		return nil, false
	}
	v := q[i+1:]
	if len(v) < 16 {
		return nil, false
	}
	for _, c := range v {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '+' || c == '/' || c == '-' || c == '_' || c == '=' || c == '%') {
			return nil, false
		}
	}
	return v, true
}

// ga4DecodeWrapped base64-decodes enc (either alphabet, padding optional)
// into dst and returns dst (grown if needed) and the query part of the
// decoded "/path?query". When not complete, enc is a prefix and only whole
// 4-character groups are decoded. enc is modified.
func ga4DecodeWrapped(dst, enc []byte, complete bool) (buf, query []byte, ok bool) {
	if complete {
		for len(enc) > 0 && enc[len(enc)-1] == '=' {
			enc = enc[:len(enc)-1]
		}
	} else {
		enc = enc[:len(enc)/4*4]
	}
	for i, c := range enc {
		switch c {
		case '-':
			enc[i] = '+'
		case '_':
			enc[i] = '/'
		}
	}
	need := base64.RawStdEncoding.DecodedLen(len(enc))
	if cap(dst) < need {
		dst = make([]byte, 0, need)
	}
	n, err := base64.RawStdEncoding.Decode(dst[:need], enc)
	if err != nil {
		return dst, nil, false
	}
	out := dst[:n]
	if len(out) == 0 || out[0] != '/' {
		return dst, nil, false
	}
	q := bytes.IndexByte(out, '?')
	if q < 0 {
		return dst, nil, false
	}
	return dst, out[q+1:], true
}

// unwrapHit decodes a base64-wrapped hit into s.unwrap and returns its
// query when it is a GA4 hit.
func (s *ga4Scratch) unwrapHit(q []byte) ([]byte, bool) {
	v, ok := ga4WrappedValue(q)
	if !ok {
		return nil, false
	}
	s.val, ok = ga4AppendUnescaped(s.val[:0], v)
	if !ok {
		return nil, false
	}
	var inner []byte
	s.unwrap, inner, ok = ga4DecodeWrapped(s.unwrap[:0], s.val, true)
	if !ok || !ga4PlainHit(inner) {
		return nil, false
	}
	return inner, true
}

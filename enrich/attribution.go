package enrich

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/sidetrack/sidetrack/config"
)

// Referrer kinds (Attribution.ReferrerKind); empty when there is no referrer.
const (
	ReferrerSearch      = "search"
	ReferrerSocial      = "social"
	ReferrerAIAssistant = "ai_assistant"
	ReferrerShopping    = "shopping"
	ReferrerEmail       = "email"
	ReferrerInternal    = "internal"
	ReferrerOther       = "other"
)

// Source and medium values with a fixed meaning (GA4's spelling).
const (
	DirectSource   = "(direct)"
	MediumNone     = "(none)"
	NotSet         = "(not set)"
	MediumOrganic  = "organic"
	MediumReferral = "referral"
	MediumSocial   = "social"
	MediumEmail    = "email"
)

// maxClickID bounds a click id; real ones are under 200 bytes. The bound
// keeps fb.1.<ms>.<fbclid> within the 512 bytes identity accepts for _fbc.
const maxClickID = 480

// clickKinds lists the click ids in precedence order: when a URL carries
// several, the first one present names the touch's click_id_kind and, when
// UTMs are absent, implies source/medium. Google's family first (its
// auto-tagging is the most common and gbraid/wbraid are its iOS variants),
// then the other paid networks, then fbclid (Meta adds it to organic links
// too, so it says less than a paid network's id), then srsltid (Merchant
// Center free listings: organic).
var clickKinds = [...]struct {
	name, source, medium string
	get                  func(*ClickIDs) *string
}{
	{"gclid", "google", "cpc", func(c *ClickIDs) *string { return &c.GCLID }},
	{"gbraid", "google", "cpc", func(c *ClickIDs) *string { return &c.GBRAID }},
	{"wbraid", "google", "cpc", func(c *ClickIDs) *string { return &c.WBRAID }},
	{"msclkid", "bing", "cpc", func(c *ClickIDs) *string { return &c.MSCLKID }},
	{"dclid", "dv360", "display", func(c *ClickIDs) *string { return &c.DCLID }},
	{"ttclid", "tiktok", "paid_social", func(c *ClickIDs) *string { return &c.TTCLID }},
	{"li_fat_id", "linkedin", "paid_social", func(c *ClickIDs) *string { return &c.LiFatID }},
	{"twclid", "twitter", "paid_social", func(c *ClickIDs) *string { return &c.TWCLID }},
	{"fbclid", "facebook", "social", func(c *ClickIDs) *string { return &c.FBCLID }},
	{"srsltid", "google", "organic", func(c *ClickIDs) *string { return &c.SRSLTID }},
}

// Query parameters the stage reads: the six UTMs, then the click ids in
// clickKinds order.
const (
	paramUTMSource = iota
	paramUTMMedium
	paramUTMCampaign
	paramUTMTerm
	paramUTMContent
	paramUTMID
	paramClick0
)

var utmParams = [...]string{"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id"}

// conversionNames are the canonical names whose paid visits must carry a
// click id to be reported back to the ad platform.
var conversionNames = [...]string{"order_completed", "lead_submitted"}

// refEntry is one entry of the shipped referrer list.
type refEntry struct {
	kind, source, medium string
}

// AttributionStage works out where an event's visit came from (DESIGN §4
// "Attribution"): UTMs, click ids, referrer class, normalized source /
// medium / campaign, GA4 default channel group, Meta's fbc, and the first
// and last non-direct touches.
//
// Semantics worth knowing:
//   - source/medium/campaign/channel describe what this event itself
//     carries. A direct event (no UTMs, no click id, no referrer) or one
//     coming from an internal page is "(direct)/(none)", Direct, even when
//     the visitor has touches: first_touch and last_touch carry the
//     attribution of the visit (last non-direct click), so reports join
//     conversions on last_touch. An event without any page context (no URL,
//     referrer or UTMs: a server call, an identify) gets no source at all.
//   - UTMs win. Click ids imply source/medium only for the UTM fields that
//     are missing (utm_campaign=x&gclid=… is google/cpc/x). Without click
//     ids a missing utm_medium comes from a referrer that names the same
//     source (ChatGPT tags links with utm_source=chatgpt.com only), and is
//     otherwise "(not set)", like a missing utm_source, as in GA4.
//   - Click ids are read from the page URL, then from the referrer's query
//     (a form post's page, a redirect). Ids found only on an internal
//     referrer attribute the event but do not make a new touch: the landing
//     page already did.
//   - Referrers on the shop's own hosts, and payment / 3-D Secure / sign-in
//     pages listed as internal, never make a touch, so a return from PayPal
//     does not steal the last touch.
//
// Strings set on events are substrings of the event's own fields, copies
// in its arena, or constants owned by the stage (which lives as long as the
// process). An event that needs no rewrite costs no allocation.
type AttributionStage struct {
	srcAlias map[string]string
	medAlias map[string]string
	refs     map[string]refEntry // exact host → entry
	refWild  map[string]refEntry // "name" of "name.*" → entry
	hosts    []string            // cfg.Hosts, lower case
	channels *Channels
	naming   *Naming
}

// AttributionOption adjusts the shipped tables, mainly for tests and
// embedding programs (the config has no keys for them).
type AttributionOption func(*AttributionStage) error

// WithSourceAliases adds or overrides utm_source aliases (alias → canonical).
func WithSourceAliases(m map[string]string) AttributionOption {
	return func(a *AttributionStage) error { return attrAddAliases(a.srcAlias, m) }
}

// WithMediumAliases adds or overrides utm_medium aliases (alias → canonical).
func WithMediumAliases(m map[string]string) AttributionOption {
	return func(a *AttributionStage) error { return attrAddAliases(a.medAlias, m) }
}

// WithReferrer adds or overrides one referrer-list entry, as a line of
// enrich/data/referrers.tsv would (host may be "name.*"; empty source means
// the referrer's host; empty medium means the kind's default).
func WithReferrer(host, kind, source, medium string) AttributionOption {
	return func(a *AttributionStage) error { return a.addReferrer(host, kind, source, medium) }
}

func attrAddAliases(dst, m map[string]string) error {
	for k, v := range m {
		k, v = normalizeUTMString(k), normalizeUTMString(v)
		if k == "" || v == "" {
			return fmt.Errorf("enrich: empty alias in %q -> %q", k, v)
		}
		dst[k] = v
	}
	return nil
}

// NewAttribution loads the shipped alias maps, referrer list and source
// categories, and takes the shop's hosts (internal referrers) and event
// aliases (to recognise conversions) from cfg.
func NewAttribution(cfg *config.Config, opts ...AttributionOption) (*AttributionStage, error) {
	a := &AttributionStage{
		srcAlias: make(map[string]string, 128),
		medAlias: make(map[string]string, 64),
		refs:     make(map[string]refEntry, 256),
		refWild:  make(map[string]refEntry, 32),
	}
	var err error
	if a.channels, err = NewChannels(); err != nil {
		return nil, err
	}
	if a.naming, err = NewNaming(cfg); err != nil {
		return nil, err
	}
	for file, dst := range map[string]map[string]string{"source_aliases.tsv": a.srcAlias, "medium_aliases.tsv": a.medAlias} {
		err := readDataTSV(file, 2, 2, func(f []string) error {
			k, v := normalizeUTMString(f[0]), normalizeUTMString(f[1])
			if k == "" || v == "" {
				return fmt.Errorf("empty alias")
			}
			dst[k] = v
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	err = readDataTSV("referrers.tsv", 3, 4, func(f []string) error {
		medium := ""
		if len(f) == 4 {
			medium = f[3]
		}
		return a.addReferrer(f[0], f[1], f[2], medium)
	})
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		for _, h := range cfg.Hosts {
			if h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), "."); h != "" {
				a.hosts = append(a.hosts, h)
			}
		}
	}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *AttributionStage) addReferrer(host, kind, source, medium string) error {
	host = strings.ToLower(strings.TrimSpace(host))
	if source == "-" {
		source = ""
	}
	def := ""
	switch kind {
	case ReferrerSearch:
		def = MediumOrganic
	case ReferrerSocial:
		def = MediumSocial
	case ReferrerEmail:
		def = MediumEmail
	case ReferrerAIAssistant, ReferrerShopping, ReferrerOther:
		def = MediumReferral
	case ReferrerInternal:
	default:
		return fmt.Errorf("referrer %q: unknown kind %q", host, kind)
	}
	if medium == "" {
		medium = def
	}
	r := refEntry{kind: kind, source: strings.ToLower(source), medium: strings.ToLower(medium)}
	if name, ok := strings.CutSuffix(host, ".*"); ok {
		if name == "" {
			return fmt.Errorf("referrer %q: empty name before .*", host)
		}
		a.refWild[name] = r
		return nil
	}
	if host == "" || strings.ContainsAny(host, "/:* \t") {
		return fmt.Errorf("referrer %q: not a host name", host)
	}
	a.refs[host] = r
	return nil
}

// Channels returns the stage's channel rules (shared, immutable).
func (a *AttributionStage) Channels() *Channels { return a.channels }

// Apply fills e.Attribution. See the type's documentation for the rules.
func (a *AttributionStage) Apply(req *Request, e *Event, res *EventResult) {
	at := &e.Attribution
	var scratch [256]byte

	// UTMs: the event's own (Segment context.campaign, /collect) win over the
	// page URL's; either way they are normalized.
	hasUTM := at.UTMSource != "" || at.UTMMedium != "" || at.UTMCampaign != "" ||
		at.UTMTerm != "" || at.UTMContent != "" || at.UTMID != ""
	if hasUTM {
		for _, p := range [...]*string{&at.UTMSource, &at.UTMMedium, &at.UTMCampaign, &at.UTMTerm, &at.UTMContent, &at.UTMID} {
			if *p != "" {
				n := appendNormalized(scratch[:0], *p, false)
				if string(n) != *p {
					*p = e.Intern(n)
				}
			}
		}
	}
	preClick := at.ClickIDs != (ClickIDs{})
	pageQ := attrQuery(e.URL)
	pageUTM := false
	if pageQ != "" {
		pageUTM = a.readParams(e, pageQ, !hasUTM, scratch[:0])
	}
	pageClick := preClick || at.ClickIDs != (ClickIDs{})
	hasUTM = hasUTM || pageUTM

	// Referrer: class, and click ids from its query.
	refKind, ref, refHost := "", refEntry{}, ""
	if e.Referrer != "" {
		if refHost = a.hostLower(e, attrHost(e.Referrer)); refHost != "" {
			refKind, ref = a.classify(refHost, a.pageHost(req, e))
			if q := attrQuery(e.Referrer); q != "" {
				a.readParams(e, q, false, scratch[:0])
			}
		}
	}
	at.ReferrerKind = refKind
	ck := attrStrongestClick(&at.ClickIDs)
	external := refKind != "" && refKind != ReferrerInternal
	newTouch := hasUTM || pageClick || external

	// Source / medium / campaign.
	var src, med string
	switch {
	case hasUTM:
		src, med = a.alias(a.srcAlias, at.UTMSource), a.alias(a.medAlias, at.UTMMedium)
		if src == "" {
			src = NotSet
			if ck >= 0 {
				src = clickKinds[ck].source
			}
		}
		if med == "" {
			med = NotSet
			if ck >= 0 {
				med = clickKinds[ck].medium
			} else if external && src == a.refSource(ref, refHost) {
				// The referrer confirms the tagged source (ChatGPT adds
				// utm_source=chatgpt.com and nothing else): its medium.
				med = ref.medium
			}
		}
	case ck >= 0:
		src, med = clickKinds[ck].source, clickKinds[ck].medium
	case external:
		src, med = a.refSource(ref, refHost), ref.medium
	case e.URL == "" && refHost == "":
		// No page context: nothing to say about this event's own origin.
	default:
		src, med = DirectSource, MediumNone
	}
	if src != "" {
		at.Source, at.Medium, at.Campaign = src, med, at.UTMCampaign
		at.Channel = a.channels.Classify(src, med, at.Campaign)
	}

	// Meta click id cookie value: a new fbclid replaces an older one.
	if fbclid := at.ClickIDs.FBCLID; fbclid != "" && attrFBCClickID(at.FBC) != fbclid {
		at.FBC = a.fbc(req, e, fbclid, scratch[:0])
	}

	if newTouch && src != "" {
		t := Touch{Source: at.Source, Medium: at.Medium, Campaign: at.Campaign, Channel: at.Channel, At: e.ReceivedAt}
		if ck >= 0 {
			t.ClickIDKind = clickKinds[ck].name
		}
		if at.FirstTouch.IsZero() {
			at.FirstTouch = t
		}
		at.LastTouch = t
	}

	a.checkClickContext(e, hasUTM, newTouch, ck)
}

// refSource is the source a referrer implies: its list entry's canonical
// name, or its host without "www.".
func (a *AttributionStage) refSource(ref refEntry, host string) string {
	if ref.source != "" {
		return ref.source
	}
	return strings.TrimPrefix(host, "www.")
}

// checkClickContext flags a conversion whose paid visit has no click id
// (missing_click_context): the ad platform cannot be told about it. The
// paid medium is the event's own campaign, or, for a conversion that
// arrives without one (the usual thank-you page), its last touch's. A paid
// medium is cpc (ppc and paid are aliases of it) or one starting "paid"
// (paid_social, paidsearch, ...).
func (a *AttributionStage) checkClickContext(e *Event, hasUTM, ownTouch bool, ck int) {
	canon, _ := a.naming.Canonical(e.Name)
	conv := false
	for _, c := range conversionNames {
		conv = conv || canon == c
	}
	if !conv {
		return
	}
	at := &e.Attribution
	med, hasClick := "", ck >= 0
	switch {
	case hasUTM:
		med = at.Medium
	case !ownTouch && at.LastTouch.Source != "":
		med = at.LastTouch.Medium
		hasClick = hasClick || at.LastTouch.ClickIDKind != ""
	}
	if (med == "cpc" || strings.HasPrefix(med, "paid")) && !hasClick {
		e.Quality.Add(FlagMissingClickContext)
	}
}

// fbc formats Meta's click id value fb.1.<ms>.<fbclid>: subdomain index 1
// because the _fbc cookie lives on the registrable domain, creation time in
// milliseconds, the fbclid byte for byte.
func (a *AttributionStage) fbc(req *Request, e *Event, fbclid string, buf []byte) string {
	t := e.ReceivedAt
	if t.IsZero() {
		t = req.ReceivedAt
	}
	if t.IsZero() {
		return e.Attribution.FBC
	}
	buf = append(buf, "fb.1."...)
	buf = strconv.AppendInt(buf, t.UnixMilli(), 10)
	buf = append(buf, '.')
	buf = append(buf, fbclid...)
	return e.Intern(buf)
}

// attrFBCClickID returns the fbclid part of an fbc value (fb.<i>.<ms>.<fbclid>).
func attrFBCClickID(fbc string) string {
	for n := 0; n < 3; n++ {
		i := strings.IndexByte(fbc, '.')
		if i < 0 {
			return ""
		}
		fbc = fbc[i+1:]
	}
	return fbc
}

// attrStrongestClick returns the index in clickKinds of the first click id
// present, or -1.
func attrStrongestClick(c *ClickIDs) int {
	for i := range clickKinds {
		if *clickKinds[i].get(c) != "" {
			return i
		}
	}
	return -1
}

// alias returns the canonical form of v (already normalized).
func (a *AttributionStage) alias(m map[string]string, v string) string {
	if c, ok := m[v]; ok {
		return c
	}
	return v
}

// readParams reads UTMs (when utm is true) and click ids from a query
// string into e. Click ids already on the event are kept. It reports
// whether a UTM was found.
func (a *AttributionStage) readParams(e *Event, q string, utm bool, buf []byte) (found bool) {
	at := &e.Attribution
	utmFields := [...]*string{&at.UTMSource, &at.UTMMedium, &at.UTMCampaign, &at.UTMTerm, &at.UTMContent, &at.UTMID}
	for q != "" {
		var kv string
		if i := strings.IndexByte(q, '&'); i >= 0 {
			kv, q = q[:i], q[i+1:]
		} else {
			kv, q = q, ""
		}
		k, v, _ := strings.Cut(kv, "=")
		// "&amp;utm_medium=" from URLs copied out of HTML.
		k = strings.TrimPrefix(k, "amp;")
		p := attrParamIndex(k)
		if p < 0 || v == "" {
			continue
		}
		if p < paramClick0 {
			if !utm || *utmFields[p] != "" {
				continue
			}
			n := appendNormalized(buf[:0], v, true)
			if len(n) == 0 {
				continue
			}
			if string(n) == v {
				*utmFields[p] = v
			} else {
				*utmFields[p] = e.Intern(n)
			}
			found = true
			continue
		}
		dst := clickKinds[p-paramClick0].get(&at.ClickIDs)
		if *dst != "" {
			continue
		}
		if strings.IndexByte(v, '%') < 0 {
			if attrValidClickID(v) {
				*dst = v
			}
			continue
		}
		if n := appendPercentDecoded(buf[:0], v, false); attrValidClickID(unsafe.String(unsafe.SliceData(n), len(n))) {
			*dst = e.Intern(n)
		}
	}
	return found
}

// attrParamIndex maps a query key (ASCII case-insensitive) to its param index,
// or -1 for keys the stage does not read.
func attrParamIndex(k string) int {
	if len(k) < 5 || len(k) > 12 {
		return -1
	}
	switch k[0] | 0x20 {
	case 'u':
		for i, p := range utmParams {
			if strings.EqualFold(k, p) {
				return i
			}
		}
	case 'g', 'w', 'd', 's', 'f', 'm', 't', 'l':
		for i := range clickKinds {
			if strings.EqualFold(k, clickKinds[i].name) {
				return paramClick0 + i
			}
		}
	}
	return -1
}

// attrValidClickID accepts what a click id can be and a cookie can carry
// unquoted: 1..maxClickID visible ASCII bytes other than '"', ',', ';' and
// '\'. Anything else is not a real click id; it is dropped rather than
// altered, since click ids must travel byte for byte.
func attrValidClickID(s string) bool {
	if s == "" || len(s) > maxClickID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// attrQuery returns the query of a URL (without '?' and fragment). A URL
// whose only '?' sits in the fragment (hash-routed single-page apps:
// /#/product?utm_source=x) yields the fragment's query.
func attrQuery(u string) string {
	q := strings.IndexByte(u, '?')
	if q < 0 {
		return ""
	}
	h := strings.IndexByte(u, '#')
	if h >= 0 && h < q {
		// '?' inside the fragment: read up to the end.
		return u[q+1:]
	}
	u = u[q+1:]
	if h >= 0 {
		u = u[:h-q-1]
	}
	return u
}

// attrHost returns the host of a URL or referrer: scheme, userinfo, port,
// path and a trailing dot removed; case kept. "android-app://pkg/" yields
// the app's package name; a string without "//" is read as a bare host
// ("google.com/search") unless it starts with a scheme ("about:blank",
// "data:…"), which has no host.
func attrHost(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	} else if strings.HasPrefix(u, "//") {
		u = u[2:]
	} else if i := strings.IndexByte(u, ':'); i >= 0 && strings.IndexByte(u[:i], '.') < 0 {
		return ""
	}
	if i := strings.IndexAny(u, "/?#\\"); i >= 0 {
		u = u[:i]
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		u = u[i+1:]
	}
	return attrStripPort(u)
}

// attrStripPort removes a port and a trailing dot from a host.
func attrStripPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// hostLower returns h in lower case, copying into the event's arena only when
// it has upper-case letters.
func (a *AttributionStage) hostLower(e *Event, h string) string {
	if !attrHasUpper(h) {
		return h
	}
	var buf [256]byte
	b := buf[:0]
	for i := 0; i < len(h); i++ {
		c := h[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return e.Intern(b)
}

// pageHost returns the host the event happened on: its own Host, its URL's,
// or the request's.
func (a *AttributionStage) pageHost(req *Request, e *Event) string {
	if e.Host != "" {
		return attrStripPort(e.Host)
	}
	if h := attrHost(e.URL); h != "" {
		return h
	}
	return attrStripPort(req.Host)
}

// classify returns the referrer kind and list entry of a lower-case
// referrer host, given the page's host.
func (a *AttributionStage) classify(rh, page string) (string, refEntry) {
	if a.internal(rh, page) {
		return ReferrerInternal, refEntry{}
	}
	if r, ok := a.lookupReferrer(rh); ok {
		return r.kind, r
	}
	return ReferrerOther, refEntry{medium: MediumReferral}
}

// internal reports whether the referrer host rh is the page's own host
// (ignoring "www.") or one of cfg.Hosts or their subdomains.
func (a *AttributionStage) internal(rh, page string) bool {
	if page != "" {
		p := page
		if attrHasUpper(p) {
			if strings.EqualFold(rh, p) || strings.EqualFold(strings.TrimPrefix(rh, "www."), attrTrimPrefixFold(p, "www.")) {
				return true
			}
		} else if rh == p || strings.TrimPrefix(rh, "www.") == strings.TrimPrefix(p, "www.") {
			return true
		}
	}
	for _, h := range a.hosts {
		if rh == h || (len(rh) > len(h) && rh[len(rh)-len(h)-1] == '.' && rh[len(rh)-len(h):] == h) {
			return true
		}
	}
	return false
}

func attrTrimPrefixFold(s, prefix string) string {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):]
	}
	return s
}

// lookupReferrer finds the most specific referrer-list entry for a
// lower-case host: the host, then each parent domain; at each level an
// exact entry, then a "name.*" entry whose name is the level without its
// TLD-like suffix.
func (a *AttributionStage) lookupReferrer(h string) (refEntry, bool) {
	sfx := attrTLDSuffix(h)
	for c := h; ; {
		if r, ok := a.refs[c]; ok {
			return r, true
		}
		if len(c) > len(sfx)+1 {
			if r, ok := a.refWild[c[:len(c)-len(sfx)-1]]; ok {
				return r, true
			}
		}
		i := strings.IndexByte(c, '.')
		if i < 0 {
			return refEntry{}, false
		}
		c = c[i+1:]
		if len(c) <= len(sfx) {
			return refEntry{}, false
		}
	}
}

// attrTLDSuffix returns the part of h that "name.*" entries skip: the last
// label, or the last two when they look like co.uk / com.au (co, com, org
// or net and a two-letter country code).
func attrTLDSuffix(h string) string {
	i := strings.LastIndexByte(h, '.')
	if i < 0 {
		return ""
	}
	last := h[i+1:]
	if len(last) == 2 {
		j := strings.LastIndexByte(h[:i], '.')
		switch h[j+1 : i] {
		case "co", "com", "org", "net":
			if j >= 0 {
				return h[j+1:]
			}
		}
	}
	return last
}

// AppendNormalizedUTM appends the normalized form of a raw (still
// percent-encoded) UTM query value to dst and returns the extended buffer,
// in the append style of fasthttp's bytesconv: percent-decoded with '+' as
// a space, trimmed, lower-cased (Unicode-aware), runs of whitespace and
// control characters folded to one space. Invalid escapes and invalid UTF-8
// bytes are kept as they are. It allocates only to grow dst.
func AppendNormalizedUTM(dst, src []byte) []byte {
	return appendNormalized(dst, unsafe.String(unsafe.SliceData(src), len(src)), true)
}

// normalizeUTMString normalizes an already decoded value (config, data).
func normalizeUTMString(s string) string {
	return string(appendNormalized(nil, s, false))
}

// appendNormalized appends the normalized form of s to dst; decode says
// whether s is a raw query value (percent escapes and '+').
func appendNormalized(dst []byte, s string, decode bool) []byte {
	if !decode || strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return appendFold(dst, s)
	}
	// Decode into a separate buffer: folding in place could overwrite
	// input not yet read (a few runes grow when lower-cased).
	var tmp [256]byte
	d := appendPercentDecoded(tmp[:0], s, true)
	return appendFold(dst, unsafe.String(unsafe.SliceData(d), len(d)))
}

// appendFold trims, lower-cases and folds whitespace of s onto dst.
func appendFold(dst []byte, s string) []byte {
	space := false
	start := len(dst)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			if c <= ' ' || c == 0x7f {
				space = true
				continue
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if space && len(dst) > start {
				dst = append(dst, ' ')
			}
			space = false
			dst = append(dst, c)
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			if space && len(dst) > start {
				dst = append(dst, ' ')
			}
			space = false
			dst = append(dst, c)
			i++
			continue
		}
		i += n
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = true
			continue
		}
		if space && len(dst) > start {
			dst = append(dst, ' ')
		}
		space = false
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
	}
	return dst
}

// appendPercentDecoded appends s percent-decoded to dst; plus says whether '+'
// means a space (form encoding). Invalid escapes are kept literally.
func appendPercentDecoded(dst []byte, s string, plus bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%' && i+2 < len(s) && utmIsHex(s[i+1]) && utmIsHex(s[i+2]):
			dst = append(dst, utmUnhex(s[i+1])<<4|utmUnhex(s[i+2]))
			i += 2
		case c == '+' && plus:
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func utmIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func utmUnhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

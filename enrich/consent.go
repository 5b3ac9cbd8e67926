package enrich

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/sidetrack/sidetrack/config"
)

// Consent purposes as bits, so one signal's say about all four purposes
// fits in two bytes and merging signals is a few ORs.
const (
	purposeAnalytics uint8 = 1 << iota
	purposeAds
	purposeAdUserData
	purposeAdPersonalization

	purposeAll       = purposeAnalytics | purposeAds | purposeAdUserData | purposeAdPersonalization
	purposeAdsTrio   = purposeAds | purposeAdUserData | purposeAdPersonalization
	purposeGPCDenied = purposeAds | purposeAdUserData | purposeAdPersonalization
)

// verdict is what one consent signal says: the purposes it grants and the
// purposes it denies. A purpose in neither set is one the signal does not
// speak for. Within one signal denial wins (see norm).
type verdict struct{ granted, denied uint8 }

func (v verdict) norm() verdict { v.granted &^= v.denied; return v }

func (v verdict) spoke() bool { return v.granted|v.denied != 0 }

// set records state s for the purposes in m.
func (v *verdict) set(m uint8, s ConsentState) {
	switch s {
	case Granted:
		v.granted |= m
	case Denied:
		v.denied |= m
	}
}

// Consent signal kinds, in the order that breaks ties when two signals are
// equally restrictive (see ConsentStage).
const (
	sigGCD = iota
	sigGCS
	sigCollect
	sigSegment
	sigCMP
	sigGPC
	nSignals
)

// signalName returns the consent_source value of a signal kind.
func signalName(sig int) string {
	switch sig {
	case sigGCD:
		return "gcd"
	case sigGCS:
		return "gcs"
	case sigCollect:
		return "collect"
	case sigSegment:
		return "segment"
	case sigCMP:
		return "cmp_cookie"
	}
	return "gpc"
}

// cmpFormat is a supported consent-management cookie format.
type cmpFormat uint8

const (
	cmpNone cmpFormat = iota
	cmpOneTrust
	cmpCookiebot
	cmpTCF
)

// ConsentStage decides each event's consent per purpose (analytics, ads,
// ad_user_data, ad_personalization) from the signals it carries (DESIGN §4
// "Consent"). It runs first, so every later stage sees a decision: after
// it no purpose is Unknown.
//
// Signals:
//   - GA4 Consent Mode. gcd (Consent Mode v2) has a letter per purpose at
//     positions 2, 4, 6 and 8, in the order ad_storage, analytics_storage,
//     ad_user_data, ad_personalization: n r t v are granted (by update, by
//     update over a denied default, by default, by default and update),
//     m p q u are denied, l is not set; the digits between the letters are
//     ignored. gcs is G1<ad_storage><analytics_storage> with 1 granted, 0
//     denied, '-' not set. gcd wins over gcs for every purpose it sets (it
//     covers all four and both come from the same gtag state); gcs fills
//     only what gcd left unset. npa=1 denies ad_personalization.
//   - Segment context.consent.categoryPreferences (booleans). A category
//     named in consent.cmp_cookie.map maps to the purposes listed there.
//     Otherwise, by convention and case-insensitively: analytics,
//     analytics_storage, performance, statistics and OneTrust's C0002 →
//     analytics; advertising, marketing, targeting, ads and OneTrust's
//     C0004 → ads, ad_user_data and ad_personalization; ad_storage → ads;
//     ad_user_data and ad_personalization → themselves. Other categories
//     (necessary, functional, …) say nothing. true grants the category's
//     purposes, false denies them.
//   - A /collect consent object (analytics, ads, ad_user_data,
//     ad_personalization: "granted" or "denied").
//   - The CMP cookie named by consent.cmp_cookie (browser requests only),
//     see cmp.go for the three formats and their default mappings.
//   - Sec-GPC: 1 with consent.honor_gpc (browser requests only): ads,
//     ad_user_data and ad_personalization denied. GPC is a legally
//     recognised opt-out of sale and sharing (CCPA/CPRA), and personalised
//     ads are sharing, so ad_personalization goes with the other two.
//     Consent.GPC records the header whether or not it is honoured.
//
// Where signals disagree the most restrictive wins: a purpose any signal
// denies is denied. Purposes no signal speaks for take the configured
// default (consent.default; consent.server_default for server requests).
//
// Consent.Source names the deciding signal: the one that denied the most
// purposes; if none denied any, the one that granted the most; ties go to
// the earlier of gcd, gcs, collect, segment, cmp_cookie, gpc. When no
// signal spoke it is "default", or "server" for server requests.
//
// The common GA4 hit (gcs/gcd, no CMP cookie) costs no allocation.
type ConsentStage struct {
	def, server verdict
	honorGPC    bool
	cmpName     string
	cmpFormat   cmpFormat
	// catMap is consent.cmp_cookie.map as purpose bits: it overrides the
	// CMP format's default mapping and takes precedence over the Segment
	// naming convention.
	catMap map[string]uint8
}

// NewConsent builds the consent stage from cfg.Consent. It reports every
// invalid setting (a default that is neither granted nor denied, an
// unknown CMP format or purpose name).
func NewConsent(cfg *config.Config) (*ConsentStage, error) {
	c := cfg.Consent
	s := &ConsentStage{honorGPC: c.HonorGPC}
	var errs []string
	var err error
	if s.def, err = purposesVerdict(c.Default); err != nil {
		errs = append(errs, "consent.default: "+err.Error())
	}
	if s.server, err = purposesVerdict(c.ServerDefault); err != nil {
		errs = append(errs, "consent.server_default: "+err.Error())
	}
	if c.CMPCookie.Name != "" {
		s.cmpName = c.CMPCookie.Name
		switch c.CMPCookie.Format {
		case "onetrust", "":
			s.cmpFormat = cmpOneTrust
		case "cookiebot":
			s.cmpFormat = cmpCookiebot
		case "tcf":
			s.cmpFormat = cmpTCF
		default:
			errs = append(errs, fmt.Sprintf("consent.cmp_cookie.format: %q is not one of onetrust, cookiebot, tcf", c.CMPCookie.Format))
		}
	}
	if len(c.CMPCookie.Map) > 0 {
		s.catMap = make(map[string]uint8, len(c.CMPCookie.Map))
		for cat, ps := range c.CMPCookie.Map {
			var m uint8
			for _, p := range ps {
				b := purposeBit(p)
				if b == 0 {
					errs = append(errs, fmt.Sprintf("consent.cmp_cookie.map.%s: unknown purpose %q (want analytics, ads, ad_user_data or ad_personalization)", cat, p))
				}
				m |= b
			}
			s.catMap[cat] = m
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("consent: %s", strings.Join(errs, "; "))
	}
	return s, nil
}

// purposeBit returns the bit of a purpose name, 0 for an unknown one.
func purposeBit(p string) uint8 {
	switch p {
	case "analytics":
		return purposeAnalytics
	case "ads":
		return purposeAds
	case "ad_user_data":
		return purposeAdUserData
	case "ad_personalization":
		return purposeAdPersonalization
	}
	return 0
}

// purposesVerdict turns a configured default into a verdict covering all
// four purposes.
func purposesVerdict(p config.Purposes) (verdict, error) {
	var v verdict
	var bad []string
	for _, x := range [...]struct {
		name, val string
		bit       uint8
	}{
		{"analytics", p.Analytics, purposeAnalytics},
		{"ads", p.Ads, purposeAds},
		{"ad_user_data", p.AdUserData, purposeAdUserData},
		{"ad_personalization", p.AdPersonalization, purposeAdPersonalization},
	} {
		switch x.val {
		case "granted":
			v.granted |= x.bit
		case "denied":
			v.denied |= x.bit
		default:
			bad = append(bad, fmt.Sprintf("%s is %q, want granted or denied", x.name, x.val))
		}
	}
	if bad != nil {
		return v, fmt.Errorf("%s", strings.Join(bad, ", "))
	}
	return v, nil
}

// Apply implements Stage.
func (c *ConsentStage) Apply(req *Request, e *Event, _ *EventResult) {
	var sig [nSignals]verdict
	cs := &e.Consent

	if cs.GCD != "" {
		sig[sigGCD] = parseGCD(cs.GCD)
	}
	if cs.GCS != "" {
		v := parseGCS(cs.GCS)
		set := sig[sigGCD].granted | sig[sigGCD].denied
		v.granted &^= set
		v.denied &^= set
		sig[sigGCS] = v
	}
	if cs.NPA == "1" {
		if cs.GCD != "" {
			sig[sigGCD].denied |= purposeAdPersonalization
		} else {
			sig[sigGCS].denied |= purposeAdPersonalization
		}
	}
	for i := range cs.Categories {
		p := &cs.Categories[i]
		switch p.Kind {
		case PropString: // /collect consent object: canonical purposes
			var st ConsentState
			switch p.Str {
			case "granted":
				st = Granted
			case "denied":
				st = Denied
			}
			sig[sigCollect].set(purposeBit(p.Key), st)
		case PropBool: // Segment categoryPreferences
			m := c.categoryPurposes(p.Key)
			if p.Bool {
				sig[sigSegment].granted |= m
			} else {
				sig[sigSegment].denied |= m
			}
		}
	}

	def, defName := c.def, "default"
	cs.GPC = false
	if req.Server {
		def, defName = c.server, "server"
	} else {
		if c.cmpFormat != cmpNone {
			if v, ok := req.Cookie(c.cmpName); ok && v != "" {
				sig[sigCMP] = c.parseCMP(v)
			}
		}
		if req.GPC {
			cs.GPC = true
			if c.honorGPC {
				sig[sigGPC].denied = purposeGPCDenied
			}
		}
	}

	var granted, denied uint8
	best, bestDenied, bestGranted := -1, 0, 0
	for i := range sig {
		v := sig[i].norm()
		sig[i] = v
		granted |= v.granted
		denied |= v.denied
		if !v.spoke() {
			continue
		}
		nd, ng := bits.OnesCount8(v.denied), bits.OnesCount8(v.granted)
		if best < 0 || nd > bestDenied || nd == bestDenied && bestDenied == 0 && ng > bestGranted {
			best, bestDenied, bestGranted = i, nd, ng
		}
	}
	granted &^= denied
	rest := purposeAll &^ (granted | denied)
	granted |= def.granted & rest
	denied |= def.denied & rest

	cs.Analytics = stateOf(purposeAnalytics, granted, denied)
	cs.Ads = stateOf(purposeAds, granted, denied)
	cs.AdUserData = stateOf(purposeAdUserData, granted, denied)
	cs.AdPersonalization = stateOf(purposeAdPersonalization, granted, denied)
	if best >= 0 {
		cs.Source = signalName(best)
	} else {
		cs.Source = defName
	}
}

func stateOf(bit, granted, denied uint8) ConsentState {
	switch {
	case denied&bit != 0:
		return Denied
	case granted&bit != 0:
		return Granted
	}
	return Unknown
}

// categoryPurposes maps a Segment consent category to purposes: the
// configured map first, then the naming convention documented on
// ConsentStage.
func (c *ConsentStage) categoryPurposes(name string) uint8 {
	if m, ok := c.catMap[name]; ok {
		return m
	}
	switch {
	case name == "C0002",
		strings.EqualFold(name, "analytics"),
		strings.EqualFold(name, "analytics_storage"),
		strings.EqualFold(name, "performance"),
		strings.EqualFold(name, "statistics"):
		return purposeAnalytics
	case name == "C0004",
		strings.EqualFold(name, "advertising"),
		strings.EqualFold(name, "marketing"),
		strings.EqualFold(name, "targeting"),
		strings.EqualFold(name, "ads"):
		return purposeAdsTrio
	case strings.EqualFold(name, "ad_storage"):
		return purposeAds
	case strings.EqualFold(name, "ad_user_data"):
		return purposeAdUserData
	case strings.EqualFold(name, "ad_personalization"):
		return purposeAdPersonalization
	}
	return 0
}

// gcdLetter maps one Consent Mode v2 gcd letter to a state.
func gcdLetter(c byte) ConsentState {
	switch c | 0x20 { // lower-case
	case 'n', 'r', 't', 'v':
		return Granted
	case 'm', 'p', 'q', 'u':
		return Denied
	}
	return Unknown // 'l' (not set) and anything unknown
}

// parseGCD reads the gcd parameter: letters at positions 2, 4, 6, 8 for
// ad_storage, analytics_storage, ad_user_data, ad_personalization. A
// truncated value yields the purposes it has.
func parseGCD(s string) verdict {
	var v verdict
	for i, bit := range [...]uint8{purposeAds, purposeAnalytics, purposeAdUserData, purposeAdPersonalization} {
		pos := 2 + 2*i
		if pos >= len(s) {
			break
		}
		v.set(bit, gcdLetter(s[pos]))
	}
	return v
}

// parseGCS reads the gcs parameter, G1<ad_storage><analytics_storage>.
func parseGCS(s string) verdict {
	var v verdict
	if len(s) < 4 || s[0] != 'G' || s[1] != '1' {
		return v
	}
	for i, bit := range [...]uint8{purposeAds, purposeAnalytics} {
		switch s[2+i] {
		case '1':
			v.granted |= bit
		case '0':
			v.denied |= bit
		}
	}
	return v
}

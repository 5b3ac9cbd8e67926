package enrich

import (
	"embed"
	"fmt"
	"strings"
)

// shippedData holds the shipped lookup tables (source categories, alias maps,
// referrer list, event names, bot tokens). It is read-only; each stage parses
// what it needs once, at construction.
//
//go:embed data/*.tsv
var shippedData embed.FS

// Default channel groups of GA4 (https://support.google.com/analytics/answer/9756891).
// The names are GA4's, spelled as GA4 reports them, so that sidetrack's
// `channel` can be compared with GA4's "Session default channel group".
const (
	ChannelDirect          = "Direct"
	ChannelCrossNetwork    = "Cross-network"
	ChannelPaidShopping    = "Paid Shopping"
	ChannelPaidSearch      = "Paid Search"
	ChannelPaidSocial      = "Paid Social"
	ChannelPaidVideo       = "Paid Video"
	ChannelDisplay         = "Display"
	ChannelPaidOther       = "Paid Other"
	ChannelOrganicShopping = "Organic Shopping"
	ChannelOrganicSocial   = "Organic Social"
	ChannelOrganicVideo    = "Organic Video"
	ChannelOrganicSearch   = "Organic Search"
	ChannelReferral        = "Referral"
	ChannelEmail           = "Email"
	ChannelAffiliates      = "Affiliates"
	ChannelAudio           = "Audio"
	ChannelSMS             = "SMS"
	ChannelMobilePush      = "Mobile Push Notifications"
	ChannelUnassigned      = "Unassigned"
)

// SourceCategory is GA4's category of a traffic source (the
// SOURCE_CATEGORY_* lists behind the channel rules).
type SourceCategory uint8

// Source categories. CategoryNone is a source in none of GA4's lists.
const (
	CategoryNone SourceCategory = iota
	CategorySearch
	CategorySocial
	CategoryShopping
	CategoryVideo
)

// Channels assigns GA4 default channel groups. It is immutable after
// construction and safe for concurrent use.
type Channels struct {
	cats map[string]SourceCategory
}

// NewChannels loads GA4's source categories shipped in
// enrich/data/source_categories.tsv.
func NewChannels() (*Channels, error) {
	c := &Channels{cats: make(map[string]SourceCategory, 900)}
	err := readDataTSV("source_categories.tsv", 2, 2, func(f []string) error {
		var cat SourceCategory
		switch f[1] {
		case "search":
			cat = CategorySearch
		case "social":
			cat = CategorySocial
		case "shopping":
			cat = CategoryShopping
		case "video":
			cat = CategoryVideo
		default:
			return fmt.Errorf("unknown category %q (want search, social, shopping or video)", f[1])
		}
		c.cats[strings.ToLower(f[0])] = cat
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Category returns GA4's category of source (compared in lower case, as GA4
// does not enforce case).
func (c *Channels) Category(source string) SourceCategory {
	if attrHasUpper(source) {
		source = strings.ToLower(source)
	}
	return c.cats[source]
}

// Classify returns the GA4 default channel group of a source, medium and
// campaign name. The rules are GA4's, evaluated top-down in GA4's documented
// order, first match wins:
//
//	Direct            source "(direct)" and medium "(none)" or "(not set)"
//	Cross-network     campaign contains "cross-network"
//	Paid Shopping     (shopping source or shopping campaign) and paid medium
//	Paid Search       search source and paid medium
//	Paid Social       social source and paid medium
//	Paid Video        video source and paid medium
//	Display           medium display, banner, expandable, interstitial or cpm
//	Paid Other        paid medium
//	Organic Shopping  shopping source or shopping campaign
//	Organic Social    social source or medium social, social-network,
//	                  social-media, sm, "social network", "social media"
//	Organic Video     video source or medium containing "video"
//	Organic Search    search source or medium "organic"
//	Referral          medium referral, app or link
//	Email             source or medium email, e-mail, e_mail, "e mail"
//	Affiliates        medium affiliate
//	Audio             medium audio
//	SMS               source or medium sms
//	Mobile Push       medium ending in "push" or containing "mobile" or
//	                  "notification", or source "firebase"
//	Unassigned        anything else
//
// "Paid medium" is GA4's ^(.*cp.*|ppc|retargeting|paid.*)$ and "shopping
// campaign" its ^(.*(([^a-df-z]|^)shop|shopping).*)$. Values are compared
// in lower case. GA4's rules on Google Ads / DV360 / SA360 ad-network
// dimensions have no counterpart here: sidetrack sees only what the page
// URL says.
func (c *Channels) Classify(source, medium, campaign string) string {
	if attrHasUpper(source) {
		source = strings.ToLower(source)
	}
	if attrHasUpper(medium) {
		medium = strings.ToLower(medium)
	}
	if attrHasUpper(campaign) {
		campaign = strings.ToLower(campaign)
	}
	if source == "(direct)" && (medium == "(none)" || medium == "(not set)") {
		return ChannelDirect
	}
	if strings.Contains(campaign, "cross-network") {
		return ChannelCrossNetwork
	}
	cat := c.cats[source]
	paid := isPaidMediumGA4(medium)
	shopCampaign := isShoppingCampaign(campaign)
	if paid {
		switch {
		case cat == CategoryShopping || shopCampaign:
			return ChannelPaidShopping
		case cat == CategorySearch:
			return ChannelPaidSearch
		case cat == CategorySocial:
			return ChannelPaidSocial
		case cat == CategoryVideo:
			return ChannelPaidVideo
		}
	}
	switch medium {
	case "display", "banner", "expandable", "interstitial", "cpm":
		return ChannelDisplay
	}
	if paid {
		return ChannelPaidOther
	}
	if cat == CategoryShopping || shopCampaign {
		return ChannelOrganicShopping
	}
	if cat == CategorySocial {
		return ChannelOrganicSocial
	}
	switch medium {
	case "social", "social-network", "social-media", "sm", "social network", "social media":
		return ChannelOrganicSocial
	}
	if cat == CategoryVideo || strings.Contains(medium, "video") {
		return ChannelOrganicVideo
	}
	if cat == CategorySearch || medium == "organic" {
		return ChannelOrganicSearch
	}
	switch medium {
	case "referral", "app", "link":
		return ChannelReferral
	}
	if isEmailWord(source) || isEmailWord(medium) {
		return ChannelEmail
	}
	switch {
	case medium == "affiliate":
		return ChannelAffiliates
	case medium == "audio":
		return ChannelAudio
	case source == "sms" || medium == "sms":
		return ChannelSMS
	case strings.HasSuffix(medium, "push") || strings.Contains(medium, "mobile") ||
		strings.Contains(medium, "notification") || source == "firebase":
		return ChannelMobilePush
	}
	return ChannelUnassigned
}

// isPaidMediumGA4 is GA4's paid-medium pattern ^(.*cp.*|ppc|retargeting|paid.*)$.
func isPaidMediumGA4(m string) bool {
	return strings.Contains(m, "cp") || m == "ppc" || m == "retargeting" || strings.HasPrefix(m, "paid")
}

// isShoppingCampaign is GA4's ^(.*(([^a-df-z]|^)shop|shopping).*)$: "shopping"
// anywhere, or "shop" at the start or after a byte that is not a lower-case
// letter other than 'e' (so "eshop" and "summer-shop" match, "workshop" does
// not).
func isShoppingCampaign(c string) bool {
	if strings.Contains(c, "shopping") {
		return true
	}
	for i := 0; ; {
		j := strings.Index(c[i:], "shop")
		if j < 0 {
			return false
		}
		j += i
		if j == 0 {
			return true
		}
		if b := c[j-1]; b < 'a' || b > 'z' || b == 'e' {
			return true
		}
		i = j + 1
	}
}

func isEmailWord(s string) bool {
	return s == "email" || s == "e-mail" || s == "e_mail" || s == "e mail"
}

func attrHasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// readDataTSV calls fn for every data line of the embedded file data/name: lines
// split on tabs, fields trimmed, '#' comment lines and blank lines skipped.
// Lines with fewer than min or more than max fields are an error naming the
// file and line, so a broken data file stops start-up instead of silently
// misclassifying traffic.
func readDataTSV(name string, minFields, maxFields int, fn func(fields []string) error) error {
	b, err := shippedData.ReadFile("data/" + name)
	if err != nil {
		return fmt.Errorf("enrich: data file %s: %w", name, err)
	}
	fields := make([]string, 0, maxFields)
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if t := strings.TrimSpace(line); t == "" || t[0] == '#' {
			continue
		}
		fields = fields[:0]
		for _, f := range strings.Split(line, "\t") {
			fields = append(fields, strings.TrimSpace(f))
		}
		for len(fields) > minFields && fields[len(fields)-1] == "" {
			fields = fields[:len(fields)-1]
		}
		if len(fields) < minFields || len(fields) > maxFields || fields[0] == "" {
			return fmt.Errorf("enrich: data file %s line %d: want %d to %d tab-separated fields, got %d",
				name, n+1, minFields, maxFields, len(fields))
		}
		if err := fn(fields); err != nil {
			return fmt.Errorf("enrich: data file %s line %d: %w", name, n+1, err)
		}
	}
	return nil
}

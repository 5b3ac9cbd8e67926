package ga4

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sidetrack/sidetrack/enrich"
)

// GA4 limits enforced locally for the Measurement Protocol, because the
// live endpoint answers 2xx even to payloads it drops. Sources:
// developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events
// ("Limitations", "Reserved names"), .../ga4/reference (the JSON body, "must
// be smaller than 130kB"), .../ga4/user-properties (reserved user property
// names) and support.google.com/analytics/answer/9267744 (collection limits,
// the longer page_location / page_referrer / page_title values).
const (
	// MaxEventsPerRequest is the Measurement Protocol's events per request.
	MaxEventsPerRequest = 25
	// MaxBodyBytes bounds one Measurement Protocol body ("smaller than 130kB").
	MaxBodyBytes = 130000
	// MaxAge is how far back timestamp_micros may go.
	MaxAge = 72 * time.Hour

	maxParams         = 25  // parameters per event
	maxUserProps      = 25  // user properties per request
	maxNameLen        = 40  // event and parameter names
	maxValueLen       = 100 // parameter values (characters)
	maxUserPropName   = 24  // user property names
	maxUserPropValue  = 36  // user property values (characters)
	maxItems          = 200 // items per event
	maxPageLocation   = 1000
	maxPageReferrer   = 420
	maxPageTitle      = 300
	maxRelayBodyBytes = 64 << 10 // sendBeacon's cap, which gtag's own batches respect
)

// ga4Name maps a canonical event name (DESIGN §3, enrich/data/event_aliases.tsv)
// to the GA4 recommended or automatically collected event it stands for, or
// "" when GA4 has no name of its own for it.
func ga4Name(canonical string) string {
	switch canonical {
	case "order_completed":
		return "purchase"
	case "order_refunded":
		return "refund"
	case "checkout_started":
		return "begin_checkout"
	case "payment_info_entered":
		return "add_payment_info"
	case "shipping_info_entered":
		return "add_shipping_info"
	case "product_viewed":
		return "view_item"
	case "product_list_viewed":
		return "view_item_list"
	case "product_clicked":
		return "select_item"
	case "product_added":
		return "add_to_cart"
	case "product_removed":
		return "remove_from_cart"
	case "cart_viewed":
		return "view_cart"
	case "product_wishlisted":
		return "add_to_wishlist"
	case "products_searched":
		return "search"
	case "promotion_viewed":
		return "view_promotion"
	case "promotion_clicked":
		return "select_promotion"
	case "lead_submitted":
		return "generate_lead"
	case "lead_qualified":
		return "qualify_lead"
	case "lead_disqualified":
		return "disqualify_lead"
	case "lead_worked":
		return "working_lead"
	case "lead_converted":
		return "close_convert_lead"
	case "lead_lost":
		return "close_unconvert_lead"
	case "signed_up":
		return "sign_up"
	case "signed_in":
		return "login"
	case "page_viewed":
		return "page_view"
	case "screen_viewed":
		return "screen_view"
	case "page_scrolled":
		return "scroll"
	case "user_engaged":
		return "user_engagement"
	case "session_started":
		return "session_start"
	case "first_visit_started":
		return "first_visit"
	case "outbound_link_clicked":
		return "click"
	case "file_downloaded":
		return "file_download"
	case "form_started":
		return "form_start"
	case "form_submitted":
		return "form_submit"
	case "video_started":
		return "video_start"
	case "video_progressed":
		return "video_progress"
	case "video_completed":
		return "video_complete"
	case "content_selected":
		return "select_content"
	case "content_shared":
		return "share"
	case "virtual_currency_earned":
		return "earn_virtual_currency"
	case "virtual_currency_spent":
		return "spend_virtual_currency"
	case "group_joined":
		return "join_group"
	case "level_started":
		return "level_start"
	case "level_ended":
		return "level_end"
	case "level_advanced":
		return "level_up"
	case "score_posted":
		return "post_score"
	case "tutorial_started":
		return "tutorial_begin"
	case "tutorial_completed":
		return "tutorial_complete"
	case "achievement_unlocked":
		return "unlock_achievement"
	}
	return ""
}

// ga4Synonym reports whether the GA4 event name original is one that the
// naming stage folds into canonical although ga4Name(canonical) is another
// GA4 name (view_search_results and search both become products_searched):
// such an event keeps the name gtag sent.
func ga4Synonym(original, canonical string) bool {
	switch original {
	case "view_search_results":
		return canonical == "products_searched"
	case "first_open":
		return canonical == "first_visit_started"
	}
	return false
}

// eventName returns the GA4 name an event is sent under, and false when
// no valid GA4 name can be made for it. Known canonical names map back to
// GA4's own; an unknown one keeps the name the client sent when that is a
// valid GA4 name, else the canonical name (snake_case), made valid by
// sanitizeName when it is not.
func eventName(e *enrich.Event) (string, bool) {
	if n := ga4Name(e.Name); n != "" {
		if e.OriginalName != n && ga4Synonym(e.OriginalName, e.Name) {
			return e.OriginalName, true
		}
		return n, true
	}
	if validName(e.OriginalName, maxNameLen) {
		return e.OriginalName, true
	}
	if validName(e.Name, maxNameLen) {
		return e.Name, true
	}
	if n, ok := sanitizeName(e.Name); ok {
		return n, true
	}
	return sanitizeName(e.OriginalName)
}

// sanitizeName makes an ASCII name valid: runs of characters GA4 does not
// allow (spaces, '-', '.', …) become one '_', leading and trailing '_'
// go, and the result is cut to 40 characters. A name with non-ASCII
// characters, or that would not start with a letter, cannot be made
// valid without changing what it says.
func sanitizeName(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			return "", false
		case isLetter(c) || c >= '0' && c <= '9':
			b = append(b, c)
		case len(b) > 0 && b[len(b)-1] != '_':
			b = append(b, '_')
		}
	}
	for len(b) > 0 && b[len(b)-1] == '_' {
		b = b[:len(b)-1]
	}
	if len(b) > maxNameLen {
		b = b[:maxNameLen]
		for len(b) > 0 && b[len(b)-1] == '_' {
			b = b[:len(b)-1]
		}
	}
	if !validName(string(b), maxNameLen) {
		return "", false
	}
	return string(b), true
}

// validName reports whether s is a valid GA4 event or parameter name:
// 1 to max ASCII letters, digits and underscores, starting with a letter.
func validName(s string, max int) bool {
	if s == "" || len(s) > max || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// reservedEvent reports whether the Measurement Protocol refuses name: the
// reserved names of sending-events ("Reserved names"), plus screen_view,
// which web data streams must not receive from it.
func reservedEvent(name string) bool {
	switch name {
	case "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward",
		"adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_remove",
		"app_store_refund", "app_store_subscription_cancel", "app_store_subscription_convert",
		"app_store_subscription_renew", "app_update", "app_upgrade", "error", "firebase_campaign",
		"first_open", "first_visit", "in_app_purchase", "os_update",
		"screen_view", "session_start", "session_start_with_rollout", "user_engagement":
		return true
	}
	// dynamic_link_app_open, _app_update, _first_open; notification_dismiss,
	// _foreground, _open, _receive, _send: the families are reserved whole.
	return strings.HasPrefix(name, "dynamic_link_") || strings.HasPrefix(name, "notification_") ||
		reservedPrefix(name)
}

// reservedPrefix reports whether a name starts with a prefix GA4 keeps for
// itself (events, parameters and user properties alike).
func reservedPrefix(name string) bool {
	return strings.HasPrefix(name, "_") || strings.HasPrefix(name, "firebase_") ||
		strings.HasPrefix(name, "ga_") || strings.HasPrefix(name, "google_") ||
		strings.HasPrefix(name, "gtag.")
}

// reservedParam reports whether a custom event parameter name may not be
// sent: the reserved parameter name and the reserved prefixes. (A custom
// parameter named like one sidetrack fills from the canonical event, such
// as value, is left out because the name is taken.)
func reservedParam(name string) bool {
	return name == "firebase_conversion" || reservedPrefix(name)
}

// reservedUserProp reports whether a user property name may not be sent
// (sending-events and user-properties, "Reserved names").
func reservedUserProp(name string) bool {
	switch name {
	case "first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id",
		"first_open_after_install":
		return true
	}
	return reservedPrefix(name)
}

// cut returns s shortened to at most n characters (code points), never
// splitting one; GA4 counts characters, not bytes.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i, count := 0, 0
	for i < len(s) && count < n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		count++
	}
	return s[:i]
}

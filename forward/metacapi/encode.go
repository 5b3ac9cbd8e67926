package metacapi

import (
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// EventName returns the Meta event name for a canonical sidetrack name:
// the standard event where one exists, else the name itself (a custom
// event).
func EventName(canonical string) string {
	switch canonical {
	case "order_completed":
		return "Purchase"
	case "lead_submitted":
		return "Lead"
	case "product_added":
		return "AddToCart"
	case "checkout_started":
		return "InitiateCheckout"
	case "product_viewed":
		return "ViewContent"
	case "page_viewed":
		return "PageView"
	case "signed_up":
		return "CompleteRegistration"
	case "products_searched":
		return "Search"
	case "payment_info_entered":
		return "AddPaymentInfo"
	case "product_wishlisted":
		return "AddToWishlist"
	case "contact_submitted":
		return "Contact"
	case "subscription_started":
		return "Subscribe"
	case "trial_started":
		return "StartTrial"
	case "application_submitted":
		return "SubmitApplication"
	case "appointment_scheduled":
		return "Schedule"
	case "donation_made":
		return "Donate"
	case "location_searched":
		return "FindLocation"
	case "product_customized":
		return "CustomizeProduct"
	}
	return canonical
}

// Action sources sent (Meta's enum also has app, phone_call, chat, email,
// physical_store, system_generated and business_messaging, which no
// sidetrack source produces).
const (
	actionWebsite = "website"
	actionOther   = "other"
)

// view is what Send needs of an event beyond the event itself, decided by
// the same checks Prepare runs.
type view struct {
	name    string
	id      string
	time    int64 // unix seconds
	url     string
	action  string
	contact bool // hashed contact data and the IP may be sent
	ads     bool // the _fbc/_fbp cookies may be sent
	ip      netip.Addr
}

// view fills v for e at now, or returns why Meta must not get e (a
// permanent error: retrying cannot fix it).
func (a *Adapter) view(e *enrich.Event, now time.Time, v *view) error {
	*v = view{}
	v.name = EventName(e.Name)
	if v.name == "" {
		v.name = e.OriginalName
	}
	if v.name == "" {
		return status.Permanentf("the event has no name")
	}
	v.id = eventID(e)

	t := e.OccurredAt
	if t.IsZero() {
		t = e.ReceivedAt
	}
	switch age := now.Sub(t); {
	case t.IsZero():
		return status.Permanentf("the event has no time")
	case age > MaxAge-ageMargin:
		return status.Permanentf("event_time %s is older than Meta's 7-day limit", t.UTC().Format(time.RFC3339))
	case age < -MaxFuture:
		return status.Permanentf("event_time %s is more than %s in the future", t.UTC().Format(time.RFC3339), MaxFuture)
	case age < 0:
		t = now // a client clock slightly ahead
	}
	v.time = t.Unix()

	v.url = sourceURL(e)
	v.action = actionOther
	if v.url != "" {
		v.action = actionWebsite
	}

	v.contact = e.Consent.AdUserData != enrich.Denied
	v.ads = e.Consent.Ads != enrich.Denied
	if v.contact && a.openIP != nil && e.Context.IP != "" {
		ip, err := a.openIP(e.Context.IP)
		if err == nil && ip.IsValid() {
			v.ip = ip.Unmap()
		} else {
			a.log.Debug("sealed client IP did not open; sent without it", zap.Error(err))
		}
	}
	if !v.matchable(e) {
		return status.Permanentf("no customer information parameter Meta can match (em, ph, external_id, fbc, fbp, or client IP with user agent)%s",
			consentNote(v))
	}
	if v.name == "Purchase" && (!e.Commerce.Value.Set || !validCurrency(e.Commerce.Currency)) {
		return status.Permanentf("a Purchase needs value and a currency code (ISO 4217)")
	}
	return nil
}

func consentNote(v *view) string {
	if !v.contact {
		return "; ad_user_data consent is denied, so none of the hashed contact data or the IP may be sent"
	}
	return ""
}

// matchable reports whether e has one of the customer information
// parameters Meta can match an event with on their own.
func (v *view) matchable(e *enrich.Event) bool {
	u := &e.UserData
	if v.contact && (isHash(u.EM) || isHash(u.PH) || validExternalID(u.ExternalID)) {
		return true
	}
	if v.ads && (validFB(e.Attribution.FBC) || validFB(e.Attribution.FBP)) {
		return true
	}
	return v.ip.IsValid() && validUA(e.Context.UserAgent)
}

// eventID is the event_id Meta deduplicates with the browser pixel's
// eventID: a Purchase carries its transaction id (the one value the page,
// the shop's backend and the pixel all know, whichever source reached
// sidetrack first); any other event its event_id as the client sent it
// (ep.event_id, event_id, messageId) or as sidetrack derived it.
func eventID(e *enrich.Event) string {
	if e.Name == "order_completed" && e.Commerce.TransactionID != "" {
		return e.Commerce.TransactionID
	}
	return e.EventID
}

// sourceURL is the event_source_url: the event's page URL when it is an
// http(s) URL, else for a server event the site it reports about
// (https://<host>/) when the request named a public host.
func sourceURL(e *enrich.Event) string {
	if isHTTPURL(e.URL) {
		return e.URL
	}
	if e.URL == "" && publicHost(e.Host) {
		return "https://" + e.Host + "/"
	}
	return ""
}

func isHTTPURL(s string) bool {
	return len(s) > len("http://") && (strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://"))
}

// publicHost reports whether h looks like a public DNS name (no port, not
// an IP, not localhost, at least one dot).
func publicHost(h string) bool {
	if h == "" || len(h) > 253 || strings.IndexByte(h, '.') <= 0 || strings.HasSuffix(h, ".") {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return !strings.HasSuffix(strings.ToLower(h), ".localhost") && !strings.HasSuffix(strings.ToLower(h), ".local")
}

// isHash reports whether s is a SHA-256 in lower-case hex, the only form
// of contact data Meta takes (and the only form sidetrack stores).
func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validExternalID accepts any printable id up to 256 bytes: Meta
// recommends hashing external_id but accepts it as is.
func validExternalID(s string) bool { return s != "" && len(s) <= 256 && printable(s) }

// validFB accepts a well-formed _fbc/_fbp value.
func validFB(s string) bool { return enrich.ValidFBCookie(s) }

func validUA(s string) bool { return s != "" && len(s) <= 2048 && utf8.ValidString(s) }

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}

func validCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if x := c[i] | 0x20; x < 'a' || x > 'z' {
			return false
		}
	}
	return true
}

// appendEvent appends e as one Conversions API server event.
func (a *Adapter) appendEvent(b []byte, e *enrich.Event, v *view) []byte {
	w := jsonw{b: b}
	w.open('{')
	w.str("event_name", v.name)
	w.int("event_time", v.time)
	w.str("event_id", v.id)
	w.str("action_source", v.action)
	w.str("event_source_url", v.url)

	w.key("user_data")
	w.open('{')
	if u := &e.UserData; v.contact {
		w.hash("em", u.EM)
		w.hash("ph", u.PH)
		w.hash("fn", u.FN)
		w.hash("ln", u.LN)
		w.hash("ct", u.CT)
		w.hash("st", u.ST)
		w.hash("zp", u.ZP)
		w.hash("country", u.Country)
		w.hash("db", u.DB)
		w.hash("ge", u.GE)
		if validExternalID(u.ExternalID) {
			w.key("external_id")
			w.b = append(w.b, '[')
			w.b = appendString(w.b, u.ExternalID)
			w.b = append(w.b, ']')
		}
		if v.ip.IsValid() {
			w.key("client_ip_address")
			w.b = append(w.b, '"')
			w.b = v.ip.AppendTo(w.b)
			w.b = append(w.b, '"')
		}
	}
	if validUA(e.Context.UserAgent) {
		w.str("client_user_agent", e.Context.UserAgent)
	}
	if at := &e.Attribution; v.ads {
		if validFB(at.FBC) {
			w.str("fbc", at.FBC)
		}
		if validFB(at.FBP) {
			w.str("fbp", at.FBP)
		}
	}
	w.close('}')

	a.appendCustomData(&w, e, v)

	if a.ldu {
		// Limited Data Use with country and state 0: Meta geolocates the
		// event and applies LDU where the state's law asks for it.
		w.key("data_processing_options")
		w.b = append(w.b, `["LDU"]`...)
		w.int0("data_processing_options_country", 0)
		w.int0("data_processing_options_state", 0)
	}
	w.close('}')
	return w.b
}

// appendCustomData appends custom_data when the event has any.
func (a *Adapter) appendCustomData(w *jsonw, e *enrich.Event, v *view) {
	c := &e.Commerce
	search := ""
	if v.name == "Search" {
		search = stringProp(e.Properties, "search_term", "query", "search_string")
	}
	if !c.Value.Set && c.Currency == "" && c.TransactionID == "" && len(c.Items) == 0 && search == "" {
		return
	}
	w.key("custom_data")
	w.open('{')
	if c.Value.Set {
		w.num("value", c.Value.V)
	}
	if c.Currency != "" {
		w.str("currency", strings.ToUpper(c.Currency))
	}
	if n := itemsWithID(c.Items); n > 0 {
		// Meta needs an id in every contents entry; an item without one
		// still counts in num_items.
		w.key("contents")
		w.b = append(w.b, '[')
		k := 0
		for i := range c.Items {
			it := &c.Items[i]
			if it.ID == "" {
				continue
			}
			if k > 0 {
				w.b = append(w.b, ',')
			}
			k++
			w.open('{')
			w.str("id", it.ID)
			w.num("quantity", quantity(it))
			if it.Price.Set {
				w.num("item_price", it.Price.V)
			}
			w.close('}')
		}
		w.b = append(w.b, ']')
		w.key("content_ids")
		w.b = append(w.b, '[')
		k = 0
		for i := range c.Items {
			if c.Items[i].ID == "" {
				continue
			}
			if k > 0 {
				w.b = append(w.b, ',')
			}
			k++
			w.b = appendString(w.b, c.Items[i].ID)
		}
		w.b = append(w.b, ']')
		w.str("content_type", "product")
		if n == 1 && len(c.Items) == 1 {
			w.str("content_name", c.Items[0].Name)
			w.str("content_category", c.Items[0].Category)
		}
	}
	if len(c.Items) > 0 {
		var total float64
		for i := range c.Items {
			total += quantity(&c.Items[i])
		}
		w.int("num_items", int64(math.Round(total)))
	}
	w.str("order_id", c.TransactionID)
	w.str("search_string", search)
	w.close('}')
}

func itemsWithID(items []enrich.Item) int {
	n := 0
	for i := range items {
		if items[i].ID != "" {
			n++
		}
	}
	return n
}

// quantity is an item's quantity; an item without one counts once.
func quantity(it *enrich.Item) float64 {
	if it.Quantity.Set {
		return it.Quantity.V
	}
	return 1
}

func stringProp(p enrich.Props, keys ...string) string {
	for _, k := range keys {
		if x, ok := p.Get(k); ok && x.Kind == enrich.PropString && x.Str != "" {
			return x.Str
		}
	}
	return ""
}

// jsonw appends JSON without reflection: a 1000-event request is encoded
// on every Send, and again in part while bisecting.
type jsonw struct {
	b     []byte
	first bool
}

func (w *jsonw) open(c byte)  { w.b = append(w.b, c); w.first = true }
func (w *jsonw) close(c byte) { w.b = append(w.b, c); w.first = false }

func (w *jsonw) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *jsonw) str(k, v string) {
	if v == "" {
		return
	}
	w.key(k)
	w.b = appendString(w.b, v)
}

func (w *jsonw) int(k string, v int64) {
	if v == 0 {
		return
	}
	w.int0(k, v)
}

func (w *jsonw) int0(k string, v int64) {
	w.key(k)
	w.b = strconv.AppendInt(w.b, v, 10)
}

func (w *jsonw) num(k string, v float64) {
	w.key(k)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	w.b = strconv.AppendFloat(w.b, v, 'f', -1, 64)
}

// hash appends a hashed customer information parameter as a one-element
// array (Meta takes string or list<string>); anything that is not a
// lower-case SHA-256 is left out rather than sent as contact data.
func (w *jsonw) hash(k, v string) {
	if !isHash(v) {
		return
	}
	w.key(k)
	w.b = append(w.b, '[', '"')
	w.b = append(w.b, v...)
	w.b = append(w.b, '"', ']')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte { return enrich.AppendJSONString(b, s) }

package ga4

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// sendMP sends the Measurement Protocol events of batch (w.mp). Request
// level fields (client_id, user_id, consent, user_data, user_properties,
// ip_override, user_location, device) are encoded per event; events with
// the same ones share a request of at most 25 events and 130 kB.
func (a *Adapter) sendMP(ctx context.Context, w *work, batch []*enrich.Event, per []error, now time.Time) {
	w.buf, w.spans = w.buf[:0], w.spans[:0]
	nowMicros := now.UnixMicro()
	for _, i := range w.mp {
		e := batch[i]
		name, _ := eventName(e) // check accepted it
		var sp span
		sp.ctx = len(w.buf)
		w.buf = a.appendMPHead(w.buf, e)
		sp.ctxEnd, sp.line = len(w.buf), len(w.buf)
		sp.ts = min(eventTime(e).UnixMicro(), nowMicros)
		w.buf = appendMPEvent(w.buf, e, name, sp.ts)
		sp.lineEnd = len(w.buf)
		w.spans = append(w.spans, sp)
	}
	w.done = append(w.done[:0], make([]bool, len(w.spans))...)
	for k := range w.spans {
		if w.done[k] {
			continue
		}
		khead := w.buf[w.spans[k].ctx:w.spans[k].ctxEnd]
		w.idx = w.idx[:0]
		for j := k; j < len(w.spans); j++ {
			sj := &w.spans[j]
			if !w.done[j] && bytes.Equal(w.buf[sj.ctx:sj.ctxEnd], khead) {
				w.idx = append(w.idx, j)
				w.done[j] = true
			}
		}
		for start := 0; start < len(w.idx); {
			end := a.fitMP(w, khead, start)
			if end == start {
				// One event alone is over the limit: nothing can send it.
				per[w.mp[w.idx[start]]] = status.Permanentf("the event's Measurement Protocol body is over %d bytes", MaxBodyBytes)
				w.partial = true
				start++
				continue
			}
			a.requestMP(ctx, w, batch, per, khead, w.idx[start:end])
			start = end
		}
	}
}

// fitMP returns the end of the longest run of w.idx from start that fits
// one request: at most 25 events, body under MaxBodyBytes.
func (a *Adapter) fitMP(w *work, head []byte, start int) int {
	size := len(`{"timestamp_micros":,"events":[]}`) + len(head) + 20
	end := start
	for ; end < len(w.idx) && end-start < MaxEventsPerRequest; end++ {
		sp := &w.spans[w.idx[end]]
		n := sp.lineEnd - sp.line + 1
		if size+n >= MaxBodyBytes {
			break
		}
		size += n
	}
	return end
}

// requestMP sends the events idx (positions in w.spans) as one request,
// after the debug endpoint when validate is on.
func (a *Adapter) requestMP(ctx context.Context, w *work, batch []*enrich.Event, per []error, head []byte, idx []int) {
	w.groups++
	if a.validate {
		w.body = a.encodeMP(w.body[:0], w, head, idx)
		answer, err := a.post(ctx, w, a.debugURL, a.mpHost, "application/json", userAgent, w.body, debugMax)
		if err != nil {
			for _, j := range idx {
				per[w.mp[j]] = err
			}
			return
		}
		msgs, perr := parseValidation(answer)
		if perr != nil {
			err := status.Retry(errors.New("the Measurement Protocol debug endpoint's answer is not validation JSON: " + status.Excerpt(string(answer))))
			for _, j := range idx {
				per[w.mp[j]] = err
			}
			return
		}
		if len(msgs) > 0 {
			w.partial = true
			bad := make([]error, len(idx))
			for _, m := range msgs {
				err := status.Permanentf("GA4 validation: %s %s: %s", m.ValidationCode, m.FieldPath, m.Description)
				if m.Index >= 0 && m.Index < len(idx) {
					if bad[m.Index] == nil {
						bad[m.Index] = err
					}
					continue
				}
				for n := range bad { // about the request, not one event
					if bad[n] == nil {
						bad[n] = err
					}
				}
			}
			kept := idx[:0:0]
			for n, j := range idx {
				if bad[n] != nil {
					per[w.mp[j]] = bad[n]
					continue
				}
				kept = append(kept, j)
			}
			if len(kept) == 0 {
				return
			}
			idx = kept
		}
	}
	w.body = a.encodeMP(w.body[:0], w, head, idx)
	_, err := a.post(ctx, w, a.mpURL, a.mpHost, "application/json", userAgent, w.body, 0)
	for _, j := range idx {
		per[w.mp[j]] = err
	}
}

// encodeMP writes one request body: the shared head, the first event's
// time as the request's timestamp_micros, and the events.
func (a *Adapter) encodeMP(b []byte, w *work, head []byte, idx []int) []byte {
	b = append(b, '{')
	b = append(b, head...)
	b = append(b, `"timestamp_micros":`...)
	b = strconv.AppendInt(b, w.spans[idx[0]].ts, 10)
	b = append(b, `,"events":[`...)
	for n, j := range idx {
		if n > 0 {
			b = append(b, ',')
		}
		sp := &w.spans[j]
		b = append(b, w.buf[sp.line:sp.lineEnd]...)
	}
	return append(b, "]}"...)
}

// appendMPHead appends the request-level fields of e, each followed by a
// comma.
func (a *Adapter) appendMPHead(b []byte, e *enrich.Event) []byte {
	b = append(b, `"client_id":`...)
	b = appendJSONString(b, clientID(e))
	b = append(b, ',')
	if e.UserID != "" {
		b = append(b, `"user_id":`...)
		b = appendJSONString(b, cut(e.UserID, 256))
		b = append(b, ',')
	}
	c := &e.Consent
	if c.AdPersonalization == enrich.Denied || c.NPA == "1" {
		b = append(b, `"non_personalized_ads":true,`...)
	}
	if c.AdUserData != enrich.Unknown || c.AdPersonalization != enrich.Unknown {
		b = append(b, `"consent":{`...)
		first := true
		for _, f := range [...]struct {
			key string
			st  enrich.ConsentState
		}{{"ad_user_data", c.AdUserData}, {"ad_personalization", c.AdPersonalization}} {
			if f.st == enrich.Unknown {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, '"')
			b = append(b, f.key...)
			b = append(b, `":"`...)
			if f.st == enrich.Granted {
				b = append(b, "GRANTED"...)
			} else {
				b = append(b, "DENIED"...)
			}
			b = append(b, '"')
		}
		b = append(b, "},"...)
	}
	b = appendUserProps(b, e.UserProperties)
	if c.AdUserData == enrich.Granted {
		b = appendUserData(b, &e.UserData.Google)
	}
	if ip := a.clientIP(e); ip != "" {
		b = append(b, `"ip_override":`...)
		b = appendJSONString(b, ip)
		b = append(b, ',')
	}
	if ctry := e.Context.Country; len(ctry) == 2 && isCode(ctry) {
		// ISO 3166-1 alpha-2 and ISO 3166-2, as the geo stage writes them.
		b = append(b, `"user_location":{"country_id":"`...)
		b = append(b, ctry...)
		if r := e.Context.Region; r != "" && len(r) <= 3 && isCode(r) {
			b = append(b, `","region_id":"`...)
			b = append(b, ctry...)
			b = append(b, '-')
			b = append(b, r...)
		}
		b = append(b, `"},`...)
	}
	if e.Context.Locale != "" || e.Context.Screen != "" {
		b = append(b, `"device":{`...)
		if e.Context.Locale != "" {
			b = append(b, `"language":`...)
			b = appendJSONString(b, cut(e.Context.Locale, maxValueLen))
			if e.Context.Screen != "" {
				b = append(b, ',')
			}
		}
		if e.Context.Screen != "" {
			b = append(b, `"screen_resolution":`...)
			b = appendJSONString(b, cut(e.Context.Screen, maxValueLen))
		}
		b = append(b, "},"...)
	}
	return b
}

// appendUserProps appends "user_properties":{…}, with GA4's limits: 25
// properties, names of at most 24 valid characters and not reserved,
// values of at most 36 characters. Others are left out.
func appendUserProps(b []byte, props enrich.Props) []byte {
	n := 0
	for i := range props {
		p := &props[i]
		if n == maxUserProps {
			break
		}
		if !validName(p.Key, maxUserPropName) || reservedUserProp(p.Key) || propSeen(props[:i], p.Key) {
			continue
		}
		if p.Kind == enrich.PropNumber && (math.IsNaN(p.Num) || math.IsInf(p.Num, 0)) {
			continue
		}
		if n == 0 {
			b = append(b, `"user_properties":{`...)
		} else {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, p.Key)
		b = append(b, `:{"value":`...)
		switch p.Kind {
		case enrich.PropNumber:
			b = strconv.AppendFloat(b, p.Num, 'f', -1, 64)
		case enrich.PropBool:
			b = strconv.AppendQuote(b, strconv.FormatBool(p.Bool))
		default:
			b = appendJSONString(b, cut(p.Str, maxUserPropValue))
		}
		b = append(b, '}')
	}
	if n > 0 {
		b = append(b, "},"...)
	}
	return b
}

// appendUserData appends "user_data":{…} from Google-normalized SHA-256
// hashes (enhanced measurement). City, region, postal code and country go
// to Google in the clear, which sidetrack never keeps: they are left out.
func appendUserData(b []byte, g *enrich.GoogleUserData) []byte {
	if !isHash(g.EM) && !isHash(g.PH) && !isHash(g.FN) && !isHash(g.LN) {
		return b
	}
	b = append(b, `"user_data":{`...)
	first := true
	sep := func() {
		if !first {
			b = append(b, ',')
		}
		first = false
	}
	if isHash(g.EM) {
		sep()
		b = append(b, `"sha256_email_address":["`...)
		b = append(b, g.EM...)
		b = append(b, `"]`...)
	}
	if isHash(g.PH) {
		sep()
		b = append(b, `"sha256_phone_number":["`...)
		b = append(b, g.PH...)
		b = append(b, `"]`...)
	}
	if isHash(g.FN) || isHash(g.LN) {
		sep()
		b = append(b, `"address":[{`...)
		if isHash(g.FN) {
			b = append(b, `"sha256_first_name":"`...)
			b = append(b, g.FN...)
			b = append(b, '"')
			if isHash(g.LN) {
				b = append(b, ',')
			}
		}
		if isHash(g.LN) {
			b = append(b, `"sha256_last_name":"`...)
			b = append(b, g.LN...)
			b = append(b, '"')
		}
		b = append(b, "}]"...)
	}
	return append(b, "},"...)
}

// isCode reports whether s is upper-case letters and digits.
func isCode(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isHash reports whether s is 64 lower-case hex digits (a SHA-256).
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

// mpParams writes an event's params object, keeping GA4's limit of 25
// parameters: the ones GA4 needs to place the event (session, engagement,
// page, commerce) first, then the custom ones in order. Parameters past
// the limit, with invalid or reserved names, and values past 100
// characters (page_location 1000, page_referrer 420, page_title 300) are
// cut or left out, as GA4 itself would drop them.
type mpParams struct {
	b    []byte
	n    int
	keys [maxParams]string // written so far: a custom parameter never repeats one
}

func (p *mpParams) key(k string) bool {
	if p.n == maxParams {
		return false
	}
	if p.n > 0 {
		p.b = append(p.b, ',')
	}
	p.keys[p.n] = k
	p.n++
	p.b = appendJSONString(p.b, k)
	p.b = append(p.b, ':')
	return true
}

// has reports whether k was written already.
func (p *mpParams) has(k string) bool {
	for _, seen := range p.keys[:p.n] {
		if seen == k {
			return true
		}
	}
	return false
}

func (p *mpParams) str(k, v string, max int) {
	if v != "" && p.key(k) {
		p.b = appendJSONString(p.b, cut(v, max))
	}
}

func (p *mpParams) num(k string, v enrich.OptFloat) {
	if v.Set && !math.IsNaN(v.V) && !math.IsInf(v.V, 0) && p.key(k) {
		p.b = strconv.AppendFloat(p.b, v.V, 'f', -1, 64)
	}
}

// appendMPEvent appends one event object.
func appendMPEvent(b []byte, e *enrich.Event, name string, ts int64) []byte {
	b = append(b, `{"name":`...)
	b = appendJSONString(b, name)
	b = append(b, `,"timestamp_micros":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"params":{`...)
	p := mpParams{b: b}
	p.str("session_id", sessionID(e), maxValueLen)
	if p.key("engagement_time_msec") {
		// GA4 counts an event as user activity (Realtime, engagement) only
		// with engagement time; 1 ms when the client measured none.
		p.b = strconv.AppendInt(p.b, max(e.GA.EngagementMS, 1), 10)
	}
	p.str("page_location", e.URL, maxPageLocation)
	p.str("page_referrer", e.Referrer, maxPageReferrer)
	p.str("page_title", e.Title, maxPageTitle)
	cm := &e.Commerce
	p.str("currency", cm.Currency, maxValueLen)
	p.num("value", cm.Value)
	p.str("transaction_id", cm.TransactionID, maxValueLen)
	p.num("tax", cm.Tax)
	p.num("shipping", cm.Shipping)
	p.str("coupon", cm.Coupon, maxValueLen)
	if len(cm.Items) > 0 && p.key("items") {
		p.b = appendMPItems(p.b, cm.Items)
	}
	if e.GA.Debug && p.key("debug_mode") {
		p.b = append(p.b, "true"...)
	}
	if at := &e.Attribution; at.UTMSource != "" && !strings.Contains(e.URL, "utm_") {
		p.str("source", at.UTMSource, maxValueLen)
		p.str("medium", at.UTMMedium, maxValueLen)
		p.str("campaign", at.UTMCampaign, maxValueLen)
		p.str("term", at.UTMTerm, maxValueLen)
		p.str("content", at.UTMContent, maxValueLen)
		p.str("campaign_id", at.UTMID, maxValueLen)
	}
	p.str("event_id", e.EventID, maxValueLen)
	for i := range e.Properties {
		x := &e.Properties[i]
		if !validName(x.Key, maxNameLen) || reservedParam(x.Key) || p.has(x.Key) {
			continue
		}
		switch x.Kind {
		case enrich.PropNumber:
			p.num(x.Key, enrich.Some(x.Num))
		case enrich.PropBool:
			p.str(x.Key, strconv.FormatBool(x.Bool), maxValueLen)
		default:
			p.str(x.Key, x.Str, maxValueLen)
		}
	}
	return append(p.b, "}}"...)
}

// appendMPItems appends the items array (at most 200 items).
func appendMPItems(b []byte, items []enrich.Item) []byte {
	b = append(b, '[')
	for n := range items {
		if n == maxItems {
			break
		}
		if n > 0 {
			b = append(b, ',')
		}
		it := &items[n]
		p := mpParams{b: append(b, '{')}
		p.str("item_id", it.ID, maxValueLen)
		p.str("item_name", it.Name, maxValueLen)
		p.str("affiliation", it.Affiliation, maxValueLen)
		p.str("coupon", it.Coupon, maxValueLen)
		p.num("discount", it.Discount)
		p.num("index", it.Index)
		p.str("item_brand", it.Brand, maxValueLen)
		p.str("item_category", it.Category, maxValueLen)
		p.str("item_category2", it.Category2, maxValueLen)
		p.str("item_category3", it.Category3, maxValueLen)
		p.str("item_category4", it.Category4, maxValueLen)
		p.str("item_category5", it.Category5, maxValueLen)
		p.str("item_list_id", it.ListID, maxValueLen)
		p.str("item_list_name", it.ListName, maxValueLen)
		p.str("item_variant", it.Variant, maxValueLen)
		p.str("location_id", it.LocationID, maxValueLen)
		p.num("price", it.Price)
		p.num("quantity", it.Quantity)
		b = append(p.b, '}')
	}
	return append(b, ']')
}

func propSeen(before enrich.Props, key string) bool {
	for i := range before {
		if before[i].Key == key {
			return true
		}
	}
	return false
}

// validationMessage is one entry of the debug endpoint's answer, with the
// event it is about (its position in the request's events, -1 when it is
// about the request).
type validationMessage struct {
	FieldPath      string `json:"fieldPath"`
	Description    string `json:"description"`
	ValidationCode string `json:"validationCode"`
	Index          int    `json:"-"`
}

// parseValidation reads the debug endpoint's answer,
// {"validationMessages":[{"fieldPath","description","validationCode"}]}
// (developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events).
// Which event a message is about is read from the field path ("events[3]…",
// "#/events/3/…") or the description ("Event at index: [3] …").
func parseValidation(body []byte) ([]validationMessage, error) {
	var v struct {
		ValidationMessages *[]validationMessage `json:"validationMessages"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	if v.ValidationMessages == nil {
		return nil, errors.New("no validationMessages")
	}
	msgs := *v.ValidationMessages
	for i := range msgs {
		m := &msgs[i]
		m.Index = messageIndex(m.FieldPath, m.Description)
		m.FieldPath = status.Excerpt(cut(m.FieldPath, 100))
		m.Description = status.Excerpt(cut(m.Description, 200))
		m.ValidationCode = status.Excerpt(cut(m.ValidationCode, 40))
	}
	return msgs, nil
}

// messageIndex finds the event index a validation message names, or -1.
func messageIndex(fieldPath, description string) int {
	for _, f := range [...]struct{ s, marker string }{
		{fieldPath, "events["}, {fieldPath, "events/"}, {fieldPath, "events."},
		{description, "index: ["}, {description, "index ["}, {description, "index: "},
	} {
		i := strings.Index(f.s, f.marker)
		if i < 0 {
			continue
		}
		rest := f.s[i+len(f.marker):]
		n, digits := 0, 0
		for digits < len(rest) && digits < 4 && rest[digits] >= '0' && rest[digits] <= '9' {
			n = n*10 + int(rest[digits]-'0')
			digits++
		}
		if digits > 0 {
			return n
		}
	}
	return -1
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte { return enrich.AppendJSONString(b, s) }

// bytesView looks at b as a string without copying, for callers that do
// not keep it.
func bytesView(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

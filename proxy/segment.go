package proxy

import (
	"bytes"
	"math"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fastjson"
	"github.com/valyala/fastjson/fastfloat"

	"github.com/sidetrack/sidetrack/enrich"
)

// Segment limits. maxEvent and maxRequest come from the caller (Segment's
// own are 32 KB per message and 500 KB per request); these are ours.
const (
	// segMaxBatch is the most messages one batch may carry. More is
	// answered 413 like an oversized body: no real SDK gets there (they
	// flush at 15–100 messages), so it only stops amplification attacks
	// made of tiny messages.
	segMaxBatch = 2500
	// segMaxProps caps the properties (and user properties) kept per
	// event; the rest is dropped with FlagTruncated. It keeps the
	// unique-key bookkeeping of enrich.Props linear in practice.
	segMaxProps = 500
	// segMaxItems caps products per event (GA4's own item limit); more is
	// dropped with FlagTruncated.
	segMaxItems = 200
	// segMaxNested is the largest compact JSON text kept for a nested
	// property value.
	segMaxNested = 1024
	// segMaxDepth bounds the recursion that renders nested values.
	segMaxDepth = 32
	// segSkew is how far a corrected or clamped time may move before the
	// event is flagged clock_skew.
	segSkew = time.Minute
)

// segCall is a Segment call type.
type segCall uint8

const (
	segNone segCall = iota
	segTrack
	segPage
	segIdentify
	segScreen
	segGroup
	segAlias
	segBatch
)

// segCallOf maps the last path segment of /v1/<call> to a call. The short
// forms are what analytics.js posts to; `import` is Segment's historical
// alias of batch.
func segCallOf(call string) segCall {
	switch call {
	case "track", "t":
		return segTrack
	case "page", "p":
		return segPage
	case "identify", "i":
		return segIdentify
	case "screen", "s":
		return segScreen
	case "group", "g":
		return segGroup
	case "alias", "a":
		return segAlias
	case "batch", "b", "import":
		return segBatch
	}
	return segNone
}

// segTypeOf maps a message's "type" to a call; batch messages use the long
// names only, and a batch inside a batch is not a message type.
func segTypeOf(t []byte) segCall {
	switch string(t) {
	case "track":
		return segTrack
	case "page":
		return segPage
	case "identify":
		return segIdentify
	case "screen":
		return segScreen
	case "group":
		return segGroup
	case "alias":
		return segAlias
	}
	return segNone
}

// segmentDecoder decodes the Segment tracking API (analytics.js, server
// SDKs, RudderStack's SDKs, which speak the same protocol) into canonical
// events. It is safe for concurrent use: per-request state lives in pooled
// parsers and scratch buffers.
type segmentDecoder struct {
	maxEvent   int
	maxRequest int
	parsers    fastjson.ParserPool
	// scratch holds *[]byte buffers for text built while decoding (numbers
	// formatted as ids, nested values rendered as JSON) before it is
	// interned into an event.
	scratch sync.Pool

	errEvent   error
	errRequest error
	errBatch   error
}

// newSegmentDecoder returns a decoder that rejects requests larger than
// maxRequest bytes and messages larger than maxEvent bytes (raw JSON) with
// errTooLarge.
func newSegmentDecoder(maxEvent, maxRequest int) *segmentDecoder {
	return &segmentDecoder{
		maxEvent:   maxEvent,
		maxRequest: maxRequest,
		errEvent:   errTooLarge("a Segment message exceeds " + strconv.Itoa(maxEvent) + " bytes"),
		errRequest: errTooLarge("the Segment request exceeds " + strconv.Itoa(maxRequest) + " bytes"),
		errBatch:   errTooLarge("a Segment batch holds more than " + strconv.Itoa(segMaxBatch) + " messages"),
	}
}

// decode decodes one Segment request body (already decompressed) sent to
// /v1/<call> into d, one event per message, received at now.
//
// Request-level failures return a *decodeError and add no event to d:
// errTooLarge for a body over maxRequest, a message over maxEvent or a
// batch over 2500 messages (Segment rejects the whole request too);
// errMalformed for an unknown call, a body that is not a JSON object, or a
// batch whose "batch" is not an array. Message-level failures (not an
// object, no usable type, a track without an event name) are recorded with
// d.problem and the event is still returned, so the handler can quarantine
// it and answer 200: analytics-go retries every status ≥ 300 forever, so a
// bad message must never turn into an error for its whole batch.
//
// d.writeKey is set from the body's writeKey (batch level, else the first
// message that has one). It is interned into one of d's events when there
// is one, so it is valid only as long as d's events are.
func (s *segmentDecoder) decode(d *decoded, call string, body []byte, now time.Time) error {
	if len(body) > s.maxRequest {
		return s.errRequest
	}
	kind := segCallOf(call)
	if kind == segNone {
		return errMalformed("unknown Segment call")
	}
	if kind != segBatch && len(bytes.TrimSpace(body)) > s.maxEvent {
		return s.errEvent
	}

	p := s.parsers.Get()
	defer s.parsers.Put(p)
	root, err := p.ParseBytes(body)
	if err != nil {
		return errMalformed("body is not valid JSON")
	}
	if root.Type() != fastjson.TypeObject {
		return errMalformed("body must be a JSON object")
	}

	bp := s.getScratch()
	defer s.putScratch(bp)
	r := segReq{d: d, now: now, buf: bp}

	if kind != segBatch {
		r.message(root, kind)
		return nil
	}

	batch := root.Get("batch")
	if batch == nil || batch.Type() != fastjson.TypeArray {
		return errMalformed(`Segment batch needs a "batch" array`)
	}
	msgs, _ := batch.Array()
	if len(msgs) > segMaxBatch {
		return s.errBatch
	}
	if len(body) > s.maxEvent {
		// Only a body larger than one message can hold an oversized one.
		if s.oversized(body, msgs, bp) {
			return s.errEvent
		}
	}

	if c := root.Get("context"); c != nil && c.Type() == fastjson.TypeObject {
		r.batchCtx = c
	}
	r.sentAt, r.hasSent = segTime(root.Get("sentAt"))
	wk := segStr(root.Get("writeKey"))
	r.batchKey = len(wk) > 0
	start := len(d.events)
	for _, m := range msgs {
		r.message(m, segNone)
	}
	if len(wk) > 0 {
		if len(d.events) > start {
			d.writeKey = d.events[start].Intern(wk)
		} else {
			d.writeKey = string(wk) // no event to own it; rare
		}
	}
	return nil
}

// oversized reports whether any message of the batch is larger than
// maxEvent bytes of raw JSON. It measures the request bytes themselves;
// where it cannot find them unambiguously (an escaped top-level key), it
// measures the message re-encoded compactly instead.
func (s *segmentDecoder) oversized(body []byte, msgs []*fastjson.Value, bp *[]byte) bool {
	raw := segRaw{b: body}
	ok := raw.seekBatch()
	for _, m := range msgs {
		n := -1
		if ok {
			if n = raw.nextSize(); n < 0 {
				ok = false
			}
		}
		if n < 0 {
			*bp = m.MarshalTo((*bp)[:0])
			n = len(*bp)
		}
		if n > s.maxEvent {
			return true
		}
	}
	return false
}

func (s *segmentDecoder) getScratch() *[]byte {
	if v := s.scratch.Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, 256)
	return &b
}

func (s *segmentDecoder) putScratch(bp *[]byte) {
	if cap(*bp) > 64<<10 {
		return // do not pin an outlier's buffer
	}
	*bp = (*bp)[:0]
	s.scratch.Put(bp)
}

// segReq is the state of one decode call.
type segReq struct {
	d        *decoded
	now      time.Time
	buf      *[]byte
	batchCtx *fastjson.Value
	sentAt   time.Time
	hasSent  bool
	// batchKey says the batch carries its own writeKey, which wins over
	// the messages' ones.
	batchKey bool
}

// message decodes one message into a new event. kind is the call for
// single-call requests (the endpoint decides, whatever the body's "type"
// says) and segNone for batch messages, whose "type" decides.
func (r *segReq) message(m *fastjson.Value, kind segCall) {
	e := r.d.next()
	i := e.Index
	e.Source = enrich.SourceSegment
	e.ReceivedAt = r.now
	e.OccurredAt = r.now
	if m.Type() != fastjson.TypeObject {
		r.d.problem(i, "message", "message is not a JSON object")
		return
	}
	if kind == segNone {
		if kind = segTypeOf(segStr(m.Get("type"))); kind == segNone {
			r.d.problem(i, "type", "missing or unknown message type")
		}
	}

	e.EventID = r.id(e, m.Get("messageId"))
	e.AnonymousID = r.id(e, m.Get("anonymousId"))
	e.UserID = r.id(e, m.Get("userId"))
	if r.d.writeKey == "" && !r.batchKey {
		if wk := segStr(m.Get("writeKey")); len(wk) > 0 {
			r.d.writeKey = e.Intern(wk)
		}
	}
	r.times(e, m)

	ctx := m.Get("context")
	if ctx != nil && ctx.Type() != fastjson.TypeObject {
		ctx = nil
	}
	r.context(e, ctx)

	props := segObj(m.Get("properties"))
	if kind == segPage {
		r.page(e, r.ctxGet(ctx, "page"), props)
	} else {
		r.page(e, r.ctxGet(ctx, "page"), nil)
	}
	switch kind {
	case segTrack:
		if name := segStr(m.Get("event")); len(name) > 0 {
			e.Name = e.Intern(name)
			e.OriginalName = e.Name
		} else {
			r.d.problem(i, "event", "track call without an event name")
		}
		r.trackProps(e, props)
	case segPage:
		e.Name, e.OriginalName = "page", "page"
		r.namedProps(e, m, props, "page_name", "page_category", true)
	case segScreen:
		e.Name, e.OriginalName = "screen", "screen"
		r.namedProps(e, m, props, "screen_name", "screen_category", false)
	case segIdentify:
		e.Name, e.OriginalName = "identify", "identify"
		r.traits(e, segObj(m.Get("traits")), true)
	case segGroup:
		e.Name, e.OriginalName = "group", "group"
		if id := r.id(e, m.Get("groupId")); id != "" {
			r.set(e, &e.Properties, enrich.Prop{Key: "group_id", Kind: enrich.PropString, Str: id}, true)
		}
		r.groupTraits(e, segObj(m.Get("traits")))
	case segAlias:
		e.Name, e.OriginalName = "alias", "alias"
		if id := r.id(e, m.Get("previousId")); id != "" {
			r.set(e, &e.Properties, enrich.Prop{Key: "previous_id", Kind: enrich.PropString, Str: id}, true)
		}
	}
	// Context traits come last and only fill gaps: the call's own traits
	// are the fresher statement.
	r.traits(e, segObj(r.ctxGet(ctx, "traits")), false)
}

// id returns an identifier given as a string or a number (Segment accepts
// numeric userIds; the number's text is kept as sent, so large integer ids
// keep every digit).
func (r *segReq) id(e *enrich.Event, v *fastjson.Value) string {
	if v == nil {
		return ""
	}
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return e.Intern(b)
	case fastjson.TypeNumber:
		if _, ok := segFloat(v); !ok {
			return ""
		}
		*r.buf = v.MarshalTo((*r.buf)[:0])
		return e.Intern(*r.buf)
	}
	return ""
}

// times sets OccurredAt (DESIGN §2). Segment's skew correction is
// receivedAt − (sentAt − client time), where the client time is the
// message's originalTimestamp and, when that is absent, its timestamp:
// analytics.js (analytics-next) sends timestamp and sentAt, both from the
// device clock, and never originalTimestamp, so a rule keyed on
// originalTimestamp alone would leave browser clocks uncorrected. A server
// with a correct clock loses nothing by it (the result is its timestamp
// plus the network delay), and a historical import keeps its dates, since
// sentAt − timestamp is then as large as the import is old. Without sentAt
// the timestamp (or originalTimestamp) is taken as sent; without either,
// now. Times in the future are clamped to now.
func (r *segReq) times(e *enrich.Event, m *fastjson.Value) {
	client, hasClient := segTime(m.Get("originalTimestamp"))
	ts, hasTS := segTime(m.Get("timestamp"))
	if !hasClient {
		client, hasClient = ts, hasTS
	}
	sent, hasSent := segTime(m.Get("sentAt"))
	if !hasSent {
		sent, hasSent = r.sentAt, r.hasSent
	}
	at := r.now
	switch {
	case hasClient && hasSent:
		at = r.now.Add(-sent.Sub(client))
		if segAbs(at.Sub(client)) > segSkew {
			e.Quality.Add(enrich.FlagClockSkew)
		}
	case hasClient:
		at = client
	}
	if at.After(r.now) {
		if at.Sub(r.now) > segSkew {
			e.Quality.Add(enrich.FlagClockSkew)
		}
		at = r.now
	}
	e.OccurredAt = at
}

// ctxGet looks key up in the message's context, then in the batch-level
// context: analytics-go sends context once per batch, and a message's own
// keys win (a shallow merge, as Segment's API does it).
func (r *segReq) ctxGet(ctx *fastjson.Value, key string) *fastjson.Value {
	if ctx != nil {
		if v := ctx.Get(key); v != nil {
			return v
		}
	}
	if r.batchCtx != nil {
		return r.batchCtx.Get(key)
	}
	return nil
}

// context maps the context fields that have a canonical home. context.ip
// is deliberately not read: raw IPs are never stored as sent (the privacy
// stage works from the request's client IP).
func (r *segReq) context(e *enrich.Event, ctx *fastjson.Value) {
	if ua := segStr(r.ctxGet(ctx, "userAgent")); len(ua) > 0 {
		e.Context.UserAgent = e.Intern(ua)
	}
	if l := segStr(r.ctxGet(ctx, "locale")); len(l) > 0 {
		e.Context.Locale = e.Intern(l)
	}
	if sc := r.ctxGet(ctx, "screen"); sc != nil {
		w, okW := segFloat(sc.Get("width"))
		h, okH := segFloat(sc.Get("height"))
		if okW && okH && w >= 0 && h >= 0 && w < 1e6 && h < 1e6 {
			b := strconv.AppendInt((*r.buf)[:0], int64(w), 10)
			b = append(b, 'x')
			b = strconv.AppendInt(b, int64(h), 10)
			*r.buf = b
			e.Context.Screen = e.Intern(b)
		}
	}
	if c := r.ctxGet(ctx, "campaign"); c != nil {
		a := &e.Attribution
		a.UTMSource = segIntern(e, c.Get("source"))
		a.UTMMedium = segIntern(e, c.Get("medium"))
		a.UTMCampaign = segIntern(e, c.Get("name"))
		a.UTMTerm = segIntern(e, c.Get("term"))
		a.UTMContent = segIntern(e, c.Get("content"))
		a.UTMID = segIntern(e, c.Get("id"))
	}
	if c := r.ctxGet(ctx, "consent"); c != nil {
		segObj(c.Get("categoryPreferences")).Visit(func(k []byte, v *fastjson.Value) {
			var b bool
			switch v.Type() {
			case fastjson.TypeTrue:
				b = true
			case fastjson.TypeFalse:
			default:
				return
			}
			if len(k) == 0 {
				return
			}
			r.set(e, &e.Consent.Categories, enrich.Prop{Key: e.Intern(k), Kind: enrich.PropBool, Bool: b}, true)
		})
	}
}

// page sets the page fields. For page calls the page's own properties
// describe the page viewed and win over context.page; `search` is not
// kept on its own (the URL carries the query, which the privacy stage
// scrubs; a separate copy would escape that).
func (r *segReq) page(e *enrich.Event, cp *fastjson.Value, props *fastjson.Object) {
	pick := func(key string) []byte {
		if props != nil {
			if b := segStr(props.Get(key)); len(b) > 0 {
				return b
			}
		}
		return segStr(cp.Get(key))
	}
	if u := pick("url"); len(u) > 0 {
		setPage(e, u)
	} else if p := pick("path"); len(p) > 0 {
		e.Path = pathOnly(e.Intern(p))
	}
	if ref := pick("referrer"); len(ref) > 0 {
		e.Referrer = e.Intern(ref)
	}
	if t := pick("title"); len(t) > 0 {
		e.Title = e.Intern(t)
	}
}

// namedProps handles page and screen properties: the call's name and
// category (top level, else in properties) become <kind>_name and
// <kind>_category; for page calls the page fields are consumed by page.
func (r *segReq) namedProps(e *enrich.Event, m *fastjson.Value, props *fastjson.Object, nameKey, catKey string, isPage bool) {
	for _, f := range [2]struct{ src, dst string }{{"name", nameKey}, {"category", catKey}} {
		b := segStr(m.Get(f.src))
		if len(b) == 0 && props != nil {
			b = segStr(props.Get(f.src))
		}
		if len(b) > 0 {
			r.set(e, &e.Properties, enrich.Prop{Key: f.dst, Kind: enrich.PropString, Str: e.Intern(b)}, true)
		}
	}
	props.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "name", "category":
			return
		case "url", "path", "referrer", "title", "search":
			if isPage {
				return
			}
		}
		r.prop(e, k, v)
	})
}

// trackProps maps a track call's properties: the e-commerce spec fields
// into Commerce, PII into e.PII, the rest into Properties.
//
// Value: `value` is preferred, then `revenue`, then `total` (the first
// that is a number or a numeric string). `value` is the spec's generic
// worth of any event and what a sender sets on purpose when it differs;
// `revenue` is the spec's Order Completed amount; `total` (revenue plus
// tax and shipping, minus discounts) is the fallback. The keys not chosen
// stay in Properties. Transaction id: order_id, then orderId, then
// checkout_id, likewise.
func (r *segReq) trackProps(e *enrich.Event, props *fastjson.Object) {
	if props == nil {
		return
	}
	valueKey := ""
	for _, k := range [3]string{"value", "revenue", "total"} {
		if n, ok := r.num(e, props.Get(k)); ok {
			e.Commerce.Value = enrich.Some(n)
			valueKey = k
			break
		}
	}
	txKey := ""
	for _, k := range [3]string{"order_id", "orderId", "checkout_id"} {
		if id := r.id(e, props.Get(k)); id != "" {
			e.Commerce.TransactionID = id
			txKey = k
			break
		}
	}
	props.Visit(func(k []byte, v *fastjson.Value) {
		if string(k) == valueKey || string(k) == txKey {
			return
		}
		switch string(k) {
		case "currency":
			if b := segStr(v); len(b) > 0 {
				e.Commerce.Currency = e.Intern(b)
				return
			}
		case "tax":
			if n, ok := r.num(e, v); ok {
				e.Commerce.Tax = enrich.Some(n)
				return
			}
		case "shipping":
			if n, ok := r.num(e, v); ok {
				e.Commerce.Shipping = enrich.Some(n)
				return
			}
		case "coupon":
			if b := segStr(v); len(b) > 0 {
				e.Commerce.Coupon = e.Intern(b)
				return
			}
		case "products":
			if v.Type() == fastjson.TypeArray {
				r.items(e, v)
				return
			}
		}
		r.prop(e, k, v)
	})
}

// items maps products[] (Segment e-commerce spec) to Commerce.Items.
func (r *segReq) items(e *enrich.Event, arr *fastjson.Value) {
	list, _ := arr.Array()
	for _, pv := range list {
		po := segObj(pv)
		if po == nil {
			continue
		}
		if len(e.Commerce.Items) >= segMaxItems {
			e.Quality.Add(enrich.FlagTruncated)
			return
		}
		var it enrich.Item
		for _, k := range [3]string{"product_id", "id", "sku"} {
			if it.ID = r.id(e, po.Get(k)); it.ID != "" {
				break
			}
		}
		it.Name = segIntern(e, po.Get("name"))
		it.Brand = segIntern(e, po.Get("brand"))
		it.Category = segIntern(e, po.Get("category"))
		it.Variant = segIntern(e, po.Get("variant"))
		it.Coupon = segIntern(e, po.Get("coupon"))
		if n, ok := r.num(e, po.Get("price")); ok {
			it.Price = enrich.Some(n)
		}
		if n, ok := r.num(e, po.Get("quantity")); ok {
			it.Quantity = enrich.Some(n)
		}
		if n, ok := r.num(e, po.Get("position")); ok {
			it.Index = enrich.Some(n)
		}
		e.Commerce.Items = append(e.Commerce.Items, it)
	}
}

// num reads a number, or a numeric string (kept as a number, flagged
// coerced_value: "12.50" is unambiguous, DESIGN §4 Validation).
func (r *segReq) num(e *enrich.Event, v *fastjson.Value) (float64, bool) {
	if v == nil {
		return 0, false
	}
	switch v.Type() {
	case fastjson.TypeNumber:
		return segFloat(v)
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		b = bytes.TrimSpace(b)
		if !segNumeric(b) {
			return 0, false
		}
		f, err := fastfloat.Parse(segB2S(b))
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, false
		}
		e.Quality.Add(enrich.FlagCoercedValue)
		return f, true
	}
	return 0, false
}

// prop stores one custom property (string, number, bool; a nested value as
// its compact JSON text up to segMaxNested bytes), moving PII keys to
// e.PII instead.
func (r *segReq) prop(e *enrich.Event, k []byte, v *fastjson.Value) {
	if f := segPIIKey(k, false); f != segPIINone {
		r.pii(e, f, v)
		return
	}
	r.store(e, &e.Properties, k, v, true, true)
}

// store converts v and sets it under k in dst. nested says whether objects
// and arrays are kept as JSON text; overwrite whether an existing key is
// replaced (last wins, as in JSON.parse) or kept.
func (r *segReq) store(e *enrich.Event, dst *enrich.Props, k []byte, v *fastjson.Value, nested, overwrite bool) {
	if len(k) == 0 {
		return
	}
	var p enrich.Prop
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		p = enrich.Prop{Kind: enrich.PropString, Str: e.Intern(b)}
	case fastjson.TypeNumber:
		f, ok := segFloat(v)
		if !ok {
			return
		}
		p = enrich.Prop{Kind: enrich.PropNumber, Num: f}
	case fastjson.TypeTrue:
		p = enrich.Prop{Kind: enrich.PropBool, Bool: true}
	case fastjson.TypeFalse:
		p = enrich.Prop{Kind: enrich.PropBool}
	case fastjson.TypeObject, fastjson.TypeArray:
		if !nested {
			return
		}
		b, ok := r.compact((*r.buf)[:0], e, v, 0)
		*r.buf = b[:0]
		if !ok {
			e.Quality.Add(enrich.FlagTruncated)
			return
		}
		p = enrich.Prop{Kind: enrich.PropString, Str: e.Intern(b)}
	default: // null
		return
	}
	if j := segPropIndex(*dst, k); j >= 0 {
		if overwrite {
			p.Key = (*dst)[j].Key
			(*dst)[j] = p
		}
		return
	}
	if len(*dst) >= segMaxProps {
		e.Quality.Add(enrich.FlagTruncated)
		return
	}
	p.Key = e.Intern(k)
	*dst = append(*dst, p)
}

// set is store for a value already converted.
func (r *segReq) set(e *enrich.Event, dst *enrich.Props, p enrich.Prop, overwrite bool) {
	for j := range *dst {
		if (*dst)[j].Key == p.Key {
			if overwrite {
				(*dst)[j] = p
			}
			return
		}
	}
	if len(*dst) >= segMaxProps {
		e.Quality.Add(enrich.FlagTruncated)
		return
	}
	*dst = append(*dst, p)
}

// compact appends v as compact JSON, leaving out PII keys at any depth
// (flagged dropped_pii). It reports false when the text would exceed
// segMaxNested bytes or nest deeper than segMaxDepth.
func (r *segReq) compact(dst []byte, e *enrich.Event, v *fastjson.Value, depth int) ([]byte, bool) {
	if depth > segMaxDepth || len(dst) > segMaxNested {
		return dst, false
	}
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		dst = append(dst, '{')
		n, ok := 0, true
		o.Visit(func(k []byte, vv *fastjson.Value) {
			if !ok {
				return
			}
			if segPIIKey(k, false) != segPIINone {
				e.Quality.Add(enrich.FlagDroppedPII)
				return
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = segAppendQuoted(dst, k)
			dst = append(dst, ':')
			dst, ok = r.compact(dst, e, vv, depth+1)
		})
		if !ok {
			return dst, false
		}
		dst = append(dst, '}')
	case fastjson.TypeArray:
		a, _ := v.Array()
		dst = append(dst, '[')
		for i, vv := range a {
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = r.compact(dst, e, vv, depth+1); !ok {
				return dst, false
			}
		}
		dst = append(dst, ']')
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		dst = segAppendQuoted(dst, b)
	case fastjson.TypeNumber:
		if f, ok := segFloat(v); ok {
			dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
		} else {
			dst = append(dst, "null"...)
		}
	case fastjson.TypeTrue:
		dst = append(dst, "true"...)
	case fastjson.TypeFalse:
		dst = append(dst, "false"...)
	default:
		dst = append(dst, "null"...)
	}
	return dst, len(dst) <= segMaxNested
}

// traits maps user traits (identify traits, context.traits): recognized
// PII into e.PII, the other scalar traits into UserProperties. Nested
// traits other than address are dropped: they are too often contact
// records. primary says whether these traits win over ones already seen.
func (r *segReq) traits(e *enrich.Event, t *fastjson.Object, primary bool) {
	if t == nil {
		return
	}
	var full []byte
	t.Visit(func(k []byte, v *fastjson.Value) {
		switch f := segPIIKey(k, true); f {
		case segPIINone:
			r.store(e, &e.UserProperties, k, v, false, primary)
		case segPIIFullName:
			full = segStr(v)
		default:
			r.pii(e, f, v)
		}
	})
	// Segment derives first and last name from `name` when they are not
	// given (its facade splits at the first space); a full name never
	// becomes a user property.
	if len(full) > 0 && e.PII.FirstName == "" && e.PII.LastName == "" {
		s := e.Intern(bytes.TrimSpace(full))
		first, last := s, ""
		for j := 0; j < len(s); j++ {
			if s[j] == ' ' {
				first, last = s[:j], segTrimSpace(s[j+1:])
				break
			}
		}
		e.PII.FirstName, e.PII.LastName = first, last
	}
}

// groupTraits maps a group call's traits (the account's, not the user's)
// into Properties. Contact details in them are not the user's PII and have
// no home, so they are dropped.
func (r *segReq) groupTraits(e *enrich.Event, t *fastjson.Object) {
	t.Visit(func(k []byte, v *fastjson.Value) {
		if segPIIKey(k, false) != segPIINone {
			if v.Type() != fastjson.TypeNull {
				e.Quality.Add(enrich.FlagDroppedPII)
			}
			return
		}
		r.store(e, &e.Properties, k, v, true, true)
	})
}

// segPII names a recognized personal-data key.
type segPII uint8

const (
	segPIINone segPII = iota
	segPIIEmail
	segPIIPhone
	segPIIFirstName
	segPIILastName
	segPIIFullName
	segPIIBirthday
	segPIIGender
	segPIIAddress
	segPIICity
	segPIIState
	segPIIZip
	segPIICountry
	segPIIStreet
)

// segPIIKey recognizes PII keys case-insensitively. user says the keys are
// a person's traits, where name, gender, location and street keys are
// theirs too; in event properties those usually describe a product or a
// store ("name": "Blue T-Shirt", "gender": "women").
func segPIIKey(k []byte, user bool) segPII {
	var lb [16]byte
	if len(k) > len(lb) {
		return segPIINone
	}
	for i, c := range k {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lb[i] = c
	}
	switch string(lb[:len(k)]) {
	case "email", "e-mail", "email_address", "emailaddress":
		return segPIIEmail
	case "phone", "phone_number", "phonenumber":
		return segPIIPhone
	case "firstname", "first_name":
		return segPIIFirstName
	case "lastname", "last_name":
		return segPIILastName
	case "birthday", "date_of_birth", "dateofbirth", "dob":
		return segPIIBirthday
	case "address":
		return segPIIAddress
	}
	if !user {
		return segPIINone
	}
	switch string(lb[:len(k)]) {
	case "name", "fullname", "full_name":
		return segPIIFullName
	case "gender":
		return segPIIGender
	case "city":
		return segPIICity
	case "state":
		return segPIIState
	case "postalcode", "postal_code", "zip", "zipcode", "zip_code":
		return segPIIZip
	case "country":
		return segPIICountry
	case "street":
		return segPIIStreet
	}
	return segPIINone
}

// pii stores one PII value in e.PII unless a value is already there (the
// first statement wins; primary sources are read first). Values with no
// home in enrich.PII are dropped and flagged.
func (r *segReq) pii(e *enrich.Event, f segPII, v *fastjson.Value) {
	if f == segPIIAddress {
		if o := segObj(v); o != nil {
			o.Visit(func(k []byte, vv *fastjson.Value) {
				switch g := segPIIKey(k, true); g {
				case segPIICity, segPIIState, segPIIZip, segPIICountry:
					r.pii(e, g, vv)
				default:
					if vv.Type() != fastjson.TypeNull {
						e.Quality.Add(enrich.FlagDroppedPII)
					}
				}
			})
			return
		}
		f = segPIIStreet // an address given as one line
	}
	var dst *string
	switch f {
	case segPIIEmail:
		dst = &e.PII.Email
	case segPIIPhone:
		dst = &e.PII.Phone
	case segPIIFirstName:
		dst = &e.PII.FirstName
	case segPIILastName:
		dst = &e.PII.LastName
	case segPIIBirthday:
		dst = &e.PII.DateOfBirth
	case segPIIGender:
		dst = &e.PII.Gender
	case segPIICity:
		dst = &e.PII.City
	case segPIIState:
		dst = &e.PII.State
	case segPIIZip:
		dst = &e.PII.Zip
	case segPIICountry:
		dst = &e.PII.Country
	}
	switch v.Type() {
	case fastjson.TypeNull:
	case fastjson.TypeString, fastjson.TypeNumber:
		if dst == nil {
			e.Quality.Add(enrich.FlagDroppedPII)
		} else if *dst == "" {
			*dst = r.id(e, v)
		}
	default:
		e.Quality.Add(enrich.FlagDroppedPII)
	}
}

// segPropIndex is Props.Get by a byte key, without converting it.
func segPropIndex(p enrich.Props, k []byte) int {
	for j := range p {
		if p[j].Key == string(k) {
			return j
		}
	}
	return -1
}

// segObj returns v as an object, or nil (Object methods accept nil).
func segObj(v *fastjson.Value) *fastjson.Object {
	if v == nil || v.Type() != fastjson.TypeObject {
		return nil
	}
	o, _ := v.Object()
	return o
}

// segStr returns v's bytes when it is a string, else nil. The bytes point
// into the parser and must be interned to be kept.
func segStr(v *fastjson.Value) []byte {
	if v == nil || v.Type() != fastjson.TypeString {
		return nil
	}
	b, _ := v.StringBytes()
	return b
}

// segIntern interns v when it is a non-empty string.
func segIntern(e *enrich.Event, v *fastjson.Value) string {
	return e.Intern(segStr(v))
}

// segFloat returns a JSON number as a finite float. fastjson accepts NaN
// and Inf literals, which are not JSON and have no place in an event.
func segFloat(v *fastjson.Value) (float64, bool) {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return 0, false
	}
	f, err := v.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// segNumeric reports whether b looks like a plain decimal number
// ("12.50", "-3", "1e3"), so words such as "Infinity" are not coerced.
func segNumeric(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	digits := false
	for i, c := range b {
		switch {
		case '0' <= c && c <= '9':
			digits = true
		case c == '.' || c == 'e' || c == 'E':
		case (c == '-' || c == '+') && (i == 0 || b[i-1] == 'e' || b[i-1] == 'E'):
		default:
			return false
		}
	}
	return digits
}

// segAppendQuoted appends b as a JSON string. Only what JSON requires is
// escaped; the event encoder escapes the whole text again for output.
func segAppendQuoted(dst, b []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func segB2S(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func segAbs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func segTrimSpace(s string) string {
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// segTime parses the ISO 8601 shapes that SDKs send: RFC 3339 with any
// number of fraction digits, zone Z, ±hh:mm, ±hhmm or ±hh, or no zone
// (taken as UTC), 'T' or a space between date and time, or a date alone.
// It does not allocate (time.Parse does for numeric zones).
func segTime(v *fastjson.Value) (time.Time, bool) {
	b := segStr(v)
	if len(b) < 10 || b[4] != '-' || b[7] != '-' {
		return time.Time{}, false
	}
	year, ok1 := segDigits(b[0:4])
	month, ok2 := segDigits(b[5:7])
	day, ok3 := segDigits(b[8:10])
	if !ok1 || !ok2 || !ok3 || month < 1 || month > 12 || day < 1 || day > segDaysIn(month, year) {
		return time.Time{}, false
	}
	var hh, mm, ss, ns, off int
	i := 10
	if i < len(b) {
		if c := b[i]; c != 'T' && c != 't' && c != ' ' || len(b) < i+6 || b[i+3] != ':' {
			return time.Time{}, false
		}
		var ok bool
		if hh, ok = segDigits(b[i+1 : i+3]); !ok || hh > 23 {
			return time.Time{}, false
		}
		if mm, ok = segDigits(b[i+4 : i+6]); !ok || mm > 59 {
			return time.Time{}, false
		}
		i += 6
		if i < len(b) && b[i] == ':' {
			if len(b) < i+3 {
				return time.Time{}, false
			}
			if ss, ok = segDigits(b[i+1 : i+3]); !ok || ss > 60 {
				return time.Time{}, false
			}
			i += 3
		}
		if i < len(b) && (b[i] == '.' || b[i] == ',') {
			i++
			n, scale := 0, 100000000
			for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
				ns += int(b[i]-'0') * scale
				scale /= 10
				n++
			}
			if n == 0 {
				return time.Time{}, false
			}
		}
		if i < len(b) {
			switch b[i] {
			case 'Z', 'z':
				i++
			case '+', '-':
				sign := 1
				if b[i] == '-' {
					sign = -1
				}
				z := b[i+1:]
				var oh, om int
				switch {
				case len(z) == 2:
					oh, ok = segDigits(z)
				case len(z) == 4:
					oh, ok = segDigits(z[:2])
					if ok {
						om, ok = segDigits(z[2:])
					}
				case len(z) == 5 && z[2] == ':':
					oh, ok = segDigits(z[:2])
					if ok {
						om, ok = segDigits(z[3:])
					}
				default:
					ok = false
				}
				if !ok || oh > 23 || om > 59 {
					return time.Time{}, false
				}
				off = sign * (oh*3600 + om*60)
				i = len(b)
			}
		}
		if i != len(b) {
			return time.Time{}, false
		}
	}
	t := time.Date(year, time.Month(month), day, hh, mm, ss, ns, time.UTC)
	return t.Add(-time.Duration(off) * time.Second), true
}

func segDigits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func segDaysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// segRaw walks the raw request bytes to measure each batch message as
// sent. It runs only on bodies fastjson accepted, but never trusts that:
// every step is bounds-checked, and any surprise makes it give up.
type segRaw struct {
	b []byte
	i int
}

func (r *segRaw) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\r', '\n':
			r.i++
		default:
			return
		}
	}
}

func (r *segRaw) at(c byte) bool { return r.i < len(r.b) && r.b[r.i] == c }

func (r *segRaw) skipString() bool {
	r.i++ // opening quote
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case '\\':
			r.i += 2
			continue
		case '"':
			r.i++
			return true
		}
		r.i++
	}
	return false
}

func (r *segRaw) skip() bool {
	r.ws()
	if r.i >= len(r.b) {
		return false
	}
	switch r.b[r.i] {
	case '"':
		return r.skipString()
	case '{', '[':
		depth := 0
		for r.i < len(r.b) {
			switch r.b[r.i] {
			case '"':
				if !r.skipString() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					r.i++
					return true
				}
			}
			r.i++
		}
		return false
	}
	start := r.i
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return r.i > start
		}
		r.i++
	}
	return r.i > start
}

// seekBatch positions r inside the first top-level "batch" array, as
// fastjson's Get finds it. A top-level key with an escape could unescape
// to "batch", so meeting one gives up.
func (r *segRaw) seekBatch() bool {
	r.ws()
	if !r.at('{') {
		return false
	}
	r.i++
	for {
		r.ws()
		if !r.at('"') {
			return false
		}
		start := r.i + 1
		if !r.skipString() {
			return false
		}
		key := r.b[start : r.i-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		r.ws()
		if !r.at(':') {
			return false
		}
		r.i++
		if string(key) == "batch" {
			r.ws()
			if !r.at('[') {
				return false
			}
			r.i++
			return true
		}
		if !r.skip() {
			return false
		}
		r.ws()
		if !r.at(',') {
			return false
		}
		r.i++
	}
}

// nextSize returns the raw size of the next array element, or -1.
func (r *segRaw) nextSize() int {
	r.ws()
	if r.at(',') {
		r.i++
		r.ws()
	}
	if r.i >= len(r.b) || r.b[r.i] == ']' {
		return -1
	}
	start := r.i
	if !r.skip() {
		return -1
	}
	return r.i - start
}

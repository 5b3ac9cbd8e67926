package proxy

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/sidetrack/sidetrack/enrich"
)

// Limits of the /collect contract (docs/collect.md). The body size is the
// route's body limit; these bound what one event may hold so that a
// request cannot make the decoder build an arbitrarily large event or
// error list within it.
const (
	defaultCollectBatch = 500  // events per {"batch":[…]} when the caller gives none
	collectMaxNameRunes = 100  // name, in characters
	collectMaxEventID   = 128  // event_id, bytes
	collectMaxText      = 8192 // any other string value, bytes
	collectMaxKey       = 100  // property key, bytes
	collectMaxProps     = 100  // entries in properties / user_properties
	collectMaxItems     = 200  // entries in items
	collectMaxProblems  = 1000 // field errors listed per request
)

// Field-error messages. They are fixed texts: a message never echoes
// request bytes (only an unknown field's name does, in the field path).
const (
	collectMsgRequired     = "is required"
	collectMsgNonEmpty     = "must be a non-empty string"
	collectMsgString       = "must be a string"
	collectMsgStringOrNum  = "must be a string or a number"
	collectMsgNumber       = "must be a number"
	collectMsgFinite       = "must be a finite number"
	collectMsgObject       = "must be an object"
	collectMsgItems        = "must be an array of objects"
	collectMsgTooLong      = "is too long"
	collectMsgNameTooLong  = "must be at most 100 characters"
	collectMsgIDTooLong    = "must be at most 128 bytes"
	collectMsgTime         = "must be an RFC 3339 time, e.g. 2024-05-01T12:00:00Z"
	collectMsgUnknown      = "unknown field"
	collectMsgConsentValue = `must be "granted" or "denied"`
	collectMsgPurpose      = "unknown consent purpose; want analytics, ads, ad_user_data or ad_personalization"
	collectMsgScalar       = "must be a string, number or boolean (nested values are not supported)"
	collectMsgKey          = "property names must be 1 to 100 bytes"
	collectMsgTooManyProps = "holds more than 100 properties"
	collectMsgTooManyItems = "holds more than 200 items"
	collectMsgTooMany      = "too many problems; the rest are not listed"
	collectMsgGETItems     = "items are not supported in a GET query; POST JSON instead"
	collectMsgGETUser      = "user data is not accepted in a GET query (URLs end up in logs); POST JSON instead"
	collectMsgGETObject    = "use one query parameter per key (p.<key>, up.<key>, consent.<purpose>)"
)

// collectDecoder decodes sidetrack's own /collect format (DESIGN §2, the
// API contract route). It is safe for concurrent use: the only state it
// shares between requests is the parser pool.
type collectDecoder struct {
	parsers  fastjson.ParserPool
	maxBatch int
}

// newCollectDecoder returns a decoder that accepts batches of at most
// maxBatch events (≤ 0: the default of 500).
func newCollectDecoder(maxBatch int) *collectDecoder {
	if maxBatch <= 0 {
		maxBatch = defaultCollectBatch
	}
	return &collectDecoder{maxBatch: maxBatch}
}

// decodeJSON decodes a POST body: one event object, or {"batch":[…]}.
// sendBeacon posts the same JSON as text/plain, so the caller picks this
// for both content types. Request-level failures (not JSON, not an object,
// a batch that is not an array or too long) return an error and add no
// event; field errors are recorded in d.problems, every one of them, with
// the event still added so that indexes line up with the request.
func (c *collectDecoder) decodeJSON(d *decoded, body []byte, now time.Time) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return errMalformed(`empty body: want one JSON event object or {"batch":[…]}`)
	}
	p := c.parsers.Get()
	defer c.parsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil {
		return errMalformed("body is not valid JSON")
	}
	o, err := v.Object()
	if err != nil {
		return errMalformed(`body must be a JSON object: one event or {"batch":[…]}`)
	}
	bv := o.Get("batch")
	if bv == nil {
		decodeCollectEvent(d, d.next(), 0, v, now)
		return nil
	}
	if o.Len() != 1 {
		return errMalformed(`a batch body holds only the "batch" field`)
	}
	arr, err := bv.Array()
	if err != nil {
		return errMalformed(`"batch" must be an array of event objects`)
	}
	if len(arr) == 0 {
		return errMalformed(`"batch" is empty`)
	}
	if len(arr) > c.maxBatch {
		return errTooLarge("batch holds more than " + strconv.Itoa(c.maxBatch) + " events")
	}
	for i, ev := range arr {
		decodeCollectEvent(d, d.next(), i, ev, now)
	}
	return nil
}

// decodeQuery decodes the GET pixel: the same top-level fields as query
// parameters, with p.<key> / pn.<key> (string / number properties),
// up.<key> / upn.<key> (user properties) and consent.<purpose>. Items and
// user data are not accepted in a URL. query is the raw query string.
func (c *collectDecoder) decodeQuery(d *decoded, query []byte, now time.Time) error {
	args := fasthttp.AcquireArgs()
	defer fasthttp.ReleaseArgs(args)
	args.ParseBytes(query)
	x := collectEventDec{d: d, e: d.next(), i: 0}
	x.start(now)
	for k, v := range args.All() {
		x.queryField(k, v)
	}
	x.finish()
	return nil
}

// decodeCollectEvent decodes one event object into e, the event at index i.
func decodeCollectEvent(d *decoded, e *enrich.Event, i int, v *fastjson.Value, now time.Time) {
	x := collectEventDec{d: d, e: e, i: i}
	x.start(now)
	o, err := v.Object()
	if err != nil {
		x.problem("", "event must be a JSON object")
		return
	}
	o.Visit(x.jsonField)
	x.finish()
}

// collectEventDec is the state of decoding one event. It lives on the stack.
type collectEventDec struct {
	d       *decoded
	e       *enrich.Event
	i       int
	now     time.Time
	sawName bool
}

func (x *collectEventDec) start(now time.Time) {
	x.now = now
	x.e.Source = enrich.SourceCollect
	x.e.ReceivedAt = now
	x.e.OccurredAt = now
}

func (x *collectEventDec) finish() {
	if !x.sawName {
		x.problem("name", collectMsgRequired)
	}
}

// problem records a field error, up to collectMaxProblems per request (a body of
// thousands of typos must not turn into an answer many times its size).
func (x *collectEventDec) problem(field, msg string) {
	switch n := len(x.d.problems); {
	case n < collectMaxProblems:
		x.d.problem(x.i, field, msg)
	case n == collectMaxProblems:
		x.d.problem(x.i, "", collectMsgTooMany)
	}
}

// jsonField applies one top-level member of an event object.
func (x *collectEventDec) jsonField(k []byte, v *fastjson.Value) {
	key := collectView(k)
	t := v.Type()
	switch key {
	case "name", "event_id", "timestamp", "url", "referrer", "title", "currency", "coupon":
		if t == fastjson.TypeNull {
			if key == "name" {
				x.sawName = true
				x.problem("name", collectMsgNonEmpty)
			}
			return
		}
		if t != fastjson.TypeString {
			if key == "name" {
				x.sawName = true
				x.problem("name", collectMsgNonEmpty)
				return
			}
			x.problem(key, collectMsgString)
			return
		}
		b, _ := v.StringBytes()
		x.text(key, b)
	case "transaction_id", "user_id", "anonymous_id":
		var buf [32]byte
		if b, ok := x.jsonID(key, v, buf[:0]); ok {
			x.text(key, b)
		}
	case "value":
		x.e.Commerce.Value = x.jsonNumber(key, v, x.e.Commerce.Value)
	case "tax":
		x.e.Commerce.Tax = x.jsonNumber(key, v, x.e.Commerce.Tax)
	case "shipping":
		x.e.Commerce.Shipping = x.jsonNumber(key, v, x.e.Commerce.Shipping)
	case "items":
		x.jsonItems(v)
	case "consent":
		x.jsonConsent(v)
	case "properties":
		x.jsonProps("properties", &x.e.Properties, v)
	case "user_properties":
		x.jsonProps("user_properties", &x.e.UserProperties, v)
	case "user":
		x.jsonUser(v)
	default:
		x.problem(collectEchoField("", k), collectMsgUnknown)
	}
}

// text applies a top-level field whose value arrived as text (a JSON
// string, an id given as a JSON number, or a query parameter). It reports
// whether key is such a field. Empty optional values count as absent.
func (x *collectEventDec) text(key string, b []byte) bool {
	e := x.e
	switch key {
	case "name":
		x.sawName = true
		switch {
		case len(b) == 0:
			x.problem("name", collectMsgNonEmpty)
		case len(b) > collectMaxNameRunes && utf8.RuneCount(b) > collectMaxNameRunes:
			x.problem("name", collectMsgNameTooLong)
		default:
			e.Name = e.Intern(b)
			e.OriginalName = e.Name
		}
		return true
	case "event_id":
		if len(b) > collectMaxEventID {
			x.problem(key, collectMsgIDTooLong)
			return true
		}
		e.EventID = e.Intern(b)
		return true
	case "timestamp":
		x.timestamp(b)
		return true
	}
	var dst *string
	switch key {
	case "url":
		if x.fits(key, b) {
			setPage(e, b)
		}
		return true
	case "referrer":
		dst = &e.Referrer
	case "title":
		dst = &e.Title
	case "currency":
		dst = &e.Commerce.Currency
	case "coupon":
		dst = &e.Commerce.Coupon
	case "transaction_id":
		dst = &e.Commerce.TransactionID
	case "user_id":
		dst = &e.UserID
	case "anonymous_id":
		dst = &e.AnonymousID
	default:
		return false
	}
	if x.fits(key, b) {
		*dst = e.Intern(b)
	}
	return true
}

// fits reports whether a text value is within collectMaxText, recording a
// problem when it is not.
func (x *collectEventDec) fits(field string, b []byte) bool {
	if len(b) > collectMaxText {
		x.problem(field, collectMsgTooLong)
		return false
	}
	return true
}

// timestamp parses an RFC 3339 time into OccurredAt. A time in the future
// (a client clock ahead of ours) is clamped to now and flagged.
func (x *collectEventDec) timestamp(b []byte) {
	if len(b) == 0 {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, collectView(b))
	if err != nil && len(b) > 6 && b[len(b)-6] == ' ' && len(b) < 64 {
		// An unescaped '+' of the offset that a query string turned
		// into a space: "…T10:00:00 02:00".
		var buf [64]byte
		n := copy(buf[:], b)
		buf[n-6] = '+'
		t, err = time.Parse(time.RFC3339Nano, unsafe.String(&buf[0], n))
	}
	if err != nil {
		x.problem("timestamp", collectMsgTime)
		return
	}
	t = t.UTC()
	if t.After(x.now) {
		t = x.now
		x.e.Quality.Add(enrich.FlagClockSkew)
	}
	x.e.OccurredAt = t
}

// jsonID returns an id given as a JSON string or number (as its literal
// text), appending a number's text to buf.
func (x *collectEventDec) jsonID(field string, v *fastjson.Value, buf []byte) ([]byte, bool) {
	switch v.Type() {
	case fastjson.TypeNull:
		return nil, false
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return b, true
	case fastjson.TypeNumber:
		if b, ok := numberText(v, buf); ok {
			return b, true
		}
	}
	x.problem(field, collectMsgStringOrNum)
	return nil, false
}

// numberText appends the decimal text of a JSON number used as an id
// (integers exactly, up to uint64) to buf. fastjson's MarshalTo would
// keep the literal but makes buf escape to the heap.
func numberText(v *fastjson.Value, buf []byte) ([]byte, bool) {
	if n, err := v.Int64(); err == nil {
		return strconv.AppendInt(buf, n, 10), true
	}
	if n, err := v.Uint64(); err == nil {
		return strconv.AppendUint(buf, n, 10), true
	}
	f, err := v.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, false
	}
	return strconv.AppendFloat(buf, f, 'f', -1, 64), true
}

// jsonNumber returns a JSON number, or a numeric string coerced to one
// (flagged coerced_value: "12.50" is unambiguous, and semantic checks such
// as value ≥ 0 are the validation stage's). null keeps old.
func (x *collectEventDec) jsonNumber(field string, v *fastjson.Value, old enrich.OptFloat) enrich.OptFloat {
	switch v.Type() {
	case fastjson.TypeNull:
		return old
	case fastjson.TypeNumber:
		f, err := v.Float64()
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			x.problem(field, collectMsgFinite)
			return old
		}
		return enrich.Some(f)
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		if f, ok := parseDecimal(b); ok {
			x.e.Quality.Add(enrich.FlagCoercedValue)
			return enrich.Some(f)
		}
	}
	x.problem(field, collectMsgNumber)
	return old
}

// jsonItems decodes the items array.
func (x *collectEventDec) jsonItems(v *fastjson.Value) {
	t := v.Type()
	if t == fastjson.TypeNull {
		return
	}
	if t != fastjson.TypeArray {
		x.problem("items", collectMsgItems)
		return
	}
	arr, _ := v.Array()
	if len(arr) > collectMaxItems {
		x.problem("items", collectMsgTooManyItems)
		return
	}
	for j, iv := range arr {
		o, err := iv.Object()
		if err != nil {
			x.problem(collectItemPath(j, ""), collectMsgObject)
			continue
		}
		x.e.Commerce.Items = append(x.e.Commerce.Items, enrich.Item{})
		it := &x.e.Commerce.Items[len(x.e.Commerce.Items)-1]
		o.Visit(func(k []byte, v *fastjson.Value) { x.itemField(it, j, k, v) })
	}
}

// itemField applies one member of items[j].
func (x *collectEventDec) itemField(it *enrich.Item, j int, k []byte, v *fastjson.Value) {
	key := collectView(k)
	var num *enrich.OptFloat
	switch key {
	case "price":
		num = &it.Price
	case "quantity":
		num = &it.Quantity
	case "discount":
		num = &it.Discount
	case "index":
		num = &it.Index
	}
	if num != nil {
		if v.Type() == fastjson.TypeNull {
			return
		}
		f, ok := x.itemNumber(v)
		if !ok {
			x.problem(collectItemPath(j, key), collectMsgNumber)
			return
		}
		*num = enrich.Some(f)
		return
	}
	var dst *string
	idOK := false
	switch key {
	case "id":
		dst, idOK = &it.ID, true
	case "name":
		dst = &it.Name
	case "brand":
		dst = &it.Brand
	case "category":
		dst = &it.Category
	case "category2":
		dst = &it.Category2
	case "category3":
		dst = &it.Category3
	case "category4":
		dst = &it.Category4
	case "category5":
		dst = &it.Category5
	case "variant":
		dst = &it.Variant
	case "coupon":
		dst = &it.Coupon
	case "affiliation":
		dst = &it.Affiliation
	case "list_id":
		dst = &it.ListID
	case "list_name":
		dst = &it.ListName
	case "location_id":
		dst = &it.LocationID
	default:
		x.problem(collectEchoField(collectItemPath(j, "")+".", k), collectMsgUnknown)
		return
	}
	var b []byte
	var buf [32]byte
	switch t := v.Type(); {
	case t == fastjson.TypeNull:
		return
	case t == fastjson.TypeString:
		b, _ = v.StringBytes()
	case t == fastjson.TypeNumber && idOK:
		var ok bool
		if b, ok = numberText(v, buf[:0]); ok {
			break
		}
		fallthrough
	default:
		if idOK {
			x.problem(collectItemPath(j, key), collectMsgStringOrNum)
		} else {
			x.problem(collectItemPath(j, key), collectMsgString)
		}
		return
	}
	if len(b) > collectMaxText {
		x.problem(collectItemPath(j, key), collectMsgTooLong)
		return
	}
	*dst = x.e.Intern(b)
}

// itemNumber is jsonNumber without the error reporting (the caller builds
// the item's field path only when there is an error).
func (x *collectEventDec) itemNumber(v *fastjson.Value) (float64, bool) {
	switch v.Type() {
	case fastjson.TypeNumber:
		f, err := v.Float64()
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		if f, ok := parseDecimal(b); ok {
			x.e.Quality.Add(enrich.FlagCoercedValue)
			return f, true
		}
	}
	return 0, false
}

// jsonConsent records the consent object's purposes as received, in
// Consent.Categories; the consent stage interprets them.
func (x *collectEventDec) jsonConsent(v *fastjson.Value) {
	t := v.Type()
	if t == fastjson.TypeNull {
		return
	}
	o, err := v.Object()
	if err != nil {
		x.problem("consent", collectMsgObject)
		return
	}
	o.Visit(func(k []byte, v *fastjson.Value) {
		if v.Type() != fastjson.TypeString {
			if collectPurpose(k) == "" {
				x.problem(collectEchoField("consent.", k), collectMsgPurpose)
			} else {
				x.problem(collectEchoField("consent.", k), collectMsgConsentValue)
			}
			return
		}
		b, _ := v.StringBytes()
		x.consent(k, b)
	})
}

// consent records one purpose's state.
func (x *collectEventDec) consent(purpose, state []byte) {
	key := collectPurpose(purpose)
	if key == "" {
		x.problem(collectEchoField("consent.", purpose), collectMsgPurpose)
		return
	}
	var s string
	switch collectView(state) {
	case "granted":
		s = "granted"
	case "denied":
		s = "denied"
	default:
		x.problem("consent."+key, collectMsgConsentValue)
		return
	}
	x.e.Consent.Categories.Set(enrich.Prop{Key: key, Kind: enrich.PropString, Str: s})
}

// collectPurpose returns the canonical (constant) name of a consent
// purpose, or "" for an unknown one.
func collectPurpose(k []byte) string {
	switch collectView(k) {
	case "analytics":
		return "analytics"
	case "ads":
		return "ads"
	case "ad_user_data":
		return "ad_user_data"
	case "ad_personalization":
		return "ad_personalization"
	}
	return ""
}

// jsonProps decodes an object of scalars into props.
func (x *collectEventDec) jsonProps(field string, props *enrich.Props, v *fastjson.Value) {
	t := v.Type()
	if t == fastjson.TypeNull {
		return
	}
	o, err := v.Object()
	if err != nil {
		x.problem(field, collectMsgObject)
		return
	}
	if o.Len() > collectMaxProps {
		x.problem(field, collectMsgTooManyProps)
		return
	}
	o.Visit(func(k []byte, v *fastjson.Value) {
		if !x.propKey(field, k) {
			return
		}
		p := enrich.Prop{}
		switch v.Type() {
		case fastjson.TypeNull:
			return
		case fastjson.TypeString:
			b, _ := v.StringBytes()
			if len(b) > collectMaxText {
				x.problem(collectEchoField(field+".", k), collectMsgTooLong)
				return
			}
			p.Kind, p.Str = enrich.PropString, x.e.Intern(b)
		case fastjson.TypeNumber:
			f, err := v.Float64()
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				x.problem(collectEchoField(field+".", k), collectMsgFinite)
				return
			}
			p.Kind, p.Num = enrich.PropNumber, f
		case fastjson.TypeTrue:
			p.Kind, p.Bool = enrich.PropBool, true
		case fastjson.TypeFalse:
			p.Kind = enrich.PropBool
		default:
			x.problem(collectEchoField(field+".", k), collectMsgScalar)
			return
		}
		p.Key = x.e.Intern(k)
		props.Set(p)
	})
}

// propKey checks a property name.
func (x *collectEventDec) propKey(field string, k []byte) bool {
	if len(k) == 0 || len(k) > collectMaxKey {
		x.problem(field, collectMsgKey)
		return false
	}
	return true
}

// jsonUser decodes the user object's raw PII into e.PII, which only the
// privacy stage reads (it hashes what consent allows and zeroes the rest).
func (x *collectEventDec) jsonUser(v *fastjson.Value) {
	t := v.Type()
	if t == fastjson.TypeNull {
		return
	}
	o, err := v.Object()
	if err != nil {
		x.problem("user", collectMsgObject)
		return
	}
	o.Visit(func(k []byte, v *fastjson.Value) {
		dst := rawPIIField(&x.e.PII, collectView(k))
		if dst == nil {
			x.problem(collectEchoField("user.", k), collectMsgUnknown)
			return
		}
		switch v.Type() {
		case fastjson.TypeNull:
			return
		case fastjson.TypeString:
		default:
			x.problem(collectEchoField("user.", k), collectMsgString)
			return
		}
		b, _ := v.StringBytes()
		if len(b) > collectMaxText {
			x.problem(collectEchoField("user.", k), collectMsgTooLong)
			return
		}
		*dst = x.e.Intern(b)
	})
}

// rawPIIField returns the raw-PII slot for a user-data key (the /collect user
// object's keys, also the event fields a form may map).
func rawPIIField(p *enrich.PII, key string) *string {
	switch key {
	case "email":
		return &p.Email
	case "phone":
		return &p.Phone
	case "first_name":
		return &p.FirstName
	case "last_name":
		return &p.LastName
	case "city":
		return &p.City
	case "state":
		return &p.State
	case "zip":
		return &p.Zip
	case "country":
		return &p.Country
	case "date_of_birth":
		return &p.DateOfBirth
	case "gender":
		return &p.Gender
	case "external_id":
		return &p.ExternalID
	}
	return nil
}

// queryField applies one GET pixel parameter.
func (x *collectEventDec) queryField(k, v []byte) {
	key := collectView(k)
	switch {
	case strings.HasPrefix(key, "p."):
		x.queryProp("properties", &x.e.Properties, k, k[2:], v, false)
		return
	case strings.HasPrefix(key, "pn."):
		x.queryProp("properties", &x.e.Properties, k, k[3:], v, true)
		return
	case strings.HasPrefix(key, "up."):
		x.queryProp("user_properties", &x.e.UserProperties, k, k[3:], v, false)
		return
	case strings.HasPrefix(key, "upn."):
		x.queryProp("user_properties", &x.e.UserProperties, k, k[4:], v, true)
		return
	case strings.HasPrefix(key, "consent."):
		x.consent(k[len("consent."):], v)
		return
	case key == "user" || strings.HasPrefix(key, "user."):
		x.problem(collectEchoField("", k), collectMsgGETUser)
		return
	case key == "items" || strings.HasPrefix(key, "items[") || strings.HasPrefix(key, "items."):
		x.problem("items", collectMsgGETItems)
		return
	}
	switch key {
	case "value":
		x.e.Commerce.Value = x.queryNumber(key, v, x.e.Commerce.Value)
	case "tax":
		x.e.Commerce.Tax = x.queryNumber(key, v, x.e.Commerce.Tax)
	case "shipping":
		x.e.Commerce.Shipping = x.queryNumber(key, v, x.e.Commerce.Shipping)
	case "properties", "user_properties", "consent":
		x.problem(key, collectMsgGETObject)
	case "_", "cb":
		// cache busters of pixel URLs
	default:
		if !x.text(key, v) {
			x.problem(collectEchoField("", k), collectMsgUnknown)
		}
	}
}

// queryNumber parses a numeric query parameter. A query value is always
// text, so this is not a coercion.
func (x *collectEventDec) queryNumber(field string, b []byte, old enrich.OptFloat) enrich.OptFloat {
	if len(b) == 0 {
		return old
	}
	f, ok := parseDecimal(b)
	if !ok {
		x.problem(field, collectMsgNumber)
		return old
	}
	return enrich.Some(f)
}

// queryProp applies p.<key>=… (string) or pn.<key>=… (number).
func (x *collectEventDec) queryProp(field string, props *enrich.Props, full, k, v []byte, numeric bool) {
	if !x.propKey(field, k) {
		return
	}
	p := enrich.Prop{Kind: enrich.PropString}
	if numeric {
		f, ok := parseDecimal(v)
		if !ok {
			x.problem(collectEchoField("", full), collectMsgNumber)
			return
		}
		p.Kind, p.Num = enrich.PropNumber, f
	} else {
		if len(v) > collectMaxText {
			x.problem(collectEchoField("", full), collectMsgTooLong)
			return
		}
		p.Str = x.e.Intern(v)
	}
	p.Key = x.e.Intern(k)
	props.Set(p)
}

// parseDecimal parses a decimal number written the JSON way ("12.50",
// "-3", "1e3"): the unambiguous numeric strings. It refuses what
// strconv.ParseFloat would also take (hex, "Inf", "NaN", underscores,
// spaces), and non-finite results.
func parseDecimal(b []byte) (float64, bool) {
	i, n := 0, len(b)
	if i < n && b[i] == '-' {
		i++
	}
	d := i
	for i < n && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == d {
		return 0, false
	}
	if i < n && b[i] == '.' {
		i++
		f := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == f {
			return 0, false
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		f := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == f {
			return 0, false
		}
	}
	if i != n {
		return 0, false
	}
	f, err := strconv.ParseFloat(collectView(b), 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// collectItemPath is the field path of items[j] or one of its members.
func collectItemPath(j int, key string) string {
	p := "items[" + strconv.Itoa(j) + "]"
	if key != "" {
		p += "." + key
	}
	return p
}

// collectEchoField builds an error's field path from a request-supplied name:
// copied (the request buffer is reused), capped, and valid UTF-8, since
// it is echoed in the 422 answer.
func collectEchoField(prefix string, k []byte) string {
	const max = 100
	if len(k) > max {
		k = k[:max]
	}
	return prefix + strings.ToValidUTF8(string(k), "\uFFFD")
}

// collectView views b as a string without copying, for lookups and parsing that
// do not keep the string.
func collectView(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

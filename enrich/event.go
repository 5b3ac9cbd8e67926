package enrich

import (
	"sync"
	"time"
	"unsafe"
)

// Source says which wire format or sender produced an event.
type Source string

// Event sources (DESIGN §3).
const (
	SourceGA4     Source = "ga4"
	SourceSegment Source = "segment"
	SourceCollect Source = "collect"
	SourceForm    Source = "form"
	SourceBackend Source = "backend"
)

// Event is the canonical event (DESIGN §3): every wire format decodes into it,
// every stage enriches it, the spool stores it and every destination maps it.
//
// Ownership: an Event owns its bytes. Decoders copy request bytes in with
// Intern, which appends them to the event's own arena, so nothing points into
// fasthttp's reused buffers. The strings of an Event are valid until Release;
// anything that keeps one longer (caches, metrics labels, logs kept in memory)
// must copy it with strings.Clone. Events come from AcquireEvent and go back
// with Release, once, by whoever owns them last (the sink, after appending).
type Event struct {
	EventID         string `json:"event_id"`
	DeviceID        string `json:"device_id,omitempty"`
	AnonymousID     string `json:"anonymous_id,omitempty"`
	UserID          string `json:"user_id,omitempty"`
	SessionID       string `json:"session_id,omitempty"`
	GASessionID     string `json:"ga_session_id,omitempty"`
	GASessionNumber int64  `json:"ga_session_number,omitempty"`
	GAMeasurementID string `json:"ga_measurement_id,omitempty"`
	PageLoadID      string `json:"page_load_id,omitempty"`
	HitSeq          int64  `json:"hit_seq,omitempty"`

	Name         string    `json:"name"`
	OriginalName string    `json:"original_name,omitempty"`
	Source       Source    `json:"source"`
	ReceivedAt   time.Time `json:"received_at"`
	OccurredAt   time.Time `json:"occurred_at"`

	URL      string `json:"url,omitempty"`
	Path     string `json:"path,omitempty"`
	Referrer string `json:"referrer,omitempty"`
	Title    string `json:"title,omitempty"`
	Host     string `json:"host,omitempty"`

	Attribution Attribution `json:"attribution,omitzero"`
	Context     Context     `json:"context,omitzero"`
	Consent     Consent     `json:"consent"`
	UserData    UserData    `json:"user_data,omitzero"`
	Commerce    Commerce    `json:"commerce,omitzero"`
	GA          GAHit       `json:"ga,omitzero"`

	Properties     Props `json:"properties,omitempty"`
	UserProperties Props `json:"user_properties,omitempty"`

	Quality      Flags    `json:"quality,omitempty"`
	Destinations []string `json:"destinations,omitempty"`

	// PII holds raw personal data as received. It is never serialized: the
	// privacy stage hashes what consent allows into UserData and zeroes it.
	PII PII `json:"-"`

	// IdempotencyKey is the X-Idempotency-Key of a single-event request,
	// used by dedup when the event carries no id of its own.
	IdempotencyKey string `json:"-"`
	// Index is the event's position in its request (batch index, GA4 line).
	Index int `json:"-"`
	// DedupKey is the hash of (scope, canonical name, id) that the dedup
	// stage reserved for this event; the spool commits it with the event
	// so the window survives restarts. Zero when dedup did not run.
	DedupKey [16]byte `json:"-"`
	// Notes are stage decisions kept for the live trace only.
	Notes StageNotes `json:"-"`

	arena []byte
	// stored is the canonical JSON of a light event (LoadStoredJSON),
	// aliasing the arena; AppendJSON sends it as it is.
	stored []byte
}

// Attribution is where a visit came from (DESIGN §3, §4 "Attribution").
type Attribution struct {
	UTMSource    string   `json:"utm_source,omitempty"`
	UTMMedium    string   `json:"utm_medium,omitempty"`
	UTMCampaign  string   `json:"utm_campaign,omitempty"`
	UTMTerm      string   `json:"utm_term,omitempty"`
	UTMContent   string   `json:"utm_content,omitempty"`
	UTMID        string   `json:"utm_id,omitempty"`
	Source       string   `json:"source,omitempty"`
	Medium       string   `json:"medium,omitempty"`
	Campaign     string   `json:"campaign,omitempty"`
	Channel      string   `json:"channel,omitempty"`
	ClickIDs     ClickIDs `json:"click_ids,omitzero"`
	FBC          string   `json:"fbc,omitempty"`
	FBP          string   `json:"fbp,omitempty"`
	ReferrerKind string   `json:"referrer_kind,omitempty"`
	FirstTouch   Touch    `json:"first_touch,omitzero"`
	LastTouch    Touch    `json:"last_touch,omitzero"`
}

// ClickIDs are the ad platforms' click identifiers, byte for byte.
type ClickIDs struct {
	GCLID   string `json:"gclid,omitempty"`
	GBRAID  string `json:"gbraid,omitempty"`
	WBRAID  string `json:"wbraid,omitempty"`
	DCLID   string `json:"dclid,omitempty"`
	SRSLTID string `json:"srsltid,omitempty"`
	FBCLID  string `json:"fbclid,omitempty"`
	MSCLKID string `json:"msclkid,omitempty"`
	TTCLID  string `json:"ttclid,omitempty"`
	LiFatID string `json:"li_fat_id,omitempty"`
	TWCLID  string `json:"twclid,omitempty"`
}

// Touch is one attributed visit: the first, or the last non-direct one.
type Touch struct {
	Source      string    `json:"source,omitempty"`
	Medium      string    `json:"medium,omitempty"`
	Campaign    string    `json:"campaign,omitempty"`
	Channel     string    `json:"channel,omitempty"`
	ClickIDKind string    `json:"click_id_kind,omitempty"`
	At          time.Time `json:"at,omitzero"`
}

// Context is what is known about the client, after privacy rules.
type Context struct {
	UserAgent string `json:"user_agent,omitempty"`
	// IP is the client IP sealed with AES-GCM, present only when the
	// policy for the event's consent state is "keep".
	IP          string `json:"ip,omitempty"`
	IPHash      string `json:"ip_hash,omitempty"`
	IPTruncated string `json:"ip_truncated,omitempty"`
	Country     string `json:"country,omitempty"`
	Region      string `json:"region,omitempty"`
	Locale      string `json:"locale,omitempty"`
	Screen      string `json:"screen,omitempty"`
	Bot         bool   `json:"bot,omitempty"`
	BotReason   string `json:"bot_reason,omitempty"`
}

// ConsentState is one purpose's consent.
type ConsentState uint8

// Consent states. The zero value is unknown, so a fresh event has no
// decision until the consent stage makes one.
const (
	Unknown ConsentState = iota
	Granted
	Denied
)

// String returns the JSON name of s.
func (s ConsentState) String() string {
	switch s {
	case Granted:
		return "granted"
	case Denied:
		return "denied"
	}
	return "unknown"
}

// Consent is the event's consent decision, and the raw signals it came from.
type Consent struct {
	Analytics         ConsentState `json:"analytics"`
	Ads               ConsentState `json:"ads"`
	AdUserData        ConsentState `json:"ad_user_data"`
	AdPersonalization ConsentState `json:"ad_personalization"`
	GPC               bool         `json:"gpc,omitempty"`
	Source            string       `json:"consent_source,omitempty"`

	// Raw signals as received; the consent stage interprets them. GA4
	// relay re-sends gcs/gcd verbatim.
	GCS string `json:"gcs,omitempty"`
	GCD string `json:"gcd,omitempty"`
	NPA string `json:"npa,omitempty"`
	// Categories are Segment categoryPreferences or a /collect consent
	// object's keys, as received.
	Categories Props `json:"categories,omitempty"`
}

// UserData holds SHA-256 hex hashes only, normalized per vendor rules.
type UserData struct {
	EM         string         `json:"em,omitempty"`
	PH         string         `json:"ph,omitempty"`
	FN         string         `json:"fn,omitempty"`
	LN         string         `json:"ln,omitempty"`
	CT         string         `json:"ct,omitempty"`
	ST         string         `json:"st,omitempty"`
	ZP         string         `json:"zp,omitempty"`
	Country    string         `json:"country,omitempty"`
	DB         string         `json:"db,omitempty"`
	GE         string         `json:"ge,omitempty"`
	ExternalID string         `json:"external_id,omitempty"`
	Google     GoogleUserData `json:"google,omitzero"`
}

// GoogleUserData holds hashes where Google's normalization differs from
// Meta's (gmail dots removed; phone in E.164 with '+').
type GoogleUserData struct {
	EM      string `json:"em,omitempty"`
	PH      string `json:"ph,omitempty"`
	FN      string `json:"fn,omitempty"`
	LN      string `json:"ln,omitempty"`
	CT      string `json:"ct,omitempty"`
	ST      string `json:"st,omitempty"`
	ZP      string `json:"zp,omitempty"`
	Country string `json:"country,omitempty"`
}

// PII is raw personal data as received. It lives only between decode and
// the privacy stage, which zeroes it.
type PII struct {
	Email, Phone, FirstName, LastName, City, State, Zip, Country string
	DateOfBirth, Gender, ExternalID                              string
}

// IsZero reports whether no raw personal data is present.
func (p *PII) IsZero() bool { return *p == PII{} }

// Commerce is the order or product data of an event.
type Commerce struct {
	Value         OptFloat `json:"value,omitzero"`
	Currency      string   `json:"currency,omitempty"`
	TransactionID string   `json:"transaction_id,omitempty"`
	Tax           OptFloat `json:"tax,omitzero"`
	Shipping      OptFloat `json:"shipping,omitzero"`
	Coupon        string   `json:"coupon,omitempty"`
	Items         []Item   `json:"items,omitempty"`
}

// Item is one product line.
type Item struct {
	ID          string   `json:"id,omitempty"`
	Name        string   `json:"name,omitempty"`
	Brand       string   `json:"brand,omitempty"`
	Category    string   `json:"category,omitempty"`
	Category2   string   `json:"category2,omitempty"`
	Category3   string   `json:"category3,omitempty"`
	Category4   string   `json:"category4,omitempty"`
	Category5   string   `json:"category5,omitempty"`
	Variant     string   `json:"variant,omitempty"`
	Price       OptFloat `json:"price,omitzero"`
	Quantity    OptFloat `json:"quantity,omitzero"`
	Coupon      string   `json:"coupon,omitempty"`
	Discount    OptFloat `json:"discount,omitzero"`
	Affiliation string   `json:"affiliation,omitempty"`
	ListID      string   `json:"list_id,omitempty"`
	ListName    string   `json:"list_name,omitempty"`
	LocationID  string   `json:"location_id,omitempty"`
	Index       OptFloat `json:"index,omitzero"`
}

// OptFloat is a number that may be absent: a value of 0 and no value are
// different things for validation and for vendors.
type OptFloat struct {
	V   float64
	Set bool
}

// Some returns a present OptFloat.
func Some(v float64) OptFloat { return OptFloat{V: v, Set: true} }

// IsZero makes `omitzero` omit absent values.
func (o OptFloat) IsZero() bool { return !o.Set }

// GAHit keeps the GA4 hit fields that have no canonical home but that GA4
// relay needs to rebuild an equivalent hit.
type GAHit struct {
	Version        string `json:"v,omitempty"`
	GTM            string `json:"gtm,omitempty"`
	SessionEngaged bool   `json:"seg,omitempty"`
	FirstVisit     bool   `json:"fv,omitempty"`
	SessionStart   bool   `json:"ss,omitempty"`
	EngagementMS   int64  `json:"et,omitempty"`
	Debug          bool   `json:"debug,omitempty"`
}

// PropKind is the JSON type of a property value.
type PropKind uint8

// Property kinds.
const (
	PropString PropKind = iota
	PropNumber
	PropBool
)

// Prop is one custom parameter. Props keep insertion order and reuse their
// backing array across pooled events, which a map cannot do without
// allocating.
type Prop struct {
	Key  string
	Kind PropKind
	Str  string
	Num  float64
	Bool bool
}

// Props is an ordered list of custom parameters, serialized as a JSON object.
type Props []Prop

// Get returns the property named key.
func (p Props) Get(key string) (Prop, bool) {
	for _, x := range p {
		if x.Key == key {
			return x, true
		}
	}
	return Prop{}, false
}

// Set replaces or adds a property; keys are unique.
func (p *Props) Set(x Prop) {
	for i := range *p {
		if (*p)[i].Key == x.Key {
			(*p)[i] = x
			return
		}
	}
	*p = append(*p, x)
}

// Delete removes the property named key, keeping order.
func (p *Props) Delete(key string) {
	for i := range *p {
		if (*p)[i].Key == key {
			*p = append((*p)[:i], (*p)[i+1:]...)
			return
		}
	}
}

// Flag is one data-quality flag.
type Flag uint32

// Quality flags (DESIGN §3 `quality`).
const (
	FlagCoercedValue Flag = 1 << iota
	FlagInvalidCurrency
	FlagRenamedEvent
	FlagUnknownEvent
	FlagMissingClickContext
	FlagUnverified
	FlagJoined
	FlagPIIScrubbed
	FlagClockSkew
	FlagTruncated
	FlagDroppedPII
	FlagInvalidParam
)

var flagNames = [...]string{
	"coerced_value", "invalid_currency", "renamed_event", "unknown_event",
	"missing_click_context", "unverified", "joined", "pii_scrubbed",
	"clock_skew", "truncated", "dropped_pii", "invalid_param",
}

// String returns the flag's JSON name.
func (f Flag) String() string {
	for i := range flagNames {
		if f == 1<<i {
			return flagNames[i]
		}
	}
	return "unknown_flag"
}

// Flags is a set of quality flags, serialized as an array of names.
type Flags uint32

// Has reports whether f is set.
func (s Flags) Has(f Flag) bool { return uint32(s)&uint32(f) != 0 }

// Add sets f.
func (s *Flags) Add(f Flag) { *s |= Flags(f) }

// Clear unsets f.
func (s *Flags) Clear(f Flag) { *s &^= Flags(f) }

// Intern copies b into the event's arena and returns it as a string that
// lives as long as the event. It does not allocate once the arena has grown
// to the event's usual size, which is why decoders use it instead of
// string(b).
func (e *Event) Intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(e.arena)-len(e.arena) < len(b) {
		// Start a new chunk rather than growing in place: strings already
		// handed out keep pointing at the old chunk, which stays valid.
		n := 2 * cap(e.arena)
		if n < 1024 {
			n = 1024
		}
		if n < len(b) {
			n = len(b)
		}
		e.arena = make([]byte, 0, n)
	}
	start := len(e.arena)
	e.arena = append(e.arena, b...)
	return unsafe.String(&e.arena[start], len(b))
}

// InternString is Intern for a string (e.g. one that points into a
// request buffer).
func (e *Event) InternString(s string) string {
	return e.Intern(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// VisitorID is what identifies the visitor for ordering and partitioning:
// the device id, else the client's anonymous id, else the user id, else
// the event id (an event with no visitor at all stands alone).
func (e *Event) VisitorID() string {
	switch {
	case e.DeviceID != "":
		return e.DeviceID
	case e.AnonymousID != "":
		return e.AnonymousID
	case e.UserID != "":
		return e.UserID
	}
	return e.EventID
}

// Reset clears e for reuse, keeping its arena and slices' capacity.
func (e *Event) Reset() {
	arena := e.arena[:0]
	props := e.Properties[:0]
	uprops := e.UserProperties[:0]
	cats := e.Consent.Categories[:0]
	items := e.Commerce.Items[:0]
	dests := e.Destinations[:0]
	clear(props[:cap(props)])
	clear(uprops[:cap(uprops)])
	clear(cats[:cap(cats)])
	clear(items[:cap(items)])
	clear(dests[:cap(dests)])
	*e = Event{}
	e.arena = arena
	e.Properties = props
	e.UserProperties = uprops
	e.Consent.Categories = cats
	e.Commerce.Items = items
	e.Destinations = dests
}

// EventPool recycles events. It is owned by whoever wires the process (no
// package-level pool), so tests and benchmarks get their own.
type EventPool struct {
	p sync.Pool
}

// Get returns a reset event.
func (ep *EventPool) Get() *Event {
	if v := ep.p.Get(); v != nil {
		return v.(*Event)
	}
	return &Event{}
}

// Put resets e and returns it to the pool. After Put, e and every string it
// handed out must no longer be used.
func (ep *EventPool) Put(e *Event) {
	if e == nil {
		return
	}
	// Do not pin huge arenas from an outlier event.
	if cap(e.arena) > 64<<10 {
		e.arena = nil
	}
	e.Reset()
	ep.p.Put(e)
}

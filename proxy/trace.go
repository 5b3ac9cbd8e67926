package proxy

import (
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// Explainer says what each destination does with an event: admitted or
// not, and why. forward's Spool does it (main adapts its Admission type);
// the proxy declares only this, so it never imports forward.
type Explainer interface {
	// Explain appends one Admission per destination for e to dst. It must
	// not change e or count anything.
	Explain(e *enrich.Event, dst []Admission) []Admission
}

// Admission is one destination's decision for one event, as the live
// trace shows it.
type Admission struct {
	Destination string `json:"destination"`
	// Admitted: the spool records the event for this destination.
	Admitted bool `json:"admitted"`
	// Reason is a short code (admitted, not_included, excluded, consent,
	// prepare, dry_run, paused); docs/trace.md lists them.
	Reason string `json:"reason"`
	// Detail says which rule, purpose or adapter check decided.
	Detail string `json:"detail,omitempty"`
}

// Tracer is the live trace (/debug/events): a bounded ring of the last
// events with each stage's decision, recorded only while someone is
// looking. Each authorized request to /debug/events opens (or extends) a
// recording window of debug.trace_window; outside it ObserveEvent costs an
// atomic load and a comparison. Entries are copies taken at observation
// time and hold nothing personal: no IP, no email or phone, no user id, no
// hashed contact data, ids cut short, URLs without query and scrubbed.
type Tracer struct {
	explain Explainer
	now     func() time.Time
	window  time.Duration

	// until is the end of the recording window in Unix nanoseconds (0:
	// never opened).
	until atomic.Int64
	// only, when set, restricts recording to these canonical or original
	// names (a request's record parameter), so a busy shop's page views
	// do not push the purchase out of the ring.
	only atomic.Pointer[[]string]

	mu   sync.Mutex
	ring []TraceEntry
	next int    // slot the next entry goes to
	seq  uint64 // entries ever recorded
}

// NewTracer returns a live trace keeping cfg.TraceEvents entries (at least
// one), with destination decisions from x (nil: none shown). now is the
// clock; nil means time.Now.
func NewTracer(cfg config.Debug, x Explainer, now func() time.Time) *Tracer {
	if now == nil {
		now = time.Now
	}
	n := max(cfg.TraceEvents, 1)
	w := cfg.TraceWindow.D()
	if w <= 0 {
		w = 10 * time.Minute
	}
	return &Tracer{explain: x, now: now, window: w, ring: make([]TraceEntry, 0, n)}
}

// TraceEntry is one recorded event. Field meanings are in docs/trace.md.
type TraceEntry struct {
	Seq          uint64    `json:"seq"`
	At           time.Time `json:"at"`
	Source       string    `json:"source"`
	Name         string    `json:"name"`
	OriginalName string    `json:"original_name,omitempty"`
	EventID      string    `json:"event_id,omitempty"`
	// Outcome is the proxy's decision (accepted, duplicate, invalid,
	// quarantined, bot, no_id); Reason says why for the others.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// Page is the page URL without query or fragment, scrubbed.
	Page         string           `json:"page,omitempty"`
	Consent      TraceConsent     `json:"consent"`
	Identity     TraceIdentity    `json:"identity"`
	Attribution  TraceAttribution `json:"attribution,omitzero"`
	Commerce     TraceCommerce    `json:"commerce,omitzero"`
	Quality      []string         `json:"quality,omitempty"`
	Bot          string           `json:"bot,omitempty"`
	Dedup        TraceDedup       `json:"dedup"`
	Destinations []Admission      `json:"destinations,omitempty"`
}

// TraceConsent is the consent stage's decision.
type TraceConsent struct {
	Analytics         string `json:"analytics"`
	Ads               string `json:"ads"`
	AdUserData        string `json:"ad_user_data"`
	AdPersonalization string `json:"ad_personalization"`
	// Source is the deciding signal (gcd, gcs, collect, segment,
	// cmp_cookie, gpc; default or server when no signal spoke).
	Source string `json:"source"`
	GPC    bool   `json:"gpc,omitempty"`
}

// TraceIdentity is what the identity and privacy stages left, as
// presence and kinds rather than values.
type TraceIdentity struct {
	// DeviceKind is cookie, cookieless (consent or no cookie), sent (a
	// backend event's own id) or none.
	DeviceKind string `json:"device_kind"`
	Device     string `json:"device,omitempty"`
	Session    string `json:"session,omitempty"`
	Anonymous  string `json:"anonymous_id,omitempty"`
	UserID     bool   `json:"user_id,omitempty"`
	// UserData lists the hashed contact fields present (em, ph, …).
	UserData []string `json:"user_data,omitempty"`
	// IP is how the client IP was kept: sealed, hashed, truncated or none.
	IP     string `json:"ip"`
	FBP    bool   `json:"fbp,omitempty"`
	FBC    bool   `json:"fbc,omitempty"`
	Joined bool   `json:"joined,omitempty"`
}

// TraceAttribution is the attribution stage's decision.
type TraceAttribution struct {
	Channel      string   `json:"channel,omitempty"`
	Source       string   `json:"source,omitempty"`
	Medium       string   `json:"medium,omitempty"`
	Campaign     string   `json:"campaign,omitempty"`
	ClickIDs     []string `json:"click_ids,omitempty"`
	ReferrerKind string   `json:"referrer_kind,omitempty"`
	FirstTouch   string   `json:"first_touch,omitempty"`
	LastTouch    string   `json:"last_touch,omitempty"`
}

// TraceCommerce is the order data destinations check (Meta refuses a
// Purchase without value and currency).
type TraceCommerce struct {
	Value         *float64 `json:"value,omitempty"`
	Currency      string   `json:"currency,omitempty"`
	TransactionID string   `json:"transaction_id,omitempty"`
	Items         int      `json:"items,omitempty"`
}

// TraceDedup is the dedup stage's decision.
type TraceDedup struct {
	// Result is new, duplicate, released (reserved, then not stored),
	// no_id (nothing to deduplicate by) or not_checked (an earlier stage
	// stopped the event).
	Result string `json:"result"`
	// By is the id the key came from (transaction_id, event_id,
	// idempotency_key, derived).
	By string `json:"by,omitempty"`
	// Key is the first 8 bytes of the key in hex: events that share it
	// are one event to dedup.
	Key string `json:"key,omitempty"`
}

// ObserveEvent implements EventObserver. Outside a recording window it
// returns after one atomic load; inside, it copies what the trace shows.
func (t *Tracer) ObserveEvent(e *enrich.Event, o enrich.Outcome, reason string) {
	until := t.until.Load()
	if until == 0 {
		return
	}
	at := e.ReceivedAt
	if at.IsZero() {
		at = t.now()
	}
	if at.UnixNano() >= until {
		return
	}
	if only := t.only.Load(); only != nil && !nameIn(e, *only) {
		return
	}
	entry := t.entry(e, o, reason, at)
	t.mu.Lock()
	t.seq++
	entry.Seq = t.seq
	if len(t.ring) < cap(t.ring) {
		t.ring = append(t.ring, entry)
	} else {
		t.ring[t.next] = entry
	}
	t.next = (t.next + 1) % cap(t.ring)
	t.mu.Unlock()
}

func nameIn(e *enrich.Event, names []string) bool {
	for _, n := range names {
		if e.Name == n || e.OriginalName == n {
			return true
		}
	}
	return false
}

// Sizes of what the trace shows of ids: enough to tell events apart and
// find them again, too little to be the id.
const (
	traceIDChars  = 8
	traceKeyBytes = 8
	traceMaxText  = 96
)

// entry copies e into a TraceEntry. Every string is a copy (the event is
// pooled) and goes through the privacy scrubber: an event stopped before
// the privacy stage (a 422 on /collect) was never scrubbed.
func (t *Tracer) entry(e *enrich.Event, o enrich.Outcome, reason string, at time.Time) TraceEntry {
	x := TraceEntry{
		At:           at.UTC(),
		Source:       string(e.Source),
		Name:         text(e.Name),
		OriginalName: text(e.OriginalName),
		EventID:      text(e.EventID),
		Outcome:      o.String(),
		Reason:       text(reason),
		Page:         pageOf(e.URL, e.Host, e.Path),
	}
	if x.OriginalName == x.Name {
		x.OriginalName = ""
	}
	c := &e.Consent
	x.Consent = TraceConsent{
		Analytics: c.Analytics.String(), Ads: c.Ads.String(),
		AdUserData: c.AdUserData.String(), AdPersonalization: c.AdPersonalization.String(),
		Source: text(c.Source), GPC: c.GPC,
	}
	x.Identity = identityOf(e)
	x.Attribution = attributionOf(&e.Attribution)
	if cm := &e.Commerce; cm.Value.Set || cm.Currency != "" || cm.TransactionID != "" || len(cm.Items) > 0 {
		x.Commerce = TraceCommerce{Currency: text(cm.Currency), TransactionID: text(cm.TransactionID), Items: len(cm.Items)}
		if cm.Value.Set {
			v := cm.Value.V
			x.Commerce.Value = &v
		}
	}
	for f := enrich.Flag(1); f != 0 && enrich.Flags(f) <= e.Quality; f <<= 1 {
		if e.Quality.Has(f) {
			x.Quality = append(x.Quality, f.String())
		}
	}
	if e.Context.Bot {
		x.Bot = text(e.Context.BotReason)
		if x.Bot == "" {
			x.Bot = "bot"
		}
	}
	x.Dedup = dedupOf(e, o)
	if o == enrich.Accepted && t.explain != nil {
		x.Destinations = t.explain.Explain(e, nil)
		for i := range x.Destinations {
			d := &x.Destinations[i]
			d.Destination = strings.Clone(d.Destination)
			d.Reason = strings.Clone(d.Reason)
			d.Detail = text(d.Detail)
		}
	}
	return x
}

// text copies s, scrubbed of emails and phone numbers, cut to
// traceMaxText bytes.
func text(s string) string {
	if s == "" {
		return ""
	}
	return cut(enrich.RedactText(s), traceMaxText)
}

// short shows the start of a pseudonymous id.
func short(s string) string {
	if s == "" {
		return ""
	}
	return cut(enrich.RedactText(s), traceIDChars)
}

// cut copies s, cut to n bytes (on a rune boundary). Redaction comes
// first: a cut email or phone number no longer looks like one.
func cut(s string, n int) string {
	if len(s) <= n {
		return strings.Clone(s)
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// pageOf is the page URL without query and fragment (where click ids,
// tokens and form values live), scrubbed.
func pageOf(u, host, path string) string {
	if u == "" {
		if path == "" {
			return ""
		}
		u = host + path
	}
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return cut(enrich.RedactURL(u), 2*traceMaxText)
}

func identityOf(e *enrich.Event) TraceIdentity {
	id := TraceIdentity{
		Device: short(e.DeviceID), Session: short(e.SessionID), Anonymous: short(e.AnonymousID),
		UserID: e.UserID != "", FBP: e.Attribution.FBP != "", FBC: e.Attribution.FBC != "",
		Joined: e.Quality.Has(enrich.FlagJoined),
	}
	switch {
	case e.DeviceID == "":
		id.DeviceKind = "none"
	case e.Source == enrich.SourceBackend:
		id.DeviceKind = "sent"
	case strings.HasPrefix(e.DeviceID, "d2."):
		id.DeviceKind = "cookieless"
	default:
		id.DeviceKind = "cookie"
	}
	switch c := &e.Context; {
	case c.IP != "":
		id.IP = "sealed"
	case c.IPHash != "":
		id.IP = "hashed"
	case c.IPTruncated != "":
		id.IP = "truncated"
	default:
		id.IP = "none"
	}
	u := &e.UserData
	for _, f := range [...]struct {
		name string
		set  bool
	}{
		{"em", u.EM != "" || u.Google.EM != ""}, {"ph", u.PH != "" || u.Google.PH != ""},
		{"fn", u.FN != ""}, {"ln", u.LN != ""}, {"ct", u.CT != ""}, {"st", u.ST != ""},
		{"zp", u.ZP != ""}, {"country", u.Country != ""}, {"db", u.DB != ""}, {"ge", u.GE != ""},
		{"external_id", u.ExternalID != ""},
	} {
		if f.set {
			id.UserData = append(id.UserData, f.name)
		}
	}
	return id
}

func attributionOf(a *enrich.Attribution) TraceAttribution {
	x := TraceAttribution{
		Channel: text(a.Channel), Source: text(a.Source), Medium: text(a.Medium),
		Campaign: text(a.Campaign), ReferrerKind: text(a.ReferrerKind),
		FirstTouch: touchOf(&a.FirstTouch), LastTouch: touchOf(&a.LastTouch),
	}
	k := &a.ClickIDs
	for _, c := range [...]struct {
		name string
		v    string
	}{
		{"gclid", k.GCLID}, {"gbraid", k.GBRAID}, {"wbraid", k.WBRAID}, {"dclid", k.DCLID},
		{"srsltid", k.SRSLTID}, {"fbclid", k.FBCLID}, {"msclkid", k.MSCLKID}, {"ttclid", k.TTCLID},
		{"li_fat_id", k.LiFatID}, {"twclid", k.TWCLID},
	} {
		if c.v != "" {
			x.ClickIDs = append(x.ClickIDs, c.name)
		}
	}
	return x
}

// touchOf writes a touch as "channel (source / medium)".
func touchOf(t *enrich.Touch) string {
	if t.Channel == "" && t.Source == "" && t.Medium == "" {
		return ""
	}
	return text(t.Channel + " (" + t.Source + " / " + t.Medium + ")")
}

func dedupOf(e *enrich.Event, o enrich.Outcome) TraceDedup {
	n := &e.Notes
	d := TraceDedup{Result: "not_checked"}
	if n.DedupKey != ([16]byte{}) {
		d.By = n.DedupBy.String()
		d.Key = hex.EncodeToString(n.DedupKey[:traceKeyBytes])
	}
	switch {
	case o == enrich.Duplicate:
		d.Result = "duplicate"
	case d.Key != "" && o == enrich.Accepted:
		d.Result = "new"
	case d.Key != "":
		d.Result = "released"
	case o == enrich.Accepted || o == enrich.NoID:
		// Dedup is the last stage: an accepted event went through it.
		d.Result = "no_id"
	}
	return d
}

// HandleTrace adds GET /debug/events (DESIGN §7), the live trace:
//
//	GET /debug/events?name=N&outcome=O&destination=D&admitted=false&limit=L&record=R
//
// Every request needs the admin token and opens (or extends) a recording
// window of debug.trace_window; nothing is recorded outside one. record
// (names, comma-separated; * for all) restricts what the window records;
// the other parameters only filter what is shown. When
// admin.token is not set the route answers 403: the trace shows how each
// visitor's consent was decided, which an open admin port must not. A nil
// t (debug.trace_events: 0) adds nothing: the route is then 404.
func (s *Server) HandleTrace(t *Tracer) {
	if t == nil {
		return
	}
	s.HandleAdmin("/debug/events", func(ctx *fasthttp.RequestCtx) { t.serve(ctx, s.adminAuth) }, true)
}

// traceAnswer is the JSON of /debug/events.
type traceAnswer struct {
	// RecordingUntil is when the window this request opened ends.
	RecordingUntil time.Time `json:"recording_until"`
	// RecordingOnly lists the names the window records, when a request
	// restricted it with record.
	RecordingOnly []string `json:"recording_only,omitempty"`
	Capacity      int      `json:"capacity"`
	// Recorded counts entries ever recorded; older ones left the ring.
	Recorded uint64       `json:"recorded"`
	Events   []TraceEntry `json:"events"`
}

// traceFilter is a request's filters.
type traceFilter struct {
	names       []string
	record      []string // nil: keep the recording filter; empty: record all
	outcome     string
	destination string
	admitted    string // "", "true" or "false"
	limit       int
}

const traceDefaultLimit = 50

func (t *Tracer) serve(ctx *fasthttp.RequestCtx, tokenSet bool) {
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	if !tokenSet {
		plainAnswer(ctx, fasthttp.StatusForbidden, "Forbidden: the live trace needs admin.token to be set.\n")
		return
	}
	if !ctx.IsGet() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET")
		plainAnswer(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed: use GET.\n")
		return
	}
	f, err := parseTraceFilter(ctx.QueryArgs(), cap(t.ring))
	if err != "" {
		plainAnswer(ctx, fasthttp.StatusBadRequest, "Bad Request: "+err+"\n")
		return
	}
	now := t.now()
	switch {
	case len(f.record) > 0:
		only := f.record
		t.only.Store(&only)
	case f.record != nil || now.UnixNano() >= t.until.Load():
		// record=* asks for everything; so does a new window.
		t.only.Store(nil)
	}
	until := now.Add(t.window)
	t.until.Store(until.UnixNano())
	ans := traceAnswer{RecordingUntil: until.UTC(), Capacity: cap(t.ring)}
	if only := t.only.Load(); only != nil {
		ans.RecordingOnly = *only
	}
	ans.Events, ans.Recorded = t.snapshot(f)
	if ans.Events == nil {
		ans.Events = []TraceEntry{}
	}
	b, jerr := json.Marshal(&ans)
	if jerr != nil {
		plainAnswer(ctx, fasthttp.StatusInternalServerError, "Internal Server Error\n")
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(b)
}

func parseTraceFilter(q *fasthttp.Args, capacity int) (traceFilter, string) {
	f := traceFilter{limit: min(traceDefaultLimit, capacity)}
	f.names = nameList(q.Peek("name"))
	if q.Has("record") {
		f.record = nameList(q.Peek("record"))
		if f.record == nil || slices.Contains(f.record, "*") {
			f.record = []string{}
		}
	}
	f.outcome = string(q.Peek("outcome"))
	f.destination = string(q.Peek("destination"))
	switch f.admitted = string(q.Peek("admitted")); f.admitted {
	case "", "true", "false":
	default:
		return f, "admitted must be true or false"
	}
	if f.admitted != "" && f.destination == "" {
		return f, "admitted needs destination"
	}
	if v := q.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 {
			return f, "limit must be a positive integer"
		}
		f.limit = min(n, capacity)
	}
	return f, ""
}

// nameList splits a comma-separated list of names.
func nameList(v []byte) []string {
	var out []string
	for _, n := range strings.Split(string(v), ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// snapshot returns the matching entries, newest first, and the number of
// entries ever recorded.
func (t *Tracer) snapshot(f traceFilter) ([]TraceEntry, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []TraceEntry
	for i := 1; i <= len(t.ring) && len(out) < f.limit; i++ {
		x := t.ring[(t.next-i+cap(t.ring))%cap(t.ring)]
		if x, ok := f.match(x); ok {
			out = append(out, x)
		}
	}
	return out, t.seq
}

// match applies the filters; with destination it narrows the entry's
// destinations to that one. An event that was not accepted has no
// destinations and stays: its outcome is why it reached none.
func (f *traceFilter) match(x TraceEntry) (TraceEntry, bool) {
	if len(f.names) > 0 && !containsString(f.names, x.Name) && !containsString(f.names, x.OriginalName) {
		return x, false
	}
	if f.outcome != "" && x.Outcome != f.outcome {
		return x, false
	}
	if f.destination == "" {
		return x, true
	}
	var own []Admission
	for _, a := range x.Destinations {
		if a.Destination == f.destination {
			own = append(own, a)
		}
	}
	if x.Outcome == enrich.Accepted.String() && len(own) == 0 {
		return x, false // accepted, but the destination is unknown
	}
	x.Destinations = own
	switch f.admitted {
	case "true":
		return x, len(own) == 1 && own[0].Admitted
	case "false":
		return x, len(own) == 0 || !own[0].Admitted
	}
	return x, true
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

package enrich

// DedupBy says which id the dedup stage derived an event's key from, so
// the live trace can say why two events were taken for one ("same
// transaction id" reads differently from "same GA4 hit").
type DedupBy uint8

// The ids of DESIGN §4 "Dedup", in the stage's order of precedence.
const (
	// DedupByNone: dedup did not run, or the event had nothing to
	// deduplicate by (it got a fresh UUIDv7 and no key).
	DedupByNone DedupBy = iota
	// DedupByOrder: an order event's transaction id.
	DedupByOrder
	// DedupByEventID: the client's event id (messageId, event_id).
	DedupByEventID
	// DedupByIdempotency: the request's X-Idempotency-Key.
	DedupByIdempotency
	// DedupByDerived: an id derived from a GA4 hit or an id-less page view.
	DedupByDerived
)

var dedupByNames = [...]string{"none", "transaction_id", "event_id", "idempotency_key", "derived"}

// String returns the name the live trace shows.
func (b DedupBy) String() string {
	if int(b) < len(dedupByNames) {
		return dedupByNames[b]
	}
	return "unknown"
}

// StageNotes record decisions stages make that leave no other mark on the
// event. They exist for the live trace and are never serialized or
// stored; filling them costs a few bytes copied per event, no allocation.
type StageNotes struct {
	// DedupKey is the key dedup derived, kept when the event turned out a
	// duplicate or its reservation was released (both clear
	// Event.DedupKey, which means "the spool must commit this").
	DedupKey [16]byte
	// DedupBy is the id DedupKey was derived from.
	DedupBy DedupBy
}

// RedactText returns s with every email address and phone number replaced
// by "[redacted]", as the privacy stage scrubs free text. It returns s
// itself when there is nothing to redact. For copies taken off the hot
// path (the live trace): fields that went through the privacy stage are
// already scrubbed, but an event rejected before that stage is not.
func RedactText(s string) string {
	out, changed := scrubText(nil, s)
	if !changed {
		return s
	}
	return string(out)
}

// RedactURL is RedactText for a URL, with the privacy stage's URL rules
// (a path segment or parameter value holding an email or phone number is
// redacted, parameter names are kept).
func RedactURL(u string) string {
	out, changed := scrubURL(nil, u)
	if !changed {
		return u
	}
	return string(out)
}

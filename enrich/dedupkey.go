package enrich

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"

	"github.com/google/uuid"
)

// Dedup keys (DESIGN §4 "Dedup"). A key is the first 16 bytes of a SHA-256
// of (scope, canonical name, id kind, id). It is stored in the spool's id
// index and in Bloom snapshots, so its layout is versioned: changing what
// goes into it must change dedupKeyTag, or duplicates straddling an upgrade
// would be missed.
//
// SHA-256 rather than a fast non-cryptographic hash: ids come from the
// internet, and a key collision drops an event, so collisions must not be
// constructible. One compression block (short ids) costs about as much as
// the map lookup that follows.

const (
	dedupKeyTag     = "sidetrack/dedup-key/v1"
	dedupDerivedTag = "sidetrack/event-id/v1"
	// dedupCrossScope is the scope of names in dedup.cross_source: the
	// same order from gtag, analytics.js and the backend is one event.
	dedupCrossScope = "cross"
	// dedupPageBucket is the touchpoint granularity of id-less page views.
	dedupPageBucket = 10 // seconds
)

// What the id of a key is. Each kind is its own namespace, so a client's
// event_id can never collide with a transaction id of the same value.
const (
	dedupIDEvent       = 'e' // the client's messageId / event_id / ep.event_id
	dedupIDOrder       = 'o' // the transaction id of an order event
	dedupIDIdempotency = 'k' // X-Idempotency-Key (single-event requests)
	dedupIDDerived     = 'd' // a derived UUIDv8 (GA4 hit, id-less page view)
)

// Canonical names with order semantics: their id is the transaction id.
const (
	nameOrderCompleted = "order_completed"
	nameOrderPaid      = "order_paid"
	nameOrderRefunded  = "order_refunded"
	namePageViewed     = "page_viewed"
)

func isOrderName(name string) bool {
	return name == nameOrderCompleted || name == nameOrderPaid || name == nameOrderRefunded
}

// Hash preimages are built from length-prefixed fields with these append
// functions, into a caller's stack array for common sizes; a longer one (a
// long page URL) spills to the heap, the only allocation key derivation
// can make.

// dedupPreimageSize is the stack buffer for a preimage.
const dedupPreimageSize = 320

// appendField appends a length-prefixed field, so ("ab","c") and
// ("a","bc") differ.
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendInt(b []byte, v int64) []byte { return binary.BigEndian.AppendUint64(b, uint64(v)) }

// appendCanonURL appends u as a length-prefixed field in canonical form: no
// fragment, scheme and host lower-cased, an empty path written as "/".
// Two beacons of one page view that differ only in those respects are one
// touchpoint.
func appendCanonURL(b []byte, u string) []byte {
	if i := strings.IndexByte(u, '#'); i >= 0 {
		u = u[:i]
	}
	at := len(b)
	b = append(b, 0, 0, 0, 0)
	authEnd := 0
	if i := strings.Index(u, "://"); i >= 0 {
		authEnd = i + 3
		if j := strings.IndexAny(u[authEnd:], "/?"); j >= 0 {
			authEnd += j
		} else {
			authEnd = len(u)
		}
	}
	for i := 0; i < authEnd; i++ {
		c := u[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	if authEnd > 0 && (authEnd == len(u) || u[authEnd] == '?') {
		b = append(b, '/')
	}
	b = append(b, u[authEnd:]...)
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// dedupScope returns the key scope of e: "cross" for the configured
// cross-source names, else the source kind.
func (d *Dedup) dedupScope(e *Event) string {
	if _, ok := d.cross[e.Name]; ok {
		return dedupCrossScope
	}
	if e.Source == "" {
		return "unknown"
	}
	return string(e.Source)
}

// eventKey derives e's dedup key (DESIGN §4) into e.DedupKey and fills
// e.EventID when the client sent none. It returns false when the event has
// nothing to deduplicate by: it then carries a fresh UUIDv7 and no key.
//
// Precedence: an order's transaction id (the browser's and the backend's
// event ids for one order differ, the transaction id does not); the
// client's event id; X-Idempotency-Key; a GA4 hit's derived id; an
// id-less page view's touchpoint id; else none.
func (d *Dedup) eventKey(e *Event) bool {
	var arr [dedupPreimageSize]byte
	var kind byte
	var id, extra string
	switch {
	case isOrderName(e.Name) && e.Commerce.TransactionID != "":
		kind, id = dedupIDOrder, e.Commerce.TransactionID
		e.Notes.DedupBy = DedupByOrder
		if e.Name == nameOrderRefunded {
			// Partial refunds of one order are distinct events when the
			// sender tells them apart with its own event ids.
			extra = e.EventID
		}
	case e.EventID != "":
		kind, id = dedupIDEvent, e.EventID
		e.Notes.DedupBy = DedupByEventID
	case e.IdempotencyKey != "":
		kind, id = dedupIDIdempotency, e.IdempotencyKey
		e.Notes.DedupBy = DedupByIdempotency
		if e.Index == 0 {
			e.EventID = e.IdempotencyKey
			break
		}
		// The proxy only sets the key on single-event requests; should a
		// batch carry one, each event gets key#index.
		b := appendField(arr[:0], dedupDerivedTag)
		b = appendField(b, "idempotency")
		b = appendField(b, e.IdempotencyKey)
		b = appendInt(b, int64(e.Index))
		e.EventID = internUUIDBytes(e, sha256.Sum256(b))
		kind, id = dedupIDDerived, e.EventID
	case e.Source == SourceGA4 && e.AnonymousID != "":
		// gtag never sends an id of its own; a hit is identified by the
		// client id, page load, hit sequence and its line in the request.
		b := appendField(arr[:0], dedupDerivedTag)
		b = appendField(b, "ga4")
		b = appendField(b, e.AnonymousID)
		b = appendField(b, e.PageLoadID)
		b = appendInt(b, e.HitSeq)
		b = appendInt(b, int64(e.Index))
		b = appendField(b, e.OriginalName)
		e.EventID = internUUIDBytes(e, sha256.Sum256(b))
		kind, id = dedupIDDerived, e.EventID
	case e.Name == namePageViewed && (e.DeviceID != "" || e.AnonymousID != ""):
		dev := e.DeviceID
		if dev == "" {
			dev = e.AnonymousID
		}
		b := appendField(arr[:0], dedupDerivedTag)
		b = appendField(b, "page")
		b = appendField(b, dev)
		b = appendCanonURL(b, e.URL)
		b = appendInt(b, floorDiv(e.OccurredAt.Unix(), dedupPageBucket))
		e.EventID = internUUIDBytes(e, sha256.Sum256(b))
		kind, id = dedupIDDerived, e.EventID
	default:
		e.EventID = internUUIDv7(e)
		e.DedupKey = [16]byte{}
		e.Notes.DedupBy = DedupByNone
		return false
	}

	b := appendField(arr[:0], dedupKeyTag)
	b = appendField(b, d.dedupScope(e))
	b = appendField(b, e.Name)
	b = append(b, kind)
	b = appendField(b, id)
	b = appendField(b, extra)
	sum := sha256.Sum256(b)
	copy(e.DedupKey[:], sum[:16])
	e.Notes.DedupKey = e.DedupKey
	if kind == dedupIDDerived {
		e.Notes.DedupBy = DedupByDerived
	}
	if e.EventID == "" {
		// An order without a client event id: its id is its key, so every
		// source of a cross-source order sends destinations the same
		// event_id (what Meta and Google deduplicate by).
		e.EventID = internUUIDBytes(e, sum)
	}
	return true
}

// internUUIDBytes formats the first 16 bytes of a hash as a UUIDv8 (RFC
// 9562: version 8, variant 10) in e's arena.
func internUUIDBytes(e *Event, sum [32]byte) string {
	var u [16]byte
	copy(u[:], sum[:16])
	u[6] = (u[6] & 0x0f) | 0x80
	u[8] = (u[8] & 0x3f) | 0x80
	var buf [36]byte
	hexUUID(buf[:], u)
	return e.Intern(buf[:])
}

// internUUIDv7 returns a fresh UUIDv7 in e's arena (time-ordered, so
// id-less events still sort by arrival downstream).
func internUUIDv7(e *Event) string {
	u, err := uuid.NewV7()
	if err != nil {
		u = uuid.New()
	}
	var buf [36]byte
	hexUUID(buf[:], u)
	return e.Intern(buf[:])
}

func hexUUID(dst []byte, u [16]byte) {
	const hexd = "0123456789abcdef"
	j := 0
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hexd[b>>4], hexd[b&0xf]
		j += 2
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

package enrich

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"

	"github.com/google/uuid"

	"github.com/sidetrack/sidetrack/config"
)

// Dedup gives every event its dedup id (DESIGN §4 "Dedup"): the client's
// id when it sent one, else a deterministic id derived from what identifies
// the event on the wire (so a retried request gets the same id), else a
// fresh UUIDv7.
type Dedup struct{}

// NewDedup returns the dedup stage.
func NewDedup(*config.Config) *Dedup { return &Dedup{} }

// Apply assigns e.EventID when the client sent none.
func (d *Dedup) Apply(_ *Request, e *Event, res *EventResult) {
	if e.EventID != "" {
		return
	}
	switch {
	case e.IdempotencyKey != "":
		e.EventID = e.IdempotencyKey
	case e.Source == SourceGA4 && e.AnonymousID != "":
		e.EventID = e.derivedID("ga4", e.AnonymousID, e.PageLoadID, strconv.FormatInt(e.HitSeq, 10), strconv.Itoa(e.Index), e.OriginalName)
	default:
		id, err := uuid.NewV7()
		if err != nil {
			id = uuid.New()
		}
		e.EventID = id.String()
	}
}

// derivedID hashes parts into a UUIDv8 string stored in the event's arena.
func (e *Event) derivedID(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	var sum [32]byte
	h.Sum(sum[:0])
	var u uuid.UUID
	copy(u[:], sum[:16])
	u[6] = (u[6] & 0x0f) | 0x80 // version 8
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	var buf [36]byte
	hexUUID(buf[:], u)
	return e.Intern(buf[:])
}

func hexUUID(dst []byte, u uuid.UUID) {
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

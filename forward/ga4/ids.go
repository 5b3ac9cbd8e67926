package ga4

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"

	"github.com/sidetrack/sidetrack/enrich"
)

// isGACID reports whether s has the shape of a GA client id as gtag.js
// sends it in cid and stores it in _ga: digits, a dot, digits.
func isGACID(s string) bool {
	dot := -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' && dot < 0:
			dot = i
		case c < '0' || c > '9':
			return false
		}
	}
	return dot > 0 && dot < len(s)-1 && len(s) <= 64
}

// clientID returns the GA client id an event is sent under (cid, MP
// client_id):
//
//   - the event's anonymous id when it is a GA client id (the browser's
//     _ga, from the hit itself or from the join stage);
//   - otherwise a stable id derived from, in order, the device id, the
//     anonymous id (Segment's anonymousId), the user id, or the event id:
//     "<n>.<m>", two 31-bit numbers from SHA-256("sidetrack/ga4/cid\x00"
//     ‖ kind ‖ id), so every event of one device or user lands on one GA
//     client, in the format GA expects. The event id is the last resort:
//     such an event becomes a GA user of its own.
//
// It returns "" only for an event with no id at all.
func clientID(e *enrich.Event) string {
	if isGACID(e.AnonymousID) {
		return e.AnonymousID
	}
	var kind, id string
	switch {
	case e.DeviceID != "":
		kind, id = "d", e.DeviceID
	case e.AnonymousID != "":
		kind, id = "a", e.AnonymousID
	case e.UserID != "":
		kind, id = "u", e.UserID
	case e.EventID != "":
		kind, id = "e", e.EventID
	default:
		return ""
	}
	sum := derive("sidetrack/ga4/cid", kind, id)
	var b [24]byte
	out := strconv.AppendUint(b[:0], uint64(binary.BigEndian.Uint32(sum[0:4])&0x7fffffff), 10)
	out = append(out, '.')
	out = strconv.AppendUint(out, uint64(binary.BigEndian.Uint32(sum[4:8])&0x7fffffff), 10)
	return string(out)
}

// sessionID returns the GA session id (sid, MP session_id): the hit's own,
// else a number derived from sidetrack's session id (so events of one
// sidetrack session share one GA session), else "".
func sessionID(e *enrich.Event) string {
	if e.GASessionID != "" {
		return e.GASessionID
	}
	if e.SessionID == "" {
		return ""
	}
	sum := derive("sidetrack/ga4/sid", "s", e.SessionID)
	return strconv.FormatUint(uint64(binary.BigEndian.Uint32(sum[0:4])&0x7fffffff), 10)
}

func derive(domain, kind, id string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

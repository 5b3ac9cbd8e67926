package forward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The spool stores three kinds of values, each led by a version byte so a
// later release can change a layout and still read what an older one
// wrote. Integers are varints: records are read on every delivery, and
// most fields are small.
//
// record (bucket "events", key = seq):
//
//	version | uvarint appended_ms | uvarint n | n × (uvarint len, name) | event JSON
//
// The admitted destination names sit in the header so that delivery and
// the start-up scan never parse JSON to learn who an event is for; the
// JSON is enrich.Event.AppendJSON's, so it also lists them.
//
// dead letter (buckets "dlq/<dest>" and "quarantine", key = own sequence):
//
//	version | varint dead_ms | uvarint appended_ms | str reason | uvarint attempts
//	| uvarint status | str excerpt | event JSON
//
// retry state (bucket "dest/<dest>/retry", key = seq):
//
//	version | uvarint attempts | varint next_ms | uvarint status | str excerpt
const (
	recordVersion     = 1
	deadLetterVersion = 1
	retryVersion      = 1

	// maxRecordDests bounds the admitted destinations of one record: the
	// pending set is a 64-bit mask indexed by position in the header.
	maxRecordDests = 64
	// maxStrLen bounds a name, reason or excerpt in a stored value.
	maxStrLen = 1024
)

// errBadRecord is the cause of every decoding failure: a value that does
// not parse means the file is not what this code wrote.
var errBadRecord = errors.New("malformed spool value")

// recordHeader is the decoded fixed part of a record.
type recordHeader struct {
	appended time.Time
	dests    []string // aliases the record bytes only through string copies
	jsonOff  int      // offset of the event JSON in the record
}

// appendRecord appends a record for an event already encoded as json.
func appendRecord(dst []byte, appended time.Time, dests []string, json []byte) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, uint64(appended.UnixMilli()))
	dst = binary.AppendUvarint(dst, uint64(len(dests)))
	for _, d := range dests {
		dst = appendStr(dst, d)
	}
	return append(dst, json...)
}

// appendRecordHeader appends only the header; the caller appends the JSON.
func appendRecordHeader(dst []byte, appended time.Time, dests []string) []byte {
	return appendRecord(dst, appended, dests, nil)
}

// decodeRecordHeader parses a record header. names, when not nil, is
// reused for the destination list; the strings are copies, so they stay
// valid after the bbolt transaction that produced b ends.
func decodeRecordHeader(b []byte, names []string) (recordHeader, error) {
	var h recordHeader
	if len(b) == 0 || b[0] != recordVersion {
		return h, fmt.Errorf("%w: record version", errBadRecord)
	}
	r := reader{b: b, off: 1}
	ms := r.uvarint()
	n := r.uvarint()
	if r.err != nil || n > maxRecordDests {
		return h, fmt.Errorf("%w: record header", errBadRecord)
	}
	h.dests = names[:0]
	for i := uint64(0); i < n; i++ {
		h.dests = append(h.dests, string(r.str()))
	}
	if r.err != nil {
		return h, fmt.Errorf("%w: record destinations", errBadRecord)
	}
	h.appended = time.UnixMilli(int64(ms))
	h.jsonOff = r.off
	return h, nil
}

// recordDestIndex finds dest in a record header without allocating: the
// delivery path reads every record in order and only needs to know
// whether, and where, its own name is listed. nd is the number of
// destinations listed.
func recordDestIndex(b []byte, dest string) (idx, nd int, appended time.Time, jsonOff int, err error) {
	if len(b) == 0 || b[0] != recordVersion {
		return -1, 0, time.Time{}, 0, fmt.Errorf("%w: record version", errBadRecord)
	}
	r := reader{b: b, off: 1}
	ms := r.uvarint()
	n := r.uvarint()
	if r.err != nil || n > maxRecordDests {
		return -1, 0, time.Time{}, 0, fmt.Errorf("%w: record header", errBadRecord)
	}
	idx = -1
	for i := 0; i < int(n); i++ {
		if s := r.str(); idx < 0 && string(s) == dest {
			idx = i
		}
	}
	if r.err != nil {
		return -1, 0, time.Time{}, 0, fmt.Errorf("%w: record destinations", errBadRecord)
	}
	return idx, int(n), time.UnixMilli(int64(ms)), r.off, nil
}

// deadLetter is one DLQ or quarantine entry.
type deadLetter struct {
	dead     time.Time
	appended time.Time
	reason   string
	attempts int
	status   int
	excerpt  string
	json     []byte // aliases the decoded bytes
}

func appendDeadLetter(dst []byte, d *deadLetter) []byte {
	dst = append(dst, deadLetterVersion)
	dst = binary.AppendVarint(dst, d.dead.UnixMilli())
	dst = binary.AppendUvarint(dst, uint64(max(d.appended.UnixMilli(), 0)))
	dst = appendStr(dst, d.reason)
	dst = binary.AppendUvarint(dst, uint64(max(d.attempts, 0)))
	dst = binary.AppendUvarint(dst, uint64(max(d.status, 0)))
	dst = appendStr(dst, d.excerpt)
	return append(dst, d.json...)
}

// decodeDeadLetter parses an entry; json and the strings alias or copy b
// as documented on deadLetter (strings are copies).
func decodeDeadLetter(b []byte) (deadLetter, error) {
	var d deadLetter
	if len(b) == 0 || b[0] != deadLetterVersion {
		return d, fmt.Errorf("%w: dead letter version", errBadRecord)
	}
	r := reader{b: b, off: 1}
	dead := r.varint()
	app := r.uvarint()
	reason := r.str()
	attempts := r.uvarint()
	status := r.uvarint()
	excerpt := r.str()
	if r.err != nil || attempts > 1<<31 || status > 999 {
		return d, fmt.Errorf("%w: dead letter", errBadRecord)
	}
	d.dead = time.UnixMilli(dead)
	d.appended = time.UnixMilli(int64(app))
	d.reason = string(reason)
	d.attempts = int(attempts)
	d.status = int(status)
	d.excerpt = string(excerpt)
	d.json = b[r.off:]
	return d, nil
}

// deadLetterTime reads only the dead-letter time of an entry (bounds
// enforcement walks entries oldest first and stops early).
func deadLetterTime(b []byte) (time.Time, error) {
	if len(b) == 0 || b[0] != deadLetterVersion {
		return time.Time{}, fmt.Errorf("%w: dead letter version", errBadRecord)
	}
	r := reader{b: b, off: 1}
	ms := r.varint()
	if r.err != nil {
		return time.Time{}, fmt.Errorf("%w: dead letter", errBadRecord)
	}
	return time.UnixMilli(ms), nil
}

// retryState is a persisted member of a destination's retry set.
type retryState struct {
	attempts int
	next     time.Time
	status   int
	excerpt  string
}

func appendRetryState(dst []byte, s *retryState) []byte {
	dst = append(dst, retryVersion)
	dst = binary.AppendUvarint(dst, uint64(max(s.attempts, 0)))
	dst = binary.AppendVarint(dst, s.next.UnixMilli())
	dst = binary.AppendUvarint(dst, uint64(max(s.status, 0)))
	return appendStr(dst, s.excerpt)
}

func decodeRetryState(b []byte) (retryState, error) {
	var s retryState
	if len(b) == 0 || b[0] != retryVersion {
		return s, fmt.Errorf("%w: retry state version", errBadRecord)
	}
	r := reader{b: b, off: 1}
	attempts := r.uvarint()
	next := r.varint()
	status := r.uvarint()
	excerpt := r.str()
	if r.err != nil || r.off != len(b) || attempts > 1<<31 || status > 999 {
		return s, fmt.Errorf("%w: retry state", errBadRecord)
	}
	s.attempts = int(attempts)
	s.next = time.UnixMilli(next)
	s.status = int(status)
	s.excerpt = string(excerpt)
	return s, nil
}

// seqKey is the big-endian key of a sequence number, so bbolt's byte
// order is numeric order.
func seqKey(dst []byte, seq uint64) []byte { return binary.BigEndian.AppendUint64(dst, seq) }

// keySeq reads a key written by seqKey.
func keySeq(k []byte) (uint64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}

func appendStr(dst []byte, s string) []byte {
	if len(s) > maxStrLen {
		s = s[:maxStrLen]
	}
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// reader decodes varints and strings, remembering the first error so a
// decoder checks once at the end.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.err = errBadRecord
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.err = errBadRecord
		return 0
	}
	r.off += n
	return v
}

func (r *reader) str() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > maxStrLen || n > uint64(len(r.b)-r.off) {
		r.err = errBadRecord
		return nil
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

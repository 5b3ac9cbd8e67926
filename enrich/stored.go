package enrich

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"unsafe"
)

var (
	// errNotLight says a stored event cannot be loaded in its light form;
	// the caller decodes it in full instead.
	errNotLight = errors.New("stored event: event_id or name is not a plain JSON string")
	// errStoredInvalid says the stored bytes are not one valid JSON value.
	errStoredInvalid = errors.New("stored event: not valid JSON")
)

// LoadStoredJSON makes e the light form of a stored event, for delivery to
// a destination that sends every event as its canonical JSON and reads no
// field but EventID and Name. js must be AppendJSON's output (what the
// spool keeps): it is checked to be one valid JSON value and copied into
// e's arena, and only its top-level event_id and name are read (the last
// of each, as DecodeJSON does). Decoding every field only to encode the
// same bytes again is most of what delivery costs for such destinations.
//
// Afterwards AppendJSON appends the stored bytes unchanged; every other
// field stays zero, so a light event is read-only and only for those
// destinations. On error e is reset and the caller falls back to
// DecodeJSON: js is not valid JSON, not an object, or its id or name (or
// a key) is escaped or not a string (which DecodeJSON handles).
func (e *Event) LoadStoredJSON(js []byte) error {
	e.Reset()
	sc := storedScan{b: js}
	end := sc.value(0, 0)
	if end >= 0 {
		end = skipSpace(js, end)
	}
	switch {
	case end != len(js):
		return errStoredInvalid
	case !sc.object || sc.escaped:
		return errNotLight
	}
	s := e.Intern(js)
	e.stored = unsafe.Slice(unsafe.StringData(s), len(s))
	e.EventID = s[sc.id[0]:sc.id[1]]
	e.Name = s[sc.name[0]:sc.name[1]]
	return nil
}

// StoredJSON returns the bytes LoadStoredJSON kept, or nil for an event
// that was built or decoded field by field.
func (e *Event) StoredJSON() []byte { return e.stored }

// maxStoredDepth bounds nesting, as fastjson (which DecodeJSON uses) does.
const maxStoredDepth = 300

// storedScan validates a JSON document in one pass (the grammar of RFC
// 8259, as encoding/json.Valid checks it) and notes where the top-level
// "event_id" and "name" string values are. Strings, most of a stored
// event, are skipped eight bytes at a time. Its methods return the offset
// after what they read, or -1 when the input is not valid.
type storedScan struct {
	b        []byte
	object   bool   // the document is an object
	escaped  bool   // a top-level key, or the id or name, holds an escape
	id, name [2]int // offsets of the values' contents
}

func skipSpace(js []byte, i int) int {
	if i < len(js) && js[i] > ' ' {
		return i // the usual case: canonical JSON has no spaces
	}
	for i < len(js) && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r') {
		i++
	}
	return i
}

// value reads the value at or after i; depth is its nesting level (the
// document is 0).
func (s *storedScan) value(i, depth int) int {
	b := s.b
	i = skipSpace(b, i)
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := s.str(i)
		return end
	case c == '{':
		return s.obj(i, depth+1)
	case c == '[':
		return s.arr(i, depth+1)
	case c == 't':
		return lit(b, i, "true")
	case c == 'f':
		return lit(b, i, "false")
	case c == 'n':
		return lit(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return num(b, i)
	}
	return -1
}

func (s *storedScan) obj(i, depth int) int {
	if depth > maxStoredDepth {
		return -1
	}
	b := s.b
	top := depth == 1
	if top {
		s.object = true
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		ks := i + 1
		end, esc := s.str(i)
		if end < 0 {
			return -1
		}
		var dst *[2]int
		if top {
			if esc {
				s.escaped = true
			}
			switch string(b[ks : end-1]) {
			case "event_id":
				dst = &s.id
			case "name":
				dst = &s.name
			}
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		if dst != nil {
			if i >= len(b) || b[i] != '"' {
				s.escaped = true // not a string: DecodeJSON decides
				i = s.value(i, depth)
			} else {
				vs := i + 1
				i, esc = s.str(i)
				if esc {
					s.escaped = true
				}
				*dst = [2]int{vs, i - 1}
			}
		} else {
			i = s.value(i, depth)
		}
		if i < 0 {
			return -1
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

func (s *storedScan) arr(i, depth int) int {
	if depth > maxStoredDepth {
		return -1
	}
	b := s.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for {
		if i = s.value(i, depth); i < 0 {
			return -1
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1
		default:
			return -1
		}
	}
}

// str reads the string starting at b[i] == '"'; esc says it holds an
// escape sequence.
func (s *storedScan) str(i int) (end int, esc bool) {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	b := s.b
	j := i + 1
	for {
		// Eight bytes at a time while none is a quote, a backslash or a
		// control byte; the lowest flagged byte of a word is exact (the
		// tests' borrows only run upwards), so it is where to look.
		for j+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[j:])
			q, bs := w^(lsb*'"'), w^(lsb*'\\')
			if m := ((w-lsb*0x20)&^w | (q-lsb)&^q | (bs-lsb)&^bs) & msb; m != 0 {
				j += bits.TrailingZeros64(m) / 8
				break
			}
			j += 8
		}
		if j >= len(b) {
			return -1, esc
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1, esc
		case c < 0x20:
			return -1, esc
		case c == '\\':
			esc = true
			if j+1 >= len(b) {
				return -1, esc
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) || !isHex(b[j+5]) {
					return -1, esc
				}
				j += 6
			default:
				return -1, esc
			}
		default:
			j++
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'f')
}

func lit(b []byte, i int, word string) int {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

// num reads a number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func num(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	digits := func(i int) int {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	default:
		if i = digits(i); i < 0 {
			return -1
		}
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

package enrich

import "strings"

// GA4 keeps its client id in `_ga` and per-stream session state in
// `_ga_<container id>` (the measurement id without "G-"). gtag sends both
// ids on every hit (cid, sid, sct), so these cookies only matter for hits
// that lack them: a custom loader, a stripped query, a server-side tag. The
// parsers below are pure, never allocate, and return slices of their
// input.

// ParseGACookie returns the GA client id in an `_ga` cookie value:
// "GA1.<domain level>.<random>.<first visit unix s>" → "<random>.<first
// visit>". Both parts must be digits; anything else is rejected rather than
// guessed at.
func ParseGACookie(v string) (cid string, ok bool) {
	if !strings.HasPrefix(v, "GA1.") {
		return "", false
	}
	level, rest, found := strings.Cut(v[4:], ".")
	if !found || !ckDigits(level, 1, 2) {
		return "", false
	}
	rnd, ts, found := strings.Cut(rest, ".")
	if !found || !ckDigits(rnd, 1, 20) || !ckDigits(ts, 1, 20) {
		return "", false
	}
	return rest, true
}

// GASession is the session state in an `_ga_<ID>` cookie.
type GASession struct {
	// ID is the session id: the session start in unix seconds, as gtag
	// sends it in `sid`.
	ID string
	// Number is the session count (`sct`), starting at 1.
	Number int64
	// Engaged is the engaged-session flag (`seg`).
	Engaged bool
	// LastHit is the time of the last hit, unix seconds (0 if absent).
	LastHit int64
}

// ParseGASessionCookie parses an `_ga_<ID>` value in either format gtag
// has written:
//
//	GS1.1.<sid>.<sct>.<seg>.<last hit>.<j>.<l>.<h>
//	GS2.1.s<sid>$o<sct>$g<seg>$t<last hit>$j<…>$l<…>$h<…>
//
// e.g. "GS1.1.1689765380.3.1.1689766550.0.0.0" and
// "GS2.1.s1795442481$o1$g0$t1795442483$j58$l0$h679041404". The second field
// is the domain level. Session id and number are required; the other fields
// are optional and unknown GS2 keys are skipped, since Google adds keys
// without notice.
func ParseGASessionCookie(v string) (GASession, bool) {
	var s GASession
	var ok bool
	switch {
	case strings.HasPrefix(v, "GS1."):
		s, ok = parseGS1(v[4:])
	case strings.HasPrefix(v, "GS2."):
		s, ok = parseGS2(v[4:])
	}
	if !ok || s.ID == "" || s.Number <= 0 {
		return GASession{}, false
	}
	return s, true
}

func parseGS1(v string) (GASession, bool) {
	var s GASession
	level, v, _ := strings.Cut(v, ".")
	if !ckDigits(level, 1, 2) {
		return s, false
	}
	for i := 0; v != "" || i < 2; i++ {
		var f string
		f, v, _ = strings.Cut(v, ".")
		switch i {
		case 0:
			if !ckDigits(f, 1, 20) {
				return s, false
			}
			s.ID = f
		case 1:
			n, ok := gaInt(f)
			if !ok {
				return s, false
			}
			s.Number = n
		case 2:
			s.Engaged = f == "1"
		case 3:
			s.LastHit, _ = gaInt(f)
		}
		if i > 16 {
			return s, false
		}
	}
	return s, true
}

func parseGS2(v string) (GASession, bool) {
	var s GASession
	level, v, found := strings.Cut(v, ".")
	if !found || !ckDigits(level, 1, 2) {
		return s, false
	}
	for i := 0; v != ""; i++ {
		if i > 32 {
			return s, false
		}
		var f string
		f, v, _ = strings.Cut(v, "$")
		if f == "" {
			continue
		}
		key, val := f[0], f[1:]
		switch key {
		case 's':
			if !ckDigits(val, 1, 20) {
				return s, false
			}
			s.ID = val
		case 'o':
			n, ok := gaInt(val)
			if !ok {
				return s, false
			}
			s.Number = n
		case 'g':
			s.Engaged = val == "1"
		case 't':
			s.LastHit, _ = gaInt(val)
		}
	}
	return s, true
}

// gaInt parses a non-negative decimal of at most 18 digits.
func gaInt(s string) (int64, bool) {
	if !ckDigits(s, 1, 18) {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// gaStreamCookie finds the `_ga_<ID>` cookie for measurement id tid
// ("G-ABC123" → "_ga_ABC123") without building the name.
func gaStreamCookie(req *Request, tid string) (string, bool) {
	id := strings.TrimPrefix(tid, "G-")
	if id == "" {
		return "", false
	}
	for i := range req.Cookies {
		n := req.Cookies[i].Name
		if len(n) == 4+len(id) && strings.HasPrefix(n, "_ga_") && n[4:] == id {
			return req.Cookies[i].Value, true
		}
	}
	return "", false
}

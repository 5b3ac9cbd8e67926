package forward

import (
	"strings"
	"time"

	"go.uber.org/zap"
)

// failLogEvery is how often one failure class of one destination may log:
// a destination that fails every request under load must cost one line
// per class per interval, not one per event or batch.
const failLogEvery = 30 * time.Second

// failLog samples delivery-failure logs per class (what delivery does
// about it and the HTTP status). It belongs to one deliverer and is only
// used from its goroutine.
type failLog struct {
	classes map[failKey]*failCount
}

type failKey struct {
	kind   failure
	status int
}

// failCount is what happened in a class since its last line.
type failCount struct {
	next     time.Time // the next line may be written from then on
	failures int       // failed requests or events not yet logged
	events   int
}

var failKinds = [...]string{failRetry: "retry", failPermanent: "rejected", failPause: "paused", failTooLarge: "too_large"}

// note records a failure affecting events and logs it when its class has
// not logged within failLogEvery; the line carries what was suppressed
// since the last one.
func (f *failLog) note(log *zap.Logger, now time.Time, c classified, events int) {
	if f.classes == nil {
		f.classes = map[failKey]*failCount{}
	}
	k := failKey{c.kind, c.status}
	fc := f.classes[k]
	if fc == nil {
		if len(f.classes) >= 64 {
			// Statuses are bounded, but keep the table bounded whatever
			// an adapter reports: fold the rest into status 0.
			k.status = 0
			if fc = f.classes[k]; fc == nil {
				fc = &failCount{}
				f.classes[k] = fc
			}
		} else {
			fc = &failCount{}
			f.classes[k] = fc
		}
	}
	fc.failures++
	fc.events += events
	if now.Before(fc.next) {
		return
	}
	log.Warn("delivery failed",
		zap.String("class", failKinds[c.kind]),
		zap.Int("status", c.status),
		zap.String("answer", redactAnswer(c.excerpt)),
		zap.Int("failures", fc.failures),
		zap.Int("events", fc.events),
		zap.Duration("sampled_every", failLogEvery))
	fc.failures, fc.events = 0, 0
	fc.next = now.Add(failLogEvery)
}

// redactAnswer masks what may be personal data in a destination's answer
// before it is logged (a receiver may echo the payload): words with an
// '@' (emails) and runs of 7 or more digits, spaces or dashes between
// them allowed (phone numbers). The DLQ keeps the excerpt as received,
// behind the admin token.
func redactAnswer(s string) string {
	if s == "" {
		return s
	}
	var b strings.Builder
	word := func(c byte) bool {
		return c > ' ' && c != '"' && c != '\'' && c != ',' && c != ';' && c != '<' && c != '>'
	}
	for i := 0; i < len(s); {
		c := s[i]
		if !word(c) {
			b.WriteByte(c)
			i++
			continue
		}
		j := i
		for j < len(s) && word(s[j]) {
			j++
		}
		w := s[i:j]
		if strings.IndexByte(w, '@') >= 0 {
			b.WriteString("[redacted]")
			i = j
			continue
		}
		// A digit run, possibly split by spaces and dashes, from here.
		if c >= '0' && c <= '9' || c == '+' || c == '(' {
			k, digits, end := i, 0, i
			for k < len(s) && (s[k] >= '0' && s[k] <= '9' || s[k] == ' ' || s[k] == '-' || s[k] == '+' || s[k] == '(' || s[k] == ')') {
				if s[k] >= '0' && s[k] <= '9' {
					digits++
					end = k + 1
				}
				k++
			}
			if digits >= 7 && !isDate(s[i:end]) {
				b.WriteString("[redacted]")
				i = end
				continue
			}
		}
		b.WriteString(w)
		i = j
	}
	return b.String()
}

// isDate reports a yyyy-mm-dd date, which is not a phone number.
func isDate(s string) bool {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i != 4 && i != 7 && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}

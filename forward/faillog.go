package forward

import (
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
// since the last one. The vendor's answer excerpt is already redacted.
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
		zap.String("answer", c.excerpt),
		zap.Int("failures", fc.failures),
		zap.Int("events", fc.events),
		zap.Duration("sampled_every", failLogEvery))
	fc.failures, fc.events = 0, 0
	fc.next = now.Add(failLogEvery)
}

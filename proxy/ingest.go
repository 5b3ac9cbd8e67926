package proxy

import (
	"context"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// Sink takes accepted events durably. main.go plugs in the forward package.
// On success ownership of the events passes to the sink, which releases
// them; on error the caller still owns them (it must undo what the
// pipeline reserved for them before releasing them).
type Sink interface {
	// Append stores events durably before returning. An error that has a
	// RetryAfter() time.Duration method means the store is full (the client
	// gets 429 with Retry-After); one with Draining() bool returning true
	// means shutdown began (503). Any other error is answered 503.
	Append(ctx context.Context, events []*enrich.Event) error
	// Quarantine keeps events that decoded but failed validation on a
	// browser route, each with a PII-free reason.
	Quarantine(ctx context.Context, events []*enrich.Event, reasons []string) error
}

// retryAfterError is how a Sink says "full, retry after D" without proxy
// and forward sharing a type.
type retryAfterError interface {
	error
	RetryAfter() time.Duration
}

// drainingError is how a Sink says it stopped taking events for shutdown.
type drainingError interface {
	error
	Draining() bool
}

// decoded collects what a decoder produced from one request: the events, in
// order, and per-event problems. Decoders never return half-built events:
// an event with a problem is still returned, so the handler can quarantine
// it (browser routes) or answer 422 (/collect).
type decoded struct {
	pool     *enrich.EventPool
	events   []*enrich.Event
	problems []enrich.FieldError
	// writeKey is a Segment write key found in the body.
	writeKey string
}

// next acquires a fresh event, appends it and returns it.
func (d *decoded) next() *enrich.Event {
	e := d.pool.Get()
	e.Index = len(d.events)
	d.events = append(d.events, e)
	return e
}

// problem records a problem for the event at index i.
func (d *decoded) problem(i int, field, msg string) {
	d.problems = append(d.problems, enrich.FieldError{Index: i, Field: field, Message: msg})
}

// release returns every event to the pool (on error paths).
func (d *decoded) release() {
	for _, e := range d.events {
		d.pool.Put(e)
	}
	d.reset()
}

// reset forgets the events without releasing them (after the sink took
// ownership).
func (d *decoded) reset() {
	clear(d.events)
	d.events = d.events[:0]
	d.problems = d.problems[:0]
	d.writeKey = ""
}

// decodeError is a request-level decode failure with the status to answer.
type decodeError struct {
	status int
	reason string // metric label: short, fixed vocabulary
	msg    string // for the client; never echoes request bytes
}

func (e *decodeError) Error() string { return e.msg }

func errMalformed(msg string) error {
	return &decodeError{status: 400, reason: "malformed", msg: msg}
}

func errTooLarge(msg string) error {
	return &decodeError{status: 413, reason: "too_large", msg: msg}
}

func errUnsupportedMedia(msg string) error {
	return &decodeError{status: 415, reason: "unsupported_media_type", msg: msg}
}

package enrich

import (
	"time"
)

// Outcome is what the pipeline decided for one event.
type Outcome uint8

// Outcomes (DESIGN §1). Only Accepted events go to the sink; Quarantined
// events go to the quarantine store; the rest are answered and counted.
const (
	Accepted Outcome = iota
	Duplicate
	Invalid
	Quarantined
	Bot
	NoID
)

var outcomeNames = [...]string{"accepted", "duplicate", "invalid", "quarantined", "bot", "no_id"}

// String returns the metric label of o.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// FieldError is one validation problem, reported to /collect clients as
// {"index","field","message"}.
type FieldError struct {
	Index   int    `json:"index"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// EventResult is the pipeline's decision for one event.
type EventResult struct {
	Outcome Outcome
	// Reason says why an event was quarantined or dropped (metric-safe,
	// PII-free).
	Reason string
	Errors []FieldError
}

// SetCookie is a cookie the proxy must set (or expire, MaxAge < 0) on the
// answer.
type SetCookie struct {
	Name, Value string
	Domain      string
	MaxAge      time.Duration
	HTTPOnly    bool
	Secure      bool
}

// Result is the outcome of Process: one EventResult per event, in order, and
// the cookies for the answer. Callers reuse a Result across requests.
type Result struct {
	Events  []EventResult
	Cookies []SetCookie
}

// Reset clears r for reuse.
func (r *Result) Reset() {
	for i := range r.Events {
		r.Events[i] = EventResult{Errors: r.Events[i].Errors[:0]}
	}
	r.Events = r.Events[:0]
	r.Cookies = r.Cookies[:0]
}

// Invalid reports whether any event was found invalid.
func (r *Result) Invalid() bool {
	for i := range r.Events {
		if r.Events[i].Outcome == Invalid {
			return true
		}
	}
	return false
}

// Stage is one enrichment step. Apply sees events still Accepted, in order;
// a stage that rejects an event sets res.Outcome (and Reason or Errors).
// Stages run on the request goroutine and must not block on the network
// beyond a small, bounded timeout.
type Stage interface {
	Apply(req *Request, e *Event, res *EventResult)
}

// RequestStage is an optional Stage extension run once per request after
// the events, e.g. to collect the cookies to set.
type RequestStage interface {
	Finish(req *Request, events []*Event, res *Result)
}

// Releaser is an optional Stage extension for stages that reserve
// something per event (dedup reserves the event's key): Release undoes the
// reservation when the events could not be stored, so the client's retry
// is accepted rather than taken for a duplicate.
type Releaser interface {
	Release(events []*Event)
}

// Pipeline runs the stages of DESIGN §1 in order:
// consent → identity → attribution → geo → privacy → bot → naming →
// validation → join → dedup.
type Pipeline struct {
	stages []Stage
	now    func() time.Time
}

// NewPipeline returns a pipeline running stages in the given order. now is
// the clock (injected so tests control time); nil means time.Now.
func NewPipeline(now func() time.Time, stages ...Stage) *Pipeline {
	if now == nil {
		now = time.Now
	}
	return &Pipeline{stages: stages, now: now}
}

// Process enriches events in place and records one result per event in res
// (which it resets first).
func (p *Pipeline) Process(req *Request, events []*Event, res *Result) {
	res.Reset()
	if req.ReceivedAt.IsZero() {
		req.ReceivedAt = p.now()
	}
	for i, e := range events {
		res.Events = append(res.Events, EventResult{})
		r := &res.Events[i]
		if e.ReceivedAt.IsZero() {
			e.ReceivedAt = req.ReceivedAt
		}
		if e.OccurredAt.IsZero() {
			e.OccurredAt = e.ReceivedAt
		}
		if e.Context.UserAgent == "" && !req.Server {
			// A browser's beacon speaks for the browser: its user agent is
			// the visitor's. A server's request is the server's own.
			e.Context.UserAgent = e.InternString(req.UserAgent)
		}
		e.Index = i
		for _, s := range p.stages {
			if r.Outcome != Accepted {
				break
			}
			s.Apply(req, e, r)
		}
	}
	for _, s := range p.stages {
		if f, ok := s.(RequestStage); ok {
			f.Finish(req, events, res)
		}
	}
}

// Release tells every Releaser stage that events were not stored.
func (p *Pipeline) Release(events []*Event) {
	for _, s := range p.stages {
		if r, ok := s.(Releaser); ok {
			r.Release(events)
		}
	}
}

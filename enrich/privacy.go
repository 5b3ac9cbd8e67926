package enrich

import "github.com/sidetrack/sidetrack/config"

// Privacy makes events privacy-safe before they are stored. Until hashing
// per consent state is configured, raw personal data is dropped: it never
// reaches the spool, a log or a destination.
type Privacy struct{}

// NewPrivacy returns the privacy stage.
func NewPrivacy(*config.Config) *Privacy { return &Privacy{} }

// Apply zeroes raw PII and flags the event when there was some.
func (p *Privacy) Apply(_ *Request, e *Event, _ *EventResult) {
	if !e.PII.IsZero() {
		e.PII = PII{}
		e.Quality.Add(FlagDroppedPII)
	}
}

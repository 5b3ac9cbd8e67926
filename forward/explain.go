package forward

import (
	"fmt"

	"github.com/sidetrack/sidetrack/enrich"
)

// Admission explains what one destination does with one event: the
// answer to "why did this purchase not reach Meta?" in the live trace.
type Admission struct {
	// Destination is the configured destination name.
	Destination string
	// Admitted reports whether Append records the event for the
	// destination (it then counts in its backlog).
	Admitted bool
	// Reason is one of the Reason* codes: why not, or what happens to an
	// admitted event other than being sent.
	Reason string
	// Detail says the same for a person: which rule, purpose or adapter
	// check decided.
	Detail string
}

// Admission reasons. Admitted events have ReasonAdmitted, ReasonDryRun,
// ReasonPaused or ReasonPrepare; the others are not admitted.
const (
	// ReasonAdmitted: admitted, and delivery will send it.
	ReasonAdmitted = "admitted"
	// ReasonNotIncluded: the destination's events.include does not list
	// the event's canonical name.
	ReasonNotIncluded = "not_included"
	// ReasonExcluded: the destination's events.exclude lists it.
	ReasonExcluded = "excluded"
	// ReasonConsent: a consent purpose the destination requires is denied
	// or unknown (counted in sidetrack_consent_blocked_total).
	ReasonConsent = "consent"
	// ReasonPrepare: admitted, but the adapter refuses the event as it is
	// now, so delivery dead-letters it (reason "prepare") instead of
	// sending it. The check runs again at delivery with that moment's
	// clock, so an age limit may differ.
	ReasonPrepare = "prepare"
	// ReasonDryRun: admitted and counted, never sent (dry_run: true).
	ReasonDryRun = "dry_run"
	// ReasonPaused: admitted; the destination is paused after refusing
	// its credentials (401/403), so the event waits in its backlog.
	ReasonPaused = "paused"
)

// Explain appends to dst one Admission per configured destination, in
// config order, for e as it is now. It applies the same admission rules
// as Append and the adapter's Prepare check, and has no side effect: no
// counter moves and e is not changed (Append fills e.Destinations; Explain
// does not). It is meant for sampled or on-demand use (the live trace),
// not for every event: it may allocate.
func (s *Spool) Explain(e *enrich.Event, dst []Admission) []Admission {
	for _, d := range s.dests {
		a := Admission{Destination: d.name, Admitted: true, Reason: ReasonAdmitted}
		v, rule := d.admit.decide(e)
		switch v {
		case filtered:
			a.Admitted = false
			if rule == ruleInclude {
				a.Reason = ReasonNotIncluded
				a.Detail = fmt.Sprintf("event %q is not in events.include", e.Name)
			} else {
				a.Reason = ReasonExcluded
				a.Detail = fmt.Sprintf("event %q is in events.exclude", e.Name)
			}
		case consentBlocked:
			a.Admitted = false
			a.Reason = ReasonConsent
			a.Detail = consentDetail(d.admit.names[rule], d.admit.purposes[rule](&e.Consent), e.Consent.Source)
		default:
			a.Reason, a.Detail = s.afterAdmission(d, e)
		}
		dst = append(dst, a)
	}
	return dst
}

// afterAdmission says what delivery will do with an admitted event, in
// the order the deliverer checks: Prepare (which dead-letters even in dry
// run), dry_run, then the destination's pause.
func (s *Spool) afterAdmission(d *destState, e *enrich.Event) (reason, detail string) {
	if d.dest != nil {
		if err := d.dest.Prepare(e); err != nil {
			return ReasonPrepare, "the adapter will dead-letter it: " + err.Error()
		}
	}
	if d.cfg.DryRun {
		return ReasonDryRun, "dry_run is on: the event is spooled and counted, never sent"
	}
	if d.paused.Load() {
		return ReasonPaused, "the destination is paused after refusing its credentials (401/403); the event waits in its backlog until a probe succeeds"
	}
	return ReasonAdmitted, ""
}

// consentDetail names the purpose that blocked and who decided it.
func consentDetail(purpose string, state enrich.ConsentState, source string) string {
	why := "it is unknown (neither a signal nor the default granted it)"
	if state == enrich.Denied {
		why = "it is denied"
	}
	if source == "" {
		source = "none"
	}
	return fmt.Sprintf("needs %s consent; %s (consent source: %s)", purpose, why, source)
}

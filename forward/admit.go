package forward

import (
	"fmt"
	"strings"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// admission decides, at append time, whether an event goes to one
// destination (DESIGN §5 "Destination options"): the destination's
// events.include/exclude lists by canonical name, then its consent
// purposes. The decision is fixed in the record, so a later config change
// never re-routes stored events.
type admission struct {
	include  nameSet
	exclude  nameSet
	purposes []purpose
	// names are the purposes' config names, for Explain.
	names []string
}

// purpose reads one consent purpose of an event.
type purpose func(*enrich.Consent) enrich.ConsentState

func purposeOf(name string) (purpose, bool) {
	switch name {
	case "analytics":
		return func(c *enrich.Consent) enrich.ConsentState { return c.Analytics }, true
	case "ads":
		return func(c *enrich.Consent) enrich.ConsentState { return c.Ads }, true
	case "ad_user_data":
		return func(c *enrich.Consent) enrich.ConsentState { return c.AdUserData }, true
	case "ad_personalization":
		return func(c *enrich.Consent) enrich.ConsentState { return c.AdPersonalization }, true
	}
	return nil, false
}

func newAdmission(d config.Destination) (admission, error) {
	a := admission{include: newNameSet(d.Events.Include), exclude: newNameSet(d.Events.Exclude)}
	for _, p := range d.Consent {
		f, ok := purposeOf(p)
		if !ok {
			return a, fmt.Errorf("destination %q: unknown consent purpose %q (want analytics, ads, ad_user_data or ad_personalization)", d.Name, p)
		}
		a.purposes = append(a.purposes, f)
		a.names = append(a.names, p)
	}
	return a, nil
}

// verdict is the outcome of admit.
type verdict uint8

const (
	admitted       verdict = iota
	filtered               // events.include/exclude said no
	consentBlocked         // a required purpose is denied or unknown
)

// admit decides for e. Unknown consent counts as denied: the consent
// stage has already applied the configured default, so unknown here means
// nobody said yes.
func (a *admission) admit(e *enrich.Event) verdict {
	v, _ := a.decide(e)
	return v
}

// decide is admit with the rule that decided, so Explain states the very
// rule append applied: for filtered, ruleInclude or ruleExclude; for
// consentBlocked, the index in purposes of the first purpose not granted.
func (a *admission) decide(e *enrich.Event) (verdict, int) {
	if !a.include.empty() && !a.include.has(e.Name) {
		return filtered, ruleInclude
	}
	if a.exclude.has(e.Name) {
		return filtered, ruleExclude
	}
	for i, p := range a.purposes {
		if p(&e.Consent) != enrich.Granted {
			return consentBlocked, i
		}
	}
	return admitted, 0
}

// The rules decide reports for filtered events.
const (
	ruleInclude = iota
	ruleExclude
)

// nameSet matches canonical event names exactly, or by prefix for
// entries ending in "*" ("order_*").
type nameSet struct {
	exact    map[string]struct{}
	prefixes []string
}

func newNameSet(names []string) nameSet {
	var s nameSet
	for _, n := range names {
		if p, ok := strings.CutSuffix(n, "*"); ok {
			s.prefixes = append(s.prefixes, p)
			continue
		}
		if s.exact == nil {
			s.exact = make(map[string]struct{}, len(names))
		}
		s.exact[n] = struct{}{}
	}
	return s
}

func (s *nameSet) empty() bool { return len(s.exact) == 0 && len(s.prefixes) == 0 }

func (s *nameSet) has(name string) bool {
	if _, ok := s.exact[name]; ok {
		return true
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

package main

import (
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/proxy"
)

// spoolExplainer gives the live trace the spool's admission decisions in
// the proxy's terms: proxy declares what it needs and never imports
// forward, so the one conversion lives here.
type spoolExplainer struct {
	spool *forward.Spool
}

// Explain implements proxy.Explainer.
func (x spoolExplainer) Explain(e *enrich.Event, dst []proxy.Admission) []proxy.Admission {
	for _, a := range x.spool.Explain(e, nil) {
		dst = append(dst, proxy.Admission{Destination: a.Destination, Admitted: a.Admitted, Reason: a.Reason, Detail: a.Detail})
	}
	return dst
}

package forward

import (
	"testing"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

func TestAdmission(t *testing.T) {
	g, d, u := enrich.Granted, enrich.Denied, enrich.Unknown
	cases := []struct {
		name    string
		dest    config.Destination
		event   string
		consent enrich.Consent
		want    verdict
	}{
		{"no rules", config.Destination{}, "page_viewed", enrich.Consent{}, admitted},
		{"include hit", config.Destination{Events: config.EventFilter{Include: []string{"order_completed"}}}, "order_completed", enrich.Consent{}, admitted},
		{"include miss", config.Destination{Events: config.EventFilter{Include: []string{"order_completed"}}}, "page_viewed", enrich.Consent{}, filtered},
		{"include prefix", config.Destination{Events: config.EventFilter{Include: []string{"order_*"}}}, "order_refunded", enrich.Consent{}, admitted},
		{"exclude", config.Destination{Events: config.EventFilter{Exclude: []string{"page_viewed"}}}, "page_viewed", enrich.Consent{}, filtered},
		{"consent granted", config.Destination{Consent: []string{"ads", "ad_user_data"}}, "x", enrich.Consent{Ads: g, AdUserData: g}, admitted},
		{"consent denied", config.Destination{Consent: []string{"ads", "ad_user_data"}}, "x", enrich.Consent{Ads: g, AdUserData: d}, consentBlocked},
		{"consent unknown is denied", config.Destination{Consent: []string{"analytics"}}, "x", enrich.Consent{Analytics: u}, consentBlocked},
		{"filter before consent", config.Destination{Consent: []string{"analytics"}, Events: config.EventFilter{Exclude: []string{"x"}}}, "x", enrich.Consent{}, filtered},
		{"personalization", config.Destination{Consent: []string{"ad_personalization"}}, "x", enrich.Consent{AdPersonalization: g}, admitted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := newAdmission(tc.dest)
			if err != nil {
				t.Fatal(err)
			}
			e := &enrich.Event{Name: tc.event, Consent: tc.consent}
			if got := a.admit(e); got != tc.want {
				t.Errorf("admit = %d, want %d", got, tc.want)
			}
		})
	}
	if _, err := newAdmission(config.Destination{Name: "x", Consent: []string{"marketing"}}); err == nil {
		t.Error("unknown purpose accepted")
	}
}

package main

// Every consent state × destination through the binary
// (docs/reliability.md): a destination gets an event only when every
// purpose it asks for is granted, the others count it as consent-blocked,
// and nothing else is lost.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestReliabilityConsentMatrix(t *testing.T) {
	purposes := []string{"analytics", "ads", "ad_user_data", "ad_personalization"}
	dests := []struct {
		name string
		need []string
	}{
		{"none", nil},
		{"analytics", []string{"analytics"}},
		{"ads", []string{"ads", "ad_user_data"}},
		{"personal", []string{"ad_personalization"}},
		{"every", purposes},
	}
	sinks := map[string]*sink{}
	mux := http.NewServeMux()
	var destYAML strings.Builder
	for _, d := range dests {
		s := newSink()
		sinks[d.name] = s
		mux.Handle("/"+d.name, s)
	}
	hook := origin(t, mux)
	for _, d := range dests {
		fmt.Fprintf(&destYAML, "  - {name: %s, type: webhook, url: %q, consent: [%s], batch: {max_wait: 20ms}}\n",
			d.name, hook+"/"+d.name, strings.Join(d.need, ", "))
	}
	dir := t.TempDir()
	in := start(t, dir, testConfigWith(dir, hook, destYAML.String(), ""))

	// 16 explicit states, and Global Privacy Control over all-granted.
	type state struct {
		id      string
		granted map[string]bool
		gpc     bool
	}
	var states []state
	for mask := range 16 {
		st := state{id: fmt.Sprintf("consent-%02d", mask), granted: map[string]bool{}}
		for i, p := range purposes {
			st.granted[p] = mask&(1<<i) != 0
		}
		states = append(states, st)
	}
	gpc := state{id: "consent-gpc", granted: map[string]bool{"analytics": true, "ads": true, "ad_user_data": true, "ad_personalization": true}, gpc: true}
	states = append(states, gpc)

	want := map[string][]string{} // destination → ids it must get
	for _, st := range states {
		var parts []string
		for _, p := range purposes {
			v := "denied"
			if st.granted[p] {
				v = "granted"
			}
			parts = append(parts, fmt.Sprintf("%q:%q", p, v))
		}
		body := `{"name":"reliability_probe","event_id":"` + st.id + `","consent":{` + strings.Join(parts, ",") + `}}`
		req, _ := http.NewRequest("POST", in.base+"/collect", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
		if st.gpc {
			req.Header.Set("Sec-GPC", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s: %d", st.id, resp.StatusCode)
		}
		eff := st.granted
		if st.gpc { // GPC opts out of ads, ad_user_data and ad_personalization
			eff = map[string]bool{"analytics": true}
		}
		for _, d := range dests {
			ok := true
			for _, p := range d.need {
				ok = ok && eff[p]
			}
			if ok {
				want[d.name] = append(want[d.name], st.id)
			}
		}
	}

	all := make([]string, len(states))
	for i, st := range states {
		all[i] = st.id
	}
	for _, d := range dests {
		s := sinks[d.name]
		blocked := func() int {
			return int(in.metric(`sidetrack_consent_blocked_total{destination="` + d.name + `"}`))
		}
		waitUntil(t, d.name+": every event delivered or blocked", func() bool {
			n, _ := s.count(all)
			return n+blocked() >= len(states)
		})
		got, dups := s.count(all)
		wantSet := map[string]bool{}
		for _, id := range want[d.name] {
			wantSet[id] = true
		}
		for _, id := range all {
			n, _ := s.count([]string{id})
			if (n > 0) != wantSet[id] {
				t.Errorf("%s: event %s delivered %v, want %v", d.name, id, n > 0, wantSet[id])
			}
		}
		t.Logf("%s (needs %v): %d states = delivered %d + consent-blocked %d; duplicates %d",
			d.name, d.need, len(states), got, blocked(), dups)
		if got+blocked() != len(states) {
			t.Errorf("%s: %d delivered + %d blocked != %d accepted", d.name, got, blocked(), len(states))
		}
	}
	in.stop()
}

// waitUntil polls cond until it holds; the limit is a failure guard.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// traceAnswer is the part of /debug/events this test reads.
type traceAnswer struct {
	RecordingUntil time.Time `json:"recording_until"`
	Recorded       int       `json:"recorded"`
	Events         []struct {
		Name     string                                  `json:"name"`
		Outcome  string                                  `json:"outcome"`
		Reason   string                                  `json:"reason"`
		Page     string                                  `json:"page"`
		Consent  struct{ Analytics, Ads, Source string } `json:"consent"`
		Identity struct {
			UserID   bool     `json:"user_id"`
			UserData []string `json:"user_data"`
			IP       string   `json:"ip"`
		} `json:"identity"`
		Commerce struct {
			TransactionID string `json:"transaction_id"`
		} `json:"commerce"`
		Dedup struct{ Result, By, Key string } `json:"dedup"`
		// Destinations as {destination, admitted, reason, detail}.
		Destinations []struct {
			Destination string `json:"destination"`
			Admitted    bool   `json:"admitted"`
			Reason      string `json:"reason"`
			Detail      string `json:"detail"`
		} `json:"destinations"`
	} `json:"events"`
}

// TestLiveTrace answers "why did this purchase not reach Meta?" the way a
// shop would: open the trace, send purchases, read /debug/events. One
// purchase has ads consent denied (it reaches the ndjson file, not Meta),
// one reaches both, and a resend of the first is a duplicate. The trace
// must say so stage by stage, agree with what Meta actually received,
// hold none of the personal data sent, and refuse requests without the
// admin token.
func TestLiveTrace(t *testing.T) {
	var mu sync.Mutex
	var metaBodies []string
	graph := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		metaBodies = append(metaBodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"events_received":1,"messages":[],"fbtrace_id":"trace"}`)
	}))
	shop := origin(t, http.NotFoundHandler())
	dir := t.TempDir()
	cfg := testConfigWith(dir, shop,
		`  - {name: local, type: ndjson, path: `+quote(filepath.Join(dir, "events"))+`, consent: [analytics]}
  - {name: meta, type: metacapi, pixel_id: "1234", access_token: "meta-token-0123456789", endpoint: "`+graph+`", consent: [ads, ad_user_data], batch: {max_wait: 50ms}}
`, `trusted_proxies: ["127.0.0.0/8"]
debug: {trace_events: 50, trace_window: 10m}
`)
	in := start(t, dir, cfg)

	// Without the token there is no trace.
	resp, err := http.Get(in.admin + "/debug/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("/debug/events without token: %d, want 401", resp.StatusCode)
	}

	// Opening the trace starts recording.
	var open traceAnswer
	if err := json.Unmarshal(in.adminGet("/debug/events"), &open); err != nil {
		t.Fatal(err)
	}
	if len(open.Events) != 0 || open.RecordingUntil.Before(time.Now()) {
		t.Fatalf("fresh trace: %+v", open)
	}

	const (
		email = "trace.canary@example.com"
		phone = "+1 415 555 0199"
		ip    = "198.51.100.23"
	)
	purchase := func(tx, consent string) string {
		return fmt.Sprintf(`{"name":"order_completed","transaction_id":%q,"value":59.97,"currency":"EUR",
			"url":"https://shop.example/thanks?email=%s","user_id":%q,
			"consent":%s,"user":{"email":%q,"phone":%q}}`, tx, email, email, consent, email, phone)
	}
	send := func(body string) {
		t.Helper()
		req, _ := http.NewRequest("POST", in.base+"/collect", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", ip)
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Fatalf("POST /collect: %d %s", resp.StatusCode, b)
		}
	}
	send(purchase("T-ADS-DENIED", `{"analytics":"granted","ads":"denied","ad_user_data":"granted","ad_personalization":"denied"}`))
	send(purchase("T-ALL-GRANTED", `{"analytics":"granted","ads":"granted","ad_user_data":"granted","ad_personalization":"granted"}`))
	send(purchase("T-ADS-DENIED", `{"analytics":"granted","ads":"denied","ad_user_data":"granted","ad_personalization":"denied"}`))

	raw := in.adminGet("/debug/events?name=order_completed&destination=meta")
	var tr traceAnswer
	if err := json.Unmarshal(raw, &tr); err != nil {
		t.Fatal(err)
	}
	if len(tr.Events) != 3 {
		t.Fatalf("trace has %d purchases, want 3:\n%s", len(tr.Events), raw)
	}
	dup, granted, denied := tr.Events[0], tr.Events[1], tr.Events[2] // newest first

	if denied.Outcome != "accepted" || denied.Commerce.TransactionID != "T-ADS-DENIED" {
		t.Errorf("denied purchase: %+v", denied)
	}
	if denied.Consent.Ads != "denied" || denied.Consent.Analytics != "granted" || denied.Consent.Source != "collect" {
		t.Errorf("denied purchase consent: %+v", denied.Consent)
	}
	if len(denied.Destinations) != 1 || denied.Destinations[0].Admitted || denied.Destinations[0].Reason != "consent" ||
		!strings.Contains(denied.Destinations[0].Detail, "needs ads consent; it is denied (consent source: collect)") {
		t.Errorf("why not Meta: %+v", denied.Destinations)
	}
	if denied.Dedup.Result != "new" || denied.Dedup.By != "transaction_id" || len(denied.Dedup.Key) != 16 {
		t.Errorf("denied purchase dedup: %+v", denied.Dedup)
	}
	if denied.Identity.IP != "hashed" || !denied.Identity.UserID || strings.Join(denied.Identity.UserData, ",") != "em,ph" {
		t.Errorf("identity: %+v", denied.Identity)
	}
	if denied.Page != "https://shop.example/thanks" {
		t.Errorf("page %q", denied.Page)
	}

	if granted.Outcome != "accepted" || len(granted.Destinations) != 1 || !granted.Destinations[0].Admitted ||
		granted.Destinations[0].Reason != "admitted" {
		t.Errorf("granted purchase: %+v", granted)
	}

	if dup.Outcome != "duplicate" || dup.Dedup.Result != "duplicate" || dup.Dedup.Key != denied.Dedup.Key || len(dup.Destinations) != 0 {
		t.Errorf("resend: %+v, want a duplicate of key %s", dup, denied.Dedup.Key)
	}

	// Without the destination filter the ndjson destination's decision is
	// there too: the denied purchase went to the file.
	var all traceAnswer
	if err := json.Unmarshal(in.adminGet("/debug/events?outcome=accepted&limit=1"), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Events) != 1 || len(all.Events[0].Destinations) != 2 || all.Events[0].Destinations[0].Destination != "local" ||
		!all.Events[0].Destinations[0].Admitted {
		t.Errorf("accepted, limit 1: %+v", all.Events)
	}

	// What the trace said is what happened: both purchases in the file,
	// only the granted one at Meta.
	if evs := in.waitEvents(2); len(evs) != 2 {
		t.Errorf("ndjson has %d events, want 2", len(evs))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(metaBodies)
		joined := strings.Join(metaBodies, "\n")
		mu.Unlock()
		if n > 0 {
			if !strings.Contains(joined, "T-ALL-GRANTED") || strings.Contains(joined, "T-ADS-DENIED") {
				t.Errorf("Meta received %s", joined)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Meta received nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// No personal data in the trace.
	for _, canary := range []string{"trace.canary", "canary@", "415 555 0199", "4155550199", ip, "198.51.100"} {
		if strings.Contains(string(raw), canary) {
			t.Errorf("the trace holds %q:\n%s", canary, raw)
		}
	}
}

// TestTraceDocExample runs the walkthrough of docs/trace.md against a
// running sidetrack configured as the page says, and checks each step
// answers what the page shows.
func TestTraceDocExample(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is required in CI to run the documentation's examples")
		}
		t.Skip("curl is not installed: the documentation's curl examples are not run")
	}
	doc, err := os.ReadFile("docs/trace.md")
	if err != nil {
		t.Fatal(err)
	}
	graph := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"events_received":1,"messages":[],"fbtrace_id":"doc"}`)
	}))
	dir := t.TempDir()
	in := start(t, dir, testConfigWith(dir, origin(t, http.NotFoundHandler()),
		`  - {name: local, type: ndjson, path: `+quote(filepath.Join(dir, "events"))+`, consent: [analytics]}
  - {name: meta, type: metacapi, pixel_id: "1234", access_token: "meta-token-0123456789", endpoint: "`+graph+`", consent: [ads, ad_user_data]}
`, ""))

	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) != 3 {
		t.Fatalf("docs/trace.md has %d sh blocks, this test knows 3", len(blocks))
	}
	// What each step's answer must contain.
	want := []string{
		`"recording_only":["order_completed"],"capacity":200,"recorded":0,"events":[]`,
		"HTTP/1.1 204 No Content",
		`{"destination":"meta","admitted":false,"reason":"consent","detail":"needs ads consent; it is denied (consent source: collect)"}`,
	}
	for i, b := range blocks {
		script := strings.ReplaceAll(b[1], "http://localhost:8080", in.base)
		script = strings.ReplaceAll(script, "http://localhost:9090", in.admin)
		cmd := exec.Command("bash", "-e", "-c", script)
		cmd.Env = append(cleanEnv(), "TOKEN=admin-token-0123456789")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("step %d: %v\n%s", i+1, err, script)
		}
		if !strings.Contains(string(out), want[i]) {
			t.Errorf("step %d answered\n%s\nwant it to contain %s", i+1, out, want[i])
		}
	}
	in.stop()
}

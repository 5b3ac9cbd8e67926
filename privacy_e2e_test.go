package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReliabilityPIICanary pushes known emails, phones, names and an IP through every
// tracking route and then looks for them everywhere sidetrack writes: the
// ndjson output, the spool files, the logs, /metrics, the quarantine and
// every payload a destination received. None may appear raw. It also
// checks that consent gates destinations: the webhook asks for ads and
// ad_user_data, so events from a browser sending Global Privacy Control
// never reach it, while the ndjson destination (analytics only) gets them.
func TestReliabilityPIICanary(t *testing.T) {
	var mu sync.Mutex
	var payloads [][]byte
	hook := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		payloads = append(payloads, b)
		mu.Unlock()
	}))
	shop := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/contact" {
			http.Redirect(w, r, "/thanks", http.StatusSeeOther)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<p>shop</p>")
	}))
	dir := t.TempDir()
	cfg := testConfigWith(dir, shop, `  - {name: local, type: ndjson, path: `+quote(filepath.Join(dir, "events"))+`, consent: [analytics]}
  - {name: hook, type: webhook, url: "`+hook+`/hook", consent: [ads, ad_user_data], batch: {max_wait: 50ms}}
`, `trusted_proxies: ["127.0.0.0/8"]
log: {level: debug}
`)
	cfg = strings.Replace(cfg, "ingest:\n", "ingest:\n  forms: [{path: /contact, event: lead_submitted, fields: {email: email, phone: phone, first_name: name}}]\n", 1)
	in := start(t, dir, cfg)

	const (
		email = "Canary.Person+shop@Example.com"
		phone = "+1 415 555 0123"
		name  = "Canaryfirst"
		ip    = "203.0.113.77"
	)
	canaries := []string{"canary.person", "Canary.Person", "415 555 0123", "4155550123", "415-555-0123", name, ip}

	send := func(method, target, body string, hdr ...string) {
		t.Helper()
		req, _ := http.NewRequest(method, in.base+target, strings.NewReader(body))
		req.Header.Set("X-Forwarded-For", ip)
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			t.Fatalf("%s %s: %d %s", method, target, resp.StatusCode, b)
		}
	}
	page := "https://shop.example/account?email=" + url.QueryEscape(email) + "&tel=" + url.QueryEscape(phone)
	for _, gpc := range []string{"", "1"} {
		h := []string{"Sec-GPC", gpc}
		ga := url.Values{"v": {"2"}, "tid": {"G-CANARY"}, "cid": {"5.6"}, "_p": {"1" + gpc}, "_s": {"1"}, "en": {"sign_up"},
			"uid": {email}, "dl": {page}, "dt": {"Welcome " + email}, "ep.user_data.email_address": {email},
			"ep.user_data.phone_number": {phone}, "ep.user_data.address.first_name": {name}, "gcs": {"G111"}}
		send("GET", "/g/collect?"+ga.Encode(), "", h...)
		send("POST", "/collect", `{"name":"lead_submitted","event_id":"canary-collect-`+gpc+`","url":`+jsonString(page)+
			`,"user":{"email":`+jsonString(email)+`,"phone":`+jsonString(phone)+`,"first_name":"`+name+`"}}`, h...)
		send("POST", "/v1/batch", `{"batch":[
			{"type":"identify","messageId":"canary-id-`+gpc+`","userId":"u-1","traits":{"email":`+jsonString(email)+`,"phone":`+jsonString(phone)+`,"firstName":"`+name+`"}},
			{"type":"track","messageId":"canary-tr-`+gpc+`","event":"Order Completed","userId":`+jsonString(email)+`,
			 "properties":{"order_id":"O-`+gpc+`9","revenue":5,"currency":"USD","email":`+jsonString(email)+`},
			 "context":{"ip":"`+ip+`","page":{"url":`+jsonString(page)+`}}}]}`, h...)
		send("POST", "/contact", "email="+url.QueryEscape(email)+"&phone="+url.QueryEscape(phone)+"&name="+name,
			append(h, "Content-Type", "application/x-www-form-urlencoded", "Referer", page)...)
	}

	// Every event reaches ndjson (analytics granted); GPC events are not
	// admitted to the webhook.
	evs := in.waitEvents(10)
	if len(evs) != 10 {
		t.Fatalf("ndjson has %d events, want 10", len(evs))
	}
	deadline := time.Now().Add(20 * time.Second)
	var hooked []map[string]any
	for time.Now().Before(deadline) {
		mu.Lock()
		hooked = hooked[:0]
		for _, p := range payloads {
			var body struct {
				Events []map[string]any `json:"events"`
			}
			json.Unmarshal(p, &body)
			hooked = append(hooked, body.Events...)
		}
		mu.Unlock()
		if len(hooked) >= 5 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(hooked) != 5 {
		t.Errorf("webhook got %d events, want the 5 without GPC", len(hooked))
	}
	for _, e := range hooked {
		if c := e["consent"].(map[string]any); c["gpc"] == true || c["ads"] != "granted" {
			t.Errorf("webhook got an event without ads consent: %v", c)
		}
	}
	hashed := 0
	for _, e := range evs {
		if ud, ok := e["user_data"].(map[string]any); ok && ud["em"] != nil {
			hashed++
		}
	}
	if hashed == 0 {
		t.Error("no event carries a hashed email: PII was dropped everywhere, the canary proves nothing")
	}

	metricsText := in.adminGet("/metrics")
	quarantine := in.adminGet("/quarantine/show")
	in.stop()
	// Now look everywhere.
	places := map[string][]byte{
		"logs":       []byte(in.stderr.String() + in.stdout.String()),
		"webhook":    bytes.Join(payloads, []byte("\n")),
		"metrics":    metricsText,
		"quarantine": quarantine,
	}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && !strings.HasSuffix(p, ".yaml") {
			b, _ := os.ReadFile(p)
			places[p] = b
		}
		return nil
	})
	for where, b := range places {
		for _, c := range canaries {
			if bytes.Contains(b, []byte(c)) {
				i := bytes.Index(b, []byte(c))
				t.Errorf("%s contains %q: …%s…", where, c, b[max(0, i-80):min(len(b), i+80)])
			}
		}
	}
	if len(places) < 4 {
		t.Errorf("looked in too few places: %v", keys(places))
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func jsonString(s string) string { return quote(s) }

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

package metacapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMeta is a Conversions API endpoint on 127.0.0.1 that validates
// requests the way Meta documents them, answers with the Graph API's
// success and error shapes, and records what it accepted. Like Meta, it
// refuses a whole request when any of its events is invalid.
type fakeMeta struct {
	*httptest.Server
	pixel, version, token string
	now                   func() time.Time

	mu       sync.Mutex
	requests int
	bodies   [][]byte
	accepted []map[string]any // events of accepted requests, in order
	faults   []fault          // forced answers, used first
	testCode []string         // test_event_code of each request
}

// fault is a forced answer.
type fault struct {
	code   int
	body   string
	header []string
}

func newFakeMeta(t testing.TB, now func() time.Time) *fakeMeta {
	f := &fakeMeta{pixel: "1234567890", version: "v21.0", token: "EAAtest-token-5f2c9a", now: now}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeMeta) fail(fs ...fault) {
	f.mu.Lock()
	f.faults = append(f.faults, fs...)
	f.mu.Unlock()
}

func (f *fakeMeta) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

func (f *fakeMeta) events() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.accepted)
}

func (f *fakeMeta) lastBody() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil
	}
	return f.bodies[len(f.bodies)-1]
}

// graphError writes the Graph API's error object.
func graphError(w http.ResponseWriter, code, apiCode, subcode int, title, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	e := map[string]any{
		"message": "Invalid parameter", "type": "OAuthException", "code": apiCode,
		"is_transient": false, "fbtrace_id": "AzT3stTr4ce",
	}
	if subcode != 0 {
		e["error_subcode"] = subcode
	}
	if title != "" {
		e["error_user_title"], e["error_user_msg"] = title, msg
	} else {
		e["message"] = msg
	}
	json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func (f *fakeMeta) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests++
	f.bodies = append(f.bodies, body)
	var forced *fault
	if len(f.faults) > 0 {
		forced = &f.faults[0]
		f.faults = f.faults[1:]
	}
	f.mu.Unlock()
	if forced != nil {
		for i := 0; i+1 < len(forced.header); i += 2 {
			w.Header().Set(forced.header[i], forced.header[i+1])
		}
		w.WriteHeader(forced.code)
		io.WriteString(w, forced.body)
		return
	}
	if r.Method != http.MethodPost {
		graphError(w, 400, 100, 0, "", "Unsupported method")
		return
	}
	if r.URL.Path != "/"+f.version+"/"+f.pixel+"/events" {
		graphError(w, 400, 100, 33, "", fmt.Sprintf("Unsupported post request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", r.URL.Path))
		return
	}
	if r.URL.RawQuery != "" {
		graphError(w, 400, 100, 0, "", "unexpected query: the adapter sends everything in the body")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		graphError(w, 400, 100, 0, "", "content type "+ct)
		return
	}
	var p struct {
		Data          []map[string]any `json:"data"`
		AccessToken   *string          `json:"access_token"`
		TestEventCode *string          `json:"test_event_code"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		graphError(w, 400, 100, 0, "", "Invalid JSON: "+err.Error())
		return
	}
	if p.AccessToken == nil || *p.AccessToken == "" {
		graphError(w, 400, 2500, 0, "", "An access token is required to request this resource.")
		return
	}
	if *p.AccessToken != f.token {
		graphError(w, 400, 190, 0, "", "Invalid OAuth access token - Cannot parse access token")
		return
	}
	if len(p.Data) == 0 || len(p.Data) > 1000 {
		graphError(w, 400, 100, 2804019, "Invalid data", fmt.Sprintf("data must hold 1 to 1000 events, got %d", len(p.Data)))
		return
	}
	for i, ev := range p.Data {
		if title, msg := f.validate(ev); title != "" {
			// Meta refuses the whole request and processes no event.
			graphError(w, 400, 100, 2804003, title, fmt.Sprintf("data[%d]: %s", i, msg))
			return
		}
	}
	f.mu.Lock()
	f.accepted = append(f.accepted, p.Data...)
	if p.TestEventCode != nil {
		f.testCode = append(f.testCode, *p.TestEventCode)
	} else {
		f.testCode = append(f.testCode, "")
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"events_received":%d,"messages":[],"fbtrace_id":"AzT3stTr4ce"}`, len(p.Data))
}

var (
	hashRE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	eventKey = []string{"event_name", "event_time", "event_id", "action_source", "event_source_url",
		"user_data", "custom_data", "opt_out", "data_processing_options",
		"data_processing_options_country", "data_processing_options_state", "referrer_url"}
	userKey = []string{"em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge", "external_id",
		"client_ip_address", "client_user_agent", "fbc", "fbp"}
	hashedKey  = []string{"em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge"}
	actions    = []string{"email", "website", "app", "phone_call", "chat", "physical_store", "system_generated", "business_messaging", "other"}
	currencies = []string{"USD", "EUR", "GBP", "JPY", "CHF", "SEK", "CAD", "AUD", "BRL", "INR"}
)

// validate returns a title and message when Meta would refuse ev.
func (f *fakeMeta) validate(ev map[string]any) (string, string) {
	for k := range ev {
		if !slices.Contains(eventKey, k) {
			return "Invalid Parameter", "unknown parameter " + k
		}
	}
	name, _ := ev["event_name"].(string)
	if name == "" {
		return "Missing Event Name", "event_name is required"
	}
	ts, ok := ev["event_time"].(json.Number)
	sec, err := ts.Int64()
	if !ok || err != nil {
		return "Invalid Event Time", "event_time must be an integer unix timestamp in seconds"
	}
	now := f.now()
	switch t := time.Unix(sec, 0); {
	case now.Sub(t) > 7*24*time.Hour:
		return "Event Timestamp Too Old", "The timestamp for this event is more than 7 days in the past."
	case t.Sub(now) > time.Minute:
		return "Event Timestamp In The Future", "The timestamp for this event is in the future."
	}
	action, _ := ev["action_source"].(string)
	if !slices.Contains(actions, action) {
		return "Invalid Action Source", fmt.Sprintf("action_source %q is not valid", action)
	}
	if action == "website" {
		u, _ := ev["event_source_url"].(string)
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return "Missing Event Source URL", "event_source_url is required for website events"
		}
	}
	ud, ok := ev["user_data"].(map[string]any)
	if !ok {
		return "Missing User Data", "user_data is required"
	}
	for k, v := range ud {
		if !slices.Contains(userKey, k) {
			return "Invalid Parameter", "unknown user_data parameter " + k
		}
		if slices.Contains(hashedKey, k) {
			vals, ok := stringsOf(v)
			if !ok {
				return "Invalid Parameter Type", k + " must be a string or a list of strings"
			}
			for _, h := range vals {
				if strings.Contains(h, "@") {
					return "Unhashed Email", "em must be hashed with SHA-256"
				}
				if !hashRE.MatchString(h) {
					return "Invalid Hash", k + " must be a lower-case hex SHA-256"
				}
			}
		}
	}
	if v, ok := ud["external_id"]; ok {
		if _, ok := stringsOf(v); !ok {
			return "Invalid Parameter Type", "external_id must be a string or a list of strings"
		}
	}
	if v, ok := ud["client_ip_address"]; ok {
		s, _ := v.(string)
		if _, err := netip.ParseAddr(s); err != nil {
			return "Invalid IP Address", "client_ip_address is not an IP address"
		}
	}
	_, ua := ud["client_user_agent"]
	_, ip := ud["client_ip_address"]
	has := func(k string) bool { _, ok := ud[k]; return ok }
	if !has("em") && !has("ph") && !has("external_id") && !has("fbc") && !has("fbp") && !(ip && ua) {
		return "Missing Customer Information", "user_data needs at least one customer information parameter that can be matched"
	}
	if cd, ok := ev["custom_data"].(map[string]any); ok {
		if c, ok := cd["currency"]; ok {
			if s, _ := c.(string); !slices.Contains(currencies, strings.ToUpper(s)) {
				return "Invalid Currency Code", fmt.Sprintf("currency %v is not an ISO 4217 code", c)
			}
		}
		if v, ok := cd["value"]; ok {
			if _, ok := v.(json.Number); !ok {
				return "Invalid Value", "value must be a number"
			}
		}
		if cs, ok := cd["contents"].([]any); ok {
			for _, c := range cs {
				m, _ := c.(map[string]any)
				if id, _ := m["id"].(string); id == "" {
					return "Invalid Contents", "every contents entry needs an id"
				}
			}
		}
	}
	if name == "Purchase" {
		cd, _ := ev["custom_data"].(map[string]any)
		if cd["value"] == nil || cd["currency"] == nil {
			return "Missing Purchase Value", "Purchase events need value and currency"
		}
	}
	if dpo, ok := ev["data_processing_options"]; ok {
		opts, ok := stringsOf(dpo)
		if !ok || (len(opts) > 0 && !slices.Equal(opts, []string{"LDU"})) {
			return "Invalid Data Processing Options", "data_processing_options must be [] or [\"LDU\"]"
		}
		if len(opts) == 1 {
			if _, ok := ev["data_processing_options_country"].(json.Number); !ok {
				return "Invalid Data Processing Options", "LDU needs data_processing_options_country"
			}
			if _, ok := ev["data_processing_options_state"].(json.Number); !ok {
				return "Invalid Data Processing Options", "LDU needs data_processing_options_state"
			}
		}
	}
	return "", ""
}

func stringsOf(v any) ([]string, bool) {
	switch v := v.(type) {
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

package ga4_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// fakeGoogle is a real HTTP server on 127.0.0.1 standing in for Google's
// collection endpoints: /g/collect (relay hits), /mp/collect and
// /debug/mp/collect (Measurement Protocol). The debug endpoint validates
// a body by the rules Google documents for the Measurement Protocol
// (sending-events "Limitations" and "Reserved names", validating-events
// for the answer's shape and codes) and answers validationMessages like
// the real one. The live endpoints answer 204 to anything, like Google,
// unless a test sets respond.
type fakeGoogle struct {
	*httptest.Server
	now func() time.Time

	mu      sync.Mutex
	hits    []relayRequest
	mp      []mpRequest
	debug   []mpRequest
	respond http.HandlerFunc // overrides the answer of every endpoint when set
}

// relayRequest is one /g/collect request as received.
type relayRequest struct {
	method, rawQuery, ua string
	query                url.Values
	lines                []url.Values
	body                 string
}

// events returns the hits of r: the query's parameters overridden by each
// body line's, one map per line (or the query alone when the body is
// empty), as Google and proxy/ga4.go read a batch.
func (r relayRequest) events() []map[string]string {
	base := map[string]string{}
	for k, v := range r.query {
		base[k] = v[len(v)-1]
	}
	if len(r.lines) == 0 {
		return []map[string]string{base}
	}
	var out []map[string]string
	for _, l := range r.lines {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range l {
			m[k] = v[len(v)-1]
		}
		out = append(out, m)
	}
	return out
}

// mpRequest is one Measurement Protocol request as received.
type mpRequest struct {
	rawQuery string
	query    url.Values
	raw      []byte
	body     mpBody
}

// mpBody is the Measurement Protocol JSON body
// (developers.google.com/analytics/devguides/collection/protocol/ga4/reference).
type mpBody struct {
	ClientID           string                     `json:"client_id"`
	UserID             string                     `json:"user_id"`
	TimestampMicros    json.Number                `json:"timestamp_micros"`
	NonPersonalizedAds *bool                      `json:"non_personalized_ads"`
	Consent            map[string]string          `json:"consent"`
	UserProperties     map[string]json.RawMessage `json:"user_properties"`
	UserData           *struct {
		Email   []string            `json:"sha256_email_address"`
		Phone   []string            `json:"sha256_phone_number"`
		Address []map[string]string `json:"address"`
	} `json:"user_data"`
	IPOverride   string            `json:"ip_override"`
	UserLocation map[string]string `json:"user_location"`
	Device       map[string]string `json:"device"`
	Events       []mpEvent         `json:"events"`
}

type mpEvent struct {
	Name            string                     `json:"name"`
	TimestampMicros json.Number                `json:"timestamp_micros"`
	Params          map[string]json.RawMessage `json:"params"`
}

func (e mpEvent) str(t *testing.T, k string) string {
	t.Helper()
	raw, ok := e.Params[k]
	if !ok {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("param %s = %s: not a string", k, raw)
	}
	return s
}

func (e mpEvent) num(t *testing.T, k string) float64 {
	t.Helper()
	raw, ok := e.Params[k]
	if !ok {
		t.Fatalf("param %s missing in %v", k, e.Params)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("param %s = %s: not a number", k, raw)
	}
	return f
}

func newFakeGoogle(t testing.TB, now func() time.Time) *fakeGoogle {
	t.Helper()
	f := &fakeGoogle{now: now}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeGoogle) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	respond := f.respond
	switch r.URL.Path {
	case "/g/collect":
		rr := relayRequest{method: r.Method, rawQuery: r.URL.RawQuery, ua: r.UserAgent(), query: r.URL.Query(), body: string(body)}
		for _, l := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
			if l == "" {
				continue
			}
			v, err := url.ParseQuery(l)
			if err != nil {
				v = url.Values{"_bad_line": {l}}
			}
			rr.lines = append(rr.lines, v)
		}
		f.hits = append(f.hits, rr)
	case "/mp/collect", "/debug/mp/collect":
		mr := mpRequest{rawQuery: r.URL.RawQuery, query: r.URL.Query(), raw: body}
		_ = json.Unmarshal(body, &mr.body)
		if r.URL.Path == "/mp/collect" {
			f.mp = append(f.mp, mr)
		} else {
			f.debug = append(f.debug, mr)
		}
	}
	f.mu.Unlock()
	if respond != nil {
		respond(w, r)
		return
	}
	switch r.URL.Path {
	case "/debug/mp/collect":
		w.Header().Set("Content-Type", "application/json")
		msgs := validateMP(body, f.now())
		if msgs == nil {
			msgs = []validationMessage{}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"validationMessages": msgs})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (f *fakeGoogle) relayHits() []relayRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]relayRequest(nil), f.hits...)
}

func (f *fakeGoogle) mpRequests() []mpRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mpRequest(nil), f.mp...)
}

func (f *fakeGoogle) debugRequests() []mpRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mpRequest(nil), f.debug...)
}

func (f *fakeGoogle) setRespond(h http.HandlerFunc) {
	f.mu.Lock()
	f.respond = h
	f.mu.Unlock()
}

// validationMessage is the debug endpoint's message shape.
type validationMessage struct {
	FieldPath      string `json:"fieldPath"`
	Description    string `json:"description"`
	ValidationCode string `json:"validationCode"`
}

var (
	validName   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
	currencyFmt = regexp.MustCompile(`^[A-Z]{3}$`)
)

// The Measurement Protocol's reserved names (sending-events, "Reserved
// names"; user-properties, "Reserved names").
var (
	reservedEvents = map[string]bool{
		"ad_activeview": true, "ad_click": true, "ad_exposure": true, "ad_query": true, "ad_reward": true,
		"adunit_exposure": true, "app_background": true, "app_clear_data": true, "app_exception": true,
		"app_remove": true, "app_store_refund": true, "app_store_subscription_cancel": true,
		"app_store_subscription_convert": true, "app_store_subscription_renew": true, "app_update": true,
		"app_upgrade": true, "dynamic_link_app_open": true, "dynamic_link_app_update": true,
		"dynamic_link_first_open": true, "error": true, "firebase_campaign": true, "first_open": true,
		"first_visit": true, "in_app_purchase": true, "notification_dismiss": true,
		"notification_foreground": true, "notification_open": true, "notification_receive": true,
		"os_update": true, "session_start": true, "session_start_with_rollout": true, "user_engagement": true,
	}
	reservedUserProps = map[string]bool{
		"first_open_time": true, "first_visit_time": true, "last_deep_link_referrer": true,
		"user_id": true, "first_open_after_install": true,
	}
	reservedPrefixes = []string{"google_", "ga_", "firebase_"}
	topLevelKeys     = map[string]bool{
		"client_id": true, "user_id": true, "timestamp_micros": true, "user_properties": true,
		"user_data": true, "consent": true, "non_personalized_ads": true, "events": true,
		"ip_override": true, "user_location": true, "device": true, "validation_behavior": true,
	}
)

func hasReservedPrefix(s string) bool {
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// validateMP applies Google's documented Measurement Protocol rules to a
// body and returns the messages the debug endpoint would give.
func validateMP(body []byte, now time.Time) []validationMessage {
	var msgs []validationMessage
	add := func(path, code, format string, args ...any) {
		msgs = append(msgs, validationMessage{FieldPath: path, ValidationCode: code, Description: fmt.Sprintf(format, args...)})
	}
	if len(body) >= 130000 {
		add("", "VALUE_OUT_OF_BOUNDS", "Post body must be smaller than 130kB but was [%d] bytes.", len(body))
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		add("", "VALUE_INVALID", "Unable to parse the request body as JSON: %v", err)
		return msgs
	}
	for k := range top {
		if !topLevelKeys[k] {
			add(k, "VALUE_INVALID", "Unknown field [%s].", k)
		}
	}
	var b struct {
		ClientID        string                     `json:"client_id"`
		TimestampMicros *json.Number               `json:"timestamp_micros"`
		Consent         map[string]string          `json:"consent"`
		UserProperties  map[string]json.RawMessage `json:"user_properties"`
		Events          []struct {
			Name            string                     `json:"name"`
			TimestampMicros *json.Number               `json:"timestamp_micros"`
			Params          map[string]json.RawMessage `json:"params"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		add("", "VALUE_INVALID", "Request body does not match the schema: %v", err)
		return msgs
	}
	if b.ClientID == "" {
		add("client_id", "VALUE_REQUIRED", "Measurement requires a client_id.")
	}
	checkTS := func(path string, n *json.Number) {
		if n == nil {
			return
		}
		us, err := n.Int64()
		if err != nil {
			add(path, "VALUE_INVALID", "timestamp_micros [%s] is not an integer.", n)
			return
		}
		ts := time.UnixMicro(us)
		if ts.Before(now.Add(-72*time.Hour)) || ts.After(now.Add(time.Minute)) {
			add(path, "VALUE_INVALID", "timestamp_micros [%d] must be within the last 72 hours and not in the future.", us)
		}
	}
	checkTS("timestamp_micros", b.TimestampMicros)
	for k, v := range b.Consent {
		if v != "GRANTED" && v != "DENIED" {
			add("consent."+k, "VALUE_INVALID", "Consent value [%s] must be GRANTED or DENIED.", v)
		}
	}
	if len(b.UserProperties) > 25 {
		add("user_properties", "EXCEEDED_MAX_ENTITIES", "A request can have at most 25 user properties but had [%d].", len(b.UserProperties))
	}
	for k, raw := range b.UserProperties {
		switch {
		case reservedUserProps[k] || hasReservedPrefix(k):
			add("user_properties", "NAME_RESERVED", "User property name [%s] is reserved.", k)
		case len(k) > 24 || !validName.MatchString(k):
			add("user_properties", "NAME_INVALID", "User property [%s] has an invalid name.", k)
		}
		var v struct {
			Value any `json:"value"`
		}
		if err := json.Unmarshal(raw, &v); err != nil || v.Value == nil {
			add("user_properties."+k, "VALUE_REQUIRED", "User property [%s] needs a value.", k)
		} else if s, ok := v.Value.(string); ok && utf8.RuneCountInString(s) > 36 {
			add("user_properties."+k, "VALUE_OUT_OF_BOUNDS", "User property [%s] value is longer than 36 characters.", k)
		}
	}
	switch {
	case len(b.Events) == 0:
		add("events", "VALUE_REQUIRED", "A request needs at least one event.")
	case len(b.Events) > 25:
		add("events", "EXCEEDED_MAX_ENTITIES", "A request can have at most 25 events but had [%d].", len(b.Events))
	}
	for i, e := range b.Events {
		switch {
		case len(e.Name) > 40 || !validName.MatchString(e.Name):
			add("events", "NAME_INVALID", "Event at index: [%d] has invalid name [%s]. Names must start with an alphabetic character.", i, e.Name)
		case reservedEvents[e.Name] || hasReservedPrefix(e.Name):
			add("events", "NAME_RESERVED", "Event at index: [%d] has name [%s] which is reserved.", i, e.Name)
		}
		checkTS(fmt.Sprintf("events[%d].timestamp_micros", i), e.TimestampMicros)
		if len(e.Params) > 25 {
			add(fmt.Sprintf("events[%d].params", i), "EXCEEDED_MAX_ENTITIES", "Event at index: [%d] has [%d] params; at most 25.", i, len(e.Params))
		}
		for k, raw := range e.Params {
			path := fmt.Sprintf("events[%d].params.%s", i, k)
			switch {
			case len(k) > 40 || !validName.MatchString(k):
				add(path, "NAME_INVALID", "Event at index: [%d] has invalid param name [%s].", i, k)
				continue
			case hasReservedPrefix(k) || k == "firebase_conversion":
				add(path, "NAME_RESERVED", "Event at index: [%d] has reserved param name [%s].", i, k)
				continue
			}
			if k == "items" {
				var items []map[string]json.RawMessage
				if err := json.Unmarshal(raw, &items); err != nil {
					add(path, "VALUE_INVALID", "items must be an array of objects.")
					continue
				}
				if len(items) > 200 {
					add(path, "EXCEEDED_MAX_ENTITIES", "An event can have at most 200 items.")
				}
				for n, it := range items {
					if _, ok := it["item_id"]; !ok {
						if _, ok := it["item_name"]; !ok {
							add(fmt.Sprintf("%s[%d]", path, n), "VALUE_REQUIRED", "Event at index: [%d]: item [%d] needs item_id or item_name.", i, n)
						}
					}
					for ik, iv := range it {
						if s, ok := jsonString(iv); ok && utf8.RuneCountInString(s) > 100 {
							add(fmt.Sprintf("%s[%d].%s", path, n, ik), "VALUE_OUT_OF_BOUNDS", "Event at index: [%d]: item value too long.", i)
						}
					}
				}
				continue
			}
			s, ok := jsonString(raw)
			if !ok {
				var f float64
				if err := json.Unmarshal(raw, &f); err != nil {
					var bv bool
					if json.Unmarshal(raw, &bv) != nil {
						add(path, "VALUE_INVALID", "Event at index: [%d]: param [%s] must be a string or a number.", i, k)
					}
				}
				continue
			}
			limit := 100
			switch k {
			case "page_location":
				limit = 1000
			case "page_referrer":
				limit = 420
			case "page_title":
				limit = 300
			}
			if utf8.RuneCountInString(s) > limit {
				add(path, "VALUE_OUT_OF_BOUNDS", "Event at index: [%d]: param [%s] value is longer than %d characters.", i, k, limit)
			}
			if k == "currency" && !currencyFmt.MatchString(s) {
				add(path, "VALUE_INVALID", "Event at index: [%d]: currency [%s] must be a valid uppercase 3-letter ISO 4217 code.", i, s)
			}
		}
	}
	return msgs
}

func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// float parses a relayed numeric parameter.
func float(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return f
}

// TestFakeDebugEndpoint: the fake's validation server answers bad bodies
// as Google documents, so a clean answer to sidetrack's bodies means
// something.
func TestFakeDebugEndpoint(t *testing.T) {
	f := newFakeGoogle(t, clock)
	ts := t0.UnixMicro()
	ev := func(name string, params string) string {
		return fmt.Sprintf(`{"name":%q,"params":{%s}}`, name, params)
	}
	many := make([]string, 26)
	for i := range many {
		many[i] = fmt.Sprintf(`"p%d":1`, i)
	}
	for _, tc := range []struct {
		name, body, code, path string
	}{
		{"valid", fmt.Sprintf(`{"client_id":"1.2","timestamp_micros":%d,"events":[%s]}`, ts, ev("purchase", `"value":1,"currency":"EUR"`)), "", ""},
		{"missing client_id", fmt.Sprintf(`{"events":[%s]}`, ev("x", "")), "VALUE_REQUIRED", "client_id"},
		{"bad name", fmt.Sprintf(`{"client_id":"1.2","events":[%s,%s]}`, ev("ok", ""), ev("_badEventName", "")), "NAME_INVALID", "events"},
		{"reserved name", fmt.Sprintf(`{"client_id":"1.2","events":[%s]}`, ev("session_start", "")), "NAME_RESERVED", "events"},
		{"reserved prefix", fmt.Sprintf(`{"client_id":"1.2","events":[%s]}`, ev("google_thing", "")), "NAME_RESERVED", "events"},
		{"too many params", fmt.Sprintf(`{"client_id":"1.2","events":[%s]}`, ev("x", strings.Join(many, ","))), "EXCEEDED_MAX_ENTITIES", "events[0].params"},
		{"too many events", fmt.Sprintf(`{"client_id":"1.2","events":[%s]}`, strings.Repeat(ev("x", "")+",", 25)+ev("x", "")), "EXCEEDED_MAX_ENTITIES", "events"},
		{"old timestamp", fmt.Sprintf(`{"client_id":"1.2","timestamp_micros":%d,"events":[%s]}`, t0.Add(-73*time.Hour).UnixMicro(), ev("x", "")), "VALUE_INVALID", "timestamp_micros"},
		{"future event timestamp", fmt.Sprintf(`{"client_id":"1.2","events":[{"name":"x","timestamp_micros":%d}]}`, t0.Add(time.Hour).UnixMicro()), "VALUE_INVALID", "events[0].timestamp_micros"},
		{"long value", fmt.Sprintf(`{"client_id":"1.2","events":[%s]}`, ev("x", `"p":"`+strings.Repeat("v", 101)+`"`)), "VALUE_OUT_OF_BOUNDS", "events[0].params.p"},
		{"reserved user property", `{"client_id":"1.2","user_properties":{"user_id":{"value":"x"}},"events":[{"name":"x"}]}`, "NAME_RESERVED", "user_properties"},
		{"not JSON", `{`, "VALUE_INVALID", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(f.URL+"/debug/mp/collect?measurement_id=G-X&api_secret=s", "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out struct {
				ValidationMessages []validationMessage `json:"validationMessages"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ValidationMessages == nil {
				t.Fatalf("answer not validation JSON: %v", err)
			}
			if tc.code == "" {
				if len(out.ValidationMessages) != 0 {
					t.Fatalf("messages for a valid body: %+v", out.ValidationMessages)
				}
				return
			}
			for _, m := range out.ValidationMessages {
				if m.ValidationCode == tc.code && m.FieldPath == tc.path {
					return
				}
			}
			t.Fatalf("no %s at %q in %+v", tc.code, tc.path, out.ValidationMessages)
		})
	}
}

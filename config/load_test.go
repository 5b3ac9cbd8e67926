package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultLoadsAndValidates(t *testing.T) {
	c := Default()
	c.Dev = true
	if err := c.Validate(); err != nil {
		t.Fatalf("embedded defaults are invalid with Dev: %v", err)
	}
	// Without -dev the only problem is the missing secret, and it says how
	// to set one.
	c.Dev = false
	var ve *ValidationError
	if err := c.Validate(); !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != "secrets" {
		t.Fatalf("defaults without Dev: %v; want exactly the secrets problem", err)
	}
	for _, hint := range []string{"SIDETRACK_SECRETS", "SIDETRACK_SECRETS_FILE"} {
		if !strings.Contains(ve.Problems[0].Message, hint) {
			t.Errorf("secrets message does not mention %s: %s", hint, ve.Problems[0].Message)
		}
	}
	// Default hands out independent copies.
	c.Hosts = append(c.Hosts, "mutated.example")
	c.Destinations[0].Name = "mutated"
	if d := Default(); len(d.Hosts) != 0 || d.Destinations[0].Name != "local" {
		t.Error("Default() shares state between calls")
	}
}

// TestDefaultsMatchDesign pins the DESIGN §6 defaults (and the documented
// extras): they are public interface.
func TestDefaultsMatchDesign(t *testing.T) {
	c := Default()
	d := func(s string) Duration {
		v, err := ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, ":8080"},
		{"origin", c.Origin, "http://127.0.0.1:3000"},
		{"hosts", len(c.Hosts), 0},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9090"},
		{"admin.token", c.Admin.Token, Secret("")},
		{"secrets", len(c.Secrets), 0},
		{"server.read_timeout", c.Server.ReadTimeout, d("10s")},
		{"server.write_timeout", c.Server.WriteTimeout, d("30s")},
		{"server.idle_timeout", c.Server.IdleTimeout, d("60s")},
		{"server.max_header_bytes", c.Server.MaxHeaderBytes, Size(16 << 10)},
		{"server.max_conns", c.Server.MaxConns, 10000},
		{"server.upstream_timeout", c.Server.UpstreamTimeout, d("30s")},
		{"server.upstream_max_conns", c.Server.UpstreamMaxConns, 1024},
		{"server.max_request_body", c.Server.MaxRequestBody, Size(64 << 20)},
		{"log", c.Log, Log{Level: "info", Format: "json", Access: false, AccessSample: 100}},
		{"cookies", c.Cookies, Cookies{Secure: true, Device: DeviceCookie{"stk_did", d("400d")},
			Session: SessionCook{"stk_ses", d("30m")}, Touches: NamedCookie{"stk_tch"}, Meta: MetaCookies{true}}},
		{"ingest.max_body", c.Ingest.MaxBody, Size(512 << 10)},
		{"ingest.ga4.paths", c.Ingest.GA4.Paths, []string{"/g/collect"}},
		{"ingest.segment.prefix", c.Ingest.Segment.Prefix, "/v1"},
		{"ingest.segment.max_event", c.Ingest.Segment.MaxEvent, Size(32000)},
		{"ingest.segment.max_request", c.Ingest.Segment.MaxRequest, Size(500000)},
		{"ingest.collect.path", c.Ingest.Collect.Path, "/collect"},
		{"ingest.forms", len(c.Ingest.Forms), 0},
		{"ingest.rate_limit", c.Ingest.RateLimit, RateLimit{Rate{50}, 100}},
		{"consent.default", c.Consent.Default, Purposes{"denied", "denied", "denied", "denied"}},
		{"consent.server_default", c.Consent.ServerDefault, Purposes{"granted", "granted", "granted", "granted"}},
		{"consent.cmp_cookie.format", c.Consent.CMPCookie.Format, "onetrust"},
		{"consent.honor_gpc", c.Consent.HonorGPC, true},
		{"privacy.ip", c.Privacy.IP, IPPolicy{"hash", "truncate"}},
		{"bots", c.Bots, "flag"},
		{"join", c.Join, Join{Capacity: 1000000, MaxBytes: 64 << 20, TTL: d("72h")}},
		{"dedup", c.Dedup, Dedup{Window: d("48h"), Capacity: 10000000, FalsePositiveRate: 0.0001, CrossSource: []string{"order_completed"}}},
		{"spool", c.Spool, Spool{Type: "local", Dir: "./sidetrack-data/spool", MaxBytes: 4 << 30, Fsync: Fsync{Interval: 50 * time.Millisecond}, Brokers: []string{}, Group: "sidetrack", Timeout: Duration(5 * time.Second), SessionTimeout: Duration(45 * time.Second)}},
		{"dlq", c.DLQ, DLQ{MaxBytes: 1 << 30, MaxAge: d("14d")}},
		{"scripts", len(c.Scripts), 0},
		{"alerts", c.Alerts, Alerts{MinEvents: 100}},
		{"debug", c.Debug, Debug{TraceEvents: 200, TraceWindow: d("10m")}},
		{"shutdown_timeout", c.ShutdownTimeout, d("15s")},
		{"drain_delay", c.DrainDelay, d("5s")},
		{"destinations", len(c.Destinations), 1},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v; want %#v", ck.name, ck.got, ck.want)
		}
	}
	want := Destination{
		Name: "local", Type: TypeNDJSON, Consent: []string{}, Events: EventFilter{Include: []string{}, Exclude: []string{}},
		Batch:   Batch{500, 1 << 20, Duration(time.Second)},
		Retry:   Retry{20, d("24h"), d("5m")},
		Backlog: Backlog{1 << 30, d("7d")},
		Timeout: d("10s"),
		Options: DestinationX{Path: "./sidetrack-data/events"},
	}
	got := c.Destinations[0]
	// The embedded file writes the local destination in flow style
	// without consent/events; normalise nil vs empty for the comparison.
	if got.Consent == nil {
		got.Consent = []string{}
	}
	if got.Events.Include == nil {
		got.Events.Include = []string{}
	}
	if got.Events.Exclude == nil {
		got.Events.Exclude = []string{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default destination = %+v\nwant %+v", got, want)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileOverDefaults(t *testing.T) {
	path := writeFile(t, "sidetrack.yaml", `
origin: http://shop:3000
server: {read_timeout: 3s}          # one key of a section: the rest stay default
cookies: {device: {name: did}}
ingest:
  ga4: {paths: [/a/collect]}        # lists replace
  forms: [{path: /contact, event: lead_submitted}]
events: {aliases: {Bestellung: order_completed}}
destinations:
  - {name: ga4, type: ga4, measurement_id: G-1, batch: {max_events: 25}}
  - {name: meta, type: metacapi, pixel_id: "1", access_token: t, timeout: 3s}
`)
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"origin", c.Origin, "http://shop:3000"},
		{"server.read_timeout", c.Server.ReadTimeout.D(), 3 * time.Second},
		{"server.write_timeout kept", c.Server.WriteTimeout.D(), 30 * time.Second},
		{"cookies.device.name", c.Cookies.Device.Name, "did"},
		{"cookies.device.max_age kept", c.Cookies.Device.MaxAge.D(), 400 * 24 * time.Hour},
		{"ingest.ga4.paths", c.Ingest.GA4.Paths, []string{"/a/collect"}},
		{"ingest.max_body kept", c.Ingest.MaxBody, Size(512 << 10)},
		{"form default status", c.Ingest.Forms[0].Success.Status, []string{"200-299", "300-399"}},
		{"form default not_location", c.Ingest.Forms[0].Success.NotLocation, "/contact"},
		{"aliases", c.Events.Aliases, map[string]string{"Bestellung": "order_completed"}},
		{"destinations replace the default", len(c.Destinations), 2},
		{"ga4 batch.max_events set", c.Destinations[0].Batch.MaxEvents, 25},
		{"ga4 batch.max_bytes default", c.Destinations[0].Batch.MaxBytes, Size(1 << 20)},
		{"ga4 batch.max_wait default", c.Destinations[0].Batch.MaxWait.D(), time.Second},
		{"ga4 retry default", c.Destinations[0].Retry, Retry{20, Duration(24 * time.Hour), Duration(5 * time.Minute)}},
		{"ga4 backlog default", c.Destinations[0].Backlog, Backlog{1 << 30, Duration(7 * 24 * time.Hour)}},
		{"ga4 timeout default", c.Destinations[0].Timeout.D(), 10 * time.Second},
		{"ga4 mode default", c.Destinations[0].Options.Mode, "relay"},
		{"ga4 has no api_version", c.Destinations[0].Options.APIVersion, ""},
		{"meta api_version default", c.Destinations[1].Options.APIVersion, "v21.0"},
		{"meta timeout set", c.Destinations[1].Timeout.D(), 3 * time.Second},
		{"meta has no mode", c.Destinations[1].Options.Mode, ""},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v; want %#v", ck.name, ck.got, ck.want)
		}
	}
}

func TestFullExampleIsValid(t *testing.T) {
	c, err := Load("testdata/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Hosts[0] != "shop.example" {
		t.Errorf("hosts not lower-cased: %q", c.Hosts)
	}
	if got := c.Destinations[4].Retry.MaxAttempts; got != 100 {
		t.Errorf("kafka retry.max_attempts = %d", got)
	}
	if !c.Spool.Fsync.Always {
		t.Errorf("fsync = %v", c.Spool.Fsync)
	}
}

func TestUnknownKeyRejectedWithLine(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"top level", "listen: ':1'\nlisen: ':2'\n", `line 2: unknown key "lisen"`},
		{"nested", "server:\n  read_timeout: 1s\n  read_timeuot: 2s\n", `line 3: unknown key "read_timeuot"`},
		{"deep", "cookies:\n  device:\n    nmae: x\n", `line 3: unknown key "nmae"`},
		{"destination adapter key", "destinations:\n  - name: a\n    type: webhook\n    uri: http://x\n", `line 4: unknown key "uri"`},
		{"form", "ingest:\n  forms:\n    - path: /c\n      evnt: x\n", `line 4: unknown key "evnt"`},
		{"dev is not a key", "dev: true\n", `line 1: unknown key "dev"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want it to contain %q", err, tt.want)
			}
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				t.Errorf("error is %T; want *yaml.TypeError", err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"every bad value reported", "listen: ':1'\nserver:\n  read_timeout: soon\n  max_header_bytes: big\nspool:\n  fsync: sometimes\ningest:\n  rate_limit: {per_client: fast}\n",
			[]string{"line 3: invalid duration", "line 4: invalid size", "line 6: invalid fsync", "line 8: invalid rate"}},
		{"wrong shape", "hosts: {a: b}\n", []string{"line 1: cannot unmarshal !!map into []string"}},
		{"syntax", "listen: [\n", []string{"yaml:"}},
		{"two documents", "listen: ':1'\n---\nlisten: ':2'\n", []string{"line 2", "exactly one YAML document"}},
		{"duplicate key", "listen: ':1'\nlisten: ':2'\n", []string{"already defined"}},
		{"scalar document", "hello\n", []string{"cannot unmarshal !!str into config.Config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	p := writeFile(t, "bad.yaml", "listen: [\n")
	if _, err := Load(p, nil); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("error does not name the file: %v", err)
	}
}

func TestEmptyDocumentsKeepDefaults(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n", "~\n", "{}\n"} {
		c, err := Parse([]byte(in), nil)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("Parse(%q) differs from the defaults", in)
		}
	}
}

func TestFormSuccessAccepts(t *testing.T) {
	def := FormSuccess{Status: []string{"200-299", "300-399"}, NotLocation: "/contact"}
	tests := []struct {
		s        FormSuccess
		status   int
		location string
		want     bool
	}{
		{def, 200, "", true},
		{def, 204, "", true},
		{def, 303, "/thanks", true},
		{def, 303, "https://shop.example/thanks?x=1", true},
		{def, 303, "/contact", false},
		{def, 302, "https://shop.example/contact?error=1", false},
		{def, 400, "", false},
		{def, 500, "", false},
		{FormSuccess{Status: []string{"303"}}, 303, "/contact", true},
		{FormSuccess{Status: []string{"303"}}, 200, "", false},
		{FormSuccess{Status: []string{"nonsense"}}, 200, "", false},
	}
	for _, tt := range tests {
		if got := tt.s.Accepts(tt.status, tt.location); got != tt.want {
			t.Errorf("%+v.Accepts(%d, %q) = %v; want %v", tt.s, tt.status, tt.location, got, tt.want)
		}
	}
}

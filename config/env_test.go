package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// envBase has one destination of each kind env addresses by name.
const envBase = `
destinations:
  - {name: local, type: ndjson, path: ./x}
  - {name: meta-capi, type: metacapi, pixel_id: "1", access_token: from-file}
  - {name: hook, type: webhook, url: http://h}
scripts:
  - {path: /t/gtag.js, upstream: https://a.example/gtag.js}
ingest:
  forms: [{path: /contact, event: lead_submitted}]
`

func TestEnvOverrides(t *testing.T) {
	secretFile := writeFile(t, "token", "s3cr3t-from-file\n")
	listFile := writeFile(t, "secrets", "first-secret-0123456789\nsecond-secret-0123456789\n")
	tests := []struct {
		name string
		env  []string
		get  func(*Config) any
		want any
	}{
		{"string", []string{"SIDETRACK_ORIGIN=http://shop:8000"}, func(c *Config) any { return c.Origin }, "http://shop:8000"},
		{"nested size", []string{"SIDETRACK_SPOOL__MAX_BYTES=8GiB"}, func(c *Config) any { return c.Spool.MaxBytes }, Size(8 << 30)},
		{"duration with days", []string{"SIDETRACK_COOKIES__DEVICE__MAX_AGE=90d"}, func(c *Config) any { return c.Cookies.Device.MaxAge.D() }, 90 * 24 * time.Hour},
		{"fsync", []string{"SIDETRACK_SPOOL__FSYNC=always"}, func(c *Config) any { return c.Spool.Fsync }, Fsync{Always: true}},
		{"rate", []string{"SIDETRACK_INGEST__RATE_LIMIT__PER_CLIENT=600/m"}, func(c *Config) any { return c.Ingest.RateLimit.PerClient }, Rate{10}},
		{"int", []string{"SIDETRACK_SERVER__MAX_CONNS=5"}, func(c *Config) any { return c.Server.MaxConns }, 5},
		{"int64", []string{"SIDETRACK_DEDUP__CAPACITY=42"}, func(c *Config) any { return c.Dedup.Capacity }, int64(42)},
		{"float", []string{"SIDETRACK_DEDUP__FALSE_POSITIVE_RATE=0.01"}, func(c *Config) any { return c.Dedup.FalsePositiveRate }, 0.01},
		{"bool", []string{"SIDETRACK_COOKIES__SECURE=false"}, func(c *Config) any { return c.Cookies.Secure }, false},
		{"secret", []string{"SIDETRACK_ADMIN__TOKEN=tok"}, func(c *Config) any { return c.Admin.Token.Reveal() }, "tok"},
		{"lower-case name", []string{"SIDETRACK_admin__token=tok"}, func(c *Config) any { return c.Admin.Token.Reveal() }, "tok"},
		{"list", []string{"SIDETRACK_HOSTS=a.com, b.com,"}, func(c *Config) any { return c.Hosts }, []string{"a.com", "b.com"}},
		{"empty list", []string{"SIDETRACK_INGEST__GA4__PATHS="}, func(c *Config) any { return c.Ingest.GA4.Paths }, []string{}},
		{"secret list", []string{"SIDETRACK_SECRETS=aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb"}, func(c *Config) any { return c.Secrets }, []Secret{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"}},
		{"map entry", []string{"SIDETRACK_EVENTS__ALIASES__FOO=bar"}, func(c *Config) any { return c.Events.Aliases }, map[string]string{"FOO": "bar"}},
		{"map of lists", []string{"SIDETRACK_CONSENT__CMP_COOKIE__MAP__C0004=ads,ad_user_data"}, func(c *Config) any { return c.Consent.CMPCookie.Map }, map[string][]string{"C0004": {"ads", "ad_user_data"}}},
		{"destination by name", []string{"SIDETRACK_DESTINATIONS__LOCAL__PATH=/data"}, func(c *Config) any { return c.Destinations[0].Options.Path }, "/data"},
		{"destination name with dash", []string{"SIDETRACK_DESTINATIONS__META_CAPI__ACCESS_TOKEN=t2"}, func(c *Config) any { return c.Destinations[1].Options.AccessToken.Reveal() }, "t2"},
		{"destination common key", []string{"SIDETRACK_DESTINATIONS__HOOK__BATCH__MAX_EVENTS=7"}, func(c *Config) any { return c.Destinations[2].Batch.MaxEvents }, 7},
		{"destination list", []string{"SIDETRACK_DESTINATIONS__HOOK__CONSENT=ads,analytics"}, func(c *Config) any { return c.Destinations[2].Consent }, []string{"ads", "analytics"}},
		{"destination map", []string{"SIDETRACK_DESTINATIONS__HOOK__HEADERS__X_KEY=v"}, func(c *Config) any { return c.Destinations[2].Options.Headers["X_KEY"].Reveal() }, "v"},
		{"script by index", []string{"SIDETRACK_SCRIPTS__0__TTL=2h"}, func(c *Config) any { return c.Scripts[0].TTL.D() }, 2 * time.Hour},
		{"form by index", []string{"SIDETRACK_INGEST__FORMS__0__EVENT=x"}, func(c *Config) any { return c.Ingest.Forms[0].Event }, "x"},
		{"_FILE secret", []string{"SIDETRACK_ADMIN__TOKEN_FILE=" + secretFile}, func(c *Config) any { return c.Admin.Token.Reveal() }, "s3cr3t-from-file"},
		{"_FILE destination", []string{"SIDETRACK_DESTINATIONS__META_CAPI__ACCESS_TOKEN_FILE=" + secretFile}, func(c *Config) any { return c.Destinations[1].Options.AccessToken.Reveal() }, "s3cr3t-from-file"},
		{"_FILE list", []string{"SIDETRACK_SECRETS_FILE=" + listFile}, func(c *Config) any { return c.Secrets }, []Secret{"first-secret-0123456789", "second-secret-0123456789"}},
		{"_FILE map entry", []string{"SIDETRACK_DESTINATIONS__HOOK__HEADERS__AUTHORIZATION_FILE=" + secretFile}, func(c *Config) any { return c.Destinations[2].Options.Headers["AUTHORIZATION"].Reveal() }, "s3cr3t-from-file"},
		{"reserved and foreign vars ignored", []string{"SIDETRACK_CONFIG=/etc/x.yaml", "HOME=/root", "SIDETRACKX=1", "NOEQUALS"}, func(c *Config) any { return c.Origin }, "http://127.0.0.1:3000"},
		{"destination defaults apply after env", []string{"SIDETRACK_DESTINATIONS__HOOK__TIMEOUT=0s"}, func(c *Config) any { return c.Destinations[2].Timeout.D() }, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(envBase), tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v; want %#v", got, tt.want)
			}
		})
	}
}

func TestEnvErrors(t *testing.T) {
	const value = "VALUE-THAT-MUST-NOT-LEAK"
	tests := []struct {
		name string
		env  string
		want string
	}{
		{"unknown top-level key", "SIDETRACK_ORIGN=" + value, `unknown config key "orign" in the top level`},
		{"unknown nested key", "SIDETRACK_SPOOL__MAX_BYTE=" + value, `unknown config key "max_byte" in spool (keys: type, dir, max_bytes`},
		{"unknown destination", "SIDETRACK_DESTINATIONS__GA4__API_SECRET=" + value, `no entry of destinations is named "ga4" (names: local, meta-capi, hook)`},
		{"destination key typo", "SIDETRACK_DESTINATIONS__META_CAPI__ACCES_TOKEN=" + value, `unknown config key "acces_token" in destinations[1] (meta-capi)`},
		{"index out of range", "SIDETRACK_SCRIPTS__3__TTL=" + value, `scripts has 1 entries`},
		{"section set whole", "SIDETRACK_SPOOL=" + value, "spool is a section; set one of its keys (SIDETRACK_SPOOL__<KEY>)"},
		{"map set whole", "SIDETRACK_EVENTS__ALIASES=" + value, "events.aliases is a map"},
		{"list of sections", "SIDETRACK_DESTINATIONS=" + value, "destinations is a list of sections"},
		{"into a value", "SIDETRACK_ORIGIN__HOST=" + value, "origin is a single value"},
		{"into a text value", "SIDETRACK_SPOOL__FSYNC__ALWAYS=" + value, "spool.fsync is a single value"},
		{"into a list of values", "SIDETRACK_HOSTS__0=" + value, "hosts is a list of values"},
		{"past a map entry", "SIDETRACK_EVENTS__ALIASES__A__B=" + value, "events.aliases.A is a single value"},
		{"empty segment", "SIDETRACK_SPOOL____DIR=" + value, "empty key segment"},
		{"dev is not settable", "SIDETRACK_DEV=" + value, `unknown config key "dev"`},
		{"bad size", "SIDETRACK_SPOOL__MAX_BYTES=lots", `SIDETRACK_SPOOL__MAX_BYTES (spool.max_bytes): invalid size "lots"`},
		{"bad int", "SIDETRACK_SERVER__MAX_CONNS=many", `invalid integer "many"`},
		{"bad bool", "SIDETRACK_COOKIES__SECURE=maybe", `invalid boolean "maybe"`},
		{"bad duration", "SIDETRACK_DESTINATIONS__HOOK__BATCH__MAX_WAIT=forever", `invalid duration "forever"`},
		{"missing _FILE", "SIDETRACK_ADMIN__TOKEN_FILE=/nonexistent/token", "SIDETRACK_ADMIN__TOKEN_FILE (admin.token): open /nonexistent/token"},
		{"_FILE on unknown key", "SIDETRACK_ADMIN__TOKN_FILE=" + value, `unknown config key "tokn_file" in admin`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(envBase), []string{tt.env})
			if err == nil {
				t.Fatal("no error")
			}
			name, _, _ := strings.Cut(tt.env, "=")
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), name) {
				t.Errorf("error:\n%v\nwant it to contain %q and %s", err, tt.want, name)
			}
			if strings.Contains(err.Error(), value) {
				t.Errorf("error leaks the value: %v", err)
			}
		})
	}
}

func TestEnvReportsEveryError(t *testing.T) {
	tokenFile := writeFile(t, "t", "x")
	_, err := Parse(nil, []string{
		"SIDETRACK_ORIGN=x",
		"SIDETRACK_SPOOL__MAX_BYTES=lots",
		"SIDETRACK_ADMIN__TOKEN=a",
		"SIDETRACK_ADMIN__TOKEN_FILE=" + tokenFile,
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"SIDETRACK_ORIGN", "SIDETRACK_SPOOL__MAX_BYTES", "set either SIDETRACK_ADMIN__TOKEN or SIDETRACK_ADMIN__TOKEN_FILE, not both"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestEnvFileTooLarge(t *testing.T) {
	big := writeFile(t, "big", strings.Repeat("x", maxEnvFile+1))
	_, err := Parse(nil, []string{"SIDETRACK_ADMIN__TOKEN_FILE=" + big})
	if err == nil || !strings.Contains(err.Error(), "larger than 1MiB") {
		t.Fatalf("error %v; want a size error", err)
	}
}

// TestEnvAfterFile: env wins over the file, which wins over the defaults.
func TestEnvAfterFile(t *testing.T) {
	c, err := Parse([]byte("origin: http://file:1\nlisten: ':1'\n"), []string{"SIDETRACK_ORIGIN=http://env:2"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Origin != "http://env:2" || c.Listen != ":1" || c.Admin.Listen != "127.0.0.1:9090" {
		t.Errorf("origin %q listen %q admin %q", c.Origin, c.Listen, c.Admin.Listen)
	}
}

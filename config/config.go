package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Config is the whole sidetrack configuration (DESIGN §6). Field names map to
// YAML keys by their `yaml` tag; env overrides use the same path in upper case
// with "__" between levels (SIDETRACK_SPOOL__MAX_BYTES).
type Config struct {
	Listen          string        `yaml:"listen"`
	Origin          string        `yaml:"origin"`
	Hosts           []string      `yaml:"hosts"`
	TrustedProxies  []string      `yaml:"trusted_proxies"`
	Admin           Admin         `yaml:"admin"`
	Secrets         []Secret      `yaml:"secrets"`
	Server          Server        `yaml:"server"`
	Log             Log           `yaml:"log"`
	Cookies         Cookies       `yaml:"cookies"`
	Ingest          Ingest        `yaml:"ingest"`
	Consent         Consent       `yaml:"consent"`
	Privacy         Privacy       `yaml:"privacy"`
	Bots            string        `yaml:"bots"`
	Events          Events        `yaml:"events"`
	Join            Join          `yaml:"join"`
	Dedup           Dedup         `yaml:"dedup"`
	Spool           Spool         `yaml:"spool"`
	DLQ             DLQ           `yaml:"dlq"`
	Destinations    []Destination `yaml:"destinations"`
	Scripts         []Script      `yaml:"scripts"`
	Alerts          Alerts        `yaml:"alerts"`
	Debug           Debug         `yaml:"debug"`
	ShutdownTimeout Duration      `yaml:"shutdown_timeout"`
	DrainDelay      Duration      `yaml:"drain_delay"`

	// Dev is set by the -dev and -demo flags, never by YAML: plain-http
	// cookies, console logs and a generated secret are acceptable.
	Dev bool `yaml:"-"`
}

// Admin is the separate admin listener (health, metrics, status, DLQ API).
type Admin struct {
	Listen string `yaml:"listen"`
	// Token, when set, is required as a bearer token on every admin
	// endpoint except /healthz and /readyz.
	Token Secret `yaml:"token"`
}

// Server holds the public listener's timeouts and limits. All are always
// set: fasthttp's default read timeout is unlimited, which lets slowloris
// clients hold connections forever.
type Server struct {
	ReadTimeout    Duration `yaml:"read_timeout"`
	WriteTimeout   Duration `yaml:"write_timeout"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	MaxHeaderBytes Size     `yaml:"max_header_bytes"`
	// MaxConns caps concurrent connections on the public listener.
	MaxConns int `yaml:"max_conns"`
	// UpstreamTimeout bounds one pass-through round trip to the origin.
	UpstreamTimeout Duration `yaml:"upstream_timeout"`
	// UpstreamMaxConns caps pooled connections to the origin.
	UpstreamMaxConns int `yaml:"upstream_max_conns"`
	// MaxRequestBody caps pass-through request bodies (streamed, never
	// held whole in memory).
	MaxRequestBody Size `yaml:"max_request_body"`
}

// Log configures zap.
type Log struct {
	Level string `yaml:"level"` // debug, info, warn, error
	// Format is "json" (production) or "console" (default with -dev).
	Format string `yaml:"format"`
	// Access turns on access logging; AccessSample logs one request in N.
	Access       bool `yaml:"access"`
	AccessSample int  `yaml:"access_sample"`
}

// Cookies configures the first-party cookies of DESIGN §4 "Identity".
type Cookies struct {
	Secure  bool         `yaml:"secure"`
	Device  DeviceCookie `yaml:"device"`
	Session SessionCook  `yaml:"session"`
	Touches NamedCookie  `yaml:"touches"`
	Meta    MetaCookies  `yaml:"meta"`
}

// DeviceCookie is the durable device id cookie.
type DeviceCookie struct {
	Name   string   `yaml:"name"`
	MaxAge Duration `yaml:"max_age"`
}

// SessionCook is the session cookie; a session ends after Idle without activity.
type SessionCook struct {
	Name string   `yaml:"name"`
	Idle Duration `yaml:"idle"`
}

// NamedCookie is a cookie whose only setting is its name.
type NamedCookie struct {
	Name string `yaml:"name"`
}

// MetaCookies controls the _fbp/_fbc cookies.
type MetaCookies struct {
	Enabled bool `yaml:"enabled"`
}

// Ingest configures the tracking routes.
type Ingest struct {
	MaxBody    Size      `yaml:"max_body"`
	GA4        GA4Ingest `yaml:"ga4"`
	Segment    Segment   `yaml:"segment"`
	Collect    Collect   `yaml:"collect"`
	ServerKeys []Secret  `yaml:"server_keys"`
	Forms      []Form    `yaml:"forms"`
	RateLimit  RateLimit `yaml:"rate_limit"`
	CORS       CORS      `yaml:"cors"`
}

// GA4Ingest configures gtag /g/collect routes.
type GA4Ingest struct {
	Paths []string `yaml:"paths"`
	// TaggingServer receives the other sGTM paths when set; otherwise
	// they go to origin.
	TaggingServer string `yaml:"tagging_server"`
}

// Segment configures the Segment-compatible API.
type Segment struct {
	Prefix string `yaml:"prefix"`
	// WriteKeys, when set, restricts accepted browser write keys.
	WriteKeys []Secret `yaml:"write_keys"`
	// MaxEvent and MaxRequest are Segment's own limits (32 KB, 500 KB).
	MaxEvent   Size `yaml:"max_event"`
	MaxRequest Size `yaml:"max_request"`
}

// Collect configures sidetrack's own JSON endpoint.
type Collect struct {
	Path string `yaml:"path"`
}

// Form is one HTML form whose successful posts become events.
type Form struct {
	Path    string            `yaml:"path"`
	Event   string            `yaml:"event"`
	Fields  map[string]string `yaml:"fields"` // event field → form field
	Success FormSuccess       `yaml:"success"`
}

// FormSuccess says which origin answers count as a successful submission.
type FormSuccess struct {
	// Status lists codes or ranges ("200-299", "303"); default
	// [200-299, 300-399].
	Status []string `yaml:"status"`
	// NotLocation: a redirect to this path is a validation failure (the
	// form shown again with errors); default: the form's own path.
	NotLocation string `yaml:"not_location"`
}

// Accepts reports whether an origin answer counts as a successful
// submission: its status is in Status, and a redirect does not point back
// to NotLocation (the form re-displayed with errors). location is the raw
// Location header; only its path is compared. Load fills the defaults
// (2xx or 3xx, not back to the form's path); Validate guarantees Status
// parses, and an unparsable entry never matches.
func (s FormSuccess) Accepts(status int, location string) bool {
	ok := false
	for _, r := range s.Status {
		if lo, hi, err := parseStatusRange(r); err == nil && lo <= status && status <= hi {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	if status >= 300 && status < 400 && s.NotLocation != "" && location != "" {
		if u, err := url.Parse(location); err == nil && u.Path == s.NotLocation {
			return false
		}
	}
	return true
}

// parseStatusRange parses "303" or "200-299".
func parseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if lo, err = strconv.Atoi(strings.TrimSpace(a)); err != nil {
		return 0, 0, fmt.Errorf("invalid status %q: want a code (303) or a range (200-299)", s)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
			return 0, 0, fmt.Errorf("invalid status range %q: want a code (303) or a range (200-299)", s)
		}
	}
	if lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("invalid status range %q: codes are 100-599, low before high", s)
	}
	return lo, hi, nil
}

// RateLimit is the per-client token bucket on tracking routes; a zero
// PerClient ("0/s") disables it (load tests from one address).
type RateLimit struct {
	PerClient Rate `yaml:"per_client"`
	Burst     int  `yaml:"burst"`
}

// CORS configures tracking-route CORS; empty Origins means https:// + hosts
// and their subdomains.
type CORS struct {
	Origins []string `yaml:"origins"`
}

// Consent configures consent defaults and signals (DESIGN §4 "Consent").
type Consent struct {
	Default       Purposes  `yaml:"default"`
	ServerDefault Purposes  `yaml:"server_default"`
	CMPCookie     CMPCookie `yaml:"cmp_cookie"`
	HonorGPC      bool      `yaml:"honor_gpc"`
}

// Purposes holds one state (granted, denied) per consent purpose.
type Purposes struct {
	Analytics         string `yaml:"analytics"`
	Ads               string `yaml:"ads"`
	AdUserData        string `yaml:"ad_user_data"`
	AdPersonalization string `yaml:"ad_personalization"`
}

// CMPCookie names a consent-management cookie and how to read it.
type CMPCookie struct {
	Name   string `yaml:"name"`
	Format string `yaml:"format"` // onetrust, cookiebot, tcf
	// Map is CMP category → purposes it grants (e.g. C0004: [ads, ad_user_data]).
	Map map[string][]string `yaml:"map"`
}

// Privacy configures IP treatment and GeoIP.
type Privacy struct {
	IP    IPPolicy `yaml:"ip"`
	GeoIP string   `yaml:"geoip"`
}

// IPPolicy is the IP treatment per consent state: hash, truncate, drop or keep.
type IPPolicy struct {
	Granted string `yaml:"granted"`
	Denied  string `yaml:"denied"`
}

// Events configures naming and validation.
type Events struct {
	Aliases    map[string]string `yaml:"aliases"`
	SchemasDir string            `yaml:"schemas_dir"`
}

// Join configures the browser↔backend join cache.
type Join struct {
	// Capacity is the number of browser contexts expected within TTL; it
	// sizes the cache's admission counters.
	Capacity int64 `yaml:"capacity"`
	// MaxBytes bounds the cache's memory (entries are charged their size).
	MaxBytes Size     `yaml:"max_bytes"`
	TTL      Duration `yaml:"ttl"`
	Hold     Duration `yaml:"hold"`
	Redis    string   `yaml:"redis"`
}

// Dedup configures duplicate detection (DESIGN §4 "Dedup").
type Dedup struct {
	Window            Duration `yaml:"window"`
	Capacity          int64    `yaml:"capacity"`
	FalsePositiveRate float64  `yaml:"false_positive_rate"`
	CrossSource       []string `yaml:"cross_source"`
	Redis             string   `yaml:"redis"`
}

// Spool configures the durable event store.
type Spool struct {
	Type     string   `yaml:"type"` // local or kafka
	Dir      string   `yaml:"dir"`
	MaxBytes Size     `yaml:"max_bytes"`
	Fsync    Fsync    `yaml:"fsync"`
	Brokers  []string `yaml:"brokers"`
	Topic    string   `yaml:"topic"`
	// Group prefixes the consumer group of each destination
	// (<group>-<destination>) in the forward process mode.
	Group string `yaml:"group"`
	// Timeout bounds how long an edge waits for Kafka's acknowledgement
	// before answering 429 (type kafka).
	Timeout Duration `yaml:"timeout"`
	// SessionTimeout is how long the group waits for a silent forwarder
	// before its partitions move to the others (type kafka).
	SessionTimeout Duration `yaml:"session_timeout"`
	// TLS and SASL secure the connection to the brokers (type kafka), as
	// for a kafka destination.
	TLS  bool `yaml:"tls"`
	SASL SASL `yaml:"sasl"`
}

// DLQ bounds the dead-letter queues.
type DLQ struct {
	MaxBytes Size     `yaml:"max_bytes"`
	MaxAge   Duration `yaml:"max_age"`
}

// Destination types (Destination.Type).
const (
	TypeNDJSON   = "ndjson"
	TypeWebhook  = "webhook"
	TypeGA4      = "ga4"
	TypeMetaCAPI = "metacapi"
	TypeKafka    = "kafka"
)

// Destination is one delivery target. Common options apply to every type;
// the rest are read by the adapter of Type.
type Destination struct {
	Name    string       `yaml:"name"`
	Type    string       `yaml:"type"` // one of the Type* constants
	Consent []string     `yaml:"consent"`
	Events  EventFilter  `yaml:"events"`
	Batch   Batch        `yaml:"batch"`
	Retry   Retry        `yaml:"retry"`
	Backlog Backlog      `yaml:"backlog"`
	Timeout Duration     `yaml:"timeout"`
	DryRun  bool         `yaml:"dry_run"`
	Options DestinationX `yaml:",inline"`
}

// DestinationX holds the adapter-specific keys of all destination types,
// inlined into the destination's YAML mapping. Validate rejects keys that
// do not belong to the destination's type; omitempty keeps Print from
// listing every other type's keys.
type DestinationX struct {
	// ndjson
	Path    string   `yaml:"path,omitempty"`
	MaxSize Size     `yaml:"max_size,omitempty"`
	MaxAge  Duration `yaml:"max_age,omitempty"`
	// webhook
	URL     string            `yaml:"url,omitempty"`
	Secret  Secret            `yaml:"secret,omitempty"`
	Headers map[string]Secret `yaml:"headers,omitempty"`
	Gzip    bool              `yaml:"gzip,omitempty"`
	// ga4
	Mode          string `yaml:"mode,omitempty"`
	MeasurementID string `yaml:"measurement_id,omitempty"`
	APISecret     Secret `yaml:"api_secret,omitempty"`
	Region        string `yaml:"region,omitempty"`
	Validate      bool   `yaml:"validate,omitempty"`
	// metacapi
	PixelID        string `yaml:"pixel_id,omitempty"`
	AccessToken    Secret `yaml:"access_token,omitempty"`
	APIVersion     string `yaml:"api_version,omitempty"`
	TestEventCode  string `yaml:"test_event_code,omitempty"`
	LimitedDataUse bool   `yaml:"limited_data_use,omitempty"`
	// ga4, metacapi: base URL override (tests, proxies)
	Endpoint string `yaml:"endpoint,omitempty"`
	// kafka
	Brokers     []string `yaml:"brokers,omitempty"`
	Topic       string   `yaml:"topic,omitempty"`
	Compression string   `yaml:"compression,omitempty"`
	TLS         bool     `yaml:"tls,omitempty"`
	SASL        SASL     `yaml:"sasl,omitempty"`
}

// SASL holds Kafka SASL credentials.
type SASL struct {
	Mechanism string `yaml:"mechanism"` // plain, scram-sha-256, scram-sha-512
	User      string `yaml:"user"`
	Password  Secret `yaml:"password"`
}

// EventFilter selects events by canonical name.
type EventFilter struct {
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
}

// Batch bounds one destination request.
type Batch struct {
	MaxEvents int      `yaml:"max_events"`
	MaxBytes  Size     `yaml:"max_bytes"`
	MaxWait   Duration `yaml:"max_wait"`
}

// Retry bounds redelivery attempts.
type Retry struct {
	MaxAttempts int      `yaml:"max_attempts"`
	MaxAge      Duration `yaml:"max_age"`
	MaxBackoff  Duration `yaml:"max_backoff"`
}

// Backlog caps one destination's undelivered events; past it the oldest
// move to that destination's DLQ.
type Backlog struct {
	MaxBytes Size     `yaml:"max_bytes"`
	MaxAge   Duration `yaml:"max_age"`
}

// Script is one first-party tag-delivery route.
type Script struct {
	Path     string   `yaml:"path"`
	Upstream string   `yaml:"upstream"`
	TTL      Duration `yaml:"ttl"`
	Query    []string `yaml:"query"`
}

// Debug configures the live trace (/debug/events on the admin port).
type Debug struct {
	// TraceEvents is how many recent events the trace keeps; 0 turns the
	// trace off (the endpoint answers 404 and nothing is recorded).
	TraceEvents int `yaml:"trace_events"`
	// TraceWindow is how long the trace records after each request to
	// /debug/events: nothing is recorded while nobody is looking.
	TraceWindow Duration `yaml:"trace_window"`
}

// Alerts holds data-quality alert thresholds (zero disables one).
type Alerts struct {
	DirectShareJump    float64 `yaml:"direct_share_jump"`
	VolumeDrop         float64 `yaml:"volume_drop"`
	ValidationFailRate float64 `yaml:"validation_fail_rate"`
	DLQDepth           int64   `yaml:"dlq_depth"`
	// MinEvents is the sample below which the ratio alerts stay quiet: a
	// share of a handful of events is noise, not a trend.
	MinEvents int64 `yaml:"min_events"`
}

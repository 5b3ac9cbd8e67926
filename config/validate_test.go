package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadFull(t *testing.T) *Config {
	t.Helper()
	c, err := Load("testdata/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func problems(t *testing.T, c *Config) []Problem {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate returned %T; want *ValidationError", err)
	}
	return ve.Problems
}

// TestValidateEachCheck breaks one thing of a valid config per case and
// expects exactly that problem, at that path.
func TestValidateEachCheck(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		path   string
		msg    string
	}{
		{"listen", func(c *Config) { c.Listen = "8080" }, "listen", "not host:port"},
		{"listen port", func(c *Config) { c.Listen = ":99999" }, "listen", "no valid port"},
		{"admin.listen", func(c *Config) { c.Admin.Listen = "localhost" }, "admin.listen", "not host:port"},
		{"admin same as public", func(c *Config) { c.Admin.Listen = c.Listen }, "admin.listen", "must differ from listen"},
		{"origin relative", func(c *Config) { c.Origin = "/shop" }, "origin", "absolute http"},
		{"origin scheme", func(c *Config) { c.Origin = "ftp://shop" }, "origin", "absolute http"},
		{"origin empty", func(c *Config) { c.Origin = "" }, "origin", "required"},
		{"origin query", func(c *Config) { c.Origin = "http://shop/?a=1" }, "origin", "query"},
		{"host with port", func(c *Config) { c.Hosts[1] = "shop.example:80" }, "hosts[1]", "not a host name"},
		{"host with scheme", func(c *Config) { c.Hosts[0] = "https://shop.example" }, "hosts[0]", "not a host name"},
		{"trusted proxy", func(c *Config) { c.TrustedProxies[0] = "10.0.0.0/33" }, "trusted_proxies[0]", "neither a CIDR"},
		{"no secrets", func(c *Config) { c.Secrets = nil }, "secrets", "SIDETRACK_SECRETS_FILE"},
		{"short secret", func(c *Config) { c.Secrets[1] = "short" }, "secrets[1]", "at least 16 bytes"},
		{"shutdown_timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "shutdown_timeout", "positive"},
		{"drain_delay", func(c *Config) { c.DrainDelay = -1 }, "drain_delay", "negative"},
		{"read_timeout", func(c *Config) { c.Server.ReadTimeout = 0 }, "server.read_timeout", "positive"},
		{"upstream_timeout", func(c *Config) { c.Server.UpstreamTimeout = -Duration(time.Second) }, "server.upstream_timeout", "positive"},
		{"max_header_bytes low", func(c *Config) { c.Server.MaxHeaderBytes = 1023 }, "server.max_header_bytes", "outside [1KiB, 1MiB]"},
		{"max_header_bytes high", func(c *Config) { c.Server.MaxHeaderBytes = 1<<20 + 1 }, "server.max_header_bytes", "outside [1KiB, 1MiB]"},
		{"max_conns", func(c *Config) { c.Server.MaxConns = 0 }, "server.max_conns", "positive"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level", `"verbose" is not one of debug, info, warn, error`},
		{"log format", func(c *Config) { c.Log.Format = "text" }, "log.format", "not one of"},
		{"access_sample", func(c *Config) { c.Log.AccessSample = 0 }, "log.access_sample", "at least 1"},
		{"cookie name", func(c *Config) { c.Cookies.Session.Name = "a;b" }, "cookies.session.name", "not a valid cookie name"},
		{"cookie clash", func(c *Config) { c.Cookies.Touches.Name = c.Cookies.Device.Name }, "cookies.touches.name", "also used by cookies.device.name"},
		{"cookie clash with meta", func(c *Config) { c.Cookies.Device.Name = "_fbp" }, "cookies.device.name", "also used by cookies.meta"},
		{"cookie max_age", func(c *Config) { c.Cookies.Device.MaxAge = 0 }, "cookies.device.max_age", "positive"},
		{"max_body", func(c *Config) { c.Ingest.MaxBody = 0 }, "ingest.max_body", "positive"},
		{"tagging_server", func(c *Config) { c.Ingest.GA4.TaggingServer = "sgtm.example" }, "ingest.ga4.tagging_server", "absolute http"},
		{"segment max_request", func(c *Config) { c.Ingest.Segment.MaxRequest = 1 }, "ingest.segment.max_request", "at least max_event"},
		{"server key short", func(c *Config) { c.Ingest.ServerKeys[0] = "abc" }, "ingest.server_keys[0]", "at least 16 bytes"},
		{"write key empty", func(c *Config) { c.Ingest.Segment.WriteKeys[0] = "" }, "ingest.segment.write_keys[0]", "empty"},
		{"rate negative", func(c *Config) { c.Ingest.RateLimit.PerClient.PerSecond = -1 }, "ingest.rate_limit.per_client", "negative"},
		{"burst", func(c *Config) { c.Ingest.RateLimit.Burst = 0 }, "ingest.rate_limit.burst", "at least 1"},
		{"cors star", func(c *Config) { c.Ingest.CORS.Origins[0] = "*" }, "ingest.cors.origins[0]", "not an origin"},
		{"cors path", func(c *Config) { c.Ingest.CORS.Origins[0] = "https://shop.example/" }, "ingest.cors.origins[0]", "not an origin"},
		{"form event", func(c *Config) { c.Ingest.Forms[1].Event = "" }, "ingest.forms[1].event", "required"},
		{"form path", func(c *Config) { c.Ingest.Forms[0].Path = "" }, "ingest.forms[0].path", "required"},
		{"form status", func(c *Config) { c.Ingest.Forms[1].Success.Status[1] = "300-200" }, "ingest.forms[1].success.status", "low before high"},
		{"form status word", func(c *Config) { c.Ingest.Forms[1].Success.Status[0] = "ok" }, "ingest.forms[1].success.status", "want a code"},
		{"form not_location", func(c *Config) { c.Ingest.Forms[1].Success.NotLocation = "error" }, "ingest.forms[1].success.not_location", "starting with '/'"},
		{"consent state", func(c *Config) { c.Consent.Default.Ads = "yes" }, "consent.default.ads", "not one of granted, denied"},
		{"server consent state", func(c *Config) { c.Consent.ServerDefault.AdUserData = "" }, "consent.server_default.ad_user_data", "not one of granted, denied"},
		{"cmp format", func(c *Config) { c.Consent.CMPCookie.Format = "didomi" }, "consent.cmp_cookie.format", "not one of onetrust"},
		{"cmp map purpose", func(c *Config) { c.Consent.CMPCookie.Map["C0004"][1] = "marketing" }, "consent.cmp_cookie.map.C0004[1]", "not one of analytics"},
		{"ip policy", func(c *Config) { c.Privacy.IP.Denied = "anonymize" }, "privacy.ip.denied", "not one of hash, truncate, drop, keep"},
		{"bots", func(c *Config) { c.Bots = "block" }, "bots", "not one of drop, flag"},
		{"alias", func(c *Config) { c.Events.Aliases["x"] = "" }, "events.aliases", "both names"},
		{"join capacity", func(c *Config) { c.Join.Capacity = 0 }, "join.capacity", "positive"},
		{"join redis", func(c *Config) { c.Join.Redis = "redis" }, "join.redis", "host:port or a redis://"},
		{"dedup fp 0", func(c *Config) { c.Dedup.FalsePositiveRate = 0 }, "dedup.false_positive_rate", "not in (0, 1)"},
		{"dedup fp 1", func(c *Config) { c.Dedup.FalsePositiveRate = 1 }, "dedup.false_positive_rate", "not in (0, 1)"},
		{"dedup window", func(c *Config) { c.Dedup.Window = 0 }, "dedup.window", "positive"},
		{"cross_source", func(c *Config) { c.Dedup.CrossSource[1] = "" }, "dedup.cross_source[1]", "empty"},
		{"spool type", func(c *Config) { c.Spool.Type = "s3" }, "spool.type", "not one of local, kafka"},
		{"spool dir", func(c *Config) { c.Spool.Dir = "" }, "spool.dir", "required for type local"},
		{"spool kafka topic", func(c *Config) { c.Spool.Type = "kafka"; c.Spool.Brokers = []string{"k:9092"} }, "spool.topic", "required for type kafka"},
		{"spool max_bytes", func(c *Config) { c.Spool.MaxBytes = 0 }, "spool.max_bytes", "positive"},
		{"spool kafka group", func(c *Config) { kafkaSpool(c); c.Spool.Group = "a group" }, "spool.group", "not a Kafka topic name"},
		{"spool kafka timeout", func(c *Config) { kafkaSpool(c); c.Spool.Timeout = 0 }, "spool.timeout", "positive"},
		{"spool kafka session", func(c *Config) { kafkaSpool(c); c.Spool.SessionTimeout = 0 }, "spool.session_timeout", "positive"},
		{"spool kafka sasl", func(c *Config) { kafkaSpool(c); c.Spool.SASL.Mechanism = "plain" }, "spool.sasl", "user and password are required"},
		{"spool kafka sasl mechanism", func(c *Config) { kafkaSpool(c); c.Spool.SASL = SASL{Mechanism: "gssapi", User: "u", Password: "p"} }, "spool.sasl.mechanism", "not one of"},
		{"spool kafka dlq topics", func(c *Config) { kafkaSpool(c); c.Spool.Topic = strings.Repeat("t", 240) }, "spool.topic", "dead-letter topics"},
		{"spool fsync unset", func(c *Config) { c.Spool.Fsync = Fsync{} }, "spool.fsync", "always, never or a positive interval"},
		{"spool fsync two", func(c *Config) { c.Spool.Fsync.Never = true }, "spool.fsync", "always, never or a positive interval"},
		{"dlq", func(c *Config) { c.DLQ.MaxAge = 0 }, "dlq.max_age", "positive"},
		{"alerts", func(c *Config) { c.Alerts.VolumeDrop = 2 }, "alerts.volume_drop", "[0, 1]"},
		{"trace events negative", func(c *Config) { c.Debug.TraceEvents = -1 }, "debug.trace_events", "not in [0, 10000]"},
		{"trace events too many", func(c *Config) { c.Debug.TraceEvents = 10001 }, "debug.trace_events", "not in [0, 10000]"},
		{"trace window", func(c *Config) { c.Debug.TraceWindow = 0 }, "debug.trace_window", "positive"},
		{"alerts min_events", func(c *Config) { c.Alerts.MinEvents = -1 }, "alerts.min_events", "negative"},
		{"dest name empty", func(c *Config) { c.Destinations[0].Name = "" }, "destinations[0].name", "required"},
		{"dest name chars", func(c *Config) { c.Destinations[0].Name = "Archive" }, "destinations[0] (Archive).name", "lower-case letters"},
		{"dest name double sep", func(c *Config) { c.Destinations[0].Name = "a__b" }, "destinations[0] (a__b).name", "single '-' or '_'"},
		{"dest name dup", func(c *Config) { c.Destinations[1].Name = "archive" }, "destinations[1] (archive).name", "also the name of destinations[0]"},
		{"dest name env clash", func(c *Config) { c.Destinations[0].Name = "meta_capi" }, "destinations[3] (meta-capi).name", "only in '-' vs '_'"},
		{"dest type empty", func(c *Config) { c.Destinations[0].Type = "" }, "destinations[0] (archive).type", "required"},
		{"dest type unknown", func(c *Config) { c.Destinations[0].Type = "s3" }, "destinations[0] (archive).type", `unknown type "s3"`},
		{"dest consent", func(c *Config) { c.Destinations[2].Consent = []string{"marketing"} }, "destinations[2] (ga4).consent[0]", "not one of analytics"},
		{"dest events", func(c *Config) { c.Destinations[1].Events.Include[0] = "" }, "destinations[1] (hook).events.include[0]", "empty"},
		{"dest batch", func(c *Config) { c.Destinations[1].Batch.MaxEvents = -1 }, "destinations[1] (hook).batch.max_events", "negative"},
		{"dest retry", func(c *Config) { c.Destinations[1].Retry.MaxBackoff = -1 }, "destinations[1] (hook).retry.max_backoff", "negative"},
		{"dest timeout", func(c *Config) { c.Destinations[1].Timeout = -1 }, "destinations[1] (hook).timeout", "negative"},
		{"ndjson path", func(c *Config) { c.Destinations[0].Options.Path = "" }, "destinations[0] (archive).path", "required for type ndjson"},
		{"webhook url", func(c *Config) { c.Destinations[1].Options.URL = "hooks.example" }, "destinations[1] (hook).url", "absolute http"},
		{"webhook header", func(c *Config) { c.Destinations[1].Options.Headers["Bad Header"] = "x" }, "destinations[1] (hook).headers", "not a valid header name"},
		{"pixel_id on webhook", func(c *Config) { c.Destinations[1].Options.PixelID = "1" }, "destinations[1] (hook).pixel_id", "not an option of type webhook (it belongs to metacapi)"},
		{"endpoint on ndjson", func(c *Config) { c.Destinations[0].Options.Endpoint = "http://x" }, "destinations[0] (archive).endpoint", "belongs to ga4, metacapi"},
		{"sasl on ga4", func(c *Config) { c.Destinations[2].Options.SASL.User = "u" }, "destinations[2] (ga4).sasl", "belongs to kafka"},
		{"ga4 measurement id", func(c *Config) { c.Destinations[2].Options.MeasurementID = "UA-1234" }, "destinations[2] (ga4).measurement_id", "not a GA4 measurement id"},
		{"ga4 measurement id missing", func(c *Config) { c.Destinations[2].Options.MeasurementID = "" }, "destinations[2] (ga4).measurement_id", "required"},
		{"ga4 api_secret", func(c *Config) { c.Destinations[2].Options.APISecret = "" }, "destinations[2] (ga4).api_secret", "required for type ga4 in mode mp"},
		{"ga4 mode", func(c *Config) { c.Destinations[2].Options.Mode = "proxy" }, "destinations[2] (ga4).mode", "not one of relay, mp"},
		{"ga4 region", func(c *Config) { c.Destinations[2].Options.Region = "us" }, "destinations[2] (ga4).region", "not one of"},
		{"ga4 endpoint", func(c *Config) { c.Destinations[2].Options.Endpoint = "x" }, "destinations[2] (ga4).endpoint", "absolute http"},
		{"meta pixel", func(c *Config) { c.Destinations[3].Options.PixelID = "" }, "destinations[3] (meta-capi).pixel_id", "required for type metacapi"},
		{"meta pixel digits", func(c *Config) { c.Destinations[3].Options.PixelID = "px1" }, "destinations[3] (meta-capi).pixel_id", "digits only"},
		{"meta token", func(c *Config) { c.Destinations[3].Options.AccessToken = "" }, "destinations[3] (meta-capi).access_token", "required for type metacapi"},
		{"meta version", func(c *Config) { c.Destinations[3].Options.APIVersion = "21" }, "destinations[3] (meta-capi).api_version", "not a Graph API version"},
		{"kafka brokers", func(c *Config) { c.Destinations[4].Options.Brokers = nil }, "destinations[4] (bus).brokers", "required for type kafka"},
		{"kafka broker", func(c *Config) { c.Destinations[4].Options.Brokers[1] = "k2" }, "destinations[4] (bus).brokers[1]", "not host:port"},
		{"kafka topic", func(c *Config) { c.Destinations[4].Options.Topic = "a b" }, "destinations[4] (bus).topic", "not a Kafka topic"},
		{"kafka compression", func(c *Config) { c.Destinations[4].Options.Compression = "brotli" }, "destinations[4] (bus).compression", "not one of"},
		{"kafka sasl", func(c *Config) { c.Destinations[4].Options.SASL.Password = "" }, "destinations[4] (bus).sasl", "user and password are required"},
		{"kafka sasl mechanism", func(c *Config) { c.Destinations[4].Options.SASL.Mechanism = "" }, "destinations[4] (bus).sasl.mechanism", "required when user or password"},
		{"script upstream", func(c *Config) { c.Scripts[0].Upstream = "/gtag.js" }, "scripts[0].upstream", "absolute http"},
		{"script path", func(c *Config) { c.Scripts[0].Path = "t/gtag.js" }, "scripts[0].path", "not a path"},
		{"script ttl", func(c *Config) { c.Scripts[0].TTL = -1 }, "scripts[0].ttl", "negative"},
		{"collect path", func(c *Config) { c.Ingest.Collect.Path = "/c?x" }, "ingest.collect.path", "not a path"},
		{"route clash", func(c *Config) { c.Scripts[0].Path = "/contact" }, "scripts[0].path", "/contact is also ingest.forms[0].path"},
		{"route clash ga4", func(c *Config) { c.Ingest.Collect.Path = "/g/collect" }, "ingest.collect.path", "is also ingest.ga4.paths[0]"},
		{"route under segment", func(c *Config) { c.Ingest.Forms[0].Path = "/seg/track" }, "ingest.forms[0].path", "under ingest.segment.prefix /seg"},
		{"segment prefix slash", func(c *Config) { c.Ingest.Segment.Prefix = "/seg/" }, "ingest.segment.prefix", "must not end with '/'"},
	}
	if p := problems(t, loadFull(t)); len(p) != 0 {
		t.Fatalf("baseline has problems: %v", p)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := loadFull(t)
			tt.mutate(c)
			ps := problems(t, c)
			if len(ps) != 1 || ps[0].Path != tt.path || !strings.Contains(ps[0].Message, tt.msg) {
				t.Errorf("problems %q\nwant exactly {%s: …%s…}", ps, tt.path, tt.msg)
			}
		})
	}
}

// TestValidateReportsEveryProblem: one call, every problem, each with its path.
func TestValidateReportsEveryProblem(t *testing.T) {
	c, err := Parse([]byte(`
listen: "nope"
origin: "shop.example"
hosts: ["bad host"]
server: {read_timeout: 0s}
bots: block
destinations:
  - {name: local, type: ndjson}
  - {name: meta, type: metacapi, pixel_id: "1"}
  - {name: hook, type: webhook, url: "http://h", pixel_id: "1"}
  - {name: meta, type: ga4}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate = %v; want *ValidationError", err)
	}
	want := []string{
		"listen", "origin", "hosts[0]", "secrets", "server.read_timeout", "bots",
		"destinations[0] (local).path",
		"destinations[1] (meta).access_token",
		"destinations[2] (hook).pixel_id",
		"destinations[3] (meta).name",
		"destinations[3] (meta).measurement_id",
	}
	var got []string
	for _, p := range ve.Problems {
		got = append(got, p.Path)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("problem paths:\n%q\nwant\n%q", got, want)
	}
	// Error() lists them one per line, each "path: message".
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want)+1 || !strings.Contains(lines[0], "11 problems") {
		t.Errorf("Error() =\n%s", err)
	}
	if !strings.Contains(err.Error(), "\n  destinations[1] (meta).access_token: required for type metacapi") {
		t.Errorf("Error() lacks the access_token line:\n%s", err)
	}
}

// kafkaSpool makes c's spool a valid Kafka one.
func kafkaSpool(c *Config) {
	c.Spool.Type, c.Spool.Brokers, c.Spool.Topic = "kafka", []string{"k:9092"}, "events"
}

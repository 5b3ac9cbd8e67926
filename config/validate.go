package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Problem is one invalid setting: its key path (as in YAML, with list
// entries as "destinations[1] (meta)") and what is wrong with it.
// Messages never contain secret values.
type Problem struct {
	Path    string
	Message string
}

// ValidationError lists every problem Validate found, so one start-up
// attempt shows the operator everything to fix.
type ValidationError struct {
	Problems []Problem
}

// Error lists the problems one per line after a summary line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	s := "s"
	if len(e.Problems) == 1 {
		s = ""
	}
	fmt.Fprintf(&b, "invalid config (%d problem%s):", len(e.Problems), s)
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Path)
		b.WriteString(": ")
		b.WriteString(p.Message)
	}
	return b.String()
}

// Validate checks the whole config and returns a *ValidationError listing
// every problem, or nil. Dev relaxes what -dev/-demo provide themselves
// (a generated secret).
func (c *Config) Validate() error {
	v := &validator{}
	v.top(c)
	v.server(c)
	v.cookies(c)
	v.ingest(c)
	v.consent(c)
	v.misc(c)
	v.spool(c)
	v.destinations(c)
	v.scripts(c)
	v.routes(c)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

// validator accumulates problems; each check adds and moves on.
type validator struct {
	problems []Problem
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) top(c *Config) {
	v.hostPort("listen", c.Listen)
	v.hostPort("admin.listen", c.Admin.Listen)
	if c.Listen != "" && c.Listen == c.Admin.Listen && !strings.HasSuffix(c.Listen, ":0") {
		v.add("admin.listen", "must differ from listen (the admin port must not be public)")
	}
	v.httpURL("origin", c.Origin, true)
	if u, err := url.Parse(c.Origin); err == nil && (u.RawQuery != "" || u.Fragment != "") {
		v.add("origin", "must not have a query or fragment")
	}
	for i, h := range c.Hosts {
		if !validHost(h) {
			v.add(idx("hosts", i), "%q is not a host name (no scheme, port or path)", h)
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(p); err != nil {
			v.add(idx("trusted_proxies", i), "%q is neither a CIDR (10.0.0.0/8) nor an IP", p)
		}
	}
	if len(c.Secrets) == 0 && !c.Dev {
		v.add("secrets", "at least one secret is required (HMAC/AES keys, newest first, each ≥ 16 bytes): "+
			"set secrets: in the config file, or SIDETRACK_SECRETS (comma-separated) or "+
			"SIDETRACK_SECRETS_FILE (e.g. generated with `openssl rand -base64 32`); -dev and -demo generate one")
	}
	for i, s := range c.Secrets {
		if len(s.Reveal()) < 16 {
			v.add(idx("secrets", i), "too short: a secret needs at least 16 bytes (e.g. `openssl rand -base64 32`)")
		}
	}
	v.positive("shutdown_timeout", c.ShutdownTimeout)
	v.nonNegative("drain_delay", c.DrainDelay)
}

func (v *validator) server(c *Config) {
	s := c.Server
	v.positive("server.read_timeout", s.ReadTimeout)
	v.positive("server.write_timeout", s.WriteTimeout)
	v.positive("server.idle_timeout", s.IdleTimeout)
	v.positive("server.upstream_timeout", s.UpstreamTimeout)
	if s.MaxHeaderBytes < 1<<10 || s.MaxHeaderBytes > 1<<20 {
		v.add("server.max_header_bytes", "%s is outside [1KiB, 1MiB]", s.MaxHeaderBytes)
	}
	if s.MaxConns <= 0 {
		v.add("server.max_conns", "must be positive")
	}
	if s.UpstreamMaxConns <= 0 {
		v.add("server.upstream_max_conns", "must be positive")
	}
	if s.MaxRequestBody <= 0 {
		v.add("server.max_request_body", "must be positive")
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")
	if c.Log.AccessSample < 1 {
		v.add("log.access_sample", "must be at least 1 (log one request in N)")
	}
}

func (v *validator) cookies(c *Config) {
	k := c.Cookies
	v.positive("cookies.device.max_age", k.Device.MaxAge)
	v.positive("cookies.session.idle", k.Session.Idle)
	seen := map[string]string{}
	if k.Meta.Enabled {
		seen["_fbp"], seen["_fbc"] = "cookies.meta", "cookies.meta"
	}
	for _, n := range []struct{ path, name string }{
		{"cookies.device.name", k.Device.Name},
		{"cookies.session.name", k.Session.Name},
		{"cookies.touches.name", k.Touches.Name},
	} {
		switch {
		case n.name == "":
			v.add(n.path, "required")
		case !isToken(n.name):
			v.add(n.path, "%q is not a valid cookie name", n.name)
		case seen[n.name] != "":
			v.add(n.path, "%q is also used by %s", n.name, seen[n.name])
		default:
			seen[n.name] = n.path
		}
	}
}

func (v *validator) ingest(c *Config) {
	in := c.Ingest
	if in.MaxBody <= 0 {
		v.add("ingest.max_body", "must be positive")
	}
	v.httpURL("ingest.ga4.tagging_server", in.GA4.TaggingServer, false)
	if in.Segment.MaxEvent <= 0 {
		v.add("ingest.segment.max_event", "must be positive")
	}
	if in.Segment.MaxRequest < in.Segment.MaxEvent {
		v.add("ingest.segment.max_request", "must be at least max_event (%s)", in.Segment.MaxEvent)
	}
	for i, k := range in.Segment.WriteKeys {
		if k == "" {
			v.add(idx("ingest.segment.write_keys", i), "must not be empty")
		}
	}
	for i, k := range in.ServerKeys {
		if len(k.Reveal()) < 16 {
			v.add(idx("ingest.server_keys", i), "too short: a server key needs at least 16 bytes (it authenticates backend events)")
		}
	}
	if in.RateLimit.PerClient.PerSecond < 0 {
		v.add("ingest.rate_limit.per_client", "must not be negative (0/s disables the limit)")
	}
	if in.RateLimit.PerClient.PerSecond > 0 && in.RateLimit.Burst < 1 {
		v.add("ingest.rate_limit.burst", "must be at least 1 when per_client is set")
	}
	for i, o := range in.CORS.Origins {
		if !validCORSOrigin(o) {
			v.add(idx("ingest.cors.origins", i), "%q is not an origin (https://shop.example, https://*.shop.example)", o)
		}
	}
	for i, f := range in.Forms {
		p := idx("ingest.forms", i)
		if f.Event == "" {
			v.add(p+".event", "required (the canonical event name, e.g. lead_submitted)")
		}
		for _, s := range f.Success.Status {
			if _, _, err := parseStatusRange(s); err != nil {
				v.add(p+".success.status", "%v", err)
			}
		}
		if f.Success.NotLocation != "" && !strings.HasPrefix(f.Success.NotLocation, "/") {
			v.add(p+".success.not_location", "must be a path starting with '/'")
		}
		for ev, field := range f.Fields {
			if ev == "" || field == "" {
				v.add(p+".fields", "event field and form field names must not be empty")
				break
			}
		}
	}
}

func (v *validator) consent(c *Config) {
	for _, p := range []struct {
		path string
		p    Purposes
	}{{"consent.default", c.Consent.Default}, {"consent.server_default", c.Consent.ServerDefault}} {
		v.oneOf(p.path+".analytics", p.p.Analytics, "granted", "denied")
		v.oneOf(p.path+".ads", p.p.Ads, "granted", "denied")
		v.oneOf(p.path+".ad_user_data", p.p.AdUserData, "granted", "denied")
		v.oneOf(p.path+".ad_personalization", p.p.AdPersonalization, "granted", "denied")
	}
	cmp := c.Consent.CMPCookie
	v.oneOf("consent.cmp_cookie.format", cmp.Format, "onetrust", "cookiebot", "tcf")
	if cmp.Name != "" && !isToken(cmp.Name) {
		v.add("consent.cmp_cookie.name", "%q is not a valid cookie name", cmp.Name)
	}
	for _, cat := range sortedKeys(cmp.Map) {
		if cat == "" {
			v.add("consent.cmp_cookie.map", "a category must not be empty")
		}
		v.purposes("consent.cmp_cookie.map."+cat, cmp.Map[cat])
	}
}

func (v *validator) misc(c *Config) {
	v.oneOf("privacy.ip.granted", c.Privacy.IP.Granted, "hash", "truncate", "drop", "keep")
	v.oneOf("privacy.ip.denied", c.Privacy.IP.Denied, "hash", "truncate", "drop", "keep")
	v.oneOf("bots", c.Bots, "drop", "flag")
	for _, k := range sortedKeys(c.Events.Aliases) {
		if k == "" || c.Events.Aliases[k] == "" {
			v.add("events.aliases", "alias %q → %q: both names are required", k, c.Events.Aliases[k])
		}
	}
	if c.Join.Capacity <= 0 {
		v.add("join.capacity", "must be positive")
	}
	v.positive("join.ttl", c.Join.TTL)
	v.nonNegative("join.hold", c.Join.Hold)
	v.redis("join.redis", c.Join.Redis)
	v.positive("dedup.window", c.Dedup.Window)
	if c.Dedup.Capacity <= 0 {
		v.add("dedup.capacity", "must be positive")
	}
	if fp := c.Dedup.FalsePositiveRate; !(fp > 0 && fp < 1) {
		v.add("dedup.false_positive_rate", "%v is not in (0, 1) (e.g. 0.0001)", fp)
	}
	for i, n := range c.Dedup.CrossSource {
		if n == "" {
			v.add(idx("dedup.cross_source", i), "must not be empty")
		}
	}
	v.redis("dedup.redis", c.Dedup.Redis)
	if c.DLQ.MaxBytes <= 0 {
		v.add("dlq.max_bytes", "must be positive")
	}
	v.positive("dlq.max_age", c.DLQ.MaxAge)
	a := c.Alerts
	if a.DirectShareJump < 0 {
		v.add("alerts.direct_share_jump", "must not be negative (0 disables)")
	}
	if a.VolumeDrop < 0 || a.VolumeDrop > 1 {
		v.add("alerts.volume_drop", "must be a fraction in [0, 1] (0 disables)")
	}
	if a.ValidationFailRate < 0 || a.ValidationFailRate > 1 {
		v.add("alerts.validation_fail_rate", "must be a fraction in [0, 1] (0 disables)")
	}
	if a.DLQDepth < 0 {
		v.add("alerts.dlq_depth", "must not be negative (0 disables)")
	}
	if n := c.Debug.TraceEvents; n < 0 || n > maxTraceEvents {
		v.add("debug.trace_events", "%d is not in [0, %d] (0 turns the live trace off)", n, maxTraceEvents)
	}
	if c.Debug.TraceEvents > 0 {
		v.positive("debug.trace_window", c.Debug.TraceWindow)
	}
	if a.MinEvents < 0 {
		v.add("alerts.min_events", "must not be negative")
	}
}

func (v *validator) spool(c *Config) {
	s := c.Spool
	switch s.Type {
	case "local":
		if s.Dir == "" {
			v.add("spool.dir", "required for type local")
		}
	case "kafka":
		v.brokers("spool.brokers", s.Brokers, "type kafka")
		v.topic("spool.topic", s.Topic, "type kafka")
		v.topic("spool.group", s.Group, "type kafka")
		v.positive("spool.timeout", s.Timeout)
		v.positive("spool.session_timeout", s.SessionTimeout)
		v.oneOf("spool.sasl.mechanism", s.SASL.Mechanism, "", "plain", "scram-sha-256", "scram-sha-512")
		if s.SASL.Mechanism != "" && (s.SASL.User == "" || s.SASL.Password == "") {
			v.add("spool.sasl", "user and password are required with mechanism %s", s.SASL.Mechanism)
		}
		if s.SASL.Mechanism == "" && (s.SASL.User != "" || s.SASL.Password != "") {
			v.add("spool.sasl.mechanism", "required when user or password is set")
		}
		if len(s.Topic)+len(".dlq.")+longestDestName(c) > 249 {
			v.add("spool.topic", "too long: the dead-letter topics <topic>.dlq.<destination> must fit Kafka's 249 characters")
		}
	default:
		v.add("spool.type", "%q is not one of local, kafka", s.Type)
	}
	if s.MaxBytes <= 0 {
		v.add("spool.max_bytes", "must be positive")
	}
	n := 0
	for _, set := range []bool{s.Fsync.Always, s.Fsync.Never, s.Fsync.Interval != 0} {
		if set {
			n++
		}
	}
	if n != 1 || s.Fsync.Interval < 0 {
		v.add("spool.fsync", "must be always, never or a positive interval (e.g. 50ms)")
	}
}

func (v *validator) destinations(c *Config) {
	seen := map[string]int{}
	for i, d := range c.Destinations {
		p := destPath(i, d.Name)
		switch {
		case d.Name == "":
			v.add(p+".name", "required")
		case !validDestName(d.Name):
			v.add(p+".name", "%q must be lower-case letters and digits, with single '-' or '_' between them "+
				"(it appears in metrics, the DLQ API and env names)", d.Name)
		}
		if j, dup := seen[envNormName(d.Name)]; dup && d.Name != "" {
			if c.Destinations[j].Name == d.Name {
				v.add(p+".name", "%q is also the name of destinations[%d]", d.Name, j)
			} else {
				v.add(p+".name", "%q differs from destinations[%d] (%s) only in '-' vs '_', which env overrides cannot tell apart",
					d.Name, j, c.Destinations[j].Name)
			}
		} else {
			seen[envNormName(d.Name)] = i
		}
		v.purposes(p+".consent", d.Consent)
		for j, n := range d.Events.Include {
			if n == "" {
				v.add(idx(p+".events.include", j), "must not be empty")
			}
		}
		for j, n := range d.Events.Exclude {
			if n == "" {
				v.add(idx(p+".events.exclude", j), "must not be empty")
			}
		}
		for _, n := range []struct {
			key string
			neg bool
		}{
			{"batch.max_events", d.Batch.MaxEvents < 0},
			{"batch.max_bytes", d.Batch.MaxBytes < 0},
			{"batch.max_wait", d.Batch.MaxWait < 0},
			{"retry.max_attempts", d.Retry.MaxAttempts < 0},
			{"retry.max_age", d.Retry.MaxAge < 0},
			{"retry.max_backoff", d.Retry.MaxBackoff < 0},
			{"backlog.max_bytes", d.Backlog.MaxBytes < 0},
			{"backlog.max_age", d.Backlog.MaxAge < 0},
		} {
			if n.neg {
				v.add(p+"."+n.key, "must not be negative (0 means the default)")
			}
		}
		if d.Timeout < 0 {
			v.add(p+".timeout", "must not be negative (0 means the default, 10s)")
		}
		v.destinationType(p, d)
	}
}

// destinationKeys lists the adapter keys (DestinationX) each type takes.
func destinationKeys(typ string) []string {
	switch typ {
	case TypeNDJSON:
		return []string{"path", "max_size", "max_age"}
	case TypeWebhook:
		return []string{"url", "secret", "headers", "gzip"}
	case TypeGA4:
		return []string{"mode", "measurement_id", "api_secret", "region", "validate", "endpoint"}
	case TypeMetaCAPI:
		return []string{"pixel_id", "access_token", "api_version", "test_event_code", "limited_data_use", "endpoint"}
	case TypeKafka:
		return []string{"brokers", "topic", "compression", "tls", "sasl"}
	}
	return nil
}

func (v *validator) destinationType(p string, d Destination) {
	types := []string{TypeNDJSON, TypeWebhook, TypeGA4, TypeMetaCAPI, TypeKafka}
	if d.Type == "" {
		v.add(p+".type", "required (one of %s)", strings.Join(types, ", "))
		return
	}
	if !slices.Contains(types, d.Type) {
		v.add(p+".type", "unknown type %q (want one of %s)", d.Type, strings.Join(types, ", "))
		return
	}
	// Keys of other types are mistakes (a pixel_id on a webhook does
	// nothing); say which type they belong to.
	allowed := destinationKeys(d.Type)
	x := reflect.ValueOf(d.Options)
	for i := range x.NumField() {
		key, _, _ := yamlKey(x.Type().Field(i))
		if x.Field(i).IsZero() || slices.Contains(allowed, key) {
			continue
		}
		var owners []string
		for _, t := range types {
			if slices.Contains(destinationKeys(t), key) {
				owners = append(owners, t)
			}
		}
		v.add(p+"."+key, "not an option of type %s (it belongs to %s)", d.Type, strings.Join(owners, ", "))
	}
	o := d.Options
	switch d.Type {
	case TypeNDJSON:
		if o.Path == "" {
			v.add(p+".path", "required for type ndjson")
		}
		if o.MaxSize < 0 {
			v.add(p+".max_size", "must not be negative")
		}
		if o.MaxAge < 0 {
			v.add(p+".max_age", "must not be negative")
		}
	case TypeWebhook:
		v.httpURL(p+".url", o.URL, true)
		for _, h := range sortedKeys(o.Headers) {
			if !isToken(h) {
				v.add(p+".headers", "%q is not a valid header name", h)
			}
		}
	case TypeGA4:
		v.oneOf(p+".mode", o.Mode, "relay", "mp")
		if o.MeasurementID == "" {
			v.add(p+".measurement_id", "required for type ga4 (G-XXXXXXX)")
		} else if !validMeasurementID(o.MeasurementID) {
			v.add(p+".measurement_id", "%q is not a GA4 measurement id (G-XXXXXXX)", o.MeasurementID)
		}
		if o.Mode == "mp" && o.APISecret == "" {
			v.add(p+".api_secret", "required for type ga4 in mode mp (GA4 Admin → Data streams → Measurement Protocol API secrets)")
		}
		if o.Region != "" && o.Region != "eu" {
			v.add(p+".region", "%q is not one of \"\" (global), eu", o.Region)
		}
		v.httpURL(p+".endpoint", o.Endpoint, false)
	case TypeMetaCAPI:
		if o.PixelID == "" {
			v.add(p+".pixel_id", "required for type metacapi")
		} else if !isDigits(o.PixelID) {
			v.add(p+".pixel_id", "%q is not a pixel id (digits only)", o.PixelID)
		}
		if o.AccessToken == "" {
			v.add(p+".access_token", "required for type metacapi")
		}
		if !validAPIVersion(o.APIVersion) {
			v.add(p+".api_version", "%q is not a Graph API version (e.g. v21.0)", o.APIVersion)
		}
		v.httpURL(p+".endpoint", o.Endpoint, false)
	case TypeKafka:
		v.brokers(p+".brokers", o.Brokers, "type kafka")
		v.topic(p+".topic", o.Topic, "type kafka")
		v.oneOf(p+".compression", o.Compression, "", "none", "gzip", "snappy", "lz4", "zstd")
		v.oneOf(p+".sasl.mechanism", o.SASL.Mechanism, "", "plain", "scram-sha-256", "scram-sha-512")
		if o.SASL.Mechanism != "" && (o.SASL.User == "" || o.SASL.Password == "") {
			v.add(p+".sasl", "user and password are required with mechanism %s", o.SASL.Mechanism)
		}
		if o.SASL.Mechanism == "" && (o.SASL.User != "" || o.SASL.Password != "") {
			v.add(p+".sasl.mechanism", "required when user or password is set")
		}
	}
}

func (v *validator) scripts(c *Config) {
	for i, s := range c.Scripts {
		p := idx("scripts", i)
		v.httpURL(p+".upstream", s.Upstream, true)
		v.nonNegative(p+".ttl", s.TTL)
		for j, q := range s.Query {
			if q == "" {
				v.add(idx(p+".query", j), "must not be empty")
			}
		}
	}
}

// routes checks every tracking and script path: a valid path, and no two
// features claiming the same one (which would silently win is unclear).
func (v *validator) routes(c *Config) {
	type route struct{ key, path string }
	var rs []route
	for i, p := range c.Ingest.GA4.Paths {
		rs = append(rs, route{idx("ingest.ga4.paths", i), p})
	}
	rs = append(rs, route{"ingest.segment.prefix", c.Ingest.Segment.Prefix}, route{"ingest.collect.path", c.Ingest.Collect.Path})
	for i, f := range c.Ingest.Forms {
		rs = append(rs, route{idx("ingest.forms", i) + ".path", f.Path})
	}
	for i, s := range c.Scripts {
		rs = append(rs, route{idx("scripts", i) + ".path", s.Path})
	}
	prefix := c.Ingest.Segment.Prefix
	seen := map[string]string{}
	for _, r := range rs {
		switch {
		case r.path == "":
			v.add(r.key, "required (a path starting with '/')")
			continue
		case !validRoutePath(r.path):
			v.add(r.key, "%q is not a path (starts with '/', no query, fragment or spaces)", r.path)
			continue
		case r.key == "ingest.segment.prefix" && len(r.path) > 1 && strings.HasSuffix(r.path, "/"):
			v.add(r.key, "must not end with '/' (routes are prefix + /track, …)")
		}
		if other, dup := seen[r.path]; dup {
			v.add(r.key, "%s is also %s", r.path, other)
			continue
		}
		seen[r.path] = r.key
		if r.key != "ingest.segment.prefix" && prefix != "" && strings.HasPrefix(r.path, strings.TrimSuffix(prefix, "/")+"/") {
			v.add(r.key, "%s is under ingest.segment.prefix %s, whose routes would take it", r.path, prefix)
		}
	}
}

func (v *validator) hostPort(path, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.add(path, "%q is not host:port (e.g. :8080, 127.0.0.1:9090)", s)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add(path, "%q has no valid port", s)
	}
	if host != "" && !validHost(host) {
		v.add(path, "%q has an invalid host", s)
	}
}

// httpURL checks an absolute http(s) URL with a host; an empty optional
// URL passes. Messages omit the URL, which may carry credentials.
func (v *validator) httpURL(path, s string, required bool) {
	if s == "" {
		if required {
			v.add(path, "required (an http:// or https:// URL)")
		}
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(path, "must be an absolute http:// or https:// URL with a host")
	}
}

func (v *validator) redis(path, s string) {
	if s == "" {
		return
	}
	if u, err := url.Parse(s); err == nil && (u.Scheme == "redis" || u.Scheme == "rediss") && u.Host != "" {
		return
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return
	}
	v.add(path, "must be host:port or a redis:// or rediss:// URL")
}

func (v *validator) brokers(path string, bs []string, why string) {
	if len(bs) == 0 {
		v.add(path, "required for %s", why)
	}
	for i, b := range bs {
		if _, _, err := net.SplitHostPort(b); err != nil {
			v.add(idx(path, i), "%q is not host:port", b)
		}
	}
}

func (v *validator) topic(path, t, why string) {
	if t == "" {
		v.add(path, "required for %s", why)
		return
	}
	if len(t) > 249 || t == "." || t == ".." || strings.IndexFunc(t, func(r rune) bool {
		return !(r == '.' || r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) >= 0 {
		v.add(path, "%q is not a Kafka topic name ([a-zA-Z0-9._-], at most 249)", t)
	}
}

func (v *validator) purposes(path string, ps []string) {
	for i, p := range ps {
		v.oneOf(idx(path, i), p, "analytics", "ads", "ad_user_data", "ad_personalization")
	}
}

func (v *validator) oneOf(path, s string, allowed ...string) {
	if slices.Contains(allowed, s) {
		return
	}
	var shown []string
	for _, a := range allowed {
		if a == "" {
			a = `""`
		}
		shown = append(shown, a)
	}
	v.add(path, "%q is not one of %s", s, strings.Join(shown, ", "))
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.add(path, "must be a positive duration (e.g. 10s, 5m, 400d)")
	}
}

func (v *validator) nonNegative(path string, d Duration) {
	if d < 0 {
		v.add(path, "must not be negative")
	}
}

// maxTraceEvents bounds the live trace's memory (an entry is about 2 KiB).
const maxTraceEvents = 10000

func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func destPath(i int, name string) string {
	if name == "" {
		return idx("destinations", i)
	}
	return fmt.Sprintf("destinations[%d] (%s)", i, name)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// validHost accepts a DNS name (letters, digits, '-', dot-separated
// labels of at most 63) or an IP address.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
				return false
			}
		}
	}
	return true
}

// validCORSOrigin accepts scheme://host[:port], where host may start with
// "*." for subdomains. "*" alone is refused: browsers reject it with
// credentials, which gtag sends.
func validCORSOrigin(o string) bool {
	u, err := url.Parse(strings.Replace(o, "://*.", "://wildcard.", 1))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return false
	}
	return validHost(u.Hostname())
}

// validDestName: [a-z0-9]+ joined by single '-' or '_', so that env names
// (split on "__", '-' read as '_') always find it.
func validDestName(s string) bool {
	prevSep := true
	for i := range len(s) {
		ch := s[i]
		switch {
		case (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'):
			prevSep = false
		case ch == '-' || ch == '_':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return s != "" && !prevSep
}

func validRoutePath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.ContainsAny(p, "?# \t\r\n") && !strings.Contains(p, "//")
}

func validMeasurementID(s string) bool {
	rest, ok := strings.CutPrefix(s, "G-")
	return ok && rest != "" && strings.IndexFunc(rest, func(r rune) bool {
		return !((r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0
}

func validAPIVersion(s string) bool {
	rest, ok := strings.CutPrefix(s, "v")
	major, minor, dot := strings.Cut(rest, ".")
	return ok && dot && isDigits(major) && isDigits(minor)
}

func isDigits(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) < 0
}

// isToken reports whether s is an RFC 7230 token (cookie and header names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return true
}

// longestDestName is the length of the longest destination name.
func longestDestName(c *Config) int {
	n := 0
	for _, d := range c.Destinations {
		n = max(n, len(d.Name))
	}
	return n
}

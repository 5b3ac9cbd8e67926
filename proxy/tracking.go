package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/enrich"
)

// Answers of the tracking routes.
const (
	segmentOK = `{"success":true}`
	// gif1x1 is the smallest transparent GIF, for GET pixels that accept images.
	gif1x1 = "GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

// tracker holds what the tracking routes share: decoders, the pipeline, the
// sink and per-request scratch space.
type tracker struct {
	s        *Server
	sink     Sink
	pipeline *enrich.Pipeline
	events   *enrich.EventPool
	reqs     enrich.RequestPool
	now      func() time.Time

	ga4     *ga4Decoder
	segment *segmentDecoder
	collect *collectDecoder
	forms   map[string]*formRoute

	cors    *corsPolicy
	limiter *rateLimiter
	pages   PageCookier

	// serverKeys and writeKeys are SHA-256 digests, compared in constant
	// time, so a key's length or prefix leaks nothing through timing.
	serverKeys [][32]byte
	writeKeys  [][32]byte

	maxBody int
	scratch sync.Pool // *ingestScratch
	counts  *eventCounters
}

// ingestScratch is one request's reusable working memory.
type ingestScratch struct {
	d        decoded
	res      enrich.Result
	body     []byte
	plain    []byte
	keep     []*enrich.Event
	quar     []*enrich.Event
	reasons  []string
	errsJSON []byte
}

// registerTracking installs the tracking routes when a sink and a pipeline
// are wired; without them sidetrack is a pure pass-through proxy.
func (s *Server) registerTracking() {
	// Script routes need no sink: they serve tag scripts, not events.
	for _, p := range s.scripts.Paths() {
		s.addTracking(p, RouteScript, s.scripts.handler(p))
	}
	if s.tagUp != nil {
		s.addTrackingPrefix(sgtmPrefix, RoutePass, s.passToTaggingServer)
	}
	if s.opts.Sink == nil || s.opts.Pipeline == nil {
		return
	}
	cfg := s.cfg
	t := &tracker{
		s:        s,
		sink:     s.opts.Sink,
		pipeline: s.opts.Pipeline,
		events:   s.opts.Events,
		now:      s.opts.Now,
		ga4:      newGA4Decoder(ga4MaxLines),
		segment:  newSegmentDecoder(int(cfg.Ingest.Segment.MaxEvent), int(cfg.Ingest.Segment.MaxRequest)),
		collect:  newCollectDecoder(collectMaxBatch),
		cors:     newCORSPolicy(cfg.Ingest.CORS.Origins, cfg.Hosts),
		maxBody:  int(cfg.Ingest.MaxBody),
		counts:   newEventCounters(s.metrics),
		pages:    s.opts.Pages,
	}
	s.tracker = t
	if t.events == nil {
		t.events = &enrich.EventPool{}
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.maxBody <= 0 {
		t.maxBody = 512 << 10
	}
	t.limiter = newRateLimiter(cfg.Ingest.RateLimit.PerClient.PerSecond, cfg.Ingest.RateLimit.Burst, t.now)
	for _, k := range cfg.Ingest.ServerKeys {
		t.serverKeys = append(t.serverKeys, sha256.Sum256([]byte(k.Reveal())))
	}
	for _, k := range cfg.Ingest.Segment.WriteKeys {
		t.writeKeys = append(t.writeKeys, sha256.Sum256([]byte(k.Reveal())))
	}
	for _, p := range cfg.Ingest.GA4.Paths {
		s.addTracking(p, RouteGA4, t.handleGA4)
	}
	if cfg.Ingest.Collect.Path != "" {
		s.addTracking(cfg.Ingest.Collect.Path, RouteCollect, t.handleCollect)
	}
	if p := cfg.Ingest.Segment.Prefix; p != "" {
		if p[len(p)-1] != '/' {
			p += "/"
		}
		s.addTrackingPrefix(p, RouteSegment, t.handleSegment)
	}
	t.forms = make(map[string]*formRoute, len(cfg.Ingest.Forms))
	for i := range cfg.Ingest.Forms {
		f := &cfg.Ingest.Forms[i]
		fr := &formRoute{t: t, form: f}
		t.forms[f.Path] = fr
		s.addTracking(f.Path, RouteForm, fr.handle)
	}
}

// Decoder limits that are not configuration.
const (
	ga4MaxLines     = 100
	collectMaxBatch = 500
)

func (t *tracker) getScratch() *ingestScratch {
	sc, _ := t.scratch.Get().(*ingestScratch)
	if sc == nil {
		sc = &ingestScratch{}
	}
	sc.d.pool = t.events
	return sc
}

func (t *tracker) putScratch(sc *ingestScratch) {
	sc.d.release()
	clear(sc.keep)
	clear(sc.quar)
	clear(sc.reasons)
	sc.keep, sc.quar, sc.reasons = sc.keep[:0], sc.quar[:0], sc.reasons[:0]
	if cap(sc.body) > 1<<20 {
		sc.body = nil
	}
	if cap(sc.plain) > 1<<20 {
		sc.plain = nil
	}
	t.scratch.Put(sc)
}

// finish records the request's metrics.
func (t *tracker) finish(ctx *fasthttp.RequestCtx, route string) {
	t.s.metrics.ObserveRequest(route, ctx.Response.StatusCode(), time.Since(ctx.Time()))
}

// reject answers a request-level failure and counts it.
func (t *tracker) reject(ctx *fasthttp.RequestCtx, route string, code int, reason, msg string) {
	t.s.metrics.Reject(route, reason)
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(code)
	ctx.Response.SetBodyString(`{"error":` + strconv.Quote(msg) + `}`)
}

// preamble runs the checks common to every beacon route: CORS (preflight
// answered here), the per-client rate limit, and server-key auth. It
// returns false when the request was answered.
func (t *tracker) preamble(ctx *fasthttp.RequestCtx, route, methods string, server bool) bool {
	if ctx.IsOptions() {
		t.cors.preflight(ctx, methods)
		return false
	}
	t.cors.setCORS(ctx)
	if server {
		return true
	}
	if ok, wait := t.limiter.allow(t.s.clientIP(ctx)); !ok {
		setRetryAfter(ctx, wait)
		t.reject(ctx, route, fasthttp.StatusTooManyRequests, "rate_limited", "too many requests")
		return false
	}
	return true
}

func setRetryAfter(ctx *fasthttp.RequestCtx, wait time.Duration) {
	secs := int((wait + time.Second - 1) / time.Second)
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(max(secs, 1)))
}

// credential returns the key a request presents: the HTTP Basic user, or
// a Bearer token.
func credential(ctx *fasthttp.RequestCtx) []byte {
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	if len(auth) == 0 {
		return nil
	}
	if v, ok := bytes.CutPrefix(auth, []byte("Bearer ")); ok {
		return bytes.TrimSpace(v)
	}
	if v, ok := bytes.CutPrefix(auth, []byte("Basic ")); ok {
		var buf [512]byte
		v = bytes.TrimSpace(v)
		if base64.StdEncoding.DecodedLen(len(v)) > len(buf) {
			return nil
		}
		n, err := base64.StdEncoding.Decode(buf[:], v)
		if err != nil {
			return nil
		}
		user, _, _ := bytes.Cut(buf[:n], []byte(":"))
		return append([]byte(nil), user...) // buf is on the stack

	}
	return nil
}

// keyIn reports whether key hashes to one of keys, in constant time per key.
func keyIn(key []byte, keys [][32]byte) bool {
	if len(key) == 0 {
		return false
	}
	sum := sha256.Sum256(key)
	found := 0
	for i := range keys {
		found |= subtle.ConstantTimeCompare(sum[:], keys[i][:])
	}
	return found == 1
}

// isServer reports whether the request is authenticated with a server key.
func (t *tracker) isServer(key []byte) bool {
	return len(t.serverKeys) > 0 && keyIn(key, t.serverKeys)
}

// readPayload reads the body with the route's cap and decompresses gzip
// (by Content-Encoding or by magic bytes: some SDKs mislabel it).
func (t *tracker) readPayload(ctx *fasthttp.RequestCtx, sc *ingestScratch, limit int) ([]byte, error) {
	body, err := readBody(ctx, limit, sc.body)
	sc.body = body
	if err != nil {
		return nil, err
	}
	enc := ctx.Request.Header.ContentEncoding()
	if equalFold(enc, "gzip") || isGzip(body) {
		plain, err := t.s.gunzipLimited(sc.plain, body, limit)
		sc.plain = plain
		if err != nil {
			return nil, err
		}
		return plain, nil
	} else if len(enc) > 0 && !equalFold(enc, "identity") {
		return nil, errUnsupportedMedia("unsupported Content-Encoding")
	}
	return body, nil
}

// bodyError answers a body read or decode failure and counts it.
func (t *tracker) bodyError(ctx *fasthttp.RequestCtx, route string, err error) {
	var de *decodeError
	switch {
	case errors.Is(err, errBodyTooLarge):
		t.reject(ctx, route, fasthttp.StatusRequestEntityTooLarge, "too_large", "request body too large")
	case errors.Is(err, errBadGzip):
		t.reject(ctx, route, fasthttp.StatusBadRequest, "bad_gzip", "malformed gzip body")
	case errors.As(err, &de):
		t.reject(ctx, route, de.status, de.reason, de.msg)
	default:
		t.reject(ctx, route, fasthttp.StatusBadRequest, "read_error", "could not read request body")
	}
}

// fillRequest copies what the pipeline may use from ctx into req.
func (t *tracker) fillRequest(ctx *fasthttp.RequestCtx, req *enrich.Request, server bool) {
	h := &ctx.Request.Header
	req.ReceivedAt = t.now()
	req.ClientIP = t.s.clientIP(ctx)
	req.UserAgent = req.Intern(h.UserAgent())
	req.Host = req.Intern(normalizeHost(ctx.Host()))
	req.Secure = t.s.isSecure(ctx)
	req.GPC = bytes.Equal(h.Peek("Sec-GPC"), []byte("1"))
	req.Server = server
	if server {
		return // server requests never read cookies
	}
	for k, v := range h.Cookies() {
		if len(req.Cookies) >= 64 {
			break
		}
		if t.wantCookie(k) {
			req.Cookies = append(req.Cookies, enrich.Cookie{Name: req.Intern(k), Value: req.Intern(v)})
		}
	}
}

// wantCookie keeps only the cookies enrichment reads, so a cookie bomb
// costs nothing and no unrelated cookie is ever copied.
func (t *tracker) wantCookie(name []byte) bool {
	c := &t.s.cfg.Cookies
	switch string(name) {
	case c.Device.Name, c.Session.Name, c.Touches.Name, "_fbp", "_fbc", "_ga":
		return true
	}
	if t.s.cfg.Consent.CMPCookie.Name != "" && string(name) == t.s.cfg.Consent.CMPCookie.Name {
		return true
	}
	return bytes.HasPrefix(name, []byte("_ga_"))
}

// procMode says how process answers.
type procMode uint8

const (
	// modeLenient: decode problems and invalid events are quarantined
	// (browser beacons, Segment).
	modeLenient procMode = iota
	// modeStrict: any problem answers 422 and nothing is stored (/collect).
	modeStrict
	// modeDetached: the answer is someone else's (the origin's, for form
	// posts); failures are counted, never written to the response.
	modeDetached
)

// process runs the pipeline over the decoded events and hands them to the
// sink. It returns the status to answer (0 = the route's success answer).
// Events always leave sc.d: appended, quarantined or released.
func (t *tracker) process(ctx *fasthttp.RequestCtx, sc *ingestScratch, route string, server bool, mode procMode) int {
	strict := mode == modeStrict
	d := &sc.d
	if server {
		for _, e := range d.events {
			e.Source = enrich.SourceBackend
		}
	}
	if key := ctx.Request.Header.Peek("X-Idempotency-Key"); len(key) > 0 && len(d.events) == 1 && len(key) <= 256 {
		d.events[0].IdempotencyKey = d.events[0].Intern(key)
	}
	req := t.reqs.Get()
	defer t.reqs.Put(req)
	t.fillRequest(ctx, req, server)

	if strict && len(d.problems) > 0 {
		t.unprocessable(ctx, route, sc, d.problems)
		return fasthttp.StatusUnprocessableEntity
	}
	t.pipeline.Process(req, d.events, &sc.res)
	if strict && sc.res.Invalid() {
		// Nothing of this request is stored: undo the valid events'
		// reservations so the corrected resend is not taken for a duplicate.
		t.pipeline.Release(d.events)
		var errs []enrich.FieldError
		for _, r := range sc.res.Events {
			errs = append(errs, r.Errors...)
		}
		t.unprocessable(ctx, route, sc, errs)
		return fasthttp.StatusUnprocessableEntity
	}
	if mode != modeDetached {
		t.setCookies(ctx, req, sc.res.Cookies)
	}

	// On lenient routes a problem with what makes an event an event (its
	// name or type) quarantines it; a bad parameter is dropped and the event
	// flagged, since the client will not resend (gtag never retries).
	bad := func(i int) string {
		reason := ""
		for _, p := range d.problems {
			if p.Index != i {
				continue
			}
			if fatalField(p.Field) {
				return "decode:" + p.Field
			}
			reason = "flag"
		}
		return reason
	}
	for i, e := range d.events {
		r := &sc.res.Events[i]
		reason := ""
		if len(d.problems) > 0 {
			if reason = bad(i); reason == "flag" {
				e.Quality.Add(enrich.FlagInvalidParam)
				reason = ""
			}
		}
		switch {
		case reason != "":
			if r.Outcome == enrich.Accepted {
				// The pipeline reserved its dedup key; it is not stored as
				// an event, so the reservation must not block a resend.
				t.pipeline.Release(d.events[i : i+1])
			}
			sc.quar, sc.reasons = append(sc.quar, e), append(sc.reasons, reason)
			t.observe(e, enrich.Quarantined, reason)
		case r.Outcome == enrich.Accepted:
			sc.keep = append(sc.keep, e)
			t.observe(e, enrich.Accepted, "")
		case r.Outcome == enrich.Quarantined || r.Outcome == enrich.Invalid:
			reason = r.Reason
			if reason == "" {
				reason = "invalid"
			}
			sc.quar, sc.reasons = append(sc.quar, e), append(sc.reasons, reason)
			t.observe(e, enrich.Quarantined, reason)
		default:
			t.observe(e, r.Outcome, r.Reason)
			t.events.Put(e)
		}
	}
	// Ownership of every event has moved to keep, quar or the pool.
	d.reset()

	code := 0
	c := context.Background()
	if len(sc.keep) > 0 {
		if err := t.sink.Append(c, sc.keep); err != nil {
			// Undo what the pipeline reserved (dedup keys) so the client's
			// retry is taken as new, not as a duplicate.
			t.pipeline.Release(sc.keep)
			t.releaseAll(sc.keep)
			code = t.sinkError(ctx, route, err, mode)
		}
	}
	if len(sc.quar) > 0 {
		if err := t.sink.Quarantine(c, sc.quar, sc.reasons); err != nil {
			t.releaseAll(sc.quar)
			if code == 0 {
				code = t.sinkError(ctx, route, err, mode)
			}
		}
	}
	return code
}

// observe counts one event's outcome and shows it to the observers.
func (t *tracker) observe(e *enrich.Event, o enrich.Outcome, reason string) {
	t.counts.add(e, o)
	for _, ob := range t.s.opts.Observers {
		ob.ObserveEvent(e, o, reason)
	}
}

// releaseAll returns events the sink did not take to the pool.
func (t *tracker) releaseAll(events []*enrich.Event) {
	for _, e := range events {
		t.events.Put(e)
	}
}

// sinkError maps a sink failure to the client's answer.
func (t *tracker) sinkError(ctx *fasthttp.RequestCtx, route string, err error, mode procMode) int {
	if mode == modeDetached {
		t.s.metrics.Reject(route, "sink_error")
		if n, ok := t.s.errLog.allow(); ok {
			t.s.log.Error("storing form event failed", zap.Error(err), zap.Uint64("suppressed", n))
		}
		return 0
	}
	var full retryAfterError
	var drain drainingError
	switch {
	case errors.As(err, &full):
		setRetryAfter(ctx, full.RetryAfter())
		t.reject(ctx, route, fasthttp.StatusTooManyRequests, "spool_full", "temporarily unable to accept events, retry later")
		return fasthttp.StatusTooManyRequests
	case errors.As(err, &drain) && drain.Draining():
		setRetryAfter(ctx, time.Second)
		t.reject(ctx, route, fasthttp.StatusServiceUnavailable, "draining", "shutting down, retry on another instance")
		return fasthttp.StatusServiceUnavailable
	default:
		if n, ok := t.s.errLog.allow(); ok {
			t.s.log.Error("sink append failed", zap.String("route", route), zap.Error(err), zap.Uint64("suppressed", n))
		}
		setRetryAfter(ctx, time.Second)
		t.reject(ctx, route, fasthttp.StatusServiceUnavailable, "sink_error", "temporarily unable to store events, retry later")
		return fasthttp.StatusServiceUnavailable
	}
}

// unprocessable answers 422 with every field error; nothing is stored.
func (t *tracker) unprocessable(ctx *fasthttp.RequestCtx, route string, sc *ingestScratch, errs []enrich.FieldError) {
	t.s.metrics.Reject(route, "invalid")
	for _, e := range sc.d.events {
		t.observe(e, enrich.Invalid, "invalid")
	}
	b := append(sc.errsJSON[:0], `{"errors":[`...)
	for i, fe := range errs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(fe.Index), 10)
		b = append(b, `,"field":`...)
		b = strconv.AppendQuote(b, fe.Field)
		b = append(b, `,"message":`...)
		b = strconv.AppendQuote(b, fe.Message)
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	sc.errsJSON = b
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(fasthttp.StatusUnprocessableEntity)
	ctx.Response.SetBody(b)
}

// setCookies writes the pipeline's cookies on the answer. SameSite=Lax:
// the cookies ride on same-site navigations and beacons, never on
// cross-site subrequests.
func (t *tracker) setCookies(ctx *fasthttp.RequestCtx, req *enrich.Request, cookies []enrich.SetCookie) {
	if req.Server {
		return
	}
	for i := range cookies {
		writeCookie(&ctx.Response.Header, &cookies[i])
	}
}

// writeCookie adds one Set-Cookie header.
func writeCookie(h *fasthttp.ResponseHeader, c *enrich.SetCookie) {
	ck := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(ck)
	ck.SetKey(c.Name)
	ck.SetValue(c.Value)
	ck.SetPath("/")
	if c.Domain != "" {
		ck.SetDomain(c.Domain)
	}
	if c.MaxAge < 0 {
		ck.SetMaxAge(-1)
		ck.SetValue("")
	} else if c.MaxAge > 0 {
		ck.SetMaxAge(int(c.MaxAge / time.Second))
	}
	ck.SetHTTPOnly(c.HTTPOnly)
	ck.SetSecure(c.Secure)
	ck.SetSameSite(fasthttp.CookieSameSiteLaxMode)
	h.SetCookie(ck)
}

// handleGA4 serves gtag hits: answered 204 at once after the events are
// stored. gtag never retries, so a failure to store is answered 503 only
// to be counted; the hit is lost either way.
func (t *tracker) handleGA4(ctx *fasthttp.RequestCtx) {
	defer t.finish(ctx, RouteGA4)
	if !ctx.IsGet() && !ctx.IsPost() && !ctx.IsOptions() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, POST, OPTIONS")
		t.reject(ctx, RouteGA4, fasthttp.StatusMethodNotAllowed, "method", "method not allowed")
		return
	}
	if !t.preamble(ctx, RouteGA4, "GET, POST", false) {
		return
	}
	t.ingestGA4(ctx, RouteGA4)
}

func (t *tracker) ingestGA4(ctx *fasthttp.RequestCtx, route string) {
	sc := t.getScratch()
	defer t.putScratch(sc)
	var body []byte
	if ctx.IsPost() {
		var err error
		if body, err = t.readPayload(ctx, sc, t.maxBody); err != nil {
			t.bodyError(ctx, route, err)
			return
		}
	}
	if err := t.ga4.decode(&sc.d, ctx.URI().QueryString(), body, t.now()); err != nil {
		t.bodyError(ctx, route, err)
		return
	}
	if code := t.process(ctx, sc, route, false, modeLenient); code != 0 {
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// handleSegment serves the Segment-compatible API. Every decodable body is
// answered 200 {"success":true}: analytics-go retries every status ≥ 300
// forever and analytics-node drops whole batches on 400, so invalid events
// are quarantined rather than rejected.
func (t *tracker) handleSegment(ctx *fasthttp.RequestCtx) {
	defer t.finish(ctx, RouteSegment)
	prefixLen := len(t.s.cfg.Ingest.Segment.Prefix)
	path := ctx.Path()
	call := bytes.TrimPrefix(path[min(prefixLen, len(path)):], []byte("/"))
	if !ctx.IsPost() && !ctx.IsOptions() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "POST, OPTIONS")
		t.reject(ctx, RouteSegment, fasthttp.StatusMethodNotAllowed, "method", "method not allowed")
		return
	}
	key := credential(ctx)
	server := t.isServer(key)
	if !t.preamble(ctx, RouteSegment, "POST", server) {
		return
	}
	switch string(call) {
	case "m":
		// analytics.js metrics: acknowledged and ignored.
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.Response.Header.SetContentType("application/json")
		ctx.Response.SetBodyString(segmentOK)
		return
	case "track", "page", "identify", "screen", "group", "alias", "batch", "import",
		"t", "p", "i", "s", "g", "a", "b":
	default:
		t.reject(ctx, RouteSegment, fasthttp.StatusNotFound, "unknown_call", "unknown endpoint")
		return
	}
	sc := t.getScratch()
	defer t.putScratch(sc)
	limit := int(t.s.cfg.Ingest.Segment.MaxRequest)
	if limit <= 0 {
		limit = 500 << 10
	}
	body, err := t.readPayload(ctx, sc, limit)
	if err != nil {
		t.bodyError(ctx, RouteSegment, err)
		return
	}
	if err := t.segment.decode(&sc.d, string(call), body, t.now()); err != nil {
		t.bodyError(ctx, RouteSegment, err)
		return
	}
	if !server {
		if len(key) == 0 {
			if wk := ctx.QueryArgs().Peek("writeKey"); len(wk) > 0 {
				key = wk
			} else {
				key = []byte(sc.d.writeKey)
			}
			server = t.isServer(key)
		}
		if !server && len(t.writeKeys) > 0 && !keyIn(key, t.writeKeys) {
			t.reject(ctx, RouteSegment, fasthttp.StatusUnauthorized, "bad_key", "unknown write key")
			return
		}
	}
	if code := t.process(ctx, sc, RouteSegment, server, modeLenient); code != 0 {
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyString(segmentOK)
}

// handleCollect serves sidetrack's own JSON API (the contract route: bad
// events are answered 422 and nothing is stored), its GET pixel, and GA4
// hits that arrive on /collect.
func (t *tracker) handleCollect(ctx *fasthttp.RequestCtx) {
	defer t.finish(ctx, RouteCollect)
	if !ctx.IsGet() && !ctx.IsPost() && !ctx.IsOptions() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, POST, OPTIONS")
		t.reject(ctx, RouteCollect, fasthttp.StatusMethodNotAllowed, "method", "method not allowed")
		return
	}
	key := credential(ctx)
	server := t.isServer(key)
	if len(key) > 0 && !server && len(t.serverKeys) > 0 && !ctx.IsOptions() {
		t.reject(ctx, RouteCollect, fasthttp.StatusUnauthorized, "bad_key", "unknown server key")
		return
	}
	if !t.preamble(ctx, RouteCollect, "GET, POST", server) {
		return
	}
	if isGA4Hit(ctx.URI().QueryString()) {
		t.ingestGA4(ctx, RouteCollect)
		return
	}
	sc := t.getScratch()
	defer t.putScratch(sc)
	now := t.now()
	if ctx.IsGet() {
		if err := t.collect.decodeQuery(&sc.d, ctx.URI().QueryString(), now); err != nil {
			t.bodyError(ctx, RouteCollect, err)
			return
		}
	} else {
		ct := ctx.Request.Header.ContentType()
		if !jsonContentType(ct) {
			t.reject(ctx, RouteCollect, fasthttp.StatusUnsupportedMediaType, "unsupported_media_type",
				"send application/json or text/plain JSON")
			return
		}
		body, err := t.readPayload(ctx, sc, t.maxBody)
		if err != nil {
			t.bodyError(ctx, RouteCollect, err)
			return
		}
		if err := t.collect.decodeJSON(&sc.d, body, now); err != nil {
			t.bodyError(ctx, RouteCollect, err)
			return
		}
	}
	if code := t.process(ctx, sc, RouteCollect, server, modeStrict); code != 0 {
		return
	}
	if ctx.IsGet() && acceptsImage(ctx.Request.Header.Peek(fasthttp.HeaderAccept)) {
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.Response.Header.SetContentType("image/gif")
		ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
		ctx.Response.SetBodyString(gif1x1)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// jsonContentType accepts JSON labels and the text/plain that sendBeacon
// and analytics.js use; an absent type is treated as JSON.
func jsonContentType(ct []byte) bool {
	if len(ct) == 0 {
		return true
	}
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	return equalFold(ct, "application/json") || equalFold(ct, "text/plain") ||
		(hasPrefixFold(ct, "application/") && bytes.HasSuffix(bytes.ToLower(ct), []byte("+json")))
}

// acceptsImage reports whether an Accept header asks for an image (a GET
// pixel loaded by an <img> tag).
func acceptsImage(accept []byte) bool {
	return bytes.Contains(accept, []byte("image/"))
}

// isSecure reports whether the client reached sidetrack over https: a TLS
// connection, or a trusted proxy's X-Forwarded-Proto saying so.
func (s *Server) isSecure(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsTLS() {
		return true
	}
	if !s.trusted.Contains(peerAddr(ctx)) {
		return false
	}
	v := ctx.Request.Header.Peek(fasthttp.HeaderXForwardedProto)
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return equalFold(bytes.TrimSpace(v), "https")
}

// fatalField reports whether a decode problem in field leaves no usable
// event: no name (GA4 en, Segment event/type, /collect name) or no message.
func fatalField(field string) bool {
	switch field {
	case "en", "event", "type", "message", "name":
		return true
	}
	return false
}

// sgtmPrefix holds the server-side GTM paths other than /g/collect that
// gtag and GTM request on the server container's domain (the service-worker
// iframe and cookie-setting endpoints live under /_/). With
// ingest.ga4.tagging_server set they go there; otherwise to the origin.
const sgtmPrefix = "/_/"

// passToTaggingServer passes a request through to the sGTM tagging server.
func (s *Server) passToTaggingServer(ctx *fasthttp.RequestCtx) {
	code := s.passThroughTo(ctx, s.tagUp, nil)
	s.metrics.ObserveRequest(RoutePass, code, time.Since(ctx.Time()))
}

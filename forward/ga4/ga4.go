// Package ga4 is the Google Analytics 4 destination. It sends events two
// ways (docs/destinations/ga4.md):
//
//   - relay: each event is re-encoded as the /g/collect hit gtag.js would
//     have sent (v=2, tid, cid, sid, _p, en, dl, ep.*, pr1…, gcs/gcd, …)
//     with the client's User-Agent and, where privacy kept one, its IP in
//     _uip, as server-side GTM's GA4 tag does. When server_container_url
//     points at sidetrack no hit reaches Google unless sidetrack sends it,
//     and sessions, acquisition and device reports keep working.
//   - mp: the Measurement Protocol (POST /mp/collect, JSON), for server
//     events and for streams that are configured so. GA4's documented
//     limits are enforced here, because the live endpoint answers 2xx even
//     to payloads it then drops; validate: true checks every request at
//     the debug endpoint first and dead-letters what it reports invalid.
//
// In relay mode, events that did not come from gtag hits (Segment,
// /collect, forms, backend) go through the Measurement Protocol when an
// api_secret is configured, and are relayed as hits otherwise.
//
// Errors are classified by forward/status (the retry table); GA4 answers
// 2xx to nearly everything, so a delivered event is "sent, unverified".
// The client is net/http, like the webhook adapter's: bounded timeouts,
// no redirects, answers read up to a bound.
package ga4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// Modes (config key mode).
const (
	ModeRelay = "relay"
	ModeMP    = "mp"
)

// Google's collection endpoints. The relay ones are where gtag.js and
// server-side GTM send /g/collect hits; region1.analytics.google.com is
// one of the domains Google lists for collection inside the EU. The
// Measurement Protocol ones are the documented global and EU endpoints.
const (
	RelayEndpoint   = "https://region1.google-analytics.com"
	RelayEndpointEU = "https://region1.analytics.google.com"
	MPEndpoint      = "https://www.google-analytics.com"
	MPEndpointEU    = "https://region1.google-analytics.com"

	relayPath = "/g/collect"
	mpPath    = "/mp/collect"
	debugPath = "/debug/mp/collect"
)

// Bounds of the HTTP exchange.
const (
	defaultTimeout = 10 * time.Second
	excerptMax     = 4 << 10  // answer bytes kept for a DLQ excerpt
	debugMax       = 1 << 20  // answer bytes read from the debug endpoint
	drainMax       = 64 << 10 // more read so the connection can be reused
	idlePerHost    = 16
	userAgent      = "sidetrack"
)

// Limits is the request bound type every adapter returns.
type Limits = status.Limits

// Option adjusts an Adapter; the defaults are what production wants.
type Option func(*Adapter)

// WithClock replaces time.Now, which judges event age, stamps MP requests
// and resolves Retry-After dates.
func WithClock(now func() time.Time) Option { return func(a *Adapter) { a.now = now } }

// WithIPOpener lets the adapter send the full client IP (relay _uip, MP
// ip_override) of events whose analytics consent is granted and whose IP
// the privacy policy kept (sealed in Context.IP): pass the privacy stage's
// (*enrich.Privacy).OpenIP. Without it only a truncated IP is ever sent.
func WithIPOpener(open func(sealed string) (netip.Addr, error)) Option {
	return func(a *Adapter) { a.openIP = open }
}

// Adapter is the GA4 destination. It is safe for concurrent use.
type Adapter struct {
	name      string
	mid       string // configured measurement id
	mode      string
	secret    config.Secret
	validate  bool
	relayURL  string // …/g/collect
	mpURL     string // …/mp/collect?measurement_id=…&api_secret=… (holds a secret: never logged)
	debugURL  string // …/debug/mp/collect?… (same)
	relayHost string // scheme://host, for errors and logs
	mpHost    string
	timeout   time.Duration
	now       func() time.Time
	openIP    func(sealed string) (netip.Addr, error)
	log       *zap.Logger

	transport *http.Transport
	client    *http.Client
	work      sync.Pool // *work
}

// New checks cfg and builds the client; it does not contact Google.
func New(cfg config.Destination, log *zap.Logger, opts ...Option) (*Adapter, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o := cfg.Options
	fail := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("ga4 destination %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	a := &Adapter{
		name:     cfg.Name,
		mid:      o.MeasurementID,
		mode:     o.Mode,
		secret:   o.APISecret,
		validate: o.Validate,
		timeout:  cfg.Timeout.D(),
		now:      time.Now,
		log:      log.With(zap.String("destination", cfg.Name)),
	}
	if a.mode == "" {
		a.mode = ModeRelay
	}
	switch {
	case a.mode != ModeRelay && a.mode != ModeMP:
		return fail("mode %q is not relay or mp", a.mode)
	case !strings.HasPrefix(a.mid, "G-") || len(a.mid) < 4:
		return fail("measurement_id %q is not a GA4 measurement id (G-XXXXXXX)", a.mid)
	case a.mode == ModeMP && a.secret == "":
		return fail("api_secret is required in mode mp")
	case o.Region != "" && o.Region != "eu":
		return fail("region %q is not \"\" or eu", o.Region)
	}
	relayBase, mpBase := RelayEndpoint, MPEndpoint
	if o.Region == "eu" {
		relayBase, mpBase = RelayEndpointEU, MPEndpointEU
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return fail("endpoint must be an absolute http(s) base URL without a query")
		}
		base := strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
		relayBase, mpBase = base, base
	}
	a.relayURL = relayBase + relayPath
	q := "?measurement_id=" + url.QueryEscape(a.mid) + "&api_secret=" + url.QueryEscape(a.secret.Reveal())
	a.mpURL = mpBase + mpPath + q
	a.debugURL = mpBase + debugPath + q
	a.relayHost, a.mpHost = hostOf(relayBase), hostOf(mpBase)
	if a.timeout <= 0 {
		a.timeout = defaultTimeout
	}
	for _, opt := range opts {
		opt(a)
	}
	a.transport = &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: a.timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           4 * idlePerHost,
		MaxIdleConnsPerHost:    idlePerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    a.timeout,
		ResponseHeaderTimeout:  a.timeout,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	a.client = &http.Client{
		Transport: a.transport,
		// Google never redirects a collection request; a redirect would
		// go where the config did not say (and turn the POST into a GET).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	a.log.Debug("ga4 destination ready", zap.String("mode", a.mode), zap.String("measurement_id", a.mid),
		zap.String("relay", a.relayHost), zap.String("mp", a.mpHost),
		zap.Bool("api_secret", a.secret != ""), zap.Bool("validate", a.validate), zap.Bool("ip_opener", a.openIP != nil))
	return a, nil
}

func hostOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return "the endpoint"
	}
	return u.Scheme + "://" + u.Host
}

// Name is the configured destination name.
func (a *Adapter) Name() string { return a.name }

// Limits is the Measurement Protocol's request bound (25 events, 130 kB);
// relay batches stay within it too. Send splits further when an encoded
// request would still be larger.
func (a *Adapter) Limits() Limits {
	return Limits{MaxEvents: MaxEventsPerRequest, MaxBytes: MaxBodyBytes}
}

// route says how one event travels.
type route uint8

const (
	routeRelay route = iota
	routeMP
)

func (a *Adapter) route(e *enrich.Event) route {
	if a.mode == ModeMP {
		return routeMP
	}
	if e.Source == enrich.SourceGA4 || a.secret == "" {
		return routeRelay
	}
	return routeMP
}

// GroupKey keeps the events of one GA client (and one way of sending)
// together: a relay POST carries one client's hits, an MP request has one
// client_id. The measurement id is always the configured one (Prepare
// refuses others).
func (a *Adapter) GroupKey(e *enrich.Event) string {
	p := "r|"
	if a.route(e) == routeMP {
		p = "m|"
	}
	return p + a.mid + "|" + clientID(e)
}

// Prepare dead-letters (status.Permanent) what GA4 cannot take:
//   - a hit for another GA4 property (its tid is not the configured
//     measurement_id; an event without one goes to the configured one);
//   - an event whose name cannot be made a valid GA4 event name, and, for
//     the Measurement Protocol, one whose name GA4 reserves;
//   - an event older than 72 hours (the Measurement Protocol's
//     timestamp_micros bound; relayed hits carry no time and would be
//     counted when they arrive, so the same bound applies);
//   - an event without any id to derive a client id from.
func (a *Adapter) Prepare(e *enrich.Event) error {
	return a.check(e, a.now())
}

func (a *Adapter) check(e *enrich.Event, now time.Time) error {
	if e.GAMeasurementID != "" && e.GAMeasurementID != a.mid {
		return status.Permanentf("measurement id %q not configured (this destination sends to %s)",
			cut(e.GAMeasurementID, 32), a.mid)
	}
	name, ok := eventName(e)
	if !ok {
		return status.Permanentf("event name %q cannot be made a valid GA4 event name "+
			"(1-40 letters, digits and _, starting with a letter)", cut(e.Name, 64))
	}
	if a.route(e) == routeMP && reservedEvent(name) {
		return status.Permanentf("%q is a name GA4 reserves; the Measurement Protocol refuses it", name)
	}
	if age := now.Sub(eventTime(e)); age > MaxAge {
		return status.Permanentf("event is %s old; GA4 accepts events at most 72h old", age.Round(time.Minute))
	}
	if e.AnonymousID == "" && e.DeviceID == "" && e.UserID == "" && e.EventID == "" {
		return status.Permanent(errors.New("event has no id to derive a GA client id from"))
	}
	return nil
}

func eventTime(e *enrich.Event) time.Time {
	if !e.OccurredAt.IsZero() {
		return e.OccurredAt
	}
	return e.ReceivedAt
}

// Send delivers batch: relay hits as /g/collect POSTs (one line per
// event, events sharing their page and session context in one request),
// Measurement Protocol events as /mp/collect requests of at most 25
// events and 130 kB. When the whole batch went as one request, its
// failure is returned as err (so 413 splits the batch and 401/403 pause
// the destination); otherwise each event gets its own request's outcome.
// After a retryable or pausing failure the remaining requests are not
// tried: they get the same error.
func (a *Adapter) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	w := a.getWork()
	defer a.putWork(w)
	now := a.now()
	per := make([]error, len(batch))
	local := false
	for i, e := range batch {
		if err := a.check(e, now); err != nil {
			per[i] = err
			local = true
			continue
		}
		if a.route(e) == routeRelay {
			w.relay = append(w.relay, i)
		} else {
			w.mp = append(w.mp, i)
		}
	}
	if len(w.relay) > 0 {
		a.sendRelay(ctx, w, batch, per)
	}
	if len(w.mp) > 0 {
		a.sendMP(ctx, w, batch, per, now)
	}
	if ctx.Err() != nil {
		for _, err := range per {
			if errors.Is(err, context.Canceled) {
				return nil, ctx.Err()
			}
		}
	}
	if !local && !w.partial && w.groups == 1 && per[0] != nil {
		return nil, per[0]
	}
	return per, nil
}

// post sends one request and classifies the answer. keep is how much of a
// 2xx answer the caller needs (0: none).
func (a *Adapter) post(ctx context.Context, w *work, target, host, ctype, ua string, body []byte, keep int) ([]byte, error) {
	if w.stop != nil {
		return nil, w.stop
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, w.fail(status.Permanent(fmt.Errorf("POST %s: building the request failed", host)))
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", ua)
	resp, err := a.client.Do(req)
	if err != nil {
		// url.Error quotes the whole URL, which holds the api_secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, w.fail(status.Network(fmt.Errorf("POST %s: %w", host, err)))
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	limit := excerptMax
	if ok {
		limit = keep
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
	_, _ = io.CopyN(io.Discard, resp.Body, drainMax)
	if ok {
		return b, nil
	}
	excerpt := string(b)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		excerpt = "redirect not followed: " + excerpt
	}
	err = status.FromHTTP(resp.StatusCode, resp.Header.Get("Retry-After"), a.now(), excerpt)
	a.log.Debug("ga4 answered with a failure", zap.Int("code", resp.StatusCode),
		zap.String("target", host), zap.String("excerpt", status.Excerpt(excerpt)))
	return nil, w.fail(err)
}

// work holds one Send's reusable buffers and bookkeeping.
type work struct {
	relay, mp []int // batch indexes by route
	buf       []byte
	body      []byte
	spans     []span
	idx       []int
	done      []bool
	scratch   []byte

	groups  int   // requests the batch's events were divided into
	partial bool  // some events were refused before their request
	stop    error // a failure after which no further request is tried
}

// span is a part of work.buf: one event's encoded pieces.
type span struct {
	ctx, ctxEnd   int // relay: query; mp: request-level fields
	line, lineEnd int // relay: body line; mp: event object
	ua            string
	ts            int64 // mp: timestamp_micros
}

func (w *work) fail(err error) error {
	var r interface{ Retryable() bool }
	var p interface{ Paused() bool }
	if errors.Is(err, context.Canceled) || errors.As(err, &r) && r.Retryable() || errors.As(err, &p) && p.Paused() {
		w.stop = err
	}
	return err
}

func (a *Adapter) getWork() *work {
	if v := a.work.Get(); v != nil {
		return v.(*work)
	}
	return &work{}
}

func (a *Adapter) putWork(w *work) {
	clear(w.spans)
	w.relay, w.mp = w.relay[:0], w.mp[:0]
	w.spans, w.idx = w.spans[:0], w.idx[:0]
	w.groups, w.partial, w.stop = 0, false, nil
	if cap(w.buf) > 1<<20 {
		w.buf = nil
	}
	if cap(w.body) > 1<<20 {
		w.body = nil
	}
	a.work.Put(w)
}

// Close drops idle connections; a later Send would dial again.
func (a *Adapter) Close() error {
	a.transport.CloseIdleConnections()
	return nil
}

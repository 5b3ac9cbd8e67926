// Package metacapi is the Meta Conversions API destination: it POSTs
// batches of up to 1000 server events to
// {endpoint}/{api_version}/{pixel_id}/events, mapped per Meta's "server
// event", "customer information" and "custom data" parameters. See
// docs/destinations/metacapi.md for the mapping and the event_id
// convention that lets Meta deduplicate these events against the browser
// pixel.
//
// Meta refuses a whole request when one of its events is invalid (HTTP 400
// with an error object), so Send bisects a refused batch within the same
// call until the refused events are isolated: the good ones are delivered
// and only the bad ones come back as permanent failures with Meta's
// message. Everything Meta is known to refuse (events older than 7 days,
// events without any identifier Meta can match, purchases without value
// or currency) is refused earlier, by Prepare, and checked again in Send
// for events that aged while they waited for a retry.
//
// The access token travels in the JSON body, never in the URL: URLs end up
// in proxy logs and in net/http's errors. It is never logged.
package metacapi

import (
	"bytes"
	"context"
	"encoding/json"
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

// Meta's limits and sidetrack's margins around them.
const (
	// MaxEvents is Meta's limit of events per request.
	MaxEvents = 1000
	// MaxAge is how old an event_time Meta accepts: older events make
	// Meta refuse the whole request.
	MaxAge = 7 * 24 * time.Hour
	// ageMargin is taken off MaxAge so that an event accepted here is not
	// too old by Meta's clock by the time the request arrives.
	ageMargin = time.Minute
	// MaxFuture is how far ahead of the clock an event_time may be: up to
	// it the time is sent as now (a client clock slightly ahead); beyond
	// it the event is refused.
	MaxFuture = 5 * time.Minute
	// DefaultEndpoint is the Graph API's base URL.
	DefaultEndpoint = "https://graph.facebook.com"
	// DefaultAPIVersion is used when the config has none (config fills
	// it in; this is for adapters built by hand).
	DefaultAPIVersion = "v21.0"
	// MaxRequestsPerSend bounds the requests one Send makes while
	// bisecting a refused batch: one bad event in 1000 costs about 20,
	// so 64 isolates a few; events still unresolved after it are
	// dead-lettered with Meta's message.
	MaxRequestsPerSend = 64

	answerMax      = 64 << 10 // answer bytes read
	defaultTimeout = 10 * time.Second
	idlePerHost    = 16
)

// Limits is the request bound type every adapter returns.
type Limits = status.Limits

// Option adjusts an Adapter; the defaults are what production wants.
type Option func(*Adapter)

// WithClock replaces time.Now, which decides the event_time window and
// resolves Retry-After dates.
func WithClock(now func() time.Time) Option { return func(a *Adapter) { a.now = now } }

// WithIPOpener lets the adapter open the client IP that the privacy stage
// sealed into Event.Context.IP (the "keep" policy), to send it as
// client_ip_address. Without it no IP is ever sent. main wires
// (*enrich.Privacy).OpenIP here.
func WithIPOpener(open func(sealed string) (netip.Addr, error)) Option {
	return func(a *Adapter) { a.openIP = open }
}

// Adapter is the Meta Conversions API destination. It is safe for
// concurrent use.
type Adapter struct {
	name     string
	url      string // {endpoint}/{version}/{pixel}/events; holds no secret
	target   string // scheme://host, for logs
	token    config.Secret
	testCode string
	ldu      bool
	timeout  time.Duration
	now      func() time.Time
	openIP   func(string) (netip.Addr, error)
	log      *zap.Logger

	transport *http.Transport
	client    *http.Client
	work      sync.Pool // *work
}

// New checks cfg and builds the client; it does not contact Meta.
func New(cfg config.Destination, log *zap.Logger, opts ...Option) (*Adapter, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o := cfg.Options
	fail := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("metacapi destination %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	if o.PixelID == "" || strings.Trim(o.PixelID, "0123456789") != "" {
		return fail("pixel_id must be the pixel's numeric id")
	}
	if o.AccessToken == "" {
		return fail("access_token is required (Events Manager → the pixel → Settings → Conversions API)")
	}
	version := o.APIVersion
	if version == "" {
		version = DefaultAPIVersion
	}
	if !validVersion(version) {
		return fail("api_version %q is not a Graph API version (e.g. v21.0)", version)
	}
	endpoint := o.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fail("endpoint must be an absolute http(s) URL without a query")
	}
	a := &Adapter{
		name:     cfg.Name,
		url:      strings.TrimRight(endpoint, "/") + "/" + version + "/" + o.PixelID + "/events",
		target:   u.Scheme + "://" + u.Host,
		token:    o.AccessToken,
		testCode: o.TestEventCode,
		ldu:      o.LimitedDataUse,
		timeout:  cfg.Timeout.D(),
		now:      time.Now,
		log:      log.With(zap.String("destination", cfg.Name)),
	}
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
		MaxResponseHeaderBytes: 64 << 10,
	}
	a.client = &http.Client{
		Transport: a.transport,
		// The Graph API never redirects an events POST; a redirect would
		// come from something in between and turn the POST into a GET.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	a.log.Debug("metacapi destination ready", zap.String("target", a.target),
		zap.String("api_version", version), zap.Bool("limited_data_use", a.ldu),
		zap.Bool("test_events", a.testCode != ""), zap.Bool("client_ip", a.openIP != nil))
	return a, nil
}

// validVersion accepts "v" + digits + "." + digits.
func validVersion(v string) bool {
	major, minor, ok := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	return ok && v[0] == 'v' && major != "" && minor != "" &&
		strings.Trim(major, "0123456789") == "" && strings.Trim(minor, "0123456789") == ""
}

// Name is the configured destination name.
func (a *Adapter) Name() string { return a.name }

// Limits caps a request at Meta's 1000 events.
func (a *Adapter) Limits() Limits { return Limits{MaxEvents: MaxEvents} }

// GroupKey puts every event in one group: a request may mix any events of
// the pixel.
func (a *Adapter) GroupKey(*enrich.Event) string { return "" }

// Prepare refuses (permanently) what Meta would refuse or could not use:
// an event_time older than 7 days or more than MaxFuture ahead, no
// customer information parameter Meta can match, a Purchase without value
// or currency.
func (a *Adapter) Prepare(e *enrich.Event) error {
	var v view
	return a.view(e, a.now(), &v)
}

// Send posts batch as one request, bisecting it within this call when Meta
// refuses it for an invalid event. Results are per event: nil (Meta
// accepted it), permanent (refused here or by Meta, with the reason), or
// the request's classified failure (rate limits and 5xx retry; an invalid
// token or a pixel the token cannot reach pauses the destination).
func (a *Adapter) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	w := a.getWork()
	defer a.work.Put(w)
	w.events = w.events[:0]
	w.spans = w.spans[:0]
	per := make([]error, len(batch))
	now := a.now()
	refused := 0
	var v view
	for i, e := range batch {
		if err := a.view(e, now, &v); err != nil {
			per[i] = err
			refused++
			continue
		}
		start := len(w.events)
		w.events = a.appendEvent(w.events, e, &v)
		w.spans = append(w.spans, span{i: i, start: start, end: len(w.events)})
	}
	if len(w.spans) == 0 {
		return per, nil
	}
	budget := MaxRequestsPerSend
	if err := a.deliver(ctx, w, w.spans, per, &budget, false); err != nil && err != errBisected && refused == 0 {
		// The first request failed as a whole for a reason that is not
		// about its events (network, 5xx, rate limit, token).
		return nil, err
	}
	return per, nil
}

// span is one encoded event inside work.events: batch[i] is
// events[start:end].
type span struct{ i, start, end int }

// work holds one Send's reusable buffers.
type work struct {
	events []byte // every event's JSON object, back to back
	spans  []span
	body   []byte
}

func (a *Adapter) getWork() *work {
	if v := a.work.Get(); v != nil {
		return v.(*work)
	}
	return &work{}
}

// errBisected marks a first request that Meta refused for its content: the
// events got their own results, so Send returns them rather than one
// error for the batch.
var errBisected = errors.New("bisected")

// deliver posts spans and fills per for them. knownBad says the caller
// already knows spans hold a refused event (its other half was accepted),
// so a multi-event spans is split without being sent whole. It returns the
// classified error when the request failed as a whole for a reason that is
// not about its events (then per is set for spans too), errBisected when
// Meta refused the events and they were bisected, or nil.
func (a *Adapter) deliver(ctx context.Context, w *work, spans []span, per []error, budget *int, knownBad bool) error {
	var rej *rejection
	if !knownBad || len(spans) == 1 {
		if err := ctx.Err(); err != nil {
			return setAll(per, spans, status.Network(err))
		}
		if *budget <= 0 {
			return setAll(per, spans, status.Permanentf(
				"Meta refused a batch holding this event and the refused events could not be isolated within %d requests", MaxRequestsPerSend))
		}
		*budget--
		err := a.post(ctx, w, spans)
		if err == nil {
			return nil
		}
		if !errors.As(err, &rej) {
			return setAll(per, spans, err)
		}
		if len(spans) == 1 {
			per[spans[0].i] = status.Permanent(rej)
			return errBisected
		}
	}
	h := len(spans) / 2
	leftRefused := a.deliver(ctx, w, spans[:h], per, budget, false) == errBisected
	// When the left half went through, the refused event is on the right.
	a.deliver(ctx, w, spans[h:], per, budget, !leftRefused)
	return errBisected
}

func setAll(per []error, spans []span, err error) error {
	for _, s := range spans {
		per[s.i] = err
	}
	return err
}

// post sends the events of spans as one request and classifies Meta's
// answer: nil, a *rejection (the events are at fault), or a status error.
func (a *Adapter) post(ctx context.Context, w *work, spans []span) error {
	b := append(w.body[:0], `{"data":[`...)
	for k, s := range spans {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, w.events[s.start:s.end]...)
	}
	b = append(b, ']')
	if a.testCode != "" {
		b = append(b, `,"test_event_code":`...)
		b = appendString(b, a.testCode)
	}
	b = append(b, `,"access_token":`...)
	b = appendString(b, a.token.Reveal())
	b = append(b, '}')
	w.body = b

	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(b))
	if err != nil {
		return status.Permanent(fmt.Errorf("POST %s: building the request failed", a.target))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sidetrack")
	resp, err := a.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return status.Network(fmt.Errorf("POST %s: %w", a.target, err))
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, answerMax))
	_, _ = io.CopyN(io.Discard, resp.Body, answerMax)
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Meta has the events once it answered 2xx; the body only
		// confirms the count.
		var ok struct {
			EventsReceived *int `json:"events_received"`
		}
		if rerr == nil && json.Unmarshal(body, &ok) == nil && ok.EventsReceived != nil && *ok.EventsReceived != len(spans) {
			a.log.Warn("Meta acknowledged a different number of events than sent",
				zap.Int("sent", len(spans)), zap.Int("events_received", *ok.EventsReceived))
		}
		return nil
	}
	err = a.classify(resp.StatusCode, resp.Header.Get("Retry-After"), body)
	var rej *rejection
	if errors.As(err, &rej) {
		a.log.Debug("Meta refused the events", zap.Int("events", len(spans)), zap.Int("code", rej.Code),
			zap.Int("subcode", rej.Subcode), zap.String("fbtrace_id", rej.TraceID))
	} else {
		a.log.Debug("Meta answered with a failure", zap.Int("http", resp.StatusCode),
			zap.String("target", a.target), zap.Error(err))
	}
	return err
}

// apiError is the Graph API's error object.
type apiError struct {
	Message     string `json:"message"`
	Type        string `json:"type"`
	Code        int    `json:"code"`
	Subcode     int    `json:"error_subcode"`
	IsTransient bool   `json:"is_transient"`
	UserTitle   string `json:"error_user_title"`
	UserMsg     string `json:"error_user_msg"`
	TraceID     string `json:"fbtrace_id"`
}

// rejection is Meta refusing a request because of what its events hold (an
// invalid parameter): the request is bisected, and a single refused event
// is dead-lettered with it.
type rejection struct {
	apiError
	desc string // describe(), redacted
}

func (r *rejection) Error() string { return "Meta refused the event: " + r.desc }

// describe is the error as one line: Meta's user-facing title and message
// when present (they name the parameter), its code and trace id.
func (e *apiError) describe() string {
	var b strings.Builder
	msg := e.Message
	if e.UserMsg != "" {
		msg = e.UserMsg
		if e.UserTitle != "" {
			msg = e.UserTitle + ": " + msg
		}
	}
	b.WriteString(msg)
	fmt.Fprintf(&b, " (code %d", e.Code)
	if e.Subcode != 0 {
		fmt.Fprintf(&b, ", subcode %d", e.Subcode)
	}
	if e.TraceID != "" {
		b.WriteString(", fbtrace_id ")
		b.WriteString(e.TraceID)
	}
	b.WriteByte(')')
	return status.Excerpt(b.String())
}

// classify turns a non-2xx answer into a delivery error. Meta's error codes
// decide before the HTTP status, because the Graph API answers most
// failures, rate limits included, with 400.
func (a *Adapter) classify(code int, retryAfter string, body []byte) error {
	var p struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(body, &p) != nil || p.Error == nil {
		// Not the Graph API talking (a proxy, a load balancer): the
		// HTTP status is all there is.
		return status.FromHTTP(code, retryAfter, a.now(), a.redact(status.Excerpt(string(body))))
	}
	e := p.Error
	// Redacted after Excerpt, which drops control bytes and so could
	// join a token split by them.
	desc := a.redact(e.describe())
	switch {
	case e.Code == 190 || e.Code == 102 || e.Code == 463 || e.Code == 467:
		// Invalid, expired or revoked access token: pause until fixed.
		return status.FromHTTP(http.StatusUnauthorized, "", a.now(), "Meta refused the access token: "+desc)
	case e.Code == 10 || (e.Code >= 200 && e.Code <= 299) || (e.Code == 100 && e.Subcode == 33):
		// The token may not post to this pixel, or the pixel id does not
		// exist for it: a config problem, not the events'.
		return status.FromHTTP(http.StatusForbidden, "", a.now(), "Meta refused access to the pixel: "+desc)
	case e.Code == 4 || e.Code == 17 || e.Code == 32 || e.Code == 613 || (e.Code >= 80000 && e.Code <= 80099):
		// Application, user, page, custom and business-use-case rate
		// limits (Graph API "rate limiting" error codes).
		err := fmt.Errorf("meta rate limit: %s", desc)
		if d := status.ParseRetryAfter(retryAfter, a.now()); d > 0 {
			return status.RetryIn(err, d)
		}
		return status.Retry(err)
	case code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
		return status.FromHTTP(code, retryAfter, a.now(), desc)
	case e.IsTransient || e.Code == 1 || e.Code == 2:
		// "Unknown error" / "service temporarily unavailable".
		return status.Retry(fmt.Errorf("meta temporary failure: %s", desc))
	case code == http.StatusBadRequest:
		return &rejection{apiError: *e, desc: desc}
	}
	return status.FromHTTP(code, retryAfter, a.now(), desc)
}

// redact removes the access token from text Meta answered with, in case an
// answer ever echoes it.
func (a *Adapter) redact(s string) string {
	if tok := a.token.Reveal(); tok != "" && strings.Contains(s, tok) {
		return strings.ReplaceAll(s, tok, "[redacted]")
	}
	return s
}

// Close drops idle connections; a later Send would dial again.
func (a *Adapter) Close() error {
	a.transport.CloseIdleConnections()
	return nil
}

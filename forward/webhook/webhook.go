// Package webhook is the HTTP destination: it POSTs each batch as
// {"events":[…]} (one enrich.Event.AppendJSON object per event) to the
// configured URL, optionally gzip-compressed and signed with HMAC-SHA256
// (Stripe-style: X-Sidetrack-Signature: t=<unix>,v1=<hex>). The answer
// decides the whole batch (no per-event results) through the retry table
// in forward/status. See docs/destinations/webhook.md.
//
// The client is net/http, not fasthttp: a batch is one request of up to
// megabytes, so per-request client overhead does not matter here, while
// net/http gives what a webhook needs: cancellation through the context
// (shutdown does not wait out a timeout), HTTP/2 to TLS receivers, proxy
// settings from the environment, and redirect control. Its Transport keeps
// idle connections per host, so consecutive batches reuse one connection
// as long as the answer's body is drained (it is, up to a bound).
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// Headers sidetrack sets on every request (besides Content-Type,
// User-Agent and, with gzip, Content-Encoding).
const (
	// HeaderSignature carries t=<unix>,v1=<hex HMAC-SHA256 of
	// "<unix>.<body as sent>"> when a secret is configured.
	HeaderSignature = "X-Sidetrack-Signature"
	// HeaderTimestamp is the unix time the request was signed (sent
	// whether or not a secret is set).
	HeaderTimestamp = "X-Sidetrack-Timestamp"
	// HeaderEventIDs lists the batch's event ids, comma-separated, for
	// receivers that dedup before parsing the body. It stops before
	// MaxEventIDsHeader bytes and leaves out ids that are not header-safe;
	// HeaderEventCount tells whether it is complete.
	HeaderEventIDs = "X-Sidetrack-Event-Ids"
	// HeaderEventCount is the number of events in the body.
	HeaderEventCount = "X-Sidetrack-Event-Count"
	// HeaderIdempotencyKey is the same for the same batch of event ids
	// (it lets net/http retry a request that died on a stale keep-alive
	// connection, and receivers dedup whole batches).
	HeaderIdempotencyKey = "Idempotency-Key"
)

// Defaults and bounds.
const (
	// DefaultMaxBytes bounds one uncompressed body; most receivers and
	// their load balancers accept far more, few accept less.
	DefaultMaxBytes = 5 << 20
	// MaxEventIDsHeader bounds HeaderEventIDs: proxies commonly refuse
	// header lines over 8 KiB.
	MaxEventIDsHeader = 4 << 10
	// excerptMax is how much of an answer is read for the DLQ excerpt.
	excerptMax = 4 << 10
	// drainMax is how much more is read so the connection can be reused;
	// a longer answer costs a new connection instead.
	drainMax = 64 << 10
	// defaultTimeout applies when the config has none (it always should).
	defaultTimeout = 10 * time.Second
	// idlePerHost keeps enough idle connections for the delivery core's
	// concurrent senders.
	idlePerHost = 16
)

// reserved headers are set by the adapter; a configured header of the same
// name would break framing, compression or the signature.
var reserved = []string{
	"Content-Length", "Content-Encoding", "Transfer-Encoding", "Host", "Connection",
	"Te", "Trailer", "Upgrade", "Keep-Alive", "Proxy-Connection",
	HeaderIdempotencyKey,
}

// Option adjusts an Adapter; the defaults are what production wants.
type Option func(*Adapter)

// WithClock replaces time.Now, which stamps signatures and resolves
// Retry-After dates.
func WithClock(now func() time.Time) Option { return func(a *Adapter) { a.now = now } }

// Limits is the request bound type every adapter returns.
type Limits = status.Limits

// Adapter is the webhook destination. It is safe for concurrent use.
type Adapter struct {
	name    string
	url     string // as configured; may hold a token, so never logged
	target  string // scheme://host, for logs and errors
	secret  config.Secret
	headers map[string]config.Secret // canonical names
	gzip    bool
	timeout time.Duration
	now     func() time.Time
	log     *zap.Logger

	transport *http.Transport
	client    *http.Client
	work      sync.Pool // *work
}

// work holds one Send's reusable buffers.
type work struct {
	body []byte
	gz   bytes.Buffer
	gzw  *gzip.Writer
	ids  []byte
}

// New checks cfg (URL, headers) and builds the client; it does not
// contact the receiver.
func New(cfg config.Destination, log *zap.Logger, opts ...Option) (*Adapter, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o := cfg.Options
	fail := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("webhook destination %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The parse error would quote the URL, which may hold a token.
		return fail("url must be an absolute http(s) URL")
	}
	a := &Adapter{
		name:    cfg.Name,
		url:     o.URL,
		target:  u.Scheme + "://" + u.Host,
		secret:  o.Secret,
		headers: make(map[string]config.Secret, len(o.Headers)),
		gzip:    o.Gzip,
		timeout: cfg.Timeout.D(),
		now:     time.Now,
		log:     log.With(zap.String("destination", cfg.Name)),
	}
	if a.timeout <= 0 {
		a.timeout = defaultTimeout
	}
	for name, v := range o.Headers {
		canon := textproto.CanonicalMIMEHeaderKey(name)
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			return fail("header %q: not a valid header name", name)
		case !httpguts.ValidHeaderFieldValue(v.Reveal()):
			return fail("header %q: value holds a control character", name)
		case slices.Contains(reserved, canon) || strings.HasPrefix(canon, "X-Sidetrack-"):
			return fail("header %q is set by sidetrack and cannot be configured", name)
		}
		a.headers[canon] = v
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
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	a.client = &http.Client{
		Transport: a.transport,
		// A redirect goes somewhere the config did not name (and would
		// turn the POST into a GET): the 3xx is the answer, and a
		// permanent failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	a.log.Debug("webhook destination ready", zap.String("target", a.target),
		zap.Bool("gzip", a.gzip), zap.Bool("signed", a.secret != ""), zap.Int("headers", len(a.headers)))
	return a, nil
}

// Name is the configured destination name.
func (a *Adapter) Name() string { return a.name }

// Limits bounds the uncompressed body to DefaultMaxBytes.
func (a *Adapter) Limits() Limits { return Limits{MaxBytes: DefaultMaxBytes} }

// GroupKey puts every event in one group: a webhook takes any mix.
func (a *Adapter) GroupKey(*enrich.Event) string { return "" }

// Prepare accepts every event: the receiver's rules are unknown.
func (a *Adapter) Prepare(*enrich.Event) error { return nil }

// SendsStoredJSON tells the delivery core that the body is each event's
// canonical JSON and that only EventID is read (for the headers), so
// events may come as stored, without being decoded first.
func (a *Adapter) SendsStoredJSON() bool { return true }

// Send POSTs batch as one request. The answer decides the whole batch:
// on 2xx every per-event result is nil; otherwise err is classified by
// status.FromHTTP (Retry-After honoured) or status.Network.
func (a *Adapter) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	w := a.getWork()
	defer a.work.Put(w)
	body := w.encode(batch)
	if a.gzip {
		var err error
		if body, err = w.compress(body); err != nil {
			return nil, status.Retry(fmt.Errorf("gzip: %w", err))
		}
	}

	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return nil, status.Permanent(fmt.Errorf("POST %s: building the request failed", a.target))
	}
	now := a.now()
	a.setHeaders(req.Header, w, batch, body, now)

	resp, err := a.client.Do(req)
	if err != nil {
		// url.Error quotes the whole URL, which may hold a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, status.Network(fmt.Errorf("POST %s: %w", a.target, err))
	}
	excerpt := a.finish(resp)
	if err := status.FromHTTP(resp.StatusCode, resp.Header.Get("Retry-After"), a.now(), excerpt); err != nil {
		a.log.Debug("webhook answered with a failure", zap.Int("code", resp.StatusCode),
			zap.String("target", a.target), zap.String("excerpt", status.Excerpt(excerpt)))
		return nil, err
	}
	return make([]error, len(batch)), nil
}

// finish reads what the DLQ excerpt needs from a failure answer, drains a
// bounded rest so the connection can be reused, and closes the body.
func (a *Adapter) finish(resp *http.Response) string {
	defer resp.Body.Close()
	var excerpt string
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, excerptMax))
		excerpt = string(b)
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			excerpt = "redirect not followed (to " + redirectTarget(resp.Header.Get("Location")) + "): " + excerpt
		}
	}
	_, _ = io.CopyN(io.Discard, resp.Body, drainMax)
	return excerpt
}

// redirectTarget shows where a redirect pointed without its path or query,
// which may carry tokens.
func redirectTarget(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || u.Host == "" {
		return "a relative location"
	}
	return u.Scheme + "://" + u.Host
}

func (a *Adapter) setHeaders(h http.Header, w *work, batch []*enrich.Event, body []byte, now time.Time) {
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "sidetrack")
	for name, v := range a.headers {
		h[name] = []string{v.Reveal()}
	}
	if a.gzip {
		h.Set("Content-Encoding", "gzip")
	}
	h.Set(HeaderEventCount, strconv.Itoa(len(batch)))
	h.Set(HeaderEventIDs, w.eventIDs(batch))
	h.Set(HeaderIdempotencyKey, idempotencyKey(batch))
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	if a.secret != "" {
		h.Set(HeaderSignature, "t="+ts+",v1="+sign(a.secret.Reveal(), ts, body))
	}
}

// sign returns the hex HMAC-SHA256 of "<ts>.<body>" under secret: the v1
// value of HeaderSignature. body is the request body as sent (compressed
// when Content-Encoding is gzip).
func sign(secret, ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// idempotencyKey hashes the batch's event ids: a resent batch gets the
// same key, any other batch a different one.
func idempotencyKey(batch []*enrich.Event) string {
	h := sha256.New()
	var n [8]byte
	for _, e := range batch {
		// Length-prefixed, so no id can be confused with two.
		h.Write(strconv.AppendInt(n[:0], int64(len(e.EventID)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(e.EventID))
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

func (a *Adapter) getWork() *work {
	if v := a.work.Get(); v != nil {
		return v.(*work)
	}
	return &work{}
}

// encode writes {"events":[…]} into w.body.
func (w *work) encode(batch []*enrich.Event) []byte {
	b := append(w.body[:0], `{"events":[`...)
	for i, e := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.AppendJSON(b)
	}
	b = append(b, "]}"...)
	w.body = b
	return b
}

// compress gzips body into w.gz. BestSpeed: JSON shrinks several times
// even at level 1, and the sidecar's CPU belongs to ingest.
func (w *work) compress(body []byte) ([]byte, error) {
	w.gz.Reset()
	if w.gzw == nil {
		gw, err := gzip.NewWriterLevel(&w.gz, gzip.BestSpeed)
		if err != nil {
			return nil, err
		}
		w.gzw = gw
	} else {
		w.gzw.Reset(&w.gz)
	}
	if _, err := w.gzw.Write(body); err != nil {
		return nil, err
	}
	if err := w.gzw.Close(); err != nil {
		return nil, err
	}
	return w.gz.Bytes(), nil
}

// eventIDs builds HeaderEventIDs: ids in batch order while they fit in
// MaxEventIDsHeader, skipping ids that a comma-separated header cannot
// carry unambiguously.
func (w *work) eventIDs(batch []*enrich.Event) string {
	b := w.ids[:0]
	for _, e := range batch {
		id := e.EventID
		if !headerSafe(id) {
			continue
		}
		extra := len(id)
		if len(b) > 0 {
			extra++
		}
		if len(b)+extra > MaxEventIDsHeader {
			break
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = append(b, id...)
	}
	w.ids = b
	return string(b)
}

// headerSafe reports whether id is visible ASCII without commas, quotes
// or backslashes.
func headerSafe(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == ',' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Close drops idle connections; a later Send would dial again.
func (a *Adapter) Close() error {
	a.transport.CloseIdleConnections()
	return nil
}

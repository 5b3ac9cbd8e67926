package proxy

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
	brotli "github.com/molecule-man/go-brrr"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
)

// First-party tag delivery (DESIGN §2, scripts row): a configured path
// answers with a cached copy of a configured upstream script, so ad
// blockers' third-party host lists do not apply and the script shares the
// shop's connection. Nothing of the shopper's request reaches the upstream
// except the query parameters the config lists, and nothing of the
// upstream's answer reaches the shopper except the script's bytes and type.

// Script delivery limits. They are constants rather than config keys: the
// values suit every tag script we know of and none is worth a knob.
const (
	// scriptDefaultTTL applies when a script's ttl is 0. Google serves
	// gtag.js with max-age=900; fresher copies buy nothing.
	scriptDefaultTTL = 15 * time.Minute
	// scriptStaleFor bounds stale-if-error: when the upstream fails, a copy
	// up to ttl+scriptStaleFor old is served. A tag script a day old still
	// works; an older one may no longer match what the vendor's collection
	// endpoints expect, and a 502 makes the outage visible.
	scriptStaleFor = 24 * time.Hour
	// scriptRetryAfterError is how long a failed refresh is not retried:
	// stale copies are served at once meanwhile, instead of every request
	// waiting for a failing upstream's timeout.
	scriptRetryAfterError = 30 * time.Second
	// scriptMaxBody caps an upstream script, before and after gzip
	// decoding (gtag.js is ~150 KiB with several tags configured).
	scriptMaxBody = 2 << 20
	// scriptFetchTimeout bounds one upstream exchange end to end;
	// scriptDialTimeout bounds its TCP connect.
	scriptFetchTimeout = 10 * time.Second
	scriptDialTimeout  = 5 * time.Second
	// scriptMaxConns bounds concurrent fetches per upstream host. Misses for
	// one key share a fetch, so this only limits distinct keys (a flood of
	// made-up ids), which then fail fast instead of piling up.
	scriptMaxConns     = 32
	scriptConnWait     = time.Second
	scriptHeaderBuffer = 16 << 10
	// scriptCacheBytes bounds the cache (identity + gzip + brotli bytes of
	// every entry); scriptCacheCounters sizes ristretto's admission filter
	// (10× the entries expected to fit).
	scriptCacheBytes    = 32 << 20
	scriptCacheCounters = 10_000
	// scriptMaxQuery bounds the canonical (filtered) query, so the cache
	// key and the upstream URI stay small whatever the request carries.
	scriptMaxQuery = 1024
	// Compression levels: brotli 11 costs ~0.4 s per 400 KiB of script for
	// ~8% smaller output than 9; gzip 9 vs 6 is ~4% for 5× the time. Both
	// run once per fetch, not per request.
	scriptGzipLevel   = gzip.BestCompression
	scriptBrotliLevel = 9

	scriptUserAgent   = "sidetrack"
	scriptDefaultType = "application/javascript; charset=utf-8"
)

// Answers of script routes that are not the script.
const (
	scriptBody502    = "Bad Gateway: the tag script could not be fetched.\n"
	scriptBody405    = "Method Not Allowed: tag scripts answer GET and HEAD.\n"
	scriptBodyQuery  = "Bad Request: the query is too long.\n"
	scriptAllow      = "GET, HEAD"
	scriptCCStale    = "public, no-cache"
	scriptCCPrefix   = "public, max-age="
	scriptVaryHeader = "Accept-Encoding"
)

// Values of the result label of sidetrack_script_requests_total, as
// indexes into scriptResults and scriptRoute.results.
const (
	scriptResHit = iota
	scriptResMiss
	scriptResStale
	scriptResNotModified
	scriptResError
	scriptResCount
)

var scriptResults = [scriptResCount]string{"hit", "miss", "stale", "not_modified", "error"}

// Values of the kind label of sidetrack_script_upstream_errors_total.
const (
	scriptErrConnect  = "connect"
	scriptErrTimeout  = "timeout"
	scriptErrReset    = "reset"
	scriptErrBusy     = "busy" // all scriptMaxConns connections in use
	scriptErrStatus   = "status"
	scriptErrRedirect = "redirect"
	scriptErrTooLarge = "too_large"
	scriptErrEncoding = "encoding"
	scriptErrOther    = "other"
)

var scriptErrKinds = [...]string{scriptErrConnect, scriptErrTimeout, scriptErrReset, scriptErrBusy,
	scriptErrStatus, scriptErrRedirect, scriptErrTooLarge, scriptErrEncoding, scriptErrOther}

// Content codings, indexes into scriptEntry's variants.
const (
	scriptEncIdentity = iota
	scriptEncGzip
	scriptEncBrotli
	scriptEncCount
)

// scriptLimits are the tunables above, a struct so tests can shrink them.
type scriptLimits struct {
	maxBody      int
	fetchTimeout time.Duration
	dialTimeout  time.Duration
	retryAfter   time.Duration
	staleFor     time.Duration
}

func defaultScriptLimits() scriptLimits {
	return scriptLimits{
		maxBody:      scriptMaxBody,
		fetchTimeout: scriptFetchTimeout,
		dialTimeout:  scriptDialTimeout,
		retryAfter:   scriptRetryAfterError,
		staleFor:     scriptStaleFor,
	}
}

// scriptRoutes serves every configured script path from one bounded cache.
// Build it with newScriptRoutes, register handler(p) for each of Paths(),
// and Close it after the server stopped.
type scriptRoutes struct {
	log    *zap.Logger
	m      *Metrics
	now    func() time.Time
	lim    scriptLimits
	cache  *ristretto.Cache[uint64, *scriptEntry]
	routes map[string]*scriptRoute
	paths  []string
	// clients are shared by routes with the same upstream host.
	clients map[string]*fasthttp.HostClient
	errLog  *logLimiter

	mu      sync.Mutex
	flights map[string]*scriptFlight
	closed  bool
	fetchWG sync.WaitGroup // fetches in progress; Close waits for them
	// joined counts requests that waited for another request's fetch
	// instead of starting their own (tests observe single flight with it).
	joined atomic.Int64
}

// scriptRoute is one configured path; read-only after construction.
type scriptRoute struct {
	rs       *scriptRoutes
	path     string
	upstream string // scheme://host/path[?fixed], as configured minus fragment
	sep      byte   // '?' or '&' (0: upstream ends in '?'): how the filtered query joins upstream
	query    []string
	qnames   [][]byte // query, sorted, each URL-encoded with '=' appended
	ttl      time.Duration
	client   *fasthttp.HostClient

	results [scriptResCount]*metrics.Counter
	fetches *metrics.Counter
	upErrs  map[string]*metrics.Counter
}

// scriptEntry is one cached script. Immutable once published except
// retryAt, so handlers hand its slices to fasthttp without copying.
type scriptEntry struct {
	key     string // path?canonical-query; verified on lookup (the cache key is its hash)
	body    [scriptEncCount][]byte
	etag    [scriptEncCount]string
	ctype   string
	fetched time.Time
	// retryAt (unix nanos on the routes' clock) suppresses refresh
	// attempts after one failed: stale copies are served without waiting.
	retryAt atomic.Int64
}

func (e *scriptEntry) cost() int64 {
	return int64(len(e.body[scriptEncIdentity]) + len(e.body[scriptEncGzip]) + len(e.body[scriptEncBrotli]) + len(e.key) + 256)
}

// scriptFlight is one upstream fetch that concurrent misses share. Its
// result goes to every waiter directly: the cache Set is asynchronous and
// may be refused, so re-reading the cache could miss it.
type scriptFlight struct {
	done chan struct{}
	e    *scriptEntry
	err  error
}

// newScriptRoutes builds the handlers for cfg.Scripts. m receives the
// script metrics (a fresh Metrics when nil); now is the clock used for
// freshness (time.Now when nil). With no scripts configured it returns an
// empty, still usable value.
func newScriptRoutes(cfg *config.Config, log *zap.Logger, m *Metrics, now func() time.Time) (*scriptRoutes, error) {
	return newScriptRoutesLimits(cfg, log, m, now, defaultScriptLimits())
}

func newScriptRoutesLimits(cfg *config.Config, log *zap.Logger, m *Metrics, now func() time.Time, lim scriptLimits) (*scriptRoutes, error) {
	if cfg == nil {
		return nil, errors.New("proxy: nil config")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = NewMetrics()
	}
	if now == nil {
		now = time.Now
	}
	rs := &scriptRoutes{
		log:     log,
		m:       m,
		now:     now,
		lim:     lim,
		routes:  make(map[string]*scriptRoute, len(cfg.Scripts)),
		clients: make(map[string]*fasthttp.HostClient),
		errLog:  newLogLimiter(logInterval),
		flights: make(map[string]*scriptFlight),
	}
	var errs []error
	for i, sc := range cfg.Scripts {
		rt, err := rs.newRoute(sc)
		if err != nil {
			errs = append(errs, fmt.Errorf("scripts[%d]: %w", i, err))
			continue
		}
		if _, dup := rs.routes[rt.path]; dup {
			errs = append(errs, fmt.Errorf("scripts[%d]: path %s configured twice", i, rt.path))
			continue
		}
		rs.routes[rt.path] = rt
		rs.paths = append(rs.paths, rt.path)
	}
	if len(errs) > 0 {
		rs.closeClients()
		return nil, errors.Join(errs...)
	}
	if len(rs.routes) == 0 {
		return rs, nil
	}
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *scriptEntry]{
		NumCounters:        scriptCacheCounters,
		MaxCost:            scriptCacheBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		rs.closeClients()
		return nil, fmt.Errorf("scripts: cache: %w", err)
	}
	rs.cache = cache
	return rs, nil
}

func (rs *scriptRoutes) newRoute(sc config.Script) (*scriptRoute, error) {
	if !strings.HasPrefix(sc.Path, "/") {
		return nil, fmt.Errorf("path %q must start with '/'", sc.Path)
	}
	// Errors name the URL only in its redacted form: it may carry a
	// password.
	u, err := url.Parse(sc.Upstream)
	if err != nil {
		return nil, errors.New("upstream: not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("upstream %q: must be an absolute http:// or https:// URL", u.Redacted())
	}
	if u.User != nil {
		// Credentials would go to the upstream with every fetch; tag
		// scripts are public.
		return nil, fmt.Errorf("upstream %q: must not contain credentials", u.Redacted())
	}
	ttl := sc.TTL.D()
	if ttl < 0 {
		return nil, fmt.Errorf("ttl %s is negative", ttl)
	}
	if ttl == 0 {
		ttl = scriptDefaultTTL
	}
	u.Fragment, u.RawFragment = "", ""
	upstream := u.String()
	sep := byte('?')
	if u.RawQuery != "" || u.ForceQuery {
		sep = '&'
	}
	if u.ForceQuery && u.RawQuery == "" {
		sep = 0 // "…?": append directly
	}

	query := make([]string, 0, len(sc.Query))
	for _, q := range sc.Query {
		if q == "" {
			return nil, errors.New("query: empty parameter name")
		}
		if !slices.Contains(query, q) {
			query = append(query, q)
		}
	}
	slices.Sort(query)
	qnames := make([][]byte, len(query))
	for i, q := range query {
		qnames[i] = append(fasthttp.AppendQuotedArg(nil, []byte(q)), '=')
	}

	port := u.Port()
	if port == "" {
		port = "80"
		if scheme == "https" {
			port = "443"
		}
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	ck := scheme + "://" + addr
	client := rs.clients[ck]
	if client == nil {
		client = rs.newClient(addr, scheme == "https")
		rs.clients[ck] = client
	}

	rt := &scriptRoute{
		rs:       rs,
		path:     sc.Path,
		upstream: upstream,
		sep:      sep,
		query:    query,
		qnames:   qnames,
		ttl:      ttl,
		client:   client,
		upErrs:   make(map[string]*metrics.Counter, len(scriptErrKinds)),
	}
	set := rs.m.Set()
	for i, res := range scriptResults {
		rt.results[i] = set.GetOrCreateCounter(fmt.Sprintf(`sidetrack_script_requests_total{route=%q,result=%q}`, sc.Path, res))
	}
	rt.fetches = set.GetOrCreateCounter(fmt.Sprintf(`sidetrack_script_upstream_fetches_total{route=%q}`, sc.Path))
	for _, k := range scriptErrKinds {
		rt.upErrs[k] = set.GetOrCreateCounter(fmt.Sprintf(`sidetrack_script_upstream_errors_total{route=%q,kind=%q}`, sc.Path, k))
	}
	return rt, nil
}

// newClient returns the client for one upstream host. It only ever dials
// addr, which comes from config: nothing in a request can choose another
// host. It never follows redirects (HostClient does not), so a 3xx cannot
// send it elsewhere either.
func (rs *scriptRoutes) newClient(addr string, tls bool) *fasthttp.HostClient {
	dialTimeout := rs.lim.dialTimeout
	return &fasthttp.HostClient{
		Addr:  addr,
		IsTLS: tls,
		Dial: func(a string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.Dial("tcp", a)
		},
		NoDefaultUserAgentHeader: true,
		MaxConns:                 scriptMaxConns,
		MaxConnWaitTimeout:       scriptConnWait,
		MaxIdleConnDuration:      time.Minute,
		// One retry, for a pooled keep-alive connection the upstream had
		// closed; a timeout is never retried (it would double the wait).
		MaxIdemponentCallAttempts: 2,
		RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
			var ne net.Error
			return false, !errors.Is(err, fasthttp.ErrTimeout) && !(errors.As(err, &ne) && ne.Timeout())
		},
		ReadTimeout:            rs.lim.fetchTimeout,
		WriteTimeout:           rs.lim.fetchTimeout,
		ReadBufferSize:         scriptHeaderBuffer,
		MaxResponseBodySize:    rs.lim.maxBody,
		DisablePathNormalizing: true,
		SecureErrorLogMessage:  true,
	}
}

// Paths lists the configured script paths in config order, for the
// server to register with addTracking(p, RouteScript, handler(p)).
func (rs *scriptRoutes) Paths() []string { return slices.Clone(rs.paths) }

// handler returns the request handler for a configured path, nil for any
// other path.
func (rs *scriptRoutes) handler(path string) fasthttp.RequestHandler {
	rt := rs.routes[path]
	if rt == nil {
		return nil
	}
	return rt.serve
}

// Close waits for upstream fetches in progress (each is bounded by the
// fetch timeout), then releases the cache and idle upstream connections.
// Call it after the server stopped serving: ristretto's Close must not
// race with Get.
func (rs *scriptRoutes) Close() {
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return
	}
	rs.closed = true
	rs.mu.Unlock()
	rs.fetchWG.Wait()
	if rs.cache != nil {
		rs.cache.Close()
	}
	rs.closeClients()
}

func (rs *scriptRoutes) closeClients() {
	for _, c := range rs.clients {
		c.CloseIdleConnections()
	}
}

// serve answers one request and records it in sidetrack_requests_total.
func (rt *scriptRoute) serve(ctx *fasthttp.RequestCtx) {
	code := rt.answer(ctx)
	rt.rs.m.ObserveRequest(RouteScript, code, time.Since(ctx.Time()))
}

// scriptKeyBuf sizes the stack buffer for the cache key; longer paths
// still work (append moves to the heap).
const scriptKeyBuf = 256 + scriptMaxQuery

func (rt *scriptRoute) answer(ctx *fasthttp.RequestCtx) int {
	rs := rt.rs
	if !ctx.IsGet() && !ctx.IsHead() {
		rs.m.Reject(RouteScript, "method")
		ctx.Response.Header.Set(fasthttp.HeaderAllow, scriptAllow)
		scriptPlain(ctx, fasthttp.StatusMethodNotAllowed, scriptBody405)
		return fasthttp.StatusMethodNotAllowed
	}
	var buf [scriptKeyBuf]byte
	key, ok := rt.appendKey(buf[:0], ctx.QueryArgs())
	if !ok {
		rs.m.Reject(RouteScript, "query_too_long")
		scriptPlain(ctx, fasthttp.StatusBadRequest, scriptBodyQuery)
		return fasthttp.StatusBadRequest
	}

	now := rs.now()
	cached := rt.lookup(key, now)
	if cached != nil && now.Sub(cached.fetched) < rt.ttl {
		return rt.write(ctx, cached, now, scriptResHit)
	}
	if cached != nil && now.UnixNano() < cached.retryAt.Load() {
		// A refresh failed a moment ago: do not make this request wait
		// for the upstream again.
		return rt.write(ctx, cached, now, scriptResStale)
	}
	e, err := rt.fetch(key)
	if err == nil {
		return rt.write(ctx, e, now, scriptResMiss)
	}
	if cached != nil {
		cached.retryAt.Store(now.Add(rs.lim.retryAfter).UnixNano())
		rt.logFailure("script upstream failed; serving a stale copy", err)
		return rt.write(ctx, cached, now, scriptResStale)
	}
	rt.logFailure("script upstream failed; answered 502", err)
	rt.results[scriptResError].Inc()
	scriptPlain(ctx, fasthttp.StatusBadGateway, scriptBody502)
	return fasthttp.StatusBadGateway
}

func scriptPlain(ctx *fasthttp.RequestCtx, code int, body string) {
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBodyString(body)
}

// appendKey appends the cache key: the route's path, '?', then the listed
// query parameters that are present and non-empty, sorted by name, each
// with its first value, URL-encoded. Everything else in the request's query
// is dropped, so it can neither reach the upstream nor split the cache.
// The part after '?' is also exactly what the upstream receives. ok is
// false when that part exceeds scriptMaxQuery.
func (rt *scriptRoute) appendKey(dst []byte, args *fasthttp.Args) (key []byte, ok bool) {
	dst = append(dst, rt.path...)
	dst = append(dst, '?')
	start := len(dst)
	for i, name := range rt.query {
		v := args.Peek(name)
		if len(v) == 0 {
			continue
		}
		if len(dst) > start {
			dst = append(dst, '&')
		}
		dst = append(dst, rt.qnames[i]...)
		dst = fasthttp.AppendQuotedArg(dst, v)
		if len(dst)-start > scriptMaxQuery {
			return dst, false
		}
	}
	return dst, true
}

// lookup returns the cached entry for key unless it is older than ttl plus
// the stale bound; ristretto's own expiry runs on the wall clock and is only
// a memory bound.
func (rt *scriptRoute) lookup(key []byte, now time.Time) *scriptEntry {
	e, ok := rt.rs.cache.Get(xxhash.Sum64(key))
	if !ok || e == nil || e.key != string(key) {
		return nil
	}
	if now.Sub(e.fetched) > rt.ttl+rt.rs.lim.staleFor {
		return nil
	}
	return e
}

// write answers with e in the encoding the client prefers, or 304 when
// the client's copy is current. Every answer carries Vary: Accept-Encoding,
// since the body depends on it.
func (rt *scriptRoute) write(ctx *fasthttp.RequestCtx, e *scriptEntry, now time.Time, result int) int {
	h := &ctx.Response.Header
	h.Set(fasthttp.HeaderVary, scriptVaryHeader)
	h.Set(fasthttp.HeaderXContentTypeOptions, "nosniff")
	if result == scriptResStale {
		// The upstream is failing: let browsers and CDNs keep the copy but
		// ask again each time, so the fresh script replaces it as soon as
		// the upstream is back.
		h.Set(fasthttp.HeaderCacheControl, scriptCCStale)
	} else {
		// max-age is the remaining freshness (no Age header), so a
		// downstream cache never holds the copy past sidetrack's own ttl,
		// even one that ignores Age.
		remaining := rt.ttl - max(now.Sub(e.fetched), 0)
		var cc [48]byte
		b := append(cc[:0], scriptCCPrefix...)
		b = strconv.AppendInt(b, int64(max(remaining, 0)/time.Second), 10)
		h.SetBytesV(fasthttp.HeaderCacheControl, b)
	}
	enc := scriptEncoding(ctx.Request.Header.Peek(fasthttp.HeaderAcceptEncoding))
	if enc == scriptEncBrotli && e.body[scriptEncBrotli] == nil {
		enc = scriptEncGzip
	}
	if m, ok := scriptMatchETag(ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch), e, enc); ok {
		// Echo the tag the client holds: its stored body is in that
		// encoding whatever it accepts today.
		h.Set(fasthttp.HeaderETag, e.etag[m])
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		ctx.Response.ResetBody()
		rt.results[scriptResNotModified].Inc()
		return fasthttp.StatusNotModified
	}
	h.Set(fasthttp.HeaderETag, e.etag[enc])
	switch enc {
	case scriptEncGzip:
		h.Set(fasthttp.HeaderContentEncoding, "gzip")
	case scriptEncBrotli:
		h.Set(fasthttp.HeaderContentEncoding, "br")
	}
	h.SetContentType(e.ctype)
	ctx.SetStatusCode(fasthttp.StatusOK)
	// The entry is immutable: fasthttp may write it without a copy.
	ctx.Response.SetBodyRaw(e.body[enc])
	rt.results[result].Inc()
	return fasthttp.StatusOK
}

// scriptEncoding picks the response encoding from Accept-Encoding: br when
// acceptable, else gzip, else identity. "q=0" excludes a coding; "*"
// stands for every coding not listed. Identity is always available, even
// when excluded, as RFC 9110 §12.5.3 allows.
func scriptEncoding(ae []byte) int {
	const unset, yes, no = 0, 1, 2
	var br, gz, star int
	for len(ae) > 0 {
		var item []byte
		if i := bytes.IndexByte(ae, ','); i >= 0 {
			item, ae = ae[:i], ae[i+1:]
		} else {
			item, ae = ae, nil
		}
		name, params, _ := bytes.Cut(item, []byte{';'})
		name = bytes.TrimSpace(name)
		state := yes
		if scriptQIsZero(params) {
			state = no
		}
		switch {
		case bytes.EqualFold(name, []byte("br")):
			br = state
		case bytes.EqualFold(name, []byte("gzip")), bytes.EqualFold(name, []byte("x-gzip")):
			gz = state
		case len(name) == 1 && name[0] == '*':
			star = state
		}
	}
	switch {
	case br == yes || (br == unset && star == yes):
		return scriptEncBrotli
	case gz == yes || (gz == unset && star == yes):
		return scriptEncGzip
	}
	return scriptEncIdentity
}

// scriptQIsZero reports whether the parameters of one Accept-Encoding item set
// q to zero ("q=0", "q=0.000"). Unparseable q values count as non-zero:
// being lenient only means sending a coding the client listed.
func scriptQIsZero(params []byte) bool {
	for len(params) > 0 {
		var p []byte
		if i := bytes.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i+1:]
		} else {
			p, params = params, nil
		}
		p = bytes.TrimSpace(p)
		if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
			continue
		}
		v := bytes.TrimSpace(p[2:])
		if len(v) == 0 || v[0] != '0' {
			return false
		}
		for _, c := range v[1:] {
			if c != '.' && c != '0' {
				return false
			}
		}
		return true
	}
	return false
}

// scriptMatchETag reports whether If-None-Match matches e, and which
// variant's tag matched. The comparison is weak (RFC 9110 §13.1.2): a
// "W/" prefix is ignored. "*" matches any current copy (variant enc).
func scriptMatchETag(inm []byte, e *scriptEntry, enc int) (int, bool) {
	for len(inm) > 0 {
		var item []byte
		if i := bytes.IndexByte(inm, ','); i >= 0 {
			item, inm = inm[:i], inm[i+1:]
		} else {
			item, inm = inm, nil
		}
		item = bytes.TrimSpace(item)
		if len(item) == 1 && item[0] == '*' {
			return enc, true
		}
		item = bytes.TrimPrefix(item, []byte("W/"))
		for i := range e.etag {
			if string(item) == e.etag[i] {
				return i, true
			}
		}
	}
	return 0, false
}

// fetch returns a fresh entry for key, sharing one upstream request among
// all concurrent callers for the same key.
func (rt *scriptRoute) fetch(key []byte) (*scriptEntry, error) {
	rs := rt.rs
	rs.mu.Lock()
	if f, ok := rs.flights[string(key)]; ok {
		rs.mu.Unlock()
		rs.joined.Add(1)
		<-f.done
		return f.e, f.err
	}
	if rs.closed {
		rs.mu.Unlock()
		return nil, errScriptClosed
	}
	k := string(key)
	f := &scriptFlight{done: make(chan struct{})}
	rs.flights[k] = f
	rs.fetchWG.Add(1)
	rs.mu.Unlock()

	defer func() {
		rs.mu.Lock()
		delete(rs.flights, k)
		rs.mu.Unlock()
		close(f.done)
		rs.fetchWG.Done()
	}()
	f.e, f.err = rt.fetchUpstream(k)
	if f.err == nil {
		rs.cache.SetWithTTL(xxhash.Sum64String(k), f.e, f.e.cost(), rt.ttl+rs.lim.staleFor)
		// Apply the Set before the flight ends, so requests arriving
		// after it find the entry instead of fetching again. (Admission
		// may still refuse it; the waiters have their copy regardless.)
		rs.cache.Wait()
	}
	return f.e, f.err
}

var errScriptClosed = errors.New("script routes closed")

// scriptFetchError is a failed fetch with its metrics kind.
type scriptFetchError struct {
	kind string
	err  error
}

func (e *scriptFetchError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *scriptFetchError) Unwrap() error { return e.err }

func (rt *scriptRoute) failed(kind string, err error) error {
	c := rt.upErrs[kind]
	if c == nil {
		c = rt.upErrs[scriptErrOther]
	}
	c.Inc()
	return &scriptFetchError{kind: kind, err: err}
}

// fetchUpstream makes one request to the configured upstream with the
// canonical query from key and nothing of the shopper's request: a fixed
// User-Agent, no cookies, no client headers.
func (rt *scriptRoute) fetchUpstream(key string) (*scriptEntry, error) {
	rs := rt.rs
	rt.fetches.Inc()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	uri := rt.upstream
	if q := key[len(rt.path)+1:]; q != "" {
		if rt.sep != 0 {
			uri += string(rt.sep)
		}
		uri += q
	}
	req.SetRequestURI(uri)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.Header.SetUserAgent(scriptUserAgent)
	req.Header.Set(fasthttp.HeaderAccept, "*/*")
	// gzip only: the body is decoded here and re-encoded for clients, and
	// gzip needs no extra decoder.
	req.Header.Set(fasthttp.HeaderAcceptEncoding, "gzip")
	resp.Header.SetNoDefaultContentType(true)

	if err := rt.client.DoTimeout(req, resp, rs.lim.fetchTimeout); err != nil {
		return nil, rt.failed(scriptErrKind(err), err)
	}
	switch code := resp.StatusCode(); {
	case code == fasthttp.StatusOK:
	case code >= 300 && code < 400:
		// Never followed: a redirect could lead anywhere.
		return nil, rt.failed(scriptErrRedirect, fmt.Errorf("upstream redirected (%d)", code))
	default:
		return nil, rt.failed(scriptErrStatus, fmt.Errorf("upstream answered %d", code))
	}

	var body []byte
	switch ce := bytes.TrimSpace(resp.Header.ContentEncoding()); {
	case len(ce) == 0, bytes.EqualFold(ce, []byte("identity")):
		body = bytes.Clone(resp.Body())
	case bytes.EqualFold(ce, []byte("gzip")), bytes.EqualFold(ce, []byte("x-gzip")):
		var err error
		body, err = gunzipScript(resp.Body(), rs.lim.maxBody)
		if errors.Is(err, errScriptTooLarge) {
			return nil, rt.failed(scriptErrTooLarge, err)
		}
		if err != nil {
			return nil, rt.failed(scriptErrEncoding, err)
		}
	default:
		return nil, rt.failed(scriptErrEncoding, errors.New("upstream used an unrequested content encoding"))
	}
	if body == nil {
		body = []byte{}
	}
	ctype := string(bytes.TrimSpace(resp.Header.ContentType()))
	if ctype == "" {
		ctype = scriptDefaultType
	}
	return newScriptEntry(key, body, ctype, rs.now()), nil
}

var errScriptTooLarge = errors.New("decoded script exceeds the size limit")

// gunzipScript decodes a gzip body, producing at most limit bytes.
func gunzipScript(src []byte, limit int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, errScriptTooLarge
	}
	return out, nil
}

// newScriptEntry precomputes everything an answer needs: both compressed
// variants and their ETags. The tags differ per encoding (each variant is
// its own byte sequence, so a strong tag must too) and share the hash of
// the identity body.
func newScriptEntry(key string, body []byte, ctype string, fetched time.Time) *scriptEntry {
	e := &scriptEntry{key: key, ctype: ctype, fetched: fetched}
	e.body[scriptEncIdentity] = body
	e.body[scriptEncGzip] = gzipScript(body)
	e.body[scriptEncBrotli] = brotliScript(body)
	sum := sha256.Sum256(body)
	tag := hex.EncodeToString(sum[:12])
	e.etag[scriptEncIdentity] = `"` + tag + `"`
	e.etag[scriptEncGzip] = `"` + tag + `-gz"`
	e.etag[scriptEncBrotli] = `"` + tag + `-br"`
	return e
}

// gzipScript and brotliScript compress with the libraries directly rather
// than fasthttp's helpers, which run on process-wide worker goroutines.
// Writing to a bytes.Buffer cannot fail, and the levels are valid
// constants, so errors are impossible.
func gzipScript(body []byte) []byte {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, scriptGzipLevel)
	zw.Write(body)
	zw.Close()
	return b.Bytes()
}

// brotliScript returns nil if the encoder fails (it only does for an
// invalid level); write then falls back to gzip.
func brotliScript(body []byte) []byte {
	out, err := brotli.Compress(body, scriptBrotliLevel)
	if err != nil {
		return nil
	}
	return out
}

// scriptErrKind maps a client error to a metrics kind.
func scriptErrKind(err error) string {
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return scriptErrTooLarge
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return scriptErrBusy
	case errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, syscall.ECONNREFUSED),
		errors.As(err, &op) && op.Op == "dial":
		return scriptErrConnect
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &ne) && ne.Timeout():
		return scriptErrTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, fasthttp.ErrConnectionClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return scriptErrReset
	}
	return scriptErrOther
}

// logFailure writes at most one line per interval for all script routes.
// The query (tag ids) is left out: the route and kind say what failed.
func (rt *scriptRoute) logFailure(msg string, err error) {
	suppressed, ok := rt.rs.errLog.allow()
	if !ok {
		return
	}
	kind := scriptErrOther
	var fe *scriptFetchError
	if errors.As(err, &fe) {
		kind = fe.kind
	}
	rt.rs.log.Warn(msg,
		zap.String("route", rt.path),
		zap.String("upstream", rt.client.Addr),
		zap.String("kind", kind),
		zap.String("error", redactText(err.Error())),
		zap.Uint64("suppressed", suppressed),
	)
}

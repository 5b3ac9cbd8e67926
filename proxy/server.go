package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// Readiness reports whether sidetrack can take beacons (e.g. the spool is
// writable). A non-nil error turns /readyz to 503 with the error's text.
// The origin's health is deliberately not part of it: a down shop must not
// take beacon collection out of the load balancer.
type Readiness interface {
	Ready() error
}

// Options carries the pluggable parts main wires into the proxy. Every
// field is optional; later work adds fields (a Sink, delivery status)
// without changing New's signature.
type Options struct {
	// Ready backs /readyz in addition to the drain state; nil means ready.
	Ready Readiness
	// Sink stores accepted events. With no Sink (or no Pipeline) the
	// tracking routes are not installed: sidetrack is then a pure
	// pass-through proxy.
	Sink Sink
	// Pipeline enriches decoded events before they reach the Sink.
	Pipeline *enrich.Pipeline
	// Events is the event pool shared with the Sink, which releases
	// events after storing them; nil means a private pool.
	Events *enrich.EventPool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Pages mints identity cookies on pass-through HTML answers; nil
	// means only beacon answers set them.
	Pages PageCookier
	// Metrics are other parts' metric sets (delivery, dedup), written
	// after the proxy's own on /metrics.
	Metrics []MetricsWriter
	// Observers see every decoded event once its outcome is known (data
	// quality, live trace).
	Observers []EventObserver
}

// EventObserver sees each decoded event with the outcome the proxy gave it
// (accepted, duplicate, invalid, quarantined, bot, no_id) and, for
// quarantined events, the reason. It runs on the request path, before the
// sink takes the event: it must be quick and must copy what it keeps,
// because the event is pooled and reused once the call returns.
type EventObserver interface {
	ObserveEvent(e *enrich.Event, o enrich.Outcome, reason string)
}

// MetricsWriter writes metrics in Prometheus text format (a *metrics.Set).
type MetricsWriter interface {
	WritePrometheus(w io.Writer)
}

// prefixRoute is a tracking route matched by path prefix (/v1/…).
type prefixRoute struct {
	prefix string
	// route is the metrics label (RouteSegment, …) used for requests the
	// dispatcher rejects before the handler runs.
	route string
	h     fasthttp.RequestHandler
}

// Fallbacks for unset server settings: fasthttp's own defaults are
// unlimited timeouts, which let slowloris clients hold connections forever.
const (
	defaultReadTimeout     = 10 * time.Second
	defaultWriteTimeout    = 30 * time.Second
	defaultIdleTimeout     = 60 * time.Second
	defaultMaxHeaderBytes  = 16 << 10
	minMaxHeaderBytes      = 1 << 10
	defaultMaxConns        = 10000
	defaultUpstreamTimeout = 30 * time.Second
	defaultUpstreamConns   = 1024
	upstreamReadBuffer     = 32 << 10
	upstreamIdleConn       = 4 * time.Second
	logInterval            = time.Second
)

// Server is sidetrack's public HTTP server (tracking routes, pass-through
// to the origin) and its admin server. Build it with New, run it with
// Serve and ServeAdmin, stop it with Drain then Shutdown.
type Server struct {
	cfg  *config.Config
	log  *zap.Logger
	opts Options

	metrics *Metrics
	trusted *TrustedProxies
	hosts   map[string]struct{} // lowercase, no port; empty: any host

	public    *fasthttp.Server
	admin     *fasthttp.Server
	publicLns listenerSet
	adminLns  listenerSet

	up upstream
	// tagUp is the sGTM tagging server that gets the other sGTM paths
	// (ingest.ga4.tagging_server); nil when they go to the origin.
	tagUp *upstream

	// Tracking routes, filled by registerTracking before serving and read
	// without locks afterwards. tracking is keyed by exact path (ctx.Path(),
	// i.e. decoded and normalised); trackingLabel optionally gives an exact
	// route's metrics label; trackingPrefix is scanned in order.
	tracking       map[string]fasthttp.RequestHandler
	trackingLabel  map[string]string
	trackingPrefix []prefixRoute
	// tracker is the tracking routes' shared state (nil: pass-through only).
	tracker *tracker
	// scripts serves first-party tag scripts (scripts: in the config).
	scripts *scriptRoutes

	adminMu     sync.RWMutex
	adminRoutes map[string]adminRoute
	adminToken  [32]byte // sha256 of cfg.Admin.Token
	adminAuth   bool
	status      *statusState // set by HandleStatus

	draining atomic.Bool
	accessN  atomic.Uint64

	calls    sync.Pool // *upstreamCall
	gzipPool sync.Pool // *gzipState

	upLog  *logLimiter // origin failures
	fhLog  *logLimiter // fasthttp's own messages
	errLog *logLimiter // malformed requests
}

// New builds a Server from cfg. It reports every configuration problem it
// finds at once. log may be nil (nothing is logged).
func New(cfg *config.Config, log *zap.Logger, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("proxy: nil config")
	}
	if log == nil {
		log = zap.NewNop()
	}
	var errs []error
	trusted, err := ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		errs = append(errs, err)
	}
	up, err := newUpstream(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	hosts := make(map[string]struct{}, len(cfg.Hosts))
	for _, h := range cfg.Hosts {
		n := normalizeHost([]byte(h))
		if len(n) == 0 {
			errs = append(errs, fmt.Errorf("hosts: empty host name %q", h))
			continue
		}
		hosts[string(n)] = struct{}{}
	}
	var tagUp *upstream
	if ts := cfg.Ingest.GA4.TaggingServer; ts != "" {
		u, err := newUpstreamTo("ingest.ga4.tagging_server", ts, cfg)
		if err != nil {
			errs = append(errs, err)
		} else {
			tagUp = &u
		}
	}
	metrics := NewMetrics()
	scripts, err := newScriptRoutes(cfg, log, metrics, opts.Now)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	s := &Server{
		cfg:           cfg,
		log:           log,
		opts:          opts,
		metrics:       metrics,
		scripts:       scripts,
		tagUp:         tagUp,
		trusted:       trusted,
		hosts:         hosts,
		up:            up,
		tracking:      make(map[string]fasthttp.RequestHandler),
		trackingLabel: make(map[string]string),
		upLog:         newLogLimiter(logInterval),
		fhLog:         newLogLimiter(logInterval),
		errLog:        newLogLimiter(logInterval),
	}
	s.public = s.newFasthttpServer("sidetrack", s.handle)
	s.public.ErrorHandler = s.errorHandler
	// Pass-through bodies stream; tracking routes read theirs with a cap
	// (readBody). With streaming on, fasthttp never rejects a large body
	// itself, so every limit is enforced in proxy code.
	s.public.StreamRequestBody = true
	s.public.DisablePreParseMultipartForm = true
	if n := int(cfg.Server.MaxRequestBody); n > 0 {
		s.public.MaxRequestBodySize = n
	}
	s.initAdmin()
	s.registerTracking()
	return s, nil
}

// newFasthttpServer returns a fasthttp.Server with sidetrack's common
// settings: timeouts always set, header size capped by the read buffer
// (larger headers get 431), no Server header, no default Content-Type
// (pass-through answers keep the origin's headers exactly), and a logger
// that never prints request bytes.
func (s *Server) newFasthttpServer(name string, h fasthttp.RequestHandler) *fasthttp.Server {
	sc := s.cfg.Server
	headerBytes := int(sc.MaxHeaderBytes)
	if headerBytes <= 0 {
		headerBytes = defaultMaxHeaderBytes
	}
	headerBytes = max(headerBytes, minMaxHeaderBytes)
	conns := sc.MaxConns
	if conns <= 0 {
		conns = defaultMaxConns
	}
	return &fasthttp.Server{
		Handler:      h,
		Logger:       fasthttpLogger{log: s.log.With(zap.String("server", name)), limit: s.fhLog},
		ReadTimeout:  durationOr(sc.ReadTimeout.D(), defaultReadTimeout),
		WriteTimeout: durationOr(sc.WriteTimeout.D(), defaultWriteTimeout),
		IdleTimeout:  durationOr(sc.IdleTimeout.D(), defaultIdleTimeout),
		// ReadBufferSize bounds request line plus headers: a larger header
		// block fails with ErrSmallBuffer, answered 431.
		ReadBufferSize: headerBytes,
		Concurrency:    conns,
		// sidetrack always sits behind the shop's TLS terminator or CDN, so
		// every connection comes from a handful of peer addresses: a
		// per-IP connection cap would throttle all visitors at once.
		// Per-client limits apply to tracking routes by client IP instead.
		MaxConnsPerIP:         0,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		SecureErrorLogMessage: true,
		CloseOnShutdown:       true,
	}
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Metrics returns the proxy's metrics (also exposed on the admin port).
func (s *Server) Metrics() *Metrics { return s.metrics }

// Serve runs the public server on ln until Shutdown. It returns nil after
// a graceful shutdown, at once if Shutdown already ran.
func (s *Server) Serve(ln net.Listener) error {
	return s.publicLns.serve(s.public, ln)
}

// listenerSet closes the gap between starting Serve in a goroutine and a
// Shutdown that runs before fasthttp registered the listener: fasthttp's
// ShutdownWithContext then returns at once and Serve would run forever.
type listenerSet struct {
	mu     sync.Mutex
	closed bool
	lns    []net.Listener
}

func (l *listenerSet) serve(srv *fasthttp.Server, ln net.Listener) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	l.lns = append(l.lns, ln)
	l.mu.Unlock()
	err := srv.Serve(ln)
	if l.isClosed() {
		// Accept failing on the listener Shutdown closed is the normal end.
		return nil
	}
	return err
}

func (l *listenerSet) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// shutdown stops srv gracefully, then closes every listener it was given
// (closing one fasthttp already closed is harmless).
func (l *listenerSet) shutdown(ctx context.Context, srv *fasthttp.Server) error {
	l.mu.Lock()
	l.closed = true
	lns := l.lns
	l.lns = nil
	l.mu.Unlock()
	err := srv.ShutdownWithContext(ctx)
	for _, ln := range lns {
		_ = ln.Close()
	}
	return err
}

// Drain turns /readyz to 503 at once so the load balancer stops sending
// traffic; the public port keeps serving until Shutdown.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting public connections, closes idle keep-alive
// ones, and waits for in-flight requests (including streamed response
// bodies) until ctx ends; it then returns ctx's error. It implies Drain.
// The admin server keeps running (metrics stay scrapeable during the
// rest of the shutdown); stop it with ShutdownAdmin.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	err := s.publicLns.shutdown(ctx, s.public)
	s.up.client.CloseIdleConnections()
	if s.tagUp != nil {
		s.tagUp.client.CloseIdleConnections()
	}
	return err
}

// addTracking registers an exact-path tracking route with its metrics
// label. Writing s.tracking directly also works; the label then defaults
// to "tracking" for dispatcher-level rejections.
func (s *Server) addTracking(path, route string, h fasthttp.RequestHandler) {
	s.tracking[path] = h
	s.trackingLabel[path] = route
}

// addTrackingPrefix registers a prefix tracking route (e.g. "/v1/").
func (s *Server) addTrackingPrefix(prefix, route string, h fasthttp.RequestHandler) {
	s.trackingPrefix = append(s.trackingPrefix, prefixRoute{prefix: prefix, route: route, h: h})
}

// lookup finds the tracking handler for path; nil means pass-through.
func (s *Server) lookup(path []byte) (fasthttp.RequestHandler, string) {
	if h, ok := s.tracking[string(path)]; ok {
		route, ok := s.trackingLabel[string(path)]
		if !ok || route == "" {
			route = routeTracking
		}
		return h, route
	}
	for i := range s.trackingPrefix {
		p := &s.trackingPrefix[i]
		if len(path) >= len(p.prefix) && string(path[:len(p.prefix)]) == p.prefix {
			route := p.route
			if route == "" {
				route = routeTracking
			}
			return p.h, route
		}
	}
	return nil, RoutePass
}

// handle is the public dispatcher: request-level checks that hold for
// every route, then a tracking handler or pass-through.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	start := ctx.Time()
	h, route := s.lookup(ctx.Path())

	if code, reason := s.precheck(ctx); code != 0 {
		s.metrics.Reject(route, reason)
		d := time.Since(start)
		s.metrics.ObserveRequest(route, code, d)
		s.accessLog(ctx, route, code, d)
		return
	}
	if h != nil {
		// Tracking handlers record their own request metrics (they know
		// when the answer is final); the access log is common.
		h(ctx)
		if s.cfg.Log.Access {
			s.accessLog(ctx, route, ctx.Response.StatusCode(), time.Since(start))
		}
		return
	}
	code := s.passThrough(ctx, nil)
	if s.tracker != nil {
		s.tracker.setPageCookies(ctx, code)
	}
	d := time.Since(start)
	s.metrics.ObserveRequest(RoutePass, code, d)
	s.accessLog(ctx, RoutePass, code, d)
}

// Answers of the dispatcher's own checks.
const (
	bodyConnect   = "CONNECT is not supported: sidetrack is not a forward proxy.\n"
	bodyTrace     = "TRACE is not allowed.\n"
	bodyMisdirect = "Misdirected Request: this server does not serve that host name.\n"
	bodyWebSocket = "WebSockets are not proxied by sidetrack. Serve them from a host or path that does not go through sidetrack.\n"
	allowMethods  = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
)

// precheck answers requests no route may serve and returns the status
// and rejection reason, or 0 when the request may proceed.
func (s *Server) precheck(ctx *fasthttp.RequestCtx) (int, string) {
	switch {
	case ctx.IsConnect():
		// The client may start tunnelling right after the request line;
		// close so those bytes are never parsed as a request.
		ctx.SetConnectionClose()
		plainAnswer(ctx, fasthttp.StatusNotImplemented, bodyConnect)
		return fasthttp.StatusNotImplemented, "connect"
	case ctx.IsTrace():
		// TRACE would echo cookies and auth headers back (XST).
		ctx.Response.Header.Set(fasthttp.HeaderAllow, allowMethods)
		plainAnswer(ctx, fasthttp.StatusMethodNotAllowed, bodyTrace)
		return fasthttp.StatusMethodNotAllowed, "trace"
	}
	if len(s.hosts) > 0 && !s.hostAllowed(ctx.Host()) {
		plainAnswer(ctx, fasthttp.StatusMisdirectedRequest, bodyMisdirect)
		return fasthttp.StatusMisdirectedRequest, "host_not_allowed"
	}
	if isWebSocket(&ctx.Request.Header) {
		plainAnswer(ctx, fasthttp.StatusNotImplemented, bodyWebSocket)
		return fasthttp.StatusNotImplemented, "websocket"
	}
	return 0, ""
}

func plainAnswer(ctx *fasthttp.RequestCtx, code int, body string) {
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBodyString(body)
}

// isWebSocket reports an Upgrade: websocket request. Other upgrades (h2c)
// are ignored, as RFC 9110 §7.8 allows: Upgrade is hop-by-hop and is
// stripped, and the request proceeds over HTTP/1.1.
func isWebSocket(h *fasthttp.RequestHeader) bool {
	for _, v := range h.PeekAll(fasthttp.HeaderUpgrade) {
		if hasToken(v, "websocket") {
			return true
		}
	}
	return false
}

// hasToken reports whether the comma-separated list v contains tok
// (ASCII case-insensitive).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if equalFold(bytes.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

// equalFold is an allocation-free ASCII case-insensitive comparison.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hasPrefixFold is a case-insensitive bytes.HasPrefix for ASCII.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

// hostAllowed checks a request host against hosts: case-insensitive, port
// and trailing dot ignored.
func (s *Server) hostAllowed(host []byte) bool {
	var buf [256]byte
	if len(host) > len(buf) {
		return false
	}
	n := normalizeHost(append(buf[:0], host...))
	_, ok := s.hosts[string(n)]
	return ok
}

// normalizeHost lowercases b in place and strips a port, IPv6 brackets and
// a trailing dot.
func normalizeHost(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		if i := bytes.IndexByte(b, ']'); i > 0 {
			b = b[1:i]
		}
	} else if i := bytes.LastIndexByte(b, ':'); i >= 0 && bytes.IndexByte(b, ':') == i {
		b = b[:i]
	}
	b = bytes.TrimSuffix(b, []byte("."))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return b
}

// errorHandler answers requests fasthttp could not parse. The status says
// what was wrong (header too large 431, body too large 413, too slow 408,
// else 400); every one is counted as a rejection on the pass route, since
// no route could be chosen for an unparsed request.
func (s *Server) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	code, reason, msg := fasthttp.StatusBadRequest, "malformed", "Bad Request\n"
	switch {
	case errors.As(err, &small):
		code, reason, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "header_too_large", "Request Header Fields Too Large\n"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		code, reason, msg = fasthttp.StatusRequestEntityTooLarge, "body_too_large", "Request Entity Too Large\n"
	case errors.As(err, &ne) && ne.Timeout():
		code, reason, msg = fasthttp.StatusRequestTimeout, "timeout", "Request Timeout\n"
	}
	plainAnswer(ctx, code, msg)
	s.metrics.countRequest(RoutePass, code)
	s.metrics.Reject(RoutePass, reason)
	if code == fasthttp.StatusBadRequest {
		if suppressed, ok := s.errLog.allow(); ok {
			s.log.Info("malformed request", zap.String("error", redactText(err.Error())), zap.Uint64("suppressed", suppressed))
		}
	}
}

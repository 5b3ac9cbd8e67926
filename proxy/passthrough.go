package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
)

// upstream is the origin, fixed at start from cfg.Origin. Nothing in a
// request can change where it connects: the HostClient dials client.Addr
// and nothing else.
type upstream struct {
	client  *fasthttp.HostClient
	scheme  []byte // "http" or "https"
	host    []byte // Host header for requests that arrive without one
	timeout time.Duration
	maxBody int64 // 0: unlimited
}

func newUpstream(cfg *config.Config) (upstream, error) {
	return newUpstreamTo("origin", cfg.Origin, cfg)
}

// newUpstreamTo builds the client for one fixed upstream URL; key names
// the config key in errors (origin, ingest.ga4.tagging_server).
func newUpstreamTo(key, raw string, cfg *config.Config) (upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return upstream{}, fmt.Errorf("%s: %w", key, err)
	}
	var tls bool
	switch strings.ToLower(u.Scheme) {
	case "http":
	case "https":
		tls = true
	default:
		return upstream{}, fmt.Errorf("%s: scheme must be http or https, got %q", key, raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return upstream{}, fmt.Errorf("%s: no host in %q", key, raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return upstream{}, fmt.Errorf("%s: must be scheme://host[:port] without path, query or credentials, got %q", key, raw)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if tls {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	timeout := durationOr(cfg.Server.UpstreamTimeout.D(), defaultUpstreamTimeout)
	conns := cfg.Server.UpstreamMaxConns
	if conns <= 0 {
		conns = defaultUpstreamConns
	}
	return upstream{
		client: &fasthttp.HostClient{
			Addr:  addr,
			IsTLS: tls,
			// The client's own User-Agent passes through; none is added.
			NoDefaultUserAgentHeader: true,
			MaxConns:                 conns,
			// Under a burst, wait for a pooled connection rather than fail.
			MaxConnWaitTimeout: timeout,
			// A request with a body cannot be retried on a keep-alive
			// connection the origin closed meanwhile, so idle connections
			// are dropped before common origin keep-alive timeouts (Node
			// and Apache: 5 s), and the most recently used connection is
			// reused first so the rest can age out.
			MaxIdleConnDuration: upstreamIdleConn,
			ConnPoolStrategy:    fasthttp.LIFO,
			// Origin response headers (many Set-Cookie, CSP) can be large.
			ReadBufferSize: upstreamReadBuffer,
			// The path goes to the origin byte for byte.
			DisablePathNormalizing: true,
			// Bodies are streamed, never held whole: MaxResponseBodySize is
			// ignored in this mode, so no size limit applies.
			StreamResponseBody:        true,
			MaxIdemponentCallAttempts: 2,
			RetryIfErr:                retryStale,
			SecureErrorLogMessage:     true,
			// A plain net.Dialer (both address families, Happy Eyeballs)
			// instead of fasthttp's process-wide caching dialer, whose DNS
			// cache and sweeper goroutine are global state.
			DialTimeout: dialOrigin,
		},
		scheme:  []byte(strings.ToLower(u.Scheme)),
		host:    []byte(u.Host),
		timeout: timeout,
		maxBody: int64(cfg.Server.MaxRequestBody),
	}, nil
}

func dialOrigin(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// retryStale retries a safe request once when a pooled keep-alive
// connection turned out to be closed by the origin; a timeout is never
// retried (it would double the wait).
func retryStale(req *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
	if errors.Is(err, fasthttp.ErrTimeout) {
		return false, false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, false
	}
	return false, req.Header.IsGet() || req.Header.IsHead() || req.Header.IsOptions()
}

// Request-target forms (RFC 9112 §3.2).
type targetForm uint8

const (
	formInvalid  targetForm = iota
	formOrigin              // /path?query
	formAbsolute            // http://host/path?query
	formAsterisk            // * (OPTIONS)
)

// splitTarget splits a raw request-target into the path and raw query sent
// to the origin and, for absolute-form, the authority (userinfo removed).
// Fragments are dropped. The results alias raw.
func splitTarget(raw []byte) (path, query, authority []byte, form targetForm) {
	if len(raw) == 0 {
		return nil, nil, nil, formInvalid
	}
	if len(raw) == 1 && raw[0] == '*' {
		return raw, nil, nil, formAsterisk
	}
	form = formOrigin
	if raw[0] != '/' {
		i := bytes.Index(raw, []byte("://"))
		if i <= 0 {
			return nil, nil, nil, formInvalid
		}
		scheme := raw[:i]
		if !equalFold(scheme, "http") && !equalFold(scheme, "https") {
			return nil, nil, nil, formInvalid
		}
		rest := raw[i+3:]
		end := len(rest)
		if j := bytes.IndexAny(rest, "/?#"); j >= 0 {
			end = j
		}
		authority, raw = rest[:end], rest[end:]
		if k := bytes.LastIndexByte(authority, '@'); k >= 0 {
			authority = authority[k+1:]
		}
		if len(authority) == 0 {
			return nil, nil, nil, formInvalid
		}
		form = formAbsolute
	}
	if h := bytes.IndexByte(raw, '#'); h >= 0 {
		raw = raw[:h]
	}
	path = raw
	if q := bytes.IndexByte(raw, '?'); q >= 0 {
		path, query = raw[:q], raw[q+1:]
	}
	if len(path) == 0 {
		path = []byte("/")
	}
	return path, query, authority, form
}

// Header kinds the proxy removes or replaces on their way through.
const (
	hkKeep       = iota
	hkHop        // describes one connection (RFC 9110 §7.6.1), or Proxy-*
	hkConnection // hop-by-hop, and names more hop-by-hop headers
	hkForwarded  // X-Forwarded-*: always rewritten by sidetrack
	hkUntrusted  // Forwarded, X-Real-IP: dropped unless the peer is trusted
)

// headerKind classifies a header name without allocating. Besides the
// RFC's list (Connection and the headers it names, Keep-Alive, TE,
// Trailer, Transfer-Encoding, Upgrade) every Proxy-* header and Expect
// (fasthttp already answered 100-continue) are hop-by-hop here.
func headerKind(k []byte) int {
	switch len(k) {
	case 2:
		if equalFold(k, "te") {
			return hkHop
		}
	case 6:
		if equalFold(k, "expect") {
			return hkHop
		}
	case 7:
		if equalFold(k, "trailer") || equalFold(k, "upgrade") {
			return hkHop
		}
	case 9:
		if equalFold(k, "forwarded") || equalFold(k, "x-real-ip") {
			return hkUntrusted
		}
	case 10:
		if equalFold(k, "connection") {
			return hkConnection
		}
		if equalFold(k, "keep-alive") {
			return hkHop
		}
	case 15:
		if equalFold(k, "x-forwarded-for") {
			return hkForwarded
		}
	case 16:
		if equalFold(k, "x-forwarded-host") {
			return hkForwarded
		}
	case 17:
		if equalFold(k, "x-forwarded-proto") {
			return hkForwarded
		}
		if equalFold(k, "transfer-encoding") {
			return hkHop
		}
	}
	if hasPrefixFold(k, "proxy-") {
		return hkHop
	}
	return hkKeep
}

// upstreamCall is the pooled per-request state of one pass-through. It
// lives until the response body stream handed to fasthttp is closed
// (after the answer is written), not just until the handler returns.
type upstreamCall struct {
	s    *Server
	req  fasthttp.Request
	resp fasthttp.Response
	in   requestBody
	out  upstreamBody
	buf  []byte
}

func (s *Server) getCall() *upstreamCall {
	c, _ := s.calls.Get().(*upstreamCall)
	if c == nil {
		c = &upstreamCall{s: s}
		c.out.c = c
	}
	return c
}

func (s *Server) putCall(c *upstreamCall) {
	c.req.Reset()
	c.resp.Reset()
	c.in = requestBody{}
	c.out.inner = nil
	c.buf = c.buf[:0]
	s.calls.Put(c)
}

// requestBody feeds the client's (streamed) request body to the origin,
// enforcing server.max_request_body and remembering whether a failure was
// the client's (so it is not counted as an origin failure).
type requestBody struct {
	r        io.Reader
	tee      io.Writer // sees every byte sent on (form routes); may be nil
	limit    int64
	n        int64
	tooLarge bool
	err      error
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.tooLarge {
		return 0, errBodyTooLarge
	}
	if b.limit > 0 {
		// One byte past the limit is enough to know; the bytes of the
		// read that crosses it are never forwarded (fasthttp writes
		// whatever n a Read returns, even alongside an error).
		if room := b.limit - b.n + 1; int64(len(p)) > room {
			p = p[:room]
		}
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.limit > 0 && b.n > b.limit {
		b.tooLarge = true
		return 0, errBodyTooLarge
	}
	if b.tee != nil && n > 0 {
		_, _ = b.tee.Write(p[:n])
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// upstreamBody is the origin's streamed response body as handed to
// fasthttp's response writer. Closing it (fasthttp does, after writing or
// on failure) closes the origin stream, which returns the origin
// connection to the pool, and only then recycles the call: the stream
// refers to the call's Response until it is closed.
type upstreamBody struct {
	c     *upstreamCall
	inner fasthttp.ReadCloserWithError
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.inner == nil {
		return 0, io.ErrClosedPipe
	}
	n, err := b.inner.Read(p)
	if err != nil && err != io.EOF {
		kind, _ := classifyUpstream(err)
		b.c.s.metrics.upstreamError(kind)
	}
	return n, err
}

// CloseWithError implements fasthttp.ReadCloserWithError; a non-nil err
// (the client went away) makes the origin connection be discarded.
func (b *upstreamBody) CloseWithError(err error) error {
	if b.inner == nil {
		return nil
	}
	cerr := b.inner.CloseWithError(err)
	b.inner = nil
	b.c.s.putCall(b.c)
	return cerr
}

// passThrough sends the request to the origin and streams the answer back.
// It returns the status written. tee, when not nil, sees the request body
// as it streams to the origin (form routes read their fields from it).
func (s *Server) passThrough(ctx *fasthttp.RequestCtx, tee io.Writer) int {
	return s.passThroughTo(ctx, &s.up, tee)
}

// passThroughTo is passThrough to a fixed upstream other than the origin
// (the sGTM tagging server).
func (s *Server) passThroughTo(ctx *fasthttp.RequestCtx, up *upstream, tee io.Writer) int {
	src := &ctx.Request.Header
	path, query, authority, form := splitTarget(src.RequestURI())
	if form == formInvalid {
		plainAnswer(ctx, fasthttp.StatusBadRequest, "Bad Request: unsupported request target.\n")
		s.metrics.Reject(RoutePass, "bad_target")
		return fasthttp.StatusBadRequest
	}
	stream := ctx.RequestBodyStream()
	cl := src.ContentLength()
	if up.maxBody > 0 && int64(cl) > up.maxBody {
		return s.bodyTooLarge(ctx)
	}

	c := s.getCall()
	handedOff := false
	defer func() {
		if !handedOff {
			s.putCall(c)
		}
	}()
	req := &c.req
	peer := peerAddr(ctx)
	trusted := s.trusted.Contains(peer)
	src.CopyTo(&req.Header)
	stripRequestHeaders(src, &req.Header, trusted)
	req.Header.SetNoDefaultContentType(true)

	// Host: shops route by it, so the client's value goes to the origin
	// unchanged. An absolute-form request-target overrides it (RFC 9112
	// §3.2.2), as fasthttp's ctx.Host() does; either way only the Host
	// header changes, never the address dialled.
	req.UseHostHeader = true
	reqHost := src.Host()
	if form == formAbsolute {
		reqHost = authority
		req.Header.SetHostBytes(authority)
	} else if len(reqHost) == 0 {
		req.Header.SetHostBytes(up.host)
	}
	req.Header.SetRequestURIBytes(path)
	u := req.URI()
	u.SetSchemeBytes(up.scheme)
	u.SetPathBytes(path)
	u.SetQueryStringBytes(query)

	s.setForwarded(src, &req.Header, c, peer, trusted, reqHost)

	if stream != nil {
		if cl != 0 {
			c.in = requestBody{r: stream, limit: up.maxBody, tee: tee}
			req.SetBodyStream(&c.in, cl)
		}
	} else if body := ctx.Request.Body(); len(body) > 0 {
		// Only without StreamRequestBody (tests, in-process use); with a
		// stream, Body() would read it all into memory.
		if up.maxBody > 0 && int64(len(body)) > up.maxBody {
			return s.bodyTooLarge(ctx)
		}
		req.SetBodyRaw(body)
		if tee != nil {
			_, _ = tee.Write(body)
		}
	}

	req.SetTimeout(up.timeout)
	resp := &c.resp
	err := up.client.Do(req, resp)
	if err != nil {
		switch {
		case c.in.tooLarge:
			return s.bodyTooLarge(ctx)
		case c.in.err != nil:
			// The client stopped sending its body: nothing the origin did.
			ctx.SetConnectionClose()
			code := fasthttp.StatusBadRequest
			var ne net.Error
			if errors.As(c.in.err, &ne) && ne.Timeout() {
				code = fasthttp.StatusRequestTimeout
			}
			plainAnswer(ctx, code, fasthttp.StatusMessage(code)+"\n")
			s.metrics.Reject(RoutePass, "client_body_error")
			return code
		}
		return s.upstreamFailed(ctx, up, err)
	}

	resp.Header.CopyTo(&ctx.Response.Header)
	ctx.Response.Header.SetNoDefaultContentType(true)
	stripResponseHeaders(&resp.Header, &ctx.Response.Header)
	if st, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
		c.out.inner = st
		ctx.Response.SetBodyStream(&c.out, resp.Header.ContentLength())
		handedOff = true
	}
	return resp.StatusCode()
}

func (s *Server) bodyTooLarge(ctx *fasthttp.RequestCtx) int {
	// The rest of the body is not read; closing avoids draining it.
	ctx.SetConnectionClose()
	plainAnswer(ctx, fasthttp.StatusRequestEntityTooLarge, "Request Entity Too Large\n")
	s.metrics.Reject(RoutePass, "body_too_large")
	return fasthttp.StatusRequestEntityTooLarge
}

// stripRequestHeaders removes from dst (a copy of src) the headers that
// must not reach the origin: hop-by-hop ones and the X-Forwarded-* that
// setForwarded rewrites; Forwarded and X-Real-IP too unless the peer is
// trusted. One pass over src; deletions only for headers present.
func stripRequestHeaders(src, dst *fasthttp.RequestHeader, trusted bool) {
	conn := false
	for k := range src.All() {
		switch headerKind(k) {
		case hkConnection:
			conn = true
			dst.DelBytes(k)
		case hkHop, hkForwarded:
			dst.DelBytes(k)
		case hkUntrusted:
			if !trusted {
				dst.DelBytes(k)
			}
		}
	}
	dst.ResetConnectionClose()
	if !conn {
		return
	}
	for _, v := range src.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) {
			// Host is needed to route at the origin; sidetrack sets it.
			if !equalFold(tok, fasthttp.HeaderHost) {
				dst.DelBytes(tok)
			}
		})
	}
}

// stripResponseHeaders removes from dst (a copy of the origin's response
// src) its hop-by-hop headers.
func stripResponseHeaders(src, dst *fasthttp.ResponseHeader) {
	conn := false
	for k := range src.All() {
		switch headerKind(k) {
		case hkConnection:
			conn = true
			dst.DelBytes(k)
		case hkHop:
			dst.DelBytes(k)
		}
	}
	// The client connection's fate is sidetrack's, not the origin's.
	dst.ResetConnectionClose()
	if !conn {
		return
	}
	for _, v := range src.PeekAll(fasthttp.HeaderConnection) {
		forEachToken(v, func(tok []byte) { dst.DelBytes(tok) })
	}
}

func forEachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if t = bytes.TrimSpace(t); len(t) > 0 && !equalFold(t, "close") && !equalFold(t, "keep-alive") {
			f(t)
		}
	}
}

// setForwarded adds X-Forwarded-For/-Proto/-Host to the origin request
// (stripRequestHeaders removed the client's). A trusted peer's chain is
// extended with the peer; anyone else's is replaced, since a client can
// write whatever it likes there.
func (s *Server) setForwarded(src, dst *fasthttp.RequestHeader, c *upstreamCall, peer netip.Addr, trusted bool, host []byte) {
	buf := c.buf[:0]
	if trusted {
		for _, v := range src.PeekAll(fasthttp.HeaderXForwardedFor) {
			if v = bytes.TrimSpace(v); len(v) > 0 {
				if len(buf) > 0 {
					buf = append(buf, ", "...)
				}
				buf = append(buf, v...)
			}
		}
	}
	if len(buf) > 0 {
		buf = append(buf, ", "...)
	}
	if peer.IsValid() {
		buf = peer.AppendTo(buf)
	} else {
		buf = append(buf, "unknown"...)
	}
	dst.AddBytesV(fasthttp.HeaderXForwardedFor, buf)
	c.buf = buf

	proto := "http"
	if trusted {
		v := src.Peek(fasthttp.HeaderXForwardedProto)
		if i := bytes.IndexByte(v, ','); i >= 0 {
			v = v[:i]
		}
		if equalFold(bytes.TrimSpace(v), "https") {
			proto = "https"
		}
	}
	dst.Add(fasthttp.HeaderXForwardedProto, proto)
	if len(host) > 0 {
		dst.AddBytesV(fasthttp.HeaderXForwardedHost, host)
	}
}

// classifyUpstream maps an origin exchange error to a metrics kind and
// the status answered: 504 when the origin did not answer in time, 502
// otherwise.
func classifyUpstream(err error) (kind string, code int) {
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return upstreamConnect, fasthttp.StatusGatewayTimeout
	case errors.As(err, &op) && op.Op == "dial":
		if op.Timeout() {
			return upstreamConnect, fasthttp.StatusGatewayTimeout
		}
		return upstreamConnect, fasthttp.StatusBadGateway
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &ne) && ne.Timeout():
		return upstreamTimeout, fasthttp.StatusGatewayTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, fasthttp.ErrConnectionClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return upstreamReset, fasthttp.StatusBadGateway
	case errors.Is(err, syscall.ECONNREFUSED):
		return upstreamConnect, fasthttp.StatusBadGateway
	}
	return upstreamOther, fasthttp.StatusBadGateway
}

const (
	page502 = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>502 Bad Gateway</title></head>` +
		`<body><h1>502 Bad Gateway</h1><p>The shop could not be reached. Please try again in a moment.</p></body></html>` + "\n"
	page504 = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>504 Gateway Timeout</title></head>` +
		`<body><h1>504 Gateway Timeout</h1><p>The shop took too long to answer. Please try again in a moment.</p></body></html>` + "\n"
)

// upstreamFailed answers a failed origin exchange with a short page,
// counts it, and logs it at most once per interval.
func (s *Server) upstreamFailed(ctx *fasthttp.RequestCtx, up *upstream, err error) int {
	kind, code := classifyUpstream(err)
	s.metrics.upstreamError(kind)
	if suppressed, ok := s.upLog.allow(); ok {
		s.log.Warn("origin request failed",
			zap.String("kind", kind),
			zap.Int("status", code),
			zap.String("upstream", up.client.Addr),
			zap.String("error", redactText(err.Error())),
			zap.Uint64("suppressed", suppressed),
		)
	}
	ctx.Response.Reset()
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	if code == fasthttp.StatusGatewayTimeout {
		ctx.SetBodyString(page504)
	} else {
		ctx.SetBodyString(page502)
	}
	return code
}

package proxy

import (
	"bytes"
	"strings"

	"github.com/valyala/fasthttp"
)

// corsPolicy decides which page origins may call the tracking routes with
// credentials (DESIGN §2 "CORS"). Allowed: the configured origins, or by
// default https:// + every name in hosts and their subdomains; a page on the
// request's own host is always allowed (same site). Never "*": gtag sends
// credentialed requests, and browsers reject "*" with credentials.
type corsPolicy struct {
	exact    map[string]struct{} // "https://shop.example"
	suffixes []string            // ".shop.example" (with the scheme checked separately)
	schemes  []string            // schemes allowed for suffix matches
}

func newCORSPolicy(origins, hosts []string) *corsPolicy {
	p := &corsPolicy{exact: map[string]struct{}{}}
	if len(origins) > 0 {
		for _, o := range origins {
			o = strings.TrimRight(strings.ToLower(o), "/")
			if rest, ok := strings.CutPrefix(o, "https://*."); ok {
				p.suffixes = append(p.suffixes, "."+rest)
				p.schemes = append(p.schemes, "https://")
				continue
			}
			p.exact[o] = struct{}{}
		}
		return p
	}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		p.exact["https://"+h] = struct{}{}
		p.suffixes = append(p.suffixes, "."+h)
		p.schemes = append(p.schemes, "https://")
	}
	return p
}

// allowed reports whether origin may read the answer. host is the request's
// Host header: an Origin naming the same host (any scheme) is same-site.
func (p *corsPolicy) allowed(origin, host []byte) bool {
	if len(origin) == 0 {
		return false
	}
	var buf [256]byte
	if len(origin) > len(buf) {
		return false
	}
	o := lowerASCII(append(buf[:0], origin...))
	if _, ok := p.exact[string(o)]; ok {
		return true
	}
	if i := bytes.Index(o, []byte("://")); i > 0 && len(host) > 0 && bytes.EqualFold(o[i+3:], host) {
		return true
	}
	for i, suf := range p.suffixes {
		if bytes.HasPrefix(o, []byte(p.schemes[i])) && bytes.HasSuffix(stripPort(o), []byte(suf)) {
			return true
		}
	}
	return false
}

// lowerASCII lower-cases b in place.
func lowerASCII(b []byte) []byte {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

// stripPort drops a trailing :port from an origin.
func stripPort(o []byte) []byte {
	i := bytes.LastIndexByte(o, ':')
	if i < 0 || bytes.IndexByte(o[i:], '/') >= 0 || bytes.IndexByte(o[i:], ']') >= 0 {
		return o
	}
	if i >= 1 && o[i-1] == '/' {
		return o
	}
	// "https://x" has a colon in the scheme; only strip when digits follow.
	for _, c := range o[i+1:] {
		if c < '0' || c > '9' {
			return o
		}
	}
	return o[:i]
}

// setCORS adds the headers of a real (non-preflight) answer when the
// request's Origin is allowed. It reports whether it did.
func (p *corsPolicy) setCORS(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	h := &ctx.Response.Header
	h.Add(fasthttp.HeaderVary, "Origin")
	if !p.allowed(origin, ctx.Request.Header.Host()) {
		return false
	}
	h.SetBytesV(fasthttp.HeaderAccessControlAllowOrigin, origin)
	h.Set(fasthttp.HeaderAccessControlAllowCredentials, "true")
	h.Set(fasthttp.HeaderAccessControlExposeHeaders, "Retry-After")
	return true
}

// preflight answers an OPTIONS request: 204 with the allow headers for an
// allowed origin, 403 otherwise (the browser then blocks the real request).
func (p *corsPolicy) preflight(ctx *fasthttp.RequestCtx, methods string) {
	origin := ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	h := &ctx.Response.Header
	h.Add(fasthttp.HeaderVary, "Origin")
	if !p.allowed(origin, ctx.Request.Header.Host()) {
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		return
	}
	h.SetBytesV(fasthttp.HeaderAccessControlAllowOrigin, origin)
	h.Set(fasthttp.HeaderAccessControlAllowCredentials, "true")
	h.Set(fasthttp.HeaderAccessControlAllowHeaders, "authorization, content-type, x-retry-count")
	h.Set(fasthttp.HeaderAccessControlAllowMethods, methods)
	h.Set(fasthttp.HeaderAccessControlMaxAge, "86400")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

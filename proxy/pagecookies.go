package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/sidetrack/sidetrack/enrich"
)

// PageCookier mints the identity cookies for a pass-through HTML answer,
// so a visitor's very first page view already carries a device id.
// enrich.Identity implements it; main wires it.
type PageCookier interface {
	PageCookies(dst []enrich.SetCookie, req *enrich.Request, analytics enrich.ConsentState) []enrich.SetCookie
}

// setPageCookies adds identity cookies to a pass-through answer when DESIGN
// §4 allows it: a GET for an HTML page, an answer that no shared cache may
// store (so one visitor's cookie is never served to another), and no
// cookie of the same name from the origin (the origin wins).
func (t *tracker) setPageCookies(ctx *fasthttp.RequestCtx, code int) {
	if t.pages == nil || !ctx.IsGet() || code < 200 || code >= 300 {
		return
	}
	h := &ctx.Response.Header
	if !bytes.HasPrefix(h.ContentType(), []byte("text/html")) || publiclyCacheable(h) {
		return
	}
	req := t.reqs.Get()
	defer t.reqs.Put(req)
	t.fillRequest(ctx, req, false)
	cookies := t.pages.PageCookies(nil, req, enrich.Unknown)
	for i := range cookies {
		if len(h.PeekCookie(cookies[i].Name)) > 0 {
			continue
		}
		writeCookie(h, &cookies[i])
	}
}

// publiclyCacheable reports whether a shared cache may store the answer:
// Cache-Control public or s-maxage, or a Vary: * that some caches ignore.
func publiclyCacheable(h *fasthttp.ResponseHeader) bool {
	cc := bytes.ToLower(h.Peek(fasthttp.HeaderCacheControl))
	if bytes.Contains(cc, []byte("public")) || bytes.Contains(cc, []byte("s-maxage")) {
		return true
	}
	return bytes.Contains(h.Peek(fasthttp.HeaderVary), []byte("*"))
}

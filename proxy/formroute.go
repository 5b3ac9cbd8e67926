package proxy

import (
	"time"

	"github.com/sidetrack/sidetrack/config"

	"github.com/valyala/fasthttp"
)

// formCaptureLimit bounds how much of an upload the form route keeps while
// streaming it to the origin: mapped fields come first in real forms, and
// file parts never need to be held.
const formCaptureLimit = 64 << 10

// formRoute serves one configured form path. Every request goes to the
// origin unchanged (streamed); a POST whose answer matches the form's
// success rule also emits one event from the mapped fields. The origin's
// answer reaches the browser untouched, whatever happens to the event.
type formRoute struct {
	t    *tracker
	form *config.Form
}

// capture keeps the first bytes of a streamed body as it passes through.
type capture struct {
	buf       []byte
	limit     int
	truncated bool
}

// Write implements io.Writer; it never fails, so the upload never does.
func (c *capture) Write(p []byte) (int, error) {
	room := c.limit - len(c.buf)
	if len(p) > room {
		c.truncated = true
		p = p[:max(room, 0)]
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (f *formRoute) handle(ctx *fasthttp.RequestCtx) {
	s := f.t.s
	start := ctx.Time()
	if !ctx.IsPost() {
		code := s.passThrough(ctx, nil)
		f.t.setPageCookies(ctx, code)
		s.metrics.ObserveRequest(RoutePass, code, time.Since(start))
		return
	}
	capt := &capture{limit: formCaptureLimit}
	// Read what the handler needs from the request before the origin
	// call: afterwards the request may be half-consumed.
	ct := append([]byte(nil), ctx.Request.Header.ContentType()...)
	page := append([]byte(nil), ctx.Request.Header.Referer()...)
	code := s.passThrough(ctx, capt)
	s.metrics.ObserveRequest(RouteForm, code, time.Since(start))
	if !formSucceeded(f.form.Success, f.form.Path, code, ctx.Response.Header.Peek(fasthttp.HeaderLocation)) {
		return
	}
	t := f.t
	sc := t.getScratch()
	defer t.putScratch(sc)
	var vals []formValue
	vals, err := formFields(vals, ct, capt.buf, capt.truncated, f.form.Fields)
	if err != nil {
		s.metrics.Reject(RouteForm, "unparsable_form")
		return
	}
	buildFormEvent(&sc.d, *f.form, vals, page, nil, t.now())
	// The answer is the origin's: sink failures are counted, not shown.
	t.process(ctx, sc, RouteForm, false, modeDetached)
}

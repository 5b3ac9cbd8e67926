package enrich

import (
	"net/netip"
	"sync"
	"time"
	"unsafe"
)

// Request is the copied view of an HTTP request that the pipeline may use.
// The proxy fills it from the fasthttp request before calling Process; it
// owns its bytes (like Event) and is valid until Release.
type Request struct {
	ReceivedAt time.Time
	// ClientIP is the first X-Forwarded-For address not in trusted_proxies,
	// or the peer address.
	ClientIP  netip.Addr
	UserAgent string
	Host      string
	// Secure is true when the client used https (directly or via a trusted
	// proxy's X-Forwarded-Proto).
	Secure bool
	// GPC is the Sec-GPC: 1 header (Global Privacy Control).
	GPC bool
	// Server is true for requests authenticated with an ingest server key:
	// no cookies are read or set, consent comes from the payload or the
	// server default, validation is strict.
	Server bool
	// Cookies holds the request's cookies that the pipeline may read.
	Cookies []Cookie

	arena []byte
}

// Cookie is one request cookie.
type Cookie struct {
	Name, Value string
}

// Cookie returns the value of the named request cookie.
func (r *Request) Cookie(name string) (string, bool) {
	for i := range r.Cookies {
		if r.Cookies[i].Name == name {
			return r.Cookies[i].Value, true
		}
	}
	return "", false
}

// Intern copies b into the request's arena (see Event.Intern).
func (r *Request) Intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(r.arena)-len(r.arena) < len(b) {
		n := max(2*cap(r.arena), 512, len(b))
		r.arena = make([]byte, 0, n)
	}
	start := len(r.arena)
	r.arena = append(r.arena, b...)
	return unsafe.String(&r.arena[start], len(b))
}

// Reset clears r for reuse, keeping its buffers.
func (r *Request) Reset() {
	arena, cookies := r.arena[:0], r.Cookies[:0]
	clear(cookies[:cap(cookies)])
	*r = Request{arena: arena, Cookies: cookies}
}

// RequestPool recycles Requests.
type RequestPool struct{ p sync.Pool }

// Get returns a reset Request.
func (rp *RequestPool) Get() *Request {
	if v := rp.p.Get(); v != nil {
		return v.(*Request)
	}
	return &Request{}
}

// Put resets r and returns it to the pool.
func (rp *RequestPool) Put(r *Request) {
	if cap(r.arena) > 32<<10 {
		r.arena = nil
	}
	r.Reset()
	rp.p.Put(r)
}

// Package proxy is sidetrack's HTTP edge: the public fasthttp server that
// sits on the shop's own domain, and the admin server.
//
// # What it owns
//
// The public server dispatches each request to a tracking route (GA4,
// Segment, /collect, forms, scripts; registered by registerTracking) or
// passes it through to the configured origin. Pass-through is a reverse
// proxy with exactly one upstream: cfg.Origin. Nothing in a request can
// change where sidetrack connects — not an absolute-form request line
// ("GET http://evil/ HTTP/1.1", which makes fasthttp's ctx.Host() return
// "evil"), not a forged Host or X-Forwarded-Host, not CONNECT. Such values
// can at most change the Host header the origin sees, exactly as a client
// talking to the origin directly could.
//
// Pass-through preserves the method, the raw path (no normalisation), the
// raw query, the body and every end-to-end header, including the client's
// Host header, which goes to the origin unchanged because shops route by
// it (an absolute-form target's authority replaces it, per RFC 9112
// §3.2.2; a request without Host gets the origin's). Hop-by-hop headers
// (Connection and the headers it names, Keep-Alive, Proxy-*, TE, Trailer,
// Transfer-Encoding, Upgrade) are removed in both directions.
// X-Forwarded-For is extended when the peer is in trusted_proxies and
// replaced otherwise; X-Forwarded-Proto is believed from trusted peers
// only; X-Forwarded-Host is the request's host. Forwarded and X-Real-IP
// from untrusted peers are dropped. Redirects are passed back, never
// followed; origin error answers pass through as they are; every
// Set-Cookie survives. Request and response bodies stream in both
// directions and are never held whole in memory.
//
// The admin server answers /healthz, /readyz and /metrics; later work adds
// endpoints with HandleAdmin.
//
// # Lifetime rule
//
// Nothing obtained from a *fasthttp.RequestCtx outlives the handler:
// fasthttp reuses the request, its headers and every byte slice Peek
// returns as soon as the handler returns. Values that must live longer
// (an event's fields) are copied. No *fasthttp.RequestCtx leaves this
// package. The one deliberate exception is a pass-through response body:
// the origin's body stream is handed to fasthttp, which writes it after the
// handler returned and closes it, and only that close recycles the
// per-request state.
//
// # Status codes answered by sidetrack itself
//
//   - 400: malformed request, or an unsupported request-target form.
//   - 405 (with Allow): TRACE, on every route. It would echo the request,
//     cookies and credentials included, back to the caller.
//   - 408: the client did not send its request within server.read_timeout
//     (this is what cuts off slowloris clients).
//   - 413: a body over its limit (server.max_request_body for
//     pass-through, per-route limits on tracking routes, decompressed size
//     for gzip bodies).
//   - 421: the request's host is not in hosts (when hosts is set); the
//     request was not meant for this shop.
//   - 431: request line plus headers larger than server.max_header_bytes.
//   - 501: CONNECT (sidetrack is not a forward proxy; the connection is
//     closed), and WebSocket upgrades (see below).
//   - 502: the origin could not be reached or broke the connection; 504:
//     the origin did not answer within server.upstream_timeout. Both carry a
//     short HTML page and are counted in
//     sidetrack_upstream_errors_total{kind}; they are logged at most once
//     a second with a count of the suppressed ones.
//
// Every rejection is counted in sidetrack_ingest_rejected_total{route,
// reason}.
//
// # WebSockets are not proxied
//
// A request with "Upgrade: websocket" gets 501 with an explanation: a
// tracking sidecar has no business holding long-lived tunnels to the
// shop, and fasthttp's pooled client cannot carry them. Shops that use
// WebSockets serve them from a host or path that bypasses sidetrack.
// Other upgrades (h2c) are ignored as RFC 9110 allows: the Upgrade header
// is dropped and the request proceeds over HTTP/1.1.
//
// # Timeouts
//
// server.read_timeout bounds reading a whole request (headers and body),
// server.write_timeout writing a whole response, server.idle_timeout the
// wait for the next request on a keep-alive connection;
// server.upstream_timeout bounds a whole exchange with the origin,
// including streaming its body. All are always set: fasthttp's own
// defaults are unlimited.
package proxy

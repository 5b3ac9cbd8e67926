package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// adminRoute is one admin endpoint.
type adminRoute struct {
	h         fasthttp.RequestHandler
	needToken bool
}

func (s *Server) initAdmin() {
	s.admin = s.newFasthttpServer("sidetrack-admin", s.handleAdmin)
	s.admin.ErrorHandler = func(ctx *fasthttp.RequestCtx, err error) {
		plainAnswer(ctx, fasthttp.StatusBadRequest, "Bad Request\n")
	}
	s.adminRoutes = make(map[string]adminRoute)
	if tok := s.cfg.Admin.Token.Reveal(); tok != "" {
		s.adminAuth = true
		s.adminToken = sha256.Sum256([]byte(tok))
	}
	s.HandleAdmin("/healthz", s.healthz, false)
	s.HandleAdmin("/readyz", s.readyz, false)
	s.HandleAdmin("/metrics", s.serveMetrics, true)
}

// HandleAdmin adds (or replaces) an admin endpoint at the exact path.
// With needToken, the configured admin.token is required as a bearer
// token (when no token is configured the endpoint is open, as the admin
// port is meant to listen on localhost or a private network). Safe to call
// while the admin server runs.
func (s *Server) HandleAdmin(path string, h fasthttp.RequestHandler, needToken bool) {
	s.adminMu.Lock()
	s.adminRoutes[path] = adminRoute{h: h, needToken: needToken}
	s.adminMu.Unlock()
}

// ServeAdmin runs the admin server on ln until ShutdownAdmin; it returns
// nil after a graceful shutdown.
func (s *Server) ServeAdmin(ln net.Listener) error {
	return s.adminLns.serve(s.admin, ln)
}

// ShutdownAdmin stops the admin server, waiting for in-flight requests
// until ctx ends.
func (s *Server) ShutdownAdmin(ctx context.Context) error {
	s.stopStatus()
	return s.adminLns.shutdown(ctx, s.admin)
}

func (s *Server) handleAdmin(ctx *fasthttp.RequestCtx) {
	s.adminMu.RLock()
	r, ok := s.adminRoutes[string(ctx.Path())]
	s.adminMu.RUnlock()
	if !ok {
		plainAnswer(ctx, fasthttp.StatusNotFound, "Not Found\n")
		return
	}
	if r.needToken && !s.adminAuthorized(ctx) {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="sidetrack-admin"`)
		plainAnswer(ctx, fasthttp.StatusUnauthorized, "Unauthorized: a valid admin bearer token is required.\n")
		return
	}
	r.h(ctx)
}

// adminAuthorized checks "Authorization: Bearer <token>". Both sides are
// hashed first so the comparison is constant-time in the token's length
// as well as its content.
func (s *Server) adminAuthorized(ctx *fasthttp.RequestCtx) bool {
	if !s.adminAuth {
		return true
	}
	v := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	const prefix = "Bearer "
	if !hasPrefixFold(v, prefix) {
		return false
	}
	got := sha256.Sum256(v[len(prefix):])
	return subtle.ConstantTimeCompare(got[:], s.adminToken[:]) == 1
}

// healthz: the process is alive and serving.
func (s *Server) healthz(ctx *fasthttp.RequestCtx) {
	plainAnswer(ctx, fasthttp.StatusOK, "ok\n")
}

// readyz: 503 once draining began or when Options.Ready reports a
// problem, so the load balancer stops sending traffic; the origin's
// health is not consulted.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	if s.draining.Load() {
		plainAnswer(ctx, fasthttp.StatusServiceUnavailable, "draining\n")
		return
	}
	if s.opts.Ready != nil {
		if err := s.opts.Ready.Ready(); err != nil {
			plainAnswer(ctx, fasthttp.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
			return
		}
	}
	plainAnswer(ctx, fasthttp.StatusOK, "ok\n")
}

// serveMetrics writes the proxy's set, the other parts' sets (delivery,
// dedup) and the library's go_* and process_* metrics in Prometheus text
// format.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	s.metrics.WritePrometheus(ctx)
	for _, m := range s.opts.Metrics {
		m.WritePrometheus(ctx)
	}
	metrics.WriteProcessMetrics(ctx)
}

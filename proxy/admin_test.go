package proxy

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/sidetrack/sidetrack/config"
)

type fakeReady struct{ err atomic.Pointer[error] }

func (f *fakeReady) Ready() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestAdminEndpoints(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Admin.Token = config.Secret("s3cret-token")
	ready := &fakeReady{}
	p := startProxy(t, cfg, Options{Ready: ready}, func(s *Server) {
		s.HandleAdmin("/status.json", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) }, true)
		s.HandleAdmin("/open", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("open") }, false)
	})
	base := "http://" + p.adminAddr

	// One pass-through request so /metrics has something to show.
	get(t, p.addr, "/", "shop.test")

	tests := []struct {
		path, token string
		want        int
		contains    string
	}{
		{"/healthz", "", 200, "ok"},
		{"/readyz", "", 200, "ok"},
		{"/metrics", "", 401, "token"},
		{"/metrics", "wrong", 401, ""},
		{"/metrics", "s3cret-token-longer", 401, ""},
		{"/metrics", "s3cret-token", 200, `sidetrack_requests_total{route="pass",code="200"} 1`},
		{"/metrics", "s3cret-token", 200, "go_goroutines"},
		{"/metrics", "s3cret-token", 200, "process_resident_memory_bytes"},
		{"/metrics", "s3cret-token", 200, `sidetrack_request_duration_seconds_bucket{route="pass",le="0.0005"}`},
		{"/metrics", "s3cret-token", 200, `sidetrack_upstream_errors_total{kind="connect"} 0`},
		{"/status.json", "", 401, ""},
		{"/status.json", "s3cret-token", 200, `{"ok":true}`},
		{"/open", "", 200, "open"},
		{"/nope", "s3cret-token", 404, ""},
	}
	for _, tc := range tests {
		code, body, hdr := httpGet(t, base+tc.path, tc.token)
		if code != tc.want || !strings.Contains(body, tc.contains) {
			t.Errorf("%s (token %q): %d, body contains %q: %v", tc.path, tc.token, code, tc.contains, strings.Contains(body, tc.contains))
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.path)
		}
	}
	// A raw "Authorization: bearer" scheme is case-insensitive.
	resp, _ := rawExchange(t, p.adminAddr, "GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: bearer s3cret-token\r\nConnection: close\r\n\r\n", "GET")
	if resp.StatusCode != 200 {
		t.Errorf("lowercase bearer scheme: %d", resp.StatusCode)
	}

	// Readiness follows Options.Ready, then the drain state.
	notReady := errors.New("spool not writable")
	ready.err.Store(&notReady)
	if code, body, _ := httpGet(t, base+"/readyz", ""); code != 503 || !strings.Contains(body, "spool not writable") {
		t.Errorf("/readyz with failing Ready: %d %q", code, body)
	}
	ready.err.Store(nil)
	if code, _, _ := httpGet(t, base+"/readyz", ""); code != 200 {
		t.Errorf("/readyz after recovery: %d", code)
	}
	p.Drain()
	if code, body, _ := httpGet(t, base+"/readyz", ""); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("/readyz after Drain: %d %q", code, body)
	}
	if code, _, _ := httpGet(t, base+"/healthz", ""); code != 200 {
		t.Errorf("/healthz after Drain: %d", code)
	}
	// Draining does not stop the public port until Shutdown.
	if resp, _ := get(t, p.addr, "/", "shop.test"); resp.StatusCode != 200 {
		t.Errorf("public port after Drain: %d", resp.StatusCode)
	}
}

func TestAdminWithoutToken(t *testing.T) {
	p := startProxy(t, testConfig("http://"+closedAddr(t)), Options{}, nil)
	// The origin being down does not make sidetrack unready.
	get(t, p.addr, "/", "shop.test")
	if code, _, _ := httpGet(t, "http://"+p.adminAddr+"/readyz", ""); code != 200 {
		t.Errorf("/readyz with the origin down: %d, want 200", code)
	}
	if code, body, _ := httpGet(t, "http://"+p.adminAddr+"/metrics", ""); code != 200 || !strings.Contains(body, `sidetrack_upstream_errors_total{kind="connect"} 1`) {
		t.Errorf("/metrics without a configured token: %d", code)
	}
}

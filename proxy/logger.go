package proxy

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// fasthttpLogger replaces fasthttp's default logger, which writes to the
// standard logger and interpolates raw request bytes (header snippets,
// request URIs with their tracking ids) into its messages. Only the format
// string, numbers and network addresses survive; strings and byte slices
// are replaced by their length and error texts are cut before the first
// quoted fragment. Messages are rate-limited: under a flood of bad
// connections one line per interval is enough.
type fasthttpLogger struct {
	log   *zap.Logger
	limit *logLimiter
}

// Printf implements fasthttp.Logger.
func (l fasthttpLogger) Printf(format string, args ...any) {
	suppressed, ok := l.limit.allow()
	if !ok {
		return
	}
	safe := make([]any, len(args))
	for i, a := range args {
		safe[i] = redactArg(a)
	}
	l.log.Warn("fasthttp", zap.String("detail", fmt.Sprintf(format, safe...)), zap.Uint64("suppressed", suppressed))
}

func redactArg(a any) any {
	switch v := a.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, time.Duration:
		return v
	case net.Addr:
		return v.String()
	case error:
		return redactText(v.Error())
	case string:
		return fmt.Sprintf("<%d bytes>", len(v))
	case []byte:
		return fmt.Sprintf("<%d bytes>", len(v))
	default:
		return fmt.Sprintf("<%T>", a)
	}
}

// redactText keeps the diagnostic part of an error message: fasthttp and
// net errors quote request data (%q) or append "contents:" snippets after
// the part that names the problem.
func redactText(s string) string {
	for _, cut := range []string{`"`, "contents:", "body="} {
		if i := strings.Index(s, cut); i >= 0 {
			s = s[:i] + "…"
		}
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// logLimiter lets one log line through per interval and counts the rest,
// so an outage (origin down, flood of malformed requests) costs one line a
// second instead of one per request.
type logLimiter struct {
	interval   time.Duration
	next       atomic.Int64 // unix nanos before which lines are suppressed
	suppressed atomic.Uint64
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval}
}

// allow reports whether a line may be written now and, if so, how many
// were suppressed since the last one.
func (l *logLimiter) allow() (uint64, bool) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(l.interval)) {
		l.suppressed.Add(1)
		return 0, false
	}
	return l.suppressed.Swap(0), true
}

// accessLog writes one sampled access-log line. It runs inside the handler
// (the zap encoder copies the byte fields before returning), and never
// logs query strings: on tracking routes they carry client and user ids,
// on shop pages they carry whatever the shop puts there.
func (s *Server) accessLog(ctx *fasthttp.RequestCtx, route string, code int, d time.Duration) {
	if !s.cfg.Log.Access {
		return
	}
	if n := s.cfg.Log.AccessSample; n > 1 && s.accessN.Add(1)%uint64(n) != 0 {
		return
	}
	s.log.Info("access",
		zap.ByteString("method", ctx.Method()),
		zap.ByteString("path", ctx.Path()),
		zap.String("route", route),
		zap.Int("status", code),
		zap.Duration("duration", d),
	)
}

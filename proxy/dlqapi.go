package proxy

import (
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidetrack/sidetrack/config"
)

// DeadLetters is what the admin API needs from delivery's dead-letter
// queues and quarantine (DESIGN §5). forward's Spool implements it; main
// wires it with HandleDeadLetters. Show methods write NDJSON, one entry
// per line, oldest first.
type DeadLetters interface {
	// DLQList counts dead letters per destination.
	DLQList() (map[string]int, error)
	// DLQShow writes up to limit dead letters of dest.
	DLQShow(dest string, limit int, w io.Writer) error
	// DLQReplay re-enqueues dest's dead letters that died within since
	// (0 = all), for dest only, and returns how many.
	DLQReplay(dest string, since time.Duration) (int, error)
	// DLQPurge deletes dest's dead letters and returns how many.
	DLQPurge(dest string) (int, error)
	// QuarantineList counts quarantined events.
	QuarantineList() (int, error)
	// QuarantineShow writes up to limit quarantined events.
	QuarantineShow(limit int, w io.Writer) error
}

// HandleDeadLetters adds the DLQ and quarantine admin routes:
//
//	GET  /dlq                       {"destinations":{"name":count,…},"quarantine":count}
//	GET  /dlq/<dest>?limit=N        NDJSON dead letters (default 100)
//	POST /dlq/<dest>/replay?since=D re-enqueue (D like 24h or 7d; none = all) → {"replayed":n}
//	POST /dlq/<dest>/purge          delete → {"purged":n}
//	GET  /quarantine                {"events":count}
//	GET  /quarantine/show?limit=N   NDJSON quarantined events
//
// Every route needs the admin token when one is configured; replay and
// purge change data and are refused (403) when admin.token is not set,
// even though the admin port is otherwise open then. Routes exist for
// every configured destination and for any other that has a queue when
// this is called (a destination removed from the config).
func (s *Server) HandleDeadLetters(d DeadLetters) {
	a := &dlqAPI{d: d, tokenSet: s.adminAuth}
	s.HandleAdmin("/dlq", a.list, true)
	s.HandleAdmin("/quarantine", a.quarantineCount, true)
	s.HandleAdmin("/quarantine/show", a.quarantineShow, true)
	names := map[string]bool{}
	for _, dc := range s.cfg.Destinations {
		names[dc.Name] = true
	}
	if counts, err := d.DLQList(); err == nil {
		for n := range counts {
			names[n] = true
		}
	}
	for name := range names {
		s.HandleAdmin("/dlq/"+name, a.show(name), true)
		s.HandleAdmin("/dlq/"+name+"/replay", a.replay(name), true)
		s.HandleAdmin("/dlq/"+name+"/purge", a.purge(name), true)
	}
}

type dlqAPI struct {
	d        DeadLetters
	tokenSet bool
}

func (a *dlqAPI) list(ctx *fasthttp.RequestCtx) {
	if !dlqMethod(ctx, fasthttp.MethodGet) {
		return
	}
	counts, err := a.d.DLQList()
	if err != nil {
		dlqError(ctx, err)
		return
	}
	q, err := a.d.QuarantineList()
	if err != nil {
		dlqError(ctx, err)
		return
	}
	dlqJSON(ctx, fasthttp.StatusOK, map[string]any{"destinations": counts, "quarantine": q})
}

func (a *dlqAPI) show(dest string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !dlqMethod(ctx, fasthttp.MethodGet) {
			return
		}
		limit, ok := dlqLimit(ctx)
		if !ok {
			return
		}
		dlqNDJSON(ctx, func(w io.Writer) error { return a.d.DLQShow(dest, limit, w) })
	}
}

func (a *dlqAPI) replay(dest string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !dlqMethod(ctx, fasthttp.MethodPost) || !a.mayChange(ctx) {
			return
		}
		var since time.Duration
		if v := ctx.QueryArgs().Peek("since"); len(v) > 0 {
			d, err := config.ParseDuration(string(v))
			if err != nil || d < 0 {
				plainAnswer(ctx, fasthttp.StatusBadRequest, "Bad Request: since must be a duration such as 24h or 7d.\n")
				return
			}
			since = d.D()
		}
		n, err := a.d.DLQReplay(dest, since)
		if err != nil {
			dlqError(ctx, err)
			return
		}
		dlqJSON(ctx, fasthttp.StatusOK, map[string]int{"replayed": n})
	}
}

func (a *dlqAPI) purge(dest string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !dlqMethod(ctx, fasthttp.MethodPost) || !a.mayChange(ctx) {
			return
		}
		n, err := a.d.DLQPurge(dest)
		if err != nil {
			dlqError(ctx, err)
			return
		}
		dlqJSON(ctx, fasthttp.StatusOK, map[string]int{"purged": n})
	}
}

func (a *dlqAPI) quarantineCount(ctx *fasthttp.RequestCtx) {
	if !dlqMethod(ctx, fasthttp.MethodGet) {
		return
	}
	n, err := a.d.QuarantineList()
	if err != nil {
		dlqError(ctx, err)
		return
	}
	dlqJSON(ctx, fasthttp.StatusOK, map[string]int{"events": n})
}

func (a *dlqAPI) quarantineShow(ctx *fasthttp.RequestCtx) {
	if !dlqMethod(ctx, fasthttp.MethodGet) {
		return
	}
	limit, ok := dlqLimit(ctx)
	if !ok {
		return
	}
	dlqNDJSON(ctx, func(w io.Writer) error { return a.d.QuarantineShow(limit, w) })
}

// mayChange refuses changes when no admin token is configured: the admin
// port is then open to whoever reaches it, which is acceptable for
// reading, not for replaying or deleting events.
func (a *dlqAPI) mayChange(ctx *fasthttp.RequestCtx) bool {
	if a.tokenSet {
		return true
	}
	plainAnswer(ctx, fasthttp.StatusForbidden,
		"Forbidden: set admin.token to replay or purge through the admin API (or stop sidetrack and use the CLI).\n")
	return false
}

func dlqMethod(ctx *fasthttp.RequestCtx, method string) bool {
	if string(ctx.Method()) == method {
		return true
	}
	ctx.Response.Header.Set(fasthttp.HeaderAllow, method)
	plainAnswer(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed: use "+method+".\n")
	return false
}

// dlqLimit reads ?limit=N (1..10000; default 100).
func dlqLimit(ctx *fasthttp.RequestCtx) (int, bool) {
	v := ctx.QueryArgs().Peek("limit")
	if len(v) == 0 {
		return 100, true
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 1 || n > 10000 {
		plainAnswer(ctx, fasthttp.StatusBadRequest, "Bad Request: limit must be between 1 and 10000.\n")
		return 0, false
	}
	return n, true
}

func dlqJSON(ctx *fasthttp.RequestCtx, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		dlqError(ctx, err)
		return
	}
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(append(b, '\n'))
}

func dlqNDJSON(ctx *fasthttp.RequestCtx, write func(io.Writer) error) {
	ctx.SetContentType("application/x-ndjson")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	if err := write(ctx); err != nil {
		ctx.ResetBody()
		dlqError(ctx, err)
	}
}

// dlqError answers 500 with the error: admin callers are operators,
// and these errors carry no request data.
func dlqError(ctx *fasthttp.RequestCtx, err error) {
	plainAnswer(ctx, fasthttp.StatusInternalServerError, "Internal Server Error: "+err.Error()+"\n")
}

package enrich

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// The shared dedup tier (DESIGN §4 "Dedup"): replicas behind one load
// balancer claim keys in one Redis with SET key 1 NX PX <window>, so the
// same order sent by gtag to replica A and by the backend to replica B is
// still one event. Redis only ever adds duplicates to what the local
// layers found; when it is slow or down the local answer stands
// (redis_fallback), so Redis can never fail or stall a request beyond its
// timeout.

const (
	dedupRedisPrefix = "sidetrack:dedup:"
	// dedupMaxDeferredDeletes bounds the deletes kept for retry while
	// Redis is unreachable.
	dedupMaxDeferredDeletes = 1 << 16
)

type dedupRedis struct {
	c       rueidis.Client
	own     bool
	timeout time.Duration
	backoff time.Duration
	ttlMS   int64
	log     *zap.Logger

	// downUntil (unix ns, wall clock) skips Redis after a failure.
	downUntil atomic.Int64
	lastWarn  atomic.Int64

	// deferred are keys whose DEL failed: a released key left in Redis
	// would make the client's retry a duplicate for the whole window.
	mu       sync.Mutex
	deferred [][16]byte
}

// dialDedupRedis connects to addr (host:port or a redis:// URL). A Redis
// that is down at start is not an error: the client reconnects on use and
// the stage falls back to local checks meanwhile.
func dialDedupRedis(addr string, log *zap.Logger) (rueidis.Client, error) {
	var opt rueidis.ClientOption
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = rueidis.ParseURL(addr); err != nil {
			return nil, fmt.Errorf("dedup.redis: %w", err)
		}
	} else {
		opt.InitAddress = []string{addr}
	}
	// One server (or a proxy in front of several); no client-side cache
	// (keys are written, never read back); writes are never retried
	// (a retried SET NX could report our own write as a duplicate).
	opt.ForceSingleClient = true
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.Dialer.Timeout = time.Second
	opt.ConnWriteTimeout = 5 * time.Second
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, fmt.Errorf("dedup.redis: %w", err)
	}
	if err != nil {
		log.Warn("dedup: Redis unreachable at start; deduplicating locally until it answers", zap.Error(err))
	}
	return c, nil
}

func newDedupRedis(c rueidis.Client, own bool, window, timeout, backoff time.Duration, log *zap.Logger) *dedupRedis {
	if timeout <= 0 {
		timeout = dedupDefaultRedisTO
	}
	if backoff <= 0 {
		backoff = dedupDefaultRedisBO
	}
	return &dedupRedis{c: c, own: own, timeout: timeout, backoff: backoff, ttlMS: max(window.Milliseconds(), 1), log: log}
}

func dedupRedisKey(k [16]byte) string {
	var b [len(dedupRedisPrefix) + 32]byte
	copy(b[:], dedupRedisPrefix)
	hex.Encode(b[len(dedupRedisPrefix):], k[:])
	return string(b[:])
}

func (r *dedupRedis) available() bool { return time.Now().UnixNano() >= r.downUntil.Load() }

// failed opens the breaker for backoff and warns at most once per backoff.
func (r *dedupRedis) failed(err error) {
	now := time.Now().UnixNano()
	r.downUntil.Store(now + int64(r.backoff))
	last := r.lastWarn.Load()
	if now-last >= int64(max(r.backoff, 10*time.Second)) && r.lastWarn.CompareAndSwap(last, now) {
		r.log.Warn("dedup: Redis failed; deduplicating locally", zap.Error(err), zap.Duration("retry_in", r.backoff))
	}
}

// claim runs SET NX PX for every key the request reserved locally (events
// still Accepted with a DedupKey), in one pipelined round trip. A key that
// exists makes its event a Duplicate and undoes the local reservation.
func (r *dedupRedis) claim(d *Dedup, events []*Event, res *Result) {
	var idx []int
	for i, e := range events {
		if i < len(res.Events) && res.Events[i].Outcome == Accepted && e.DedupKey != ([16]byte{}) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return
	}
	// Deletes still owed from an outage go first: a retry of a released
	// event must not find its own stale claim.
	r.mu.Lock()
	owed := len(r.deferred) > 0
	r.mu.Unlock()
	if owed {
		r.flushDeletes()
	}
	if !r.available() {
		for _, i := range idx {
			d.cRedisFallback.Add(1)
			d.countAccepted(d.pendingFP(events[i]))
		}
		return
	}
	cmds := make(rueidis.Commands, len(idx))
	for j, i := range idx {
		cmds[j] = r.c.B().Set().Key(dedupRedisKey(events[i].DedupKey)).Value("1").Nx().PxMilliseconds(r.ttlMS).Build()
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	results := r.c.DoMulti(ctx, cmds...)
	cancel()
	var ferr error
	for j, i := range idx {
		e := events[i]
		err := results[j].Error()
		switch {
		case err == nil:
			d.countAccepted(d.pendingFP(e))
		case rueidis.IsRedisNil(err):
			// Another replica (or this one, before a restart) has it.
			d.unreserve(e, d.now().UnixNano())
			d.duplicate(e, &res.Events[i])
		default:
			ferr = err
			d.cRedisFallback.Add(1)
			d.countAccepted(d.pendingFP(e))
		}
	}
	if ferr != nil {
		r.failed(ferr)
	}
}

// release deletes released keys from Redis; what cannot be deleted now is
// retried by the stage's loop.
func (r *dedupRedis) release(keys [][16]byte) {
	if r.available() && r.del(keys) == nil {
		return
	}
	r.deferDeletes(keys)
}

func (r *dedupRedis) del(keys [][16]byte) error {
	cmd := r.c.B().Del().Key(dedupRedisKey(keys[0]))
	for _, k := range keys[1:] {
		cmd = cmd.Key(dedupRedisKey(k))
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	err := r.c.Do(ctx, cmd.Build()).Error()
	if err != nil {
		r.failed(err)
	}
	return err
}

func (r *dedupRedis) deferDeletes(keys [][16]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if room := dedupMaxDeferredDeletes - len(r.deferred); room < len(keys) {
		keys = keys[:max(room, 0)]
	}
	r.deferred = append(r.deferred, keys...)
}

// flushDeletes retries deferred deletes. Nil-safe (no Redis tier).
func (r *dedupRedis) flushDeletes() {
	if r == nil || !r.available() {
		return
	}
	r.mu.Lock()
	keys := r.deferred
	r.deferred = nil
	r.mu.Unlock()
	for len(keys) > 0 {
		n := min(len(keys), 512)
		if r.del(keys[:n]) != nil {
			r.deferDeletes(keys)
			return
		}
		keys = keys[n:]
	}
}

func (r *dedupRedis) close() {
	if r != nil && r.own {
		r.c.Close()
	}
}

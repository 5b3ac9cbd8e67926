package enrich

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// joinRedis shares browser contexts between replicas (join.redis): a
// backend event that lands on another replica than the visitor's browser
// events still finds their context. Writes leave the request path through
// a bounded queue (a full queue drops the write: the join is a best
// effort); a server event that misses locally asks Redis once, bounded by
// a short timeout.
type joinRedis struct {
	c       rueidis.Client
	ttl     time.Duration
	timeout time.Duration
	queue   chan joinWrite
	wg      sync.WaitGroup
	log     *zap.Logger

	hits, errors, dropped atomic.Uint64
}

// joinWrite stores one immutable context blob (joinblob.go) under its
// keys; the writer decodes it off the request path.
type joinWrite struct {
	keys []string
	blob []byte
}

const (
	joinRedisPrefix  = "sidetrack:join:"
	joinRedisQueue   = 4096
	joinRedisBatch   = 256
	joinRedisTimeout = 50 * time.Millisecond
)

// joinWire is a context as stored in Redis.
type joinWire struct {
	DeviceID        string   `json:"d,omitempty"`
	AnonymousID     string   `json:"a,omitempty"`
	SessionID       string   `json:"s,omitempty"`
	GASessionID     string   `json:"gs,omitempty"`
	GASessionNumber int64    `json:"gn,omitempty"`
	ClickIDs        ClickIDs `json:"c"`
	ClickAt         int64    `json:"ca,omitempty"`
	FBC             string   `json:"fbc,omitempty"`
	FBP             string   `json:"fbp,omitempty"`
	Consent         [4]uint8 `json:"k"`
	GPC             bool     `json:"gpc,omitempty"`
	FirstTouch      Touch    `json:"ft"`
	LastTouch       Touch    `json:"lt"`
}

func (c *joinCtx) wire() joinWire {
	w := joinWire{
		DeviceID: c.deviceID, AnonymousID: c.anonymousID, SessionID: c.sessionID,
		GASessionID: c.gaSessionID, GASessionNumber: c.gaSessionNumber, ClickIDs: c.clickIDs,
		FBC: c.fbc, FBP: c.fbp, GPC: c.gpc, FirstTouch: c.firstTouch, LastTouch: c.lastTouch,
		Consent: [4]uint8{uint8(c.analytics), uint8(c.ads), uint8(c.adUserData), uint8(c.adPers)},
	}
	if !c.clickAt.IsZero() {
		w.ClickAt = c.clickAt.UnixMilli()
	}
	return w
}

func (w *joinWire) ctx() *joinCtx {
	c := &joinCtx{
		deviceID: w.DeviceID, anonymousID: w.AnonymousID, sessionID: w.SessionID,
		gaSessionID: w.GASessionID, gaSessionNumber: w.GASessionNumber, clickIDs: w.ClickIDs,
		fbc: w.FBC, fbp: w.FBP, gpc: w.GPC, firstTouch: w.FirstTouch, lastTouch: w.LastTouch,
		analytics: ConsentState(w.Consent[0]), ads: ConsentState(w.Consent[1]),
		adUserData: ConsentState(w.Consent[2]), adPers: ConsentState(w.Consent[3]),
	}
	if w.ClickAt != 0 {
		c.clickAt = time.UnixMilli(w.ClickAt)
	}
	return c
}

func newJoinRedis(addr string, ttl time.Duration, log *zap.Logger) (*joinRedis, error) {
	c, err := dialShared("join.redis", addr, log)
	if err != nil {
		return nil, err
	}
	r := &joinRedis{c: c, ttl: ttl, timeout: joinRedisTimeout, queue: make(chan joinWrite, joinRedisQueue), log: log}
	r.wg.Add(1)
	go r.run()
	return r, nil
}

// put queues the context blob under keys. keys are owned copies (see
// shareKey); the blob is never written again once cached.
func (r *joinRedis) put(keys []string, blob []byte) {
	select {
	case r.queue <- joinWrite{keys: keys, blob: blob}:
	default:
		r.dropped.Add(1)
	}
}

// run writes queued contexts in pipelined batches.
func (r *joinRedis) run() {
	defer r.wg.Done()
	cmds := make(rueidis.Commands, 0, joinRedisBatch)
	for w := range r.queue {
		cmds = r.appendSets(cmds[:0], w)
	batch:
		for len(cmds) < joinRedisBatch {
			select {
			case w, ok := <-r.queue:
				if !ok {
					break batch
				}
				cmds = r.appendSets(cmds, w)
			default:
				break batch
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		for _, res := range r.c.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil {
				r.errors.Add(1)
			}
		}
		cancel()
	}
}

func (r *joinRedis) appendSets(cmds rueidis.Commands, w joinWrite) rueidis.Commands {
	var c joinCtx
	if !c.fromBlob(w.blob) {
		r.errors.Add(1)
		return cmds
	}
	b, err := json.Marshal(c.wire())
	if err != nil {
		r.errors.Add(1)
		return cmds
	}
	ms := max(r.ttl.Milliseconds(), 1)
	for _, k := range w.keys {
		cmds = append(cmds, r.c.B().Set().Key(joinRedisPrefix+k).Value(rueidis.BinaryString(b)).PxMilliseconds(ms).Build())
	}
	return cmds
}

// get returns the context stored under the first of keys that has one.
func (r *joinRedis) get(keys []string) *joinCtx {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = joinRedisPrefix + k
	}
	vals, err := r.c.Do(ctx, r.c.B().Mget().Key(full...).Build()).ToArray()
	if err != nil {
		r.errors.Add(1)
		return nil
	}
	for _, v := range vals {
		b, err := v.AsBytes()
		if err != nil {
			continue // nil: no context under this key
		}
		var w joinWire
		if json.Unmarshal(b, &w) != nil {
			r.errors.Add(1)
			continue
		}
		r.hits.Add(1)
		return w.ctx()
	}
	return nil
}

// close flushes queued writes and closes the connection.
func (r *joinRedis) close() {
	close(r.queue)
	r.wg.Wait()
	r.c.Close()
}

// shareKey appends the Redis key of (kind, id) when contexts are shared;
// it copies id, which may point into an event's arena.
func (j *Join) shareKey(keys []string, kind byte, id string) []string {
	if j.shared == nil {
		return keys
	}
	return append(keys, string(kind)+id)
}

// fillShared looks the server event's keys up in Redis (a context another
// replica learnt), keeps what it finds in the local cache and returns its
// blob (nil when Redis has none).
func (j *Join) fillShared(e *Event) []byte {
	var keys []string
	for _, k := range [...]struct {
		kind byte
		id   string
	}{{joinKeyTx, e.Commerce.TransactionID}, {joinKeyUser, e.UserID}, {joinKeyDevice, e.DeviceID}} {
		if k.id != "" {
			keys = append(keys, string(k.kind)+k.id)
		}
	}
	c := j.shared.get(keys)
	if c == nil {
		return nil
	}
	blob := c.appendBlob(nil)
	j.cache.SetWithTTL(keys[0], blob, c.cost(), j.ttl)
	return blob
}

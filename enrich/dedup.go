package enrich

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
)

// IDIndex is the durable record of committed dedup keys (DESIGN §4
// "Dedup"): the spool's id index, which covers dedup.window and survives
// restarts. The dedup stage asks it only when its Bloom filter says "maybe
// seen" and the hot cache does not know the key, so it is off the common
// path. Seen must be safe for concurrent use.
type IDIndex interface {
	Seen(key [16]byte) (bool, error)
}

// IDReplayer is an optional IDIndex extension: ReplayIDs calls fn for every
// key committed at or after since (coarser is fine: extra keys are
// harmless). At start the dedup stage replays what its Bloom snapshot
// cannot know — keys committed after the snapshot was written, i.e. since
// the last periodic snapshot when the process crashed — so that a Bloom
// "new" stays trustworthy across an unclean restart.
type IDReplayer interface {
	ReplayIDs(since time.Time, fn func(key [16]byte)) error
}

// DedupOptions are the dedup stage's collaborators and tunables. The zero
// value is usable: no durable index, no logs, time.Now, Redis only when
// cfg.Dedup.Redis is set.
type DedupOptions struct {
	// Index is the durable key index (the spool). nil: no durable tier, so
	// a Bloom "maybe" that neither the pending set nor the hot cache
	// confirms counts as new — an event is never dropped on a guess.
	Index IDIndex
	// Log receives warnings (corrupt snapshot, Redis down) and a sample
	// of duplicates at debug level. nil: no logs.
	Log *zap.Logger
	// Now is the clock for the window, generations and reservations.
	Now func() time.Time
	// Redis is the shared tier's client, owned by the caller. nil with
	// cfg.Dedup.Redis set: NewDedup connects to that address itself and
	// Close closes the client.
	Redis rueidis.Client
	// RedisTimeout bounds each request's Redis round trip (default 50ms).
	RedisTimeout time.Duration
	// RedisBackoff is how long Redis is skipped after it failed (default
	// 1s), so a hung Redis costs one timeout per backoff, not per request.
	RedisBackoff time.Duration
	// HotKeys is the hot cache's capacity in keys (default 65536,
	// ≈ 15 MiB: ristretto costs ≈ 200 bytes a key).
	HotKeys int64
	// PendingTTL is how long a reservation is held without Commit or
	// Release (default 10s); see Dedup.
	PendingTTL time.Duration
	// SnapshotEvery is the period of Bloom snapshots (default 5m;
	// negative: only on Close). Snapshots need cfg.Spool.Dir.
	SnapshotEvery time.Duration
}

// Defaults of DedupOptions and of a zero dedup config.
const (
	dedupDefaultWindow     = 48 * time.Hour
	dedupDefaultCapacity   = 1 << 20
	dedupDefaultFP         = 1e-4
	dedupDefaultHotKeys    = 1 << 16
	dedupDefaultPendingTTL = 10 * time.Second
	dedupDefaultSnapEvery  = 5 * time.Minute
	dedupDefaultRedisTO    = 50 * time.Millisecond
	dedupDefaultRedisBO    = time.Second
	// dedupSnapshotFile is the Bloom snapshot's name in cfg.Spool.Dir.
	dedupSnapshotFile = "dedup.bloom"
	// dedupLogEvery samples duplicates for the debug log.
	dedupLogEvery = 1000
	dedupShards   = 256
	// dedupHotConfirmedTTL is the life of a hot-cache entry for a key the
	// index confirmed: a duplicate may thus be recognised up to this long
	// past the window, never a new event dropped.
	dedupHotConfirmedTTL = time.Hour
)

// Dedup is the dedup stage (DESIGN §4 "Dedup"), the last of the pipeline.
// Each event gets a key (see eventKey); an event whose key was seen within
// dedup.window gets Outcome Duplicate, which the proxy answers like the
// original (2xx) and never forwards.
//
// Layers, cheapest first:
//   - the pending set: keys reserved by events that are being stored, in
//     sharded maps under mutexes, so that of concurrent duplicates exactly
//     one wins;
//   - a rotating Bloom filter: "not present" proves the key is new (the
//     common case, no further work);
//   - on "maybe": a ristretto hot cache of recent keys, then the durable
//     IDIndex. A "maybe" that neither confirms is a Bloom false positive
//     and the event is accepted. With an index the hot cache holds keys
//     the index confirmed (duplicates come in bursts); without one it
//     holds every reserved key, as the only record past the pending set;
//   - optionally Redis (SET NX PX, pipelined per request in Finish) so
//     replicas deduplicate together; when Redis is slow or down the local
//     decision stands.
//
// Reserve, then commit: Apply reserves the key (pending set, Bloom filter,
// Redis) and sets e.DedupKey; the spool commits e.DedupKey to its
// index with the event. If the append fails, Release undoes the
// reservation so the client's retry is accepted. After a successful append
// Commit(keys) frees the pending entries at once (with an index) — but
// correctness does not depend on it: a reservation neither committed nor
// released expires after PendingTTL, by when the index has the key (or the
// hot cache, without an index). Commit only keeps the pending set small
// (at 80k events/s, 10 s of reservations are ~40 MiB).
type Dedup struct {
	window     time.Duration
	pendingTTL int64
	cross      map[string]struct{}
	now        func() time.Time
	log        *zap.Logger
	index      IDIndex
	bloom      *rotatingBloom
	hot        *ristretto.Cache[uint64, dedupHot]
	shards     [dedupShards]dedupShard
	redis      *dedupRedis
	snapPath   string
	snapEvery  time.Duration

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	cNew, cFalsePositive, cDuplicate, cRedisFallback atomic.Uint64
	cNoID, cIndexErrors, cReleased, cCommitted       atomic.Uint64
	lastIndexWarn                                    atomic.Int64
}

// Dedup is the last stage; it also finishes requests (Redis) and undoes
// reservations.
var (
	_ Stage        = (*Dedup)(nil)
	_ RequestStage = (*Dedup)(nil)
	_ Releaser     = (*Dedup)(nil)
)

// DedupStats are the dedup counters since start. New, BloomFalsePositive
// and Duplicate partition the checks of events that have a key
// (sidetrack_dedup_checks_total{result}); RedisFallback counts checks whose
// Redis step fell back to the local answer (also a result label); NoID
// counts events without any id, accepted with a fresh UUIDv7 and not
// deduplicated (sidetrack_events_total{outcome="no_id"}).
type DedupStats struct {
	New, BloomFalsePositive, Duplicate, RedisFallback uint64
	NoID                                              uint64
	// IndexErrors counts IDIndex failures (the event was accepted).
	IndexErrors uint64
	// Released and Committed count reservations undone and confirmed.
	Released, Committed uint64
	// Pending is the number of reservations held now.
	Pending int
	// BloomBytes is the Bloom filter's size with every generation present.
	BloomBytes uint64
}

// dedupHot is a hot-cache entry. The cache is keyed by the first 8 bytes
// of the key and holds the other 8, so a lookup compares all 128 bits; the
// expiry is on the stage's clock (ristretto's TTL uses the wall clock and
// only bounds memory).
type dedupHot struct {
	lo  uint64
	exp int64
}

type dedupShard struct {
	mu    sync.Mutex
	m     map[[16]byte]dedupPending
	swept int64
	_     [40]byte // keep shards on separate cache lines
}

// Pending entry states.
const (
	pendingReserved  = iota + 1 // being stored by owner
	pendingCommitted            // stored; kept until PendingTTL (no index)
	pendingReleased             // not stored: the hot cache must not be trusted
)

type dedupPending struct {
	at    int64   // reservation time (unix ns, stage clock)
	owner uintptr // the reserving *Event, as a number: never dereferenced
	state uint8
	fp    bool // the Bloom said "maybe" (counted as bloom_false_positive)
}

type dedupVerdict uint8

const (
	verdictNew dedupVerdict = iota
	verdictFalsePositive
	verdictDuplicate
)

// NewDedup builds the dedup stage from cfg.Dedup. Zero settings take the
// defaults (window 48h, capacity 1Mi keys, rate 1e-4, cross_source
// [order_completed] when the list is nil). With cfg.Spool.Dir set it
// restores the Bloom snapshot written there by the previous run (a missing
// or corrupt one is logged and ignored) and writes it periodically and on
// Close. Close must be called to stop its goroutines.
func NewDedup(cfg *config.Config, opts DedupOptions) (*Dedup, error) {
	c := cfg.Dedup
	window := c.Window.D()
	if window <= 0 {
		window = dedupDefaultWindow
	}
	capacity := c.Capacity
	if capacity <= 0 {
		capacity = dedupDefaultCapacity
	}
	fp := c.FalsePositiveRate
	if !(fp > 0 && fp < 1) {
		fp = dedupDefaultFP
	}
	cross := c.CrossSource
	if cross == nil {
		cross = []string{nameOrderCompleted}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.HotKeys <= 0 {
		opts.HotKeys = dedupDefaultHotKeys
	}
	if opts.PendingTTL <= 0 {
		opts.PendingTTL = dedupDefaultPendingTTL
	}
	if opts.SnapshotEvery == 0 {
		opts.SnapshotEvery = dedupDefaultSnapEvery
	}
	d := &Dedup{
		window:     window,
		pendingTTL: int64(opts.PendingTTL),
		cross:      make(map[string]struct{}, len(cross)),
		now:        opts.Now,
		log:        opts.Log,
		index:      opts.Index,
		snapEvery:  opts.SnapshotEvery,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	for _, n := range cross {
		d.cross[n] = struct{}{}
	}
	for i := range d.shards {
		d.shards[i].m = make(map[[16]byte]dedupPending)
	}
	now := d.now().UnixNano()
	d.bloom = newRotatingBloom(capacity, fp, window, now)
	hot, err := ristretto.NewCache(&ristretto.Config[uint64, dedupHot]{
		NumCounters:        10 * opts.HotKeys,
		MaxCost:            opts.HotKeys,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	d.hot = hot
	if cfg.Spool.Dir != "" {
		d.snapPath = filepath.Join(cfg.Spool.Dir, dedupSnapshotFile)
	}
	d.restore(now)

	client, own := opts.Redis, false
	if client == nil && c.Redis != "" {
		if client, err = dialDedupRedis(c.Redis, d.log); err != nil {
			hot.Close()
			return nil, err
		}
		own = true
	}
	if client != nil {
		d.redis = newDedupRedis(client, own, window, opts.RedisTimeout, opts.RedisBackoff, d.log)
	}
	go d.loop()
	return d, nil
}

// restore loads the Bloom snapshot and replays the keys committed after it
// from the index, so the window survives a restart.
func (d *Dedup) restore(now int64) {
	since := now - int64(d.window) - d.bloom.span // everything in the window
	if d.snapPath != "" {
		// Temporary files of a snapshot write cut short by a crash.
		stale, _ := filepath.Glob(filepath.Join(filepath.Dir(d.snapPath), ".dedup.bloom-*"))
		for _, f := range stale {
			os.Remove(f)
		}
		written, err := d.bloom.readSnapshot(d.snapPath, now)
		switch {
		case err == nil:
			since = written
			d.log.Info("dedup: Bloom snapshot restored", zap.String("path", d.snapPath))
		case errors.Is(err, fs.ErrNotExist):
		default:
			d.log.Warn("dedup: ignoring Bloom snapshot", zap.String("path", d.snapPath), zap.Error(err))
		}
	}
	r, ok := d.index.(IDReplayer)
	if !ok {
		return
	}
	n := 0
	var buf [16]byte // one buffer, not one escaping copy per key
	err := r.ReplayIDs(time.Unix(0, since), func(key [16]byte) {
		buf = key
		d.bloom.add(buf[:])
		n++
	})
	if err != nil {
		d.log.Warn("dedup: replaying the id index failed; duplicates of events stored before the restart may pass", zap.Error(err))
		return
	}
	d.log.Info("dedup: replayed id index", zap.Int("keys", n))
}

// Close writes the Bloom snapshot and stops the stage's goroutines (and
// the Redis client it opened). Call it after ingestion stopped: keys added
// after the snapshot would be missing from it. The stage must not be used
// afterwards.
func (d *Dedup) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.done
		d.redis.flushDeletes()
		d.closeErr = d.snapshot()
		d.hot.Close()
		d.redis.close()
	})
	return d.closeErr
}

func (d *Dedup) snapshot() error {
	if d.snapPath == "" {
		return nil
	}
	return d.bloom.writeSnapshot(d.snapPath, d.now().UnixNano())
}

// loop sweeps expired reservations, retries failed Redis deletes and
// writes periodic snapshots.
func (d *Dedup) loop() {
	defer close(d.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastSnap := time.Now()
	for {
		select {
		case <-d.stop:
			return
		case <-tick.C:
		}
		now := d.now().UnixNano()
		for i := range d.shards {
			sh := &d.shards[i]
			sh.mu.Lock()
			sh.sweep(now, d.pendingTTL)
			sh.mu.Unlock()
		}
		d.redis.flushDeletes()
		if d.snapEvery > 0 && time.Since(lastSnap) >= d.snapEvery {
			lastSnap = time.Now()
			if err := d.snapshot(); err != nil {
				d.log.Warn("dedup: writing Bloom snapshot failed", zap.Error(err))
			}
		}
	}
}

// sweep drops entries older than ttl; sh is locked.
func (sh *dedupShard) sweep(now, ttl int64) {
	sh.swept = now
	for k, p := range sh.m {
		if now-p.at >= ttl {
			delete(sh.m, k)
		}
	}
}

// Stats returns the counters, for metrics.
func (d *Dedup) Stats() DedupStats {
	s := DedupStats{
		New: d.cNew.Load(), BloomFalsePositive: d.cFalsePositive.Load(),
		Duplicate: d.cDuplicate.Load(), RedisFallback: d.cRedisFallback.Load(),
		NoID: d.cNoID.Load(), IndexErrors: d.cIndexErrors.Load(),
		Released: d.cReleased.Load(), Committed: d.cCommitted.Load(),
		BloomBytes: d.bloom.bits() / 8,
	}
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		s.Pending += len(sh.m)
		sh.mu.Unlock()
	}
	return s
}

func ownerOf(e *Event) uintptr { return uintptr(unsafe.Pointer(e)) }

func hotKey(k *[16]byte) (hi, lo uint64) {
	return binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])
}

// Apply derives e's key, and reserves it or marks e a Duplicate.
func (d *Dedup) Apply(_ *Request, e *Event, res *EventResult) {
	if !d.eventKey(e) {
		d.cNoID.Add(1)
		return
	}
	now := d.now().UnixNano()
	d.bloom.rotate(now)
	key := &e.DedupKey
	sh := &d.shards[key[0]]
	sh.mu.Lock()
	v := d.checkLocked(sh, key, now)
	if v == verdictDuplicate {
		sh.mu.Unlock()
		d.duplicate(e, res)
		return
	}
	sh.m[*key] = dedupPending{at: now, owner: ownerOf(e), state: pendingReserved, fp: v == verdictFalsePositive}
	if now-sh.swept >= d.pendingTTL {
		sh.sweep(now, d.pendingTTL)
	}
	sh.mu.Unlock()
	// Concurrent checks of this key see the pending entry from here on;
	// the Bloom filter (and the index, once stored) serve later checks.
	d.bloom.add(key[:])
	if d.index == nil {
		// Without an index the hot cache is the only record that outlives
		// the reservation. With one it is not filled here: a ristretto Set
		// per event costs ~4 µs of eviction work and an allocation, to
		// spare index lookups for the few events that have duplicates.
		hi, lo := hotKey(key)
		d.hot.Set(hi, dedupHot{lo: lo, exp: now + int64(d.window)}, 1)
	}
	if d.redis == nil {
		d.countAccepted(v == verdictFalsePositive)
	}
	// With Redis the verdict is final only after Finish.
}

// checkLocked decides whether key was seen; sh is locked, so checks and
// reservations of one key are serialized.
func (d *Dedup) checkLocked(sh *dedupShard, key *[16]byte, now int64) dedupVerdict {
	if p, ok := sh.m[*key]; ok && now-p.at < d.pendingTTL {
		if p.state == pendingReleased {
			// Reserved, not stored, released: nobody has it, whatever the
			// Bloom filter and the hot cache (whose delete is async) say.
			return verdictNew
		}
		return verdictDuplicate
	}
	if !d.bloom.test(key[:]) {
		return verdictNew
	}
	hi, lo := hotKey(key)
	if h, ok := d.hot.Get(hi); ok && h.lo == lo && now < h.exp {
		return verdictDuplicate
	}
	if d.index != nil {
		seen, err := d.index.Seen(*key)
		if err != nil {
			// In doubt, accept: a duplicate downstream is recoverable, a
			// dropped event is not.
			d.cIndexErrors.Add(1)
			d.warnIndex(err)
			return verdictFalsePositive
		}
		if seen {
			// A key seen again is likely to be seen again (retry storms,
			// the same order from three sources): keep it at hand. When
			// the original was stored is unknown, so the entry lives
			// briefly rather than a whole window.
			d.hot.Set(hi, dedupHot{lo: lo, exp: now + int64(min(d.window, dedupHotConfirmedTTL))}, 1)
			return verdictDuplicate
		}
	}
	return verdictFalsePositive
}

func (d *Dedup) warnIndex(err error) {
	now := time.Now().UnixNano()
	last := d.lastIndexWarn.Load()
	if now-last < int64(time.Minute) || !d.lastIndexWarn.CompareAndSwap(last, now) {
		return
	}
	d.log.Warn("dedup: id index lookup failed; events accepted without the durable check", zap.Error(err))
}

func (d *Dedup) countAccepted(falsePositive bool) {
	if falsePositive {
		d.cFalsePositive.Add(1)
	} else {
		d.cNew.Add(1)
	}
}

// duplicate marks e a duplicate. Its key is not reserved by it, so it is
// cleared: Release and the spool ignore e.
func (d *Dedup) duplicate(e *Event, res *EventResult) {
	res.Outcome = Duplicate
	e.DedupKey = [16]byte{}
	n := d.cDuplicate.Add(1)
	if n%dedupLogEvery == 1 && d.log.Core().Enabled(zap.DebugLevel) {
		d.log.Debug("dedup: duplicate event (sampled)",
			zap.String("event_id", strings.Clone(e.EventID)),
			zap.String("name", strings.Clone(e.Name)),
			zap.String("source", string(e.Source)),
			zap.Uint64("duplicates", n))
	}
}

// Commit confirms reservations whose events the sink stored (their
// DedupKeys). Optional (see Dedup): with an index it frees the pending
// entries at once instead of after PendingTTL. It takes keys, not events,
// because events belong to the sink once appended; the spool has the keys
// of each committed append at hand.
func (d *Dedup) Commit(keys [][16]byte) {
	for _, k := range keys {
		if k == ([16]byte{}) {
			continue
		}
		sh := &d.shards[k[0]]
		sh.mu.Lock()
		if p, ok := sh.m[k]; ok && p.state == pendingReserved {
			if d.index != nil {
				delete(sh.m, k)
			} else {
				// No index: the pending set is the only exact record
				// besides the lossy hot cache; keep it for PendingTTL.
				p.state, p.owner = pendingCommitted, 0
				sh.m[k] = p
			}
			d.cCommitted.Add(1)
		}
		sh.mu.Unlock()
	}
}

// Release implements Releaser: the events were not stored, so their
// reservations are undone (pending set, hot cache, Redis) and a retry is
// accepted. Events that did not reserve (duplicates, no id) are ignored.
func (d *Dedup) Release(events []*Event) {
	now := d.now().UnixNano()
	var keys [][16]byte
	for _, e := range events {
		if e.DedupKey == ([16]byte{}) {
			continue
		}
		if !d.unreserve(e, now) {
			e.DedupKey = [16]byte{}
			continue
		}
		d.cReleased.Add(1)
		if d.redis != nil {
			keys = append(keys, e.DedupKey)
		}
		e.DedupKey = [16]byte{}
	}
	if len(keys) > 0 {
		d.redis.release(keys)
	}
}

// unreserve replaces e's reservation with a tombstone. It reports whether
// e held it: an entry reserved by another event since (after e's expired)
// is left alone. A missing entry (expired and swept while e was being
// stored) still counts as e's.
func (d *Dedup) unreserve(e *Event, now int64) bool {
	sh := &d.shards[e.DedupKey[0]]
	sh.mu.Lock()
	p, ok := sh.m[e.DedupKey]
	owned := !ok || (p.owner == ownerOf(e) && p.state == pendingReserved)
	if owned {
		sh.m[e.DedupKey] = dedupPending{at: now, state: pendingReleased}
	}
	sh.mu.Unlock()
	if owned {
		hi, _ := hotKey(&e.DedupKey)
		d.hot.Del(hi)
	}
	return owned
}

// Finish implements RequestStage: with a Redis tier, the request's new
// keys are claimed there in one pipelined round trip.
func (d *Dedup) Finish(_ *Request, events []*Event, res *Result) {
	if d.redis != nil {
		d.redis.claim(d, events, res)
	}
}

// pendingFP reports whether e's reservation was a Bloom "maybe", for
// counting once Redis has spoken.
func (d *Dedup) pendingFP(e *Event) bool {
	sh := &d.shards[e.DedupKey[0]]
	sh.mu.Lock()
	p := sh.m[e.DedupKey]
	sh.mu.Unlock()
	return p.fp
}

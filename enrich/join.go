package enrich

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
)

// Join is the join stage (DESIGN §4 "Join"). Browser events teach it the
// browser's context — device and session ids, GA client and session,
// click ids, fbc/fbp, consent, first/last touch — under the event's
// transaction id, user id and device id. A server event (req.Server) for
// the same order (transaction id first), user, or device gets the missing
// browser identifiers filled in and the quality flag `joined`, so a backend
// purchase reaches Meta and Google with the click that led to it.
//
// Consent travels the other way too: a purpose the browser denied is
// denied on the joined server event, even if the server default grants it.
//
// The store is a bounded ristretto cache (join.capacity entries, join.ttl).
// Its Set is asynchronous and may be dropped by admission, so a join is a
// best effort: an unmatched server event is counted, never held here.
// Delaying server conversions so the thank-you beacon can arrive first
// (join.hold) is delivery's job.
//
// Cached contexts are immutable byte blobs (see joinblob.go), shared by the
// keys that point at them; events get strings aliasing a blob, which is
// never written again and outlives any event.
type Join struct {
	cache *ristretto.Cache[string, []byte]
	ttl   time.Duration
	keys  sync.Pool // *[]byte scratch for cache keys
	// shared, when join.redis is set, shares contexts between replicas.
	shared *joinRedis

	matched, unmatched, noKey, remembered atomic.Uint64
}

// JoinStats are the join counters since start.
type JoinStats struct {
	// Matched and Unmatched count server events with a transaction, user
	// or device id that did or did not find a browser context; NoKey
	// counts server events with none of them.
	Matched, Unmatched, NoKey uint64
	// Remembered counts browser contexts stored (new or changed).
	Remembered uint64
	// SharedHits counts server events matched through join.redis;
	// SharedErrors failed Redis round trips; SharedDropped contexts not
	// shared because the write queue was full.
	SharedHits, SharedErrors, SharedDropped uint64
}

// joinCtx is the browser context remembered for a device, user or order.
type joinCtx struct {
	deviceID, anonymousID, sessionID, gaSessionID string
	gaSessionNumber                               int64
	clickIDs                                      ClickIDs
	clickAt                                       time.Time
	fbc, fbp                                      string
	analytics, ads, adUserData, adPers            ConsentState
	gpc                                           bool
	firstTouch, lastTouch                         Touch
}

// Key kinds (first byte of a cache key).
const (
	joinKeyTx     = 't'
	joinKeyUser   = 'u'
	joinKeyDevice = 'd'
)

// NewJoin builds the join stage. A capacity ≤ 0 disables it (Apply does
// nothing). Close releases the cache's goroutines.
func NewJoin(cfg *config.Config) (*Join, error) {
	j := &Join{ttl: cfg.Join.TTL.D()}
	j.keys.New = func() any { b := make([]byte, 0, 128); return &b }
	n := cfg.Join.Capacity
	if n <= 0 {
		return j, nil
	}
	if j.ttl <= 0 {
		return nil, errors.New("join: ttl must be positive")
	}
	// Memory is bounded by bytes, not entries: a context holds a few
	// hundred bytes of ids and touches, so a count alone could let the
	// cache grow far past the process's memory budget.
	maxBytes := int64(cfg.Join.MaxBytes)
	if maxBytes <= 0 {
		maxBytes = joinDefaultMaxBytes
	}
	expected := min(n, maxBytes/joinEntryOverhead)
	c, err := ristretto.NewCache(&ristretto.Config[string, []byte]{
		NumCounters:        max(10*expected, 1000),
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
		// Keys are hashed, never stored, so they may point into a
		// scratch buffer; the default hasher would box them.
		KeyToHash: func(k string) (uint64, uint64) { return z.MemHashString(k), xxhash.Sum64String(k) },
	})
	if err != nil {
		return nil, err
	}
	j.cache = c
	if cfg.Join.Redis != "" {
		if j.shared, err = newJoinRedis(cfg.Join.Redis, j.ttl, zap.NewNop()); err != nil {
			c.Close()
			return nil, err
		}
	}
	return j, nil
}

// Close stops the cache. The stage must not be used afterwards.
func (j *Join) Close() {
	if j.cache != nil {
		j.cache.Close()
	}
	if j.shared != nil {
		j.shared.close()
	}
}

// Stats returns the counters, for metrics.
func (j *Join) Stats() JoinStats {
	st := JoinStats{
		Matched: j.matched.Load(), Unmatched: j.unmatched.Load(),
		NoKey: j.noKey.Load(), Remembered: j.remembered.Load(),
	}
	if r := j.shared; r != nil {
		st.SharedHits, st.SharedErrors, st.SharedDropped = r.hits.Load(), r.errors.Load(), r.dropped.Load()
	}
	return st
}

// joinKey builds a cache key in *buf (a kind byte, then the id) and
// returns it as a string aliasing *buf: ristretto only hashes keys, never
// keeps them, so the buffer is reused for the next key.
func joinKey(buf *[]byte, k byte, id string) string {
	b := append((*buf)[:0], k)
	b = append(b, id...)
	*buf = b
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Apply implements Stage.
func (j *Join) Apply(req *Request, e *Event, _ *EventResult) {
	if j.cache == nil {
		return
	}
	kb := j.keys.Get().(*[]byte)
	if req.Server {
		j.fill(e, kb)
	} else {
		j.remember(e, kb, req.ReceivedAt)
	}
	if cap(*kb) <= 4096 {
		j.keys.Put(kb)
	}
}

func (j *Join) fill(e *Event, kb *[]byte) {
	var blob []byte
	found, tried := false, false
	for _, k := range [...]struct {
		kind byte
		id   string
	}{{joinKeyTx, e.Commerce.TransactionID}, {joinKeyUser, e.UserID}, {joinKeyDevice, e.DeviceID}} {
		if k.id == "" {
			continue
		}
		tried = true
		if blob, found = j.cache.Get(joinKey(kb, k.kind, k.id)); found && len(blob) > 0 {
			break
		}
	}
	if (!found || len(blob) == 0) && tried && j.shared != nil {
		blob = j.fillShared(e)
		found = len(blob) > 0
	}
	var c joinCtx
	switch {
	case found && len(blob) > 0 && c.fromBlob(blob):
		j.matched.Add(1)
	case tried:
		j.unmatched.Add(1)
		return
	default:
		j.noKey.Add(1)
		return
	}
	e.Quality.Add(FlagJoined)
	setIfEmpty(&e.DeviceID, c.deviceID)
	setIfEmpty(&e.AnonymousID, c.anonymousID)
	setIfEmpty(&e.SessionID, c.sessionID)
	setIfEmpty(&e.GASessionID, c.gaSessionID)
	if e.GASessionNumber == 0 {
		e.GASessionNumber = c.gaSessionNumber
	}
	a := &e.Attribution
	if a.ClickIDs == (ClickIDs{}) {
		a.ClickIDs = c.clickIDs
	}
	setIfEmpty(&a.FBC, c.fbc)
	setIfEmpty(&a.FBP, c.fbp)
	if a.FirstTouch.IsZero() {
		a.FirstTouch = c.firstTouch
	}
	if a.LastTouch.IsZero() {
		a.LastTouch = c.lastTouch
	}
	cs := &e.Consent
	restrict(&cs.Analytics, c.analytics)
	restrict(&cs.Ads, c.ads)
	restrict(&cs.AdUserData, c.adUserData)
	restrict(&cs.AdPersonalization, c.adPers)
	cs.GPC = cs.GPC || c.gpc
}

func setIfEmpty(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// restrict applies the browser's state to a server event's purpose: a
// browser denial wins; an unknown server state takes the browser's.
func restrict(dst *ConsentState, browser ConsentState) {
	if browser == Denied || *dst == Unknown {
		*dst = browser
	}
}

func (j *Join) remember(e *Event, kb *[]byte, now time.Time) {
	tx, user, dev := e.Commerce.TransactionID, e.UserID, e.DeviceID
	if tx == "" && user == "" && dev == "" {
		return
	}
	if now.IsZero() {
		now = e.ReceivedAt
	}
	var prevBlob []byte
	if dev != "" {
		prevBlob, _ = j.cache.Get(joinKey(kb, joinKeyDevice, dev))
	}
	var cur, prev joinCtx
	cur.fromEvent(e, now)
	if len(prevBlob) > 0 && prev.fromBlob(prevBlob) && prev.deviceID == cur.deviceID {
		cur.inherit(&prev, j.ttl, now)
	}
	var scratch [512]byte
	blob := cur.appendBlob(scratch[:0])
	stored := prevBlob
	var shared []string // keys to share: those written here
	if len(prevBlob) == 0 || !bytes.Equal(blob, prevBlob) {
		stored = bytes.Clone(blob)
		j.remembered.Add(1)
		if dev != "" {
			j.cache.SetWithTTL(joinKey(kb, joinKeyDevice, dev), stored, cur.cost(), j.ttl)
			shared = j.shareKey(shared, joinKeyDevice, dev)
		}
	}
	for _, k := range [...]struct {
		kind byte
		id   string
	}{{joinKeyUser, user}, {joinKeyTx, tx}} {
		if k.id == "" {
			continue
		}
		key := joinKey(kb, k.kind, k.id)
		if old, ok := j.cache.Get(key); !ok || unsafe.SliceData(old) != unsafe.SliceData(stored) {
			j.cache.SetWithTTL(key, stored, cur.cost(), j.ttl)
			shared = j.shareKey(shared, k.kind, k.id)
		}
	}
	if len(shared) > 0 {
		j.shared.put(shared, stored)
	}
}

// fromEvent takes the event's browser context (strings still owned by the
// event's arena until encoded).
func (c *joinCtx) fromEvent(e *Event, now time.Time) {
	a := &e.Attribution
	*c = joinCtx{
		deviceID: e.DeviceID, anonymousID: e.AnonymousID, sessionID: e.SessionID,
		gaSessionID: e.GASessionID, gaSessionNumber: e.GASessionNumber,
		clickIDs: a.ClickIDs, fbc: a.FBC, fbp: a.FBP,
		analytics: e.Consent.Analytics, ads: e.Consent.Ads,
		adUserData: e.Consent.AdUserData, adPers: e.Consent.AdPersonalization,
		gpc:        e.Consent.GPC,
		firstTouch: a.FirstTouch, lastTouch: a.LastTouch,
	}
	if a.ClickIDs != (ClickIDs{}) {
		c.clickAt = now
	}
}

// inherit fills what this event lacks from the device's previous context:
// the thank-you page that sends the purchase rarely has the gclid in its
// URL, but the landing page did. Click ids are inherited only while younger
// than the TTL, so a months-old click does not ride along forever.
func (c *joinCtx) inherit(p *joinCtx, ttl time.Duration, now time.Time) {
	setIfEmpty(&c.anonymousID, p.anonymousID)
	setIfEmpty(&c.sessionID, p.sessionID)
	setIfEmpty(&c.gaSessionID, p.gaSessionID)
	if c.gaSessionNumber == 0 {
		c.gaSessionNumber = p.gaSessionNumber
	}
	switch {
	case c.clickIDs == p.clickIDs:
		c.clickAt = p.clickAt // the same click seen again keeps its time
	case c.clickIDs == (ClickIDs{}) && now.Sub(p.clickAt) < ttl:
		c.clickIDs, c.clickAt = p.clickIDs, p.clickAt
	}
	setIfEmpty(&c.fbc, p.fbc)
	setIfEmpty(&c.fbp, p.fbp)
	if c.firstTouch.IsZero() {
		c.firstTouch = p.firstTouch
	}
	if c.lastTouch.IsZero() {
		c.lastTouch = p.lastTouch
	}
}

// Join cache sizing.
const (
	joinDefaultMaxBytes = 64 << 20
	// joinEntryOverhead approximates ristretto's per-item bookkeeping plus
	// the key and the context's fixed part, for sizing and charging. Since
	// contexts are stored as blobs (≈ 40 bytes of fixed part instead of
	// ≈ 450) it overestimates; it is kept so that max_bytes holds as many
	// visitors as before, in less memory.
	joinEntryOverhead = 512
)

// cost is what one cache entry for c is charged: every key is charged the
// whole context (keys of one visitor may share it, so this errs on the
// side of using less memory than max_bytes).
func (c *joinCtx) cost() int64 {
	n := joinEntryOverhead
	for _, s := range [...]string{c.deviceID, c.anonymousID, c.sessionID, c.gaSessionID, c.fbc, c.fbp,
		c.clickIDs.GCLID, c.clickIDs.GBRAID, c.clickIDs.WBRAID, c.clickIDs.DCLID, c.clickIDs.SRSLTID,
		c.clickIDs.FBCLID, c.clickIDs.MSCLKID, c.clickIDs.TTCLID, c.clickIDs.LiFatID, c.clickIDs.TWCLID,
		c.firstTouch.Source, c.firstTouch.Medium, c.firstTouch.Campaign, c.firstTouch.Channel,
		c.lastTouch.Source, c.lastTouch.Medium, c.lastTouch.Campaign, c.lastTouch.Channel} {
		n += len(s)
	}
	return int64(n)
}

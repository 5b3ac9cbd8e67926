package enrich

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// SaltStore lets replicas share one salt per UTC day, so an IP hashes to
// the same value on every replica (a Redis implementation, SET NX with a
// TTL, comes with the scale-out work). Days are "YYYY-MM-DD" in UTC. A
// store must keep a salt no longer than the TTL it is given and must never
// write it to disk.
type SaltStore interface {
	// Get returns the salt stored for day; ok is false when there is none.
	Get(ctx context.Context, day string) (salt []byte, ok bool, err error)
	// SetNX stores salt for day unless a salt is already stored, and
	// returns the salt that is stored after the call (the caller's, or
	// the one another replica stored first).
	SetNX(ctx context.Context, day string, salt []byte, ttl time.Duration) (stored []byte, err error)
}

// MemorySaltStore is the in-process SaltStore (one replica). It forgets a
// salt when its TTL has passed.
type MemorySaltStore struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]memSalt
}

type memSalt struct {
	salt    []byte
	expires time.Time
}

// NewMemorySaltStore returns an empty store; now is its clock (nil:
// time.Now).
func NewMemorySaltStore(now func() time.Time) *MemorySaltStore {
	if now == nil {
		now = time.Now
	}
	return &MemorySaltStore{now: now, m: make(map[string]memSalt)}
}

// Get implements SaltStore.
func (s *MemorySaltStore) Get(_ context.Context, day string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	v, ok := s.m[day]
	if !ok {
		return nil, false, nil
	}
	return append([]byte(nil), v.salt...), true, nil
}

// SetNX implements SaltStore.
func (s *MemorySaltStore) SetNX(_ context.Context, day string, salt []byte, ttl time.Duration) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	if v, ok := s.m[day]; ok {
		return append([]byte(nil), v.salt...), nil
	}
	s.m[day] = memSalt{salt: append([]byte(nil), salt...), expires: s.now().Add(ttl)}
	return append([]byte(nil), salt...), nil
}

func (s *MemorySaltStore) expire() {
	now := s.now()
	for d, v := range s.m {
		if !now.Before(v.expires) {
			clear(v.salt)
			delete(s.m, d)
		}
	}
}

// saltLen is the size of a daily salt (HMAC-SHA256 key size).
const saltLen = 32

// saltTTL is how long a shared store keeps a day's salt: the day itself
// plus the next, while the previous salt may still be used, and no more.
const saltTTL = 48 * time.Hour

// saltStoreTimeout bounds a shared store round trip at rotation time (once
// a day per replica, on the request path).
const saltStoreTimeout = 500 * time.Millisecond

// DailySalt holds the random salt of the current UTC day and, until the
// next rotation, the previous day's, for HMACs that must link a visitor
// within a day but never across days (the IP hash, the cookieless daily
// id). A salt is 32 random bytes made at the first use of a UTC day; it
// is never derived from the configured secrets and never written to disk,
// so once it is discarded (at the second rotation after its day) nobody,
// not even an operator with the config, can recompute that day's hashes
// or brute-force the 2^32 IPv4 addresses against them.
//
// With a SaltStore, replicas agree on each day's salt (the first replica
// to rotate wins). When the store fails, this replica uses its own random
// salt for the day: hashes then differ between replicas for that day,
// which loses linking, never privacy.
//
// The day is taken from the injected clock, never from event data, so a
// client cannot make the salt rotate.
type DailySalt struct {
	now   func() time.Time
	store SaltStore
	rand  io.Reader

	mu    sync.Mutex
	state atomic.Pointer[saltState]
	// storeErrors counts failed store round trips (tests, status).
	storeErrors atomic.Int64
}

type saltState struct {
	cur, prev *saltKey
}

// saltKey is one day's salt as HMAC-SHA256 pads, so hashing needs no
// allocation (crypto/hmac allocates its state).
type saltKey struct {
	day        int64 // days since the Unix epoch, UTC
	ipad, opad [sha256.BlockSize]byte
}

// NewDailySalt returns a DailySalt. store may be nil (salts stay in this
// process); now is the clock (nil: time.Now); rnd is the entropy source
// (nil: crypto/rand).
func NewDailySalt(store SaltStore, now func() time.Time, rnd io.Reader) *DailySalt {
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &DailySalt{now: now, store: store, rand: rnd}
}

// unixDay returns the UTC day number of t.
func unixDay(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s < 0 && s%86400 != 0 {
		d--
	}
	return d
}

// key returns the salt for an event received at t: the day of t if that
// is today or yesterday (and yesterday's salt is still kept), else
// today's. It rotates first when the clock says a new day began.
func (d *DailySalt) key(t time.Time) (*saltKey, error) {
	today := unixDay(d.now())
	st := d.state.Load()
	if st == nil || st.cur.day < today {
		var err error
		if st, err = d.rotate(today); err != nil {
			return nil, err
		}
	}
	if day := unixDay(t); day != st.cur.day && st.prev != nil && day == st.prev.day {
		return st.prev, nil
	}
	return st.cur, nil
}

// rotate makes today's salt current and keeps the previous one only if it
// is yesterday's; anything older is dropped.
func (d *DailySalt) rotate(today int64) (*saltState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state.Load()
	if st != nil && st.cur.day >= today {
		return st, nil
	}
	salt := make([]byte, saltLen)
	if _, err := io.ReadFull(d.rand, salt); err != nil {
		return nil, fmt.Errorf("daily salt: no entropy: %w", err)
	}
	if d.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), saltStoreTimeout)
		stored, err := d.store.SetNX(ctx, time.Unix(today*86400, 0).UTC().Format(time.DateOnly), salt, saltTTL)
		cancel()
		switch {
		case err != nil:
			d.storeErrors.Add(1)
		case len(stored) != saltLen:
			d.storeErrors.Add(1)
		default:
			copy(salt, stored)
		}
	}
	k := &saltKey{day: today}
	for i := range k.ipad {
		k.ipad[i], k.opad[i] = 0x36, 0x5c
	}
	for i, b := range salt {
		k.ipad[i] ^= b
		k.opad[i] ^= b
	}
	clear(salt)
	next := &saltState{cur: k}
	if st != nil && st.cur.day == today-1 {
		next.prev = st.cur
	}
	d.state.Store(next)
	return next, nil
}

// maxMACInput is the longest message mac hashes as is; longer messages
// are hashed first (see Sum).
const maxMACInput = 512

// mac returns HMAC-SHA256(salt, msg) without allocating. msg must be at
// most maxMACInput bytes.
func (k *saltKey) mac(msg []byte) [sha256.Size]byte {
	var in [sha256.BlockSize + maxMACInput]byte
	copy(in[:], k.ipad[:])
	n := copy(in[sha256.BlockSize:], msg)
	inner := sha256.Sum256(in[:sha256.BlockSize+n])
	var out [sha256.BlockSize + sha256.Size]byte
	copy(out[:], k.opad[:])
	copy(out[sha256.BlockSize:], inner[:])
	return sha256.Sum256(out[:])
}

// errNoSalt is returned when a DailySalt cannot make a salt.
var errNoSalt = errors.New("daily salt unavailable")

// Sum returns HMAC-SHA256 of msg under the salt of the day of t (see
// key): equal inputs on the same UTC day give equal sums, on different
// days unrelated ones. A msg longer than 512 bytes is replaced by its
// SHA-256 first. Callers separate their uses by a prefix in msg (the IP
// hash uses "ip\x00"). Sum does not allocate.
func (d *DailySalt) Sum(t time.Time, msg []byte) ([sha256.Size]byte, error) {
	k, err := d.key(t)
	if err != nil {
		return [sha256.Size]byte{}, errors.Join(errNoSalt, err)
	}
	if len(msg) > maxMACInput {
		h := sha256.Sum256(msg)
		return k.mac(h[:]), nil
	}
	return k.mac(msg), nil
}

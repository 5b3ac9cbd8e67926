package proxy

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a per-client token bucket over a fixed table: memory stays
// constant however many clients there are, and no goroutine sweeps it. Two
// clients whose keys collide share a bucket, which with 64Ki buckets only
// matters for a very large crowd behind one limit — the limit then errs on
// the side of letting traffic through, never on rejecting a lone client.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	seed  maphash.Seed
	now   func() time.Time

	shards [256]struct {
		mu sync.Mutex
		b  [256]bucket
	}
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds; 0 = never used
}

// newRateLimiter returns nil (no limit) when rate is not positive.
func newRateLimiter(perSecond float64, burst int, now func() time.Time) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	if now == nil {
		now = time.Now
	}
	return &rateLimiter{rate: perSecond, burst: float64(burst), seed: maphash.MakeSeed(), now: now}
}

// allow takes one token for ip. When none is left it returns false and how
// long until one is.
func (l *rateLimiter) allow(ip netip.Addr) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	a := ip.As16()
	h := maphash.Bytes(l.seed, a[:])
	sh := &l.shards[h&0xff]
	now := l.now().UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := &sh.b[(h>>8)&0xff]
	if b.last == 0 {
		b.tokens = l.burst
	} else if dt := now - b.last; dt > 0 {
		b.tokens = min(l.burst, b.tokens+float64(dt)/1e9*l.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * 1e9)
	return false, wait
}

package forward

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Clock is time as the spool and delivery see it. Tests inject a fake one
// so that backoff, Retry-After, batching by age and expiry are checked
// without sleeping.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a
	// function that stops it early.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// jitter draws the random part of backoff delays. It is shared by every
// destination, hence the lock.
type jitter struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newJitter(src rand.Source) *jitter {
	if src == nil {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return &jitter{r: rand.New(src)}
}

// upTo returns a uniformly random duration in [0, d].
func (j *jitter) upTo(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return time.Duration(j.r.Int64N(int64(d) + 1))
}

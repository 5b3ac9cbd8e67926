package forward

import (
	"container/heap"
	"context"
	"errors"
	"github.com/sidetrack/sidetrack/forward/status"
	"time"
)

// failure is what delivery does about an error (DESIGN §5 retry table).
type failure uint8

const (
	// failRetry: back off and try again (network errors, timeouts, 408,
	// 425, 429, 5xx except 501/505, and anything unclassified).
	failRetry failure = iota
	// failPermanent: dead-letter at once (other 4xx, 501, 505).
	failPermanent
	// failPause: pause the destination and probe (401, 403).
	failPause
	// failTooLarge: split the batch (413).
	failTooLarge
)

// Optional methods an adapter's error may have besides the behaviour
// interfaces of destination.go, so a dead letter records what the
// destination answered.
type (
	statusCoder interface{ StatusCode() int }
	excerpter   interface{ ResponseExcerpt() string }
)

// classified is an error read through the behaviour interfaces.
type classified struct {
	kind    failure
	wait    time.Duration // Retry-After; 0 = none
	status  int
	excerpt string
}

// classify reads err. It never parses the message: an error that says
// nothing about itself is retried (bounded by retry.max_attempts and
// retry.max_age), which is right for the transport errors that are the
// usual unclassified ones.
func classify(err error) classified {
	c := classified{kind: failRetry}
	var (
		tl tooLarge
		pa paused
		pe permanent
		rt retryable
		ra retryAfter
		sc statusCoder
		ex excerpter
	)
	switch {
	case errors.As(err, &tl) && tl.TooLarge():
		c.kind = failTooLarge
	case errors.As(err, &pa) && pa.Paused():
		c.kind = failPause
	case errors.As(err, &pe) && pe.Permanent():
		c.kind = failPermanent
	case errors.As(err, &rt) && rt.Retryable():
		c.kind = failRetry
	}
	if c.kind == failRetry && errors.As(err, &ra) {
		c.wait = max(ra.RetryAfter(), 0)
	}
	if errors.As(err, &sc) {
		c.status = sc.StatusCode()
	}
	if errors.As(err, &ex) {
		c.excerpt = ex.ResponseExcerpt()
	} else {
		c.excerpt = status.Excerpt(err.Error())
	}
	return c
}

// isCancel reports a send cut short by shutdown rather than failed.
func isCancel(err error) bool { return errors.Is(err, context.Canceled) }

// backoff is exponential with full jitter: uniform in [0, min(cap,
// base·2^(attempt-1))], so many destinations (or replicas) failing
// together do not retry in lockstep.
func backoff(j *jitter, attempt int, base, limit time.Duration) time.Duration {
	ceil := base
	for i := 1; i < attempt && ceil < limit; i++ {
		ceil *= 2
	}
	if limit > 0 && ceil > limit {
		ceil = limit
	}
	return j.upTo(ceil)
}

// retryEntry is a member of a destination's retry set: an event whose own
// delivery failed while others in its batch went through, parked so that
// it does not hold the cursor back.
type retryEntry struct {
	seq      uint64
	di       int // the destination's position in the record header
	nd       int // destinations in the record header
	size     int // record bytes
	appended time.Time
	state    retryState
	idx      int // position in the heap; -1 while in flight
}

// retryQueue orders the retry set by next attempt time.
type retryQueue struct {
	h     retryHeap
	total int // entries, including those in flight
}

type retryHeap []*retryEntry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].state.next.Before(h[j].state.next) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *retryHeap) Push(x any)        { e := x.(*retryEntry); e.idx = len(*h); *h = append(*h, e) }
func (h *retryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

// add puts a new entry in the set.
func (q *retryQueue) add(e *retryEntry) {
	q.total++
	heap.Push(&q.h, e)
}

// requeue puts an in-flight entry back (its attempt failed again, or its
// outcome could not be recorded).
func (q *retryQueue) requeue(e *retryEntry) {
	if e.idx < 0 {
		heap.Push(&q.h, e)
	}
}

// take removes a waiting entry from the schedule; it stays counted
// until remove or requeue.
func (q *retryQueue) take(e *retryEntry) {
	if e.idx >= 0 {
		heap.Remove(&q.h, e.idx)
	}
}

// remove forgets an entry for good (delivered or dead-lettered).
func (q *retryQueue) remove(e *retryEntry) {
	if e.idx >= 0 {
		heap.Remove(&q.h, e.idx)
	}
	q.total--
}

// popDue takes the next entry due at now, or nil; it stays counted until
// remove.
func (q *retryQueue) popDue(now time.Time) *retryEntry {
	if len(q.h) == 0 || q.h[0].state.next.After(now) {
		return nil
	}
	return heap.Pop(&q.h).(*retryEntry)
}

// next is when the earliest waiting entry is due (zero when none waits).
func (q *retryQueue) next() time.Time {
	if len(q.h) == 0 {
		return time.Time{}
	}
	return q.h[0].state.next
}

// oldestFirst returns the waiting entries by sequence, for backlog
// trimming.
func (q *retryQueue) oldestFirst() []*retryEntry {
	out := append([]*retryEntry(nil), q.h...)
	sortEntries(out)
	return out
}

// oldest is the appended time of the oldest waiting entry (0 = none).
func (q *retryQueue) oldest() int64 {
	var m int64
	for _, e := range q.h {
		if ms := e.appended.UnixMilli(); m == 0 || ms < m {
			m = ms
		}
	}
	return m
}

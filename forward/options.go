package forward

import (
	"math/rand/v2"
	"time"
)

// Option adjusts a Spool; the defaults are what production wants.
type Option func(*options)

type options struct {
	clock         Clock
	rand          rand.Source
	senders       int
	lockTimeout   time.Duration
	backoffBase   time.Duration
	probeInterval time.Duration
	fullWait      time.Duration
	diskFullWait  time.Duration
	maxTxOps      int

	// committed receives the dedup keys of every successful append, after
	// its commit (the dedup stage confirms its reservations with it).
	committed func(keys [][16]byte)

	// beforeCommit runs inside the writer before each commit; a non-nil
	// error fails the transaction as if bbolt had. Tests only.
	beforeCommit func() error
}

func defaultOptions() options {
	return options{
		clock:         realClock{},
		senders:       4,
		lockTimeout:   2 * time.Second,
		backoffBase:   500 * time.Millisecond,
		probeInterval: 15 * time.Second,
		fullWait:      2 * time.Second,
		diskFullWait:  30 * time.Second,
		maxTxOps:      1024,
	}
}

// WithClock replaces the wall clock (tests).
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithRandom replaces the source of backoff jitter (tests).
func WithRandom(src rand.Source) Option { return func(o *options) { o.rand = src } }

// WithSenders sets how many requests one destination may have in flight
// (default 4). Destinations that group events per client (GA4) send many
// small requests and need several; order across groups is not kept anyway.
func WithSenders(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.senders = n
		}
	}
}

// WithLockTimeout bounds how long Open waits for the spool file's lock
// (default 2s). The CLI uses a short one to detect a running sidetrack.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.lockTimeout = d
		}
	}
}

// WithBackoff sets the first retry delay (default 500ms); each further
// attempt doubles it up to retry.max_backoff, with full jitter.
func WithBackoff(base time.Duration) Option {
	return func(o *options) {
		if base > 0 {
			o.backoffBase = base
		}
	}
}

// WithProbeInterval sets how often a paused destination is probed
// (default 15s, doubling up to retry.max_backoff).
func WithProbeInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.probeInterval = d
		}
	}
}

// WithFullRetryAfter sets the Retry-After given to clients when the spool
// is at spool.max_bytes (default 2s) and when the disk is full (default
// 30s).
func WithFullRetryAfter(full, diskFull time.Duration) Option {
	return func(o *options) {
		if full > 0 {
			o.fullWait = full
		}
		if diskFull > 0 {
			o.diskFullWait = diskFull
		}
	}
}

// withBeforeCommit installs a test hook run before every commit.
func withBeforeCommit(f func() error) Option { return func(o *options) { o.beforeCommit = f } }

// WithCommitted calls fn with the dedup keys of each successful append,
// once they are durable, so the dedup stage can turn its reservations into
// confirmed keys at once instead of holding them until they expire. fn
// must not keep the slice.
func WithCommitted(fn func(keys [][16]byte)) Option {
	return func(o *options) { o.committed = fn }
}

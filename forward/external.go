package forward

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// Log is a replicated log that feeds one destination's deliverer in place
// of the spool: the forward process mode, where a Kafka consumer group per
// destination is the durable buffer. The deliverer batches, retries,
// pauses and dead-letters exactly as it does over the spool; the log only
// hands out records and learns their outcome.
//
// A record handed out by Read stays the log's responsibility until it is
// resolved (delivered or dead-lettered): a record parked in the retry set
// is not resolved, so the log must not let its position move past it (a
// crash re-reads it: at least once, never lost). All methods are called
// from the destination's one delivery goroutine, except SetWake.
type Log interface {
	// Read calls fn for up to limit records not handed out before, in
	// order, without waiting, and returns how many it handed out. seq is
	// the log's own increasing number for the record; event is the event
	// encoding and is only valid during fn.
	Read(limit int, fn func(seq uint64, appended time.Time, event []byte)) (int, error)
	// Lookup returns a record handed out earlier and not resolved yet (a
	// due retry); ok is false when the log no longer owns it (its
	// partition moved to another consumer, which delivers it instead).
	Lookup(seq uint64) (appended time.Time, event []byte, ok bool)
	// Resolve records outcomes: done were delivered (or are not for this
	// destination), dead go to the destination's dead-letter queue, durably
	// before Resolve returns. It must be idempotent: a failed call is
	// retried with the same records.
	Resolve(ctx context.Context, done []uint64, dead []status.DeadLetter) error
	// SetWake installs the function the log calls, from any goroutine,
	// when new records may be readable.
	SetWake(wake func())
}

// Feed runs the delivery core over external logs, one per destination:
// the same batching, retry table, pausing and adapters as a Spool, without
// the spool file. Admission (events.include/exclude, consent) is decided
// when a record is read, since the edge that appended it kept no routing.
type Feed struct {
	s *Spool
}

// NewFeed builds a feed for cfg.Destinations; dests and logs are one per
// destination, in the same order. The feed owns the adapters (Close closes
// them), not the logs.
func NewFeed(cfg *config.Config, dests []Destination, logs []Log, log *zap.Logger, pool *enrich.EventPool, opts ...Option) (*Feed, error) {
	if cfg == nil {
		return nil, errors.New("forward: nil config")
	}
	if len(dests) != len(cfg.Destinations) || len(logs) != len(cfg.Destinations) {
		return nil, fmt.Errorf("forward: %d adapters and %d logs for %d configured destinations", len(dests), len(logs), len(cfg.Destinations))
	}
	if log == nil {
		log = zap.NewNop()
	}
	if pool == nil {
		pool = &enrich.EventPool{}
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	s := &Spool{cfg: cfg, log: log.Named("feed"), pool: pool, o: o, jit: newJitter(o.rand), byName: map[string]*destState{}}
	s.met = newSpoolMetrics(s, false)
	if err := s.initDests(dests); err != nil {
		return nil, err
	}
	for i, d := range s.dests {
		if logs[i] == nil {
			return nil, fmt.Errorf("forward: no log for destination %q", d.name)
		}
		// The log is the backlog: its retention bounds it, and the spool's
		// backlog trimming (which reads the spool file) does not apply.
		d.cfg.Backlog = config.Backlog{}
		d.ext = logs[i]
		logs[i].SetWake(d.wake)
	}
	return &Feed{s: s}, nil
}

// Start starts one deliverer per destination; cancelling ctx stops them
// abruptly (Close is the orderly way).
func (f *Feed) Start(ctx context.Context) error { return f.s.Start(ctx) }

// Close lets each destination flush what it holds until ctx ends, then
// stops delivery and closes the adapters. Records not resolved stay in
// their logs for the next consumer.
func (f *Feed) Close(ctx context.Context) error {
	f.s.draining.Store(true)
	f.s.stopDelivery(ctx)
	var errs []error
	for _, d := range f.s.dests {
		if err := d.dest.Close(); err != nil {
			errs = append(errs, fmt.Errorf("destination %q: %w", d.name, err))
		}
	}
	return errors.Join(errs...)
}

// Metrics returns the destinations' delivery metrics, for /metrics.
func (f *Feed) Metrics() *metrics.Set { return f.s.met.set }

// readExternal is read over a Log: due retries are looked up, then up to
// limit new records are read and admitted.
func (x *deliverer) readExternal(due []*retryEntry, limit int) (items []*item, more bool, err error) {
	now := x.clock.Now()
	l := x.d.ext
	for _, e := range due {
		appended, js, ok := l.Lookup(e.seq)
		if !ok {
			// Another consumer owns it now; forget it here.
			x.op.done = append(x.op.done, x.newItem(item{seq: e.seq, retry: e}))
			continue
		}
		it := x.newItem(item{seq: e.seq, nd: 1, size: len(js), appended: appended, attempts: e.state.attempts, retry: e})
		items = x.decode(items, it, js, now, x.light) // admitted when first read
	}
	if limit <= 0 {
		return items, false, nil
	}
	n, err := l.Read(limit, func(seq uint64, appended time.Time, js []byte) {
		// Tracked like a spool record, for the oldest-age gauge; the
		// cursor it yields is ignored (the log keeps its own position).
		it := x.newItem(item{seq: seq, nd: 1, size: len(js), appended: appended, tracked: true})
		x.track.add(seq, appended.UnixMilli())
		before := len(items)
		items = x.decode(items, it, js, now, false)
		if len(items) == before {
			return // dead-lettered as undecodable
		}
		switch x.d.admit.admit(it.ev) {
		case admitted:
			return
		case consentBlocked:
			x.d.m.consentBlocked.Inc()
		}
		items = items[:before]
		x.s.pool.Put(it.ev)
		it.ev = nil
		x.op.done = append(x.op.done, it)
	})
	if err != nil {
		return items, false, err
	}
	x.caughtUp = n < limit
	return items, !x.caughtUp, nil
}

// store records op's outcomes in the spool or the destination's log.
func (x *deliverer) store(op *resolveOp) error {
	if x.d.ext == nil {
		return x.s.submit(context.Background(), op)
	}
	done := make([]uint64, 0, len(op.done))
	for _, it := range op.done {
		done = append(done, it.seq)
	}
	if len(done) == 0 && len(op.dead) == 0 {
		return nil // a cursor move only
	}
	var dead []status.DeadLetter
	for i := range op.dead {
		d := &op.dead[i]
		dead = append(dead, status.DeadLetter{
			Seq: d.seq, Appended: d.dl.appended, Dead: d.dl.dead, Reason: d.dl.reason,
			Attempts: d.dl.attempts, Status: d.dl.status, Excerpt: d.dl.excerpt, Event: d.dl.json,
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return x.d.ext.Resolve(ctx, done, dead)
}

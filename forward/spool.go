package forward

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// Spool is the durable store between ingest and delivery (DESIGN §5): the
// proxy's Sink. Append returns once the events are committed by the group
// commit; per-destination deliverers read them back, batch them, send them
// and record each outcome, and an entry leaves the spool when every
// destination it was admitted to is done with it. It also keeps the DLQ,
// the quarantine and the dedup id index.
//
// One bbolt file (spool.db in spool.dir), written by one goroutine that
// batches every request waiting for it into a single transaction.
type Spool struct {
	cfg  *config.Config
	log  *zap.Logger
	pool *enrich.EventPool
	o    options
	path string
	db   *bolt.DB
	jit  *jitter
	met  *spoolMetrics

	dests      []*destState
	byName     map[string]*destState
	quarantine counters

	// bytes and events count the stored records (spool.max_bytes).
	bytes  atomic.Int64
	events atomic.Int64

	w        *writer
	draining atomic.Bool
	diskFull atomic.Bool // the last commit failed for lack of space
	// mu is held shared while a request is handed to the writer and
	// exclusively by Close to stop new requests before the writer stops.
	mu     sync.RWMutex
	closed bool

	ops sync.Pool // *appendOp

	runMu    sync.Mutex
	started  bool
	stopped  bool
	delivers []*deliverer
	runWG    sync.WaitGroup
	flush    chan struct{} // closed by Close: flush and stop
	hard     chan struct{} // closed when time is up: stop now
	hardOnce sync.Once
	// watchDone is closed when the goroutine watching Start's ctx ends.
	watchDone chan struct{}
}

// destState is one destination as the spool knows it: routing, counters
// shared with Append and the metrics, and what Open loaded for its
// deliverer.
type destState struct {
	idx   int
	name  string
	cfg   config.Destination
	admit admission
	dest  Destination // nil when opened without adapters (CLI)
	m     destMetrics

	// notify wakes the deliverer after a commit added events for it.
	notify chan struct{}

	backlogBytes  atomic.Int64
	backlogEvents atomic.Int64
	oldestMs      atomic.Int64 // appended time of the oldest event it holds; 0 = none known
	paused        atomic.Bool
	dlq           counters
	// ordersDelivered and ordersDead count order_completed events, so
	// the status page can set what each destination got against the
	// orders placed.
	ordersDelivered, ordersDead atomic.Int64

	// ext, when set, feeds the deliverer instead of the spool file (Feed).
	ext Log

	// Loaded by Open, owned by the deliverer afterwards.
	cursor  uint64
	retries []*retryEntry
}

// counters track a bucket's size; only the writer changes them.
type counters struct {
	events atomic.Int64
	bytes  atomic.Int64
}

// Open opens (creating if needed) the spool in cfg.Spool.Dir. dests are
// the adapters, one per cfg.Destinations entry with the same name; nil
// opens the store alone (the CLI: DLQ operations, no delivery). A file
// that fails its consistency check is renamed aside and a fresh one is
// created; a file locked by another process gives ErrLocked.
func Open(cfg *config.Config, dests []Destination, log *zap.Logger, pool *enrich.EventPool, opts ...Option) (*Spool, error) {
	if cfg == nil {
		return nil, errors.New("forward: nil config")
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
	if len(cfg.Destinations) > maxRecordDests {
		return nil, fmt.Errorf("forward: %d destinations configured, at most %d are supported", len(cfg.Destinations), maxRecordDests)
	}
	s := &Spool{cfg: cfg, log: log.Named("spool"), pool: pool, o: o, jit: newJitter(o.rand), byName: map[string]*destState{}}
	s.met = newSpoolMetrics(s, true)
	if err := s.initDests(dests); err != nil {
		return nil, err
	}
	if err := s.openStore(); err != nil {
		return nil, err
	}
	s.w = newWriter(s)
	go s.w.run()
	return s, nil
}

func (s *Spool) initDests(dests []Destination) error {
	if dests != nil && len(dests) != len(s.cfg.Destinations) {
		return fmt.Errorf("forward: %d adapters for %d configured destinations", len(dests), len(s.cfg.Destinations))
	}
	for i, dc := range s.cfg.Destinations {
		a, err := newAdmission(dc)
		if err != nil {
			return err
		}
		d := &destState{idx: i, name: dc.Name, cfg: dc, admit: a, notify: make(chan struct{}, 1)}
		if dests != nil {
			if dests[i] == nil || dests[i].Name() != dc.Name {
				return fmt.Errorf("forward: adapter %d does not match destination %q", i, dc.Name)
			}
			d.dest = dests[i]
		}
		d.m = s.met.register(d, s.o.clock.Now)
		s.dests = append(s.dests, d)
		s.byName[dc.Name] = d
	}
	return nil
}

// Metrics returns the spool's and the destinations' metrics, for /metrics.
func (s *Spool) Metrics() *metrics.Set { return s.met.set }

// Ready reports whether the spool is writable (for /readyz): not
// draining, and the last commit did not fail for lack of disk space. A
// spool at spool.max_bytes is still ready: clients get 429 and retry,
// and taking every replica out of the load balancer would not help.
func (s *Spool) Ready() error {
	if s.draining.Load() {
		return ErrDraining
	}
	if s.diskFull.Load() {
		return &FullError{Wait: s.o.diskFullWait, DiskFull: true}
	}
	return nil
}

// Append stores events durably and then releases them to the pool; on
// error the caller keeps them (proxy.Sink's contract). Each event is admitted to the destinations whose filters
// and consent allow it (e.Destinations is set accordingly) and encoded;
// an event admitted nowhere is acknowledged without being stored. It
// returns after the group commit that wrote them (and, with
// spool.fsync: always, after its fsync), a *FullError when the spool is at
// spool.max_bytes or the disk is full, or ErrDraining after Close began.
func (s *Spool) Append(ctx context.Context, events []*enrich.Event) error {
	if len(events) == 0 {
		return nil
	}
	if s.draining.Load() {
		return ErrDraining
	}
	if max := s.cfg.Spool.MaxBytes.Bytes(); max > 0 && s.bytes.Load() >= max {
		s.met.full.Inc()
		return &FullError{Wait: s.o.fullWait}
	}
	op := s.getAppendOp()
	now := s.o.clock.Now()
	for _, e := range events {
		op.add(s, e, now)
	}
	var err error
	if len(op.ends) > 0 || len(op.keys) > 0 {
		err = s.submit(ctx, op)
	}
	if err == nil && s.o.committed != nil && len(op.keys) > 0 {
		s.o.committed(op.keys)
	}
	s.putAppendOp(op)
	if err != nil {
		// The caller keeps the events: it undoes their dedup reservations
		// before releasing them, so the client's retry is accepted.
		if isDiskFull(err) {
			s.met.full.Inc()
			return &FullError{Wait: s.o.diskFullWait, DiskFull: true, Err: err}
		}
		return err
	}
	s.release(events)
	return nil
}

// Quarantine keeps events that decoded but failed validation on a browser
// route, each with its PII-free reason, bounded like the DLQ. It releases
// the events.
func (s *Spool) Quarantine(ctx context.Context, events []*enrich.Event, reasons []string) error {
	if len(events) == 0 {
		return nil
	}
	if s.draining.Load() {
		return ErrDraining
	}
	op := newQuarantineOp(s.o.clock.Now(), events, reasons)
	err := s.submit(ctx, op)
	if err != nil {
		if isDiskFull(err) {
			return &FullError{Wait: s.o.diskFullWait, DiskFull: true, Err: err}
		}
		return err // the caller keeps the events
	}
	s.release(events)
	return nil
}

func (s *Spool) release(events []*enrich.Event) {
	for _, e := range events {
		s.pool.Put(e)
	}
}

// submit hands op to the writer and waits for its commit.
func (s *Spool) submit(ctx context.Context, o op) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrDraining
	}
	select {
	case s.w.reqs <- o:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	// The writer always answers (it drains its queue before exiting), and
	// o must not be reused before it does.
	return o.wait()
}

// Close stops taking events (Append returns ErrDraining), lets each
// destination flush what it can until ctx ends (cfg.ShutdownTimeout in
// production), records every cursor, and closes the file and the
// adapters. What was not delivered stays in the spool for the next start.
func (s *Spool) Close(ctx context.Context) error {
	s.draining.Store(true)
	s.stopDelivery(ctx)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.w.reqs)
	s.mu.Unlock()
	<-s.w.done

	var errs []error
	if !s.cfg.Spool.Fsync.Never {
		if err := s.db.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("spool sync: %w", err))
		}
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("spool close: %w", err))
	}
	for _, d := range s.dests {
		if d.dest != nil {
			if err := d.dest.Close(); err != nil {
				errs = append(errs, fmt.Errorf("destination %q: %w", d.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

package forward

import (
	"encoding/binary"
	"errors"
	"runtime"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// op is one request to the writer: an append, a quarantine, a delivery
// outcome, a DLQ operation. Many ops share one transaction (the group
// commit); apply may run more than once if the shared transaction fails
// and the writer retries ops one by one, so it must not keep state from an
// earlier run.
type op interface {
	// apply makes the op's changes inside the transaction.
	apply(t *txn) error
	// committed runs after a successful commit (wake-ups, metrics).
	committed(t *txn)
	// finish hands the outcome to whoever waits.
	finish(err error)
	// wait blocks until finish.
	wait() error
}

// waiter implements finish and wait.
type waiter struct{ done chan error }

func newWaiter() waiter           { return waiter{done: make(chan error, 1)} }
func (w waiter) finish(err error) { w.done <- err }
func (w waiter) wait() error      { return <-w.done }

// writer owns the write path: one goroutine takes every op waiting in
// reqs, applies them in one transaction and commits (the shape of
// go-diskqueue's ioLoop, with bbolt underneath).
type writer struct {
	s    *Spool
	reqs chan op
	done chan struct{}
	t    txn
	ops  []op

	lastHour int64
	// syncStop ends the periodic fsync of the interval policy.
	syncStop chan struct{}
	syncDone chan struct{}
	dirty    chan struct{}
}

func newWriter(s *Spool) *writer {
	w := &writer{
		s:        s,
		reqs:     make(chan op, 4096),
		done:     make(chan struct{}),
		syncStop: make(chan struct{}),
		syncDone: make(chan struct{}),
		dirty:    make(chan struct{}, 1),
	}
	w.t.s = s
	w.t.backlog = make([]delta, len(s.dests))
	w.t.dlq = make([]delta, len(s.dests))
	return w
}

// run is the writer goroutine.
func (w *writer) run() {
	defer close(w.done)
	f := w.s.cfg.Spool.Fsync
	if !f.Always && !f.Never && f.Interval > 0 {
		go w.syncLoop(f.Interval)
		defer func() { close(w.syncStop); <-w.syncDone }()
	} else {
		close(w.syncDone)
	}
	for {
		o, ok := <-w.reqs
		if !ok {
			return
		}
		w.ops = append(w.ops[:0], o)
		// Let the appenders that are running queue their requests too:
		// one yield turns many tiny commits into fewer, larger ones.
		runtime.Gosched()
		open := true
	collect:
		for len(w.ops) < w.s.o.maxTxOps {
			select {
			case o, ok := <-w.reqs:
				if !ok {
					open = false
					break collect
				}
				w.ops = append(w.ops, o)
			default:
				break collect
			}
		}
		w.commit(w.ops)
		clear(w.ops)
		if !open {
			return
		}
	}
}

// commit runs ops in one transaction. If an op's apply fails, the others
// must not pay for it: each is retried alone. A failed commit (disk full,
// I/O error) fails them all; their callers decide what to do.
func (w *writer) commit(ops []op) {
	err, applyFailed := w.runTx(ops)
	w.s.diskFull.Store(isDiskFull(err))
	if err == nil {
		for _, o := range ops {
			o.committed(&w.t)
			o.finish(nil)
		}
		return
	}
	if !applyFailed || len(ops) == 1 {
		w.s.log.Warn("spool commit failed", zap.Int("ops", len(ops)), zap.Error(err))
		for _, o := range ops {
			o.finish(err)
		}
		return
	}
	for _, o := range ops {
		one := []op{o}
		if err, _ := w.runTx(one); err != nil {
			w.s.log.Warn("spool op failed", zap.Error(err))
			o.finish(err)
			continue
		}
		o.committed(&w.t)
		o.finish(nil)
	}
}

// runTx applies ops and commits. applyFailed tells an op's own failure
// from the commit's.
func (w *writer) runTx(ops []op) (err error, applyFailed bool) {
	s := w.s
	tx, err := s.db.Begin(true)
	if err != nil {
		return err, false
	}
	t := &w.t
	t.begin(tx, s.o.clock.Now())
	for _, o := range ops {
		if err := o.apply(t); err != nil {
			_ = tx.Rollback()
			return err, true
		}
	}
	if err := t.putIDs(); err != nil {
		_ = tx.Rollback()
		return err, true
	}
	if err := w.hourly(t); err != nil {
		_ = tx.Rollback()
		return err, false
	}
	if t.seq != t.startSeq {
		if err := t.events.SetSequence(t.seq); err != nil {
			_ = tx.Rollback()
			return err, false
		}
	}
	if s.o.beforeCommit != nil {
		if err := s.o.beforeCommit(); err != nil {
			_ = tx.Rollback()
			s.met.commitFails.Inc()
			return err, false
		}
	}
	if err := tx.Commit(); err != nil {
		s.met.commitFails.Inc()
		return err, false
	}
	s.met.commits.Inc()
	if s.cfg.Spool.Fsync.Always {
		s.met.fsyncs.Inc()
	}
	t.publish()
	select {
	case w.dirty <- struct{}{}:
	default:
	}
	return nil, false
}

// hourly drops dedup index buckets that left the window and dead letters
// past dlq.max_age, once per hour.
func (w *writer) hourly(t *txn) error {
	h := hourOf(t.now)
	if h == w.lastHour {
		return nil
	}
	if err := pruneIDIndex(t.idsBucket(), h, w.s.cfg.Dedup.Window.D()); err != nil {
		return err
	}
	if err := t.trimAllDeadLetters(); err != nil {
		return err
	}
	w.lastHour = h
	return nil
}

// syncLoop is the interval fsync policy: bbolt commits without fsync and
// this loop makes the file durable every interval when something was
// written, so a power loss takes at most about one interval of
// acknowledged events.
func (w *writer) syncLoop(every time.Duration) {
	defer close(w.syncDone)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-w.syncStop:
			return
		case <-tick.C:
		}
		select {
		case <-w.dirty:
		default:
			continue
		}
		if err := w.s.db.Sync(); err != nil {
			w.s.log.Error("spool fsync failed", zap.Error(err))
			continue
		}
		w.s.met.fsyncs.Inc()
	}
}

// delta is a change to a counters pair, applied after the commit.
type delta struct{ events, bytes, dropped int64 }

func (d *delta) add(events, bytes int64) { d.events += events; d.bytes += bytes }

// txn is the writer's view of one transaction: the buckets, the sequence
// numbers it assigned and the counter changes to publish after commit.
type txn struct {
	s   *Spool
	tx  *bolt.Tx
	now time.Time

	// events is opened with the transaction; the other buckets are
	// opened on first use (through their methods): most commits touch
	// one or two of them, and opening a bucket allocates.
	events, pending, ids, destsB, dlqB, quar *bolt.Bucket
	// eventsC and pendingC serve point reads and deletes (see seekGet).
	eventsC, pendingC *bolt.Cursor

	startSeq, seq uint64
	arena         []byte
	ids16         [][]byte // dedup keys to commit, aliasing the ops

	spool   delta
	quarD   delta
	backlog []delta // by destState.idx
	dlq     []delta // by destState.idx
}

func (t *txn) begin(tx *bolt.Tx, now time.Time) {
	t.tx = tx
	t.now = now
	t.events = tx.Bucket(bucketEvents)
	t.pending, t.ids, t.destsB, t.dlqB, t.quar = nil, nil, nil, nil, nil
	// Mostly appended at the end and deleted from the front: fuller
	// pages than bbolt's 50% default.
	t.events.FillPercent = 0.9
	t.eventsC, t.pendingC = t.events.Cursor(), nil
	t.startSeq = t.events.Sequence()
	t.seq = t.startSeq
	// Keys and values must stay valid until the commit. A fresh slice
	// when the old one is too small keeps earlier sub-slices intact.
	t.arena = t.arena[:0]
	clear(t.ids16)
	t.ids16 = t.ids16[:0]
	t.spool, t.quarD = delta{}, delta{}
	clear(t.backlog)
	clear(t.dlq)
}

// pendingBucket returns the pending masks' bucket and its cursor.
func (t *txn) pendingBucket() (*bolt.Bucket, *bolt.Cursor) {
	if t.pending == nil {
		t.pending = t.tx.Bucket(bucketPending)
		t.pending.FillPercent = 0.9 // like events
		t.pendingC = t.pending.Cursor()
	}
	return t.pending, t.pendingC
}

func (t *txn) idsBucket() *bolt.Bucket        { return t.lazy(&t.ids, bucketIDs) }
func (t *txn) destsBucket() *bolt.Bucket      { return t.lazy(&t.destsB, bucketDests) }
func (t *txn) dlqBucket() *bolt.Bucket        { return t.lazy(&t.dlqB, bucketDLQ) }
func (t *txn) quarantineBucket() *bolt.Bucket { return t.lazy(&t.quar, bucketQuarantine) }

func (t *txn) lazy(b **bolt.Bucket, name []byte) *bolt.Bucket {
	if *b == nil {
		*b = t.tx.Bucket(name)
	}
	return *b
}

// keep copies b into the transaction's arena.
func (t *txn) keep(b []byte) []byte {
	if cap(t.arena)-len(t.arena) < len(b) {
		t.arena = make([]byte, 0, max(64<<10, 2*len(b)))
	}
	start := len(t.arena)
	t.arena = append(t.arena, b...)
	return t.arena[start:len(t.arena):len(t.arena)]
}

// key returns seq's key, valid until the commit.
func (t *txn) key(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return t.keep(b[:])
}

// mask returns a pending-mask value, valid until the commit.
func (t *txn) mask(m uint64) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], m)
	return t.keep(b[:])
}

// publish applies the counter changes of a committed transaction.
func (t *txn) publish() {
	s := t.s
	s.bytes.Add(t.spool.bytes)
	s.events.Add(t.spool.events)
	s.quarantine.bytes.Add(t.quarD.bytes)
	s.quarantine.events.Add(t.quarD.events)
	if t.quarD.dropped > 0 {
		s.met.quarDropped.Add(int(t.quarD.dropped))
	}
	for i, d := range s.dests {
		if b := t.backlog[i]; b != (delta{}) {
			d.backlogBytes.Add(b.bytes)
			d.backlogEvents.Add(b.events)
		}
		if q := t.dlq[i]; q != (delta{}) {
			d.dlq.bytes.Add(q.bytes)
			d.dlq.events.Add(q.events)
			if q.dropped > 0 {
				d.m.dropped.Add(int(q.dropped))
			}
		}
	}
}

// clearPending marks seq done for the destination at position di of its
// record, which lists nd destinations; when none is left, the record is
// deleted and its bytes leave the spool. size is the record's length.
//
// A record without a pending entry is pending for all its destinations:
// appending writes no mask (most events have one destination, and every
// Put costs the group commit), the first destination done writes one.
func (t *txn) clearPending(seq uint64, di, nd, size int) error {
	k := t.key(seq)
	pending, pendingC := t.pendingBucket()
	v := seekGet(pendingC, k)
	var m uint64
	switch {
	case len(v) == 8:
		m = binary.LittleEndian.Uint64(v)
	case seekGet(t.eventsC, k) == nil:
		return nil // already gone: an earlier outcome, or a replayed op
	default:
		m = allPending(nd)
	}
	bit := uint64(1) << uint(di)
	if m&bit == 0 {
		return nil
	}
	m &^= bit
	if m != 0 {
		return pending.Put(k, t.mask(m))
	}
	if v != nil {
		if err := seekDelete(pendingC, k); err != nil {
			return err
		}
	}
	if err := seekDelete(t.eventsC, k); err != nil {
		return err
	}
	t.spool.add(-1, -int64(size))
	return nil
}

// allPending is the mask of a record listing nd destinations.
func allPending(nd int) uint64 { return uint64(1)<<uint(nd) - 1 }

// isPending reads a pending entry (nil = all pending) for position di.
func isPending(v []byte, di int) bool {
	return v == nil || (len(v) == 8 && binary.LittleEndian.Uint64(v)&(1<<uint(di)) != 0)
}

// errUnknownDest is returned by ops naming a destination that is not
// configured.
var errUnknownDest = errors.New("destination is not configured")

package forward

import (
	"context"
	"fmt"
	"github.com/valyala/fastjson"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/enrich"
)

// deliverer moves one destination's events from the spool to its adapter.
// One goroutine (run) owns all of its state: it reads records after the
// cursor and due retries, batches them, hands batches to at most `senders`
// send goroutines, and records every outcome through the writer. Nothing
// it does waits on another destination, and Append never waits on it.
type deliverer struct {
	s     *Spool
	d     *destState
	dest  Destination
	log   *zap.Logger
	clock Clock

	maxEvents   int
	maxBytes    int
	maxWait     time.Duration
	timeout     time.Duration
	maxAttempts int
	maxAge      time.Duration
	maxBackoff  time.Duration
	maxHeld     int
	senders     int
	dryRun      bool

	// parser decodes stored events; only the deliverer's read loop uses it.
	parser fastjson.Parser
	// light: the adapter takes light events (storedJSONSender).
	light bool
	// free holds resolved items for reuse (newItem).
	free []*item

	readPos   uint64 // last sequence read from the backlog
	persisted uint64 // cursor on disk
	caughtUp  bool
	track     tracker
	retries   retryQueue
	b         batcher
	ready     []*batch
	held      int // items in the batcher, ready or sending
	sending   int
	results   chan sendResult

	consecutive  int // batch-level failures in a row
	blockedUntil time.Time
	paused       bool
	probes       int
	probeAt      time.Time
	probing      bool
	nextGauge    time.Time

	sendCtx     context.Context
	cancelSends context.CancelFunc
	hard        <-chan struct{}
	flushing    bool
	op          *resolveOp
	stats       outcomeCounts
	fails       failLog
}

// sendResult is what a send goroutine reports.
type sendResult struct {
	b        *batch
	perEvent []error
	err      error
	dur      time.Duration
}

// outcomeCounts are metric increments, published after a commit.
type outcomeCounts struct{ delivered, retried, dead, dryRun, orders, ordersDead int }

func newDeliverer(s *Spool, d *destState) *deliverer {
	c := d.cfg
	lim := d.dest.Limits()
	x := &deliverer{
		s: s, d: d, dest: d.dest, clock: s.o.clock,
		log:         s.log.With(zap.String("destination", d.name)),
		maxEvents:   c.Batch.MaxEvents,
		maxBytes:    int(c.Batch.MaxBytes.Bytes()),
		maxWait:     c.Batch.MaxWait.D(),
		timeout:     c.Timeout.D(),
		maxAttempts: c.Retry.MaxAttempts,
		maxAge:      c.Retry.MaxAge.D(),
		maxBackoff:  c.Retry.MaxBackoff.D(),
		senders:     s.o.senders,
		dryRun:      c.DryRun,
		readPos:     d.cursor,
		persisted:   d.cursor,
		results:     make(chan sendResult, s.o.senders),
		op:          newResolveOp(d),
	}
	if lim.MaxEvents > 0 && (x.maxEvents <= 0 || lim.MaxEvents < x.maxEvents) {
		x.maxEvents = lim.MaxEvents
	}
	if lim.MaxBytes > 0 && (x.maxBytes <= 0 || lim.MaxBytes < x.maxBytes) {
		x.maxBytes = lim.MaxBytes
	}
	x.maxEvents = max(x.maxEvents, 1)
	if sj, ok := d.dest.(storedJSONSender); ok {
		x.light = sj.SendsStoredJSON()
	}
	if x.timeout <= 0 {
		x.timeout = 10 * time.Second
	}
	if x.maxBackoff <= 0 {
		x.maxBackoff = 5 * time.Minute
	}
	x.maxHeld = max(2*x.senders*x.maxEvents, 1024)
	x.b = newBatcher(x.maxEvents, x.maxBytes, x.maxWait)
	for _, e := range d.retries {
		x.retries.add(e)
	}
	d.retries = nil
	return x
}

// run delivers until flush is closed, then flushes until nothing can be
// delivered right now or hard is closed.
func (x *deliverer) run(flush, hard <-chan struct{}) {
	x.sendCtx, x.cancelSends = context.WithCancel(context.Background())
	x.hard = hard
	defer x.shutdown()
	for {
		now := x.clock.Now()
		busy := x.trim(now)
		busy = x.fill(now) || busy
		x.collect(now)
		x.dispatch(now)
		x.gauges(now)
		if x.flushing && x.sending == 0 && x.idle(now) {
			return
		}
		var timer <-chan time.Time
		stop := func() {}
		if busy {
			timer = closedTimeChan()
		} else if at := x.nextWake(now); !at.IsZero() {
			timer, stop = x.clock.After(at.Sub(now))
		}
		select {
		case r := <-x.results:
			x.handle(r)
		case <-x.d.notify:
			x.caughtUp = false
		case <-timer:
		case <-flush:
			x.flushing = true
			flush = nil
		case <-hard:
			stop()
			return
		}
		stop()
	}
}

func closedTimeChan() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}

// idle reports that nothing can be delivered right now: everything read
// was resolved and the backlog is empty, or the destination refuses
// (paused, backing off) so waiting longer would not help a shutdown.
func (x *deliverer) idle(now time.Time) bool {
	if x.paused || now.Before(x.blockedUntil) {
		return true
	}
	due := x.retries.next()
	return x.held == 0 && x.caughtUp && (due.IsZero() || due.After(now))
}

// nextWake is the earliest moment something becomes due.
func (x *deliverer) nextWake(now time.Time) time.Time {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	earliest(x.b.next())
	if x.d.oldestMs.Load() != 0 && x.caughtUp && x.held == 0 && x.retries.next().IsZero() {
		// Everything is delivered but the oldest-age gauge still shows
		// an event: wake once more so it falls back to 0 rather than
		// growing until the next event arrives.
		earliest(x.nextGauge)
	}
	switch {
	case x.paused:
		// A probe needs something to send; with nothing held or left to
		// read, new events wake the deliverer instead.
		if !x.probing && (len(x.ready) > 0 || x.held > 0 || !x.caughtUp || !x.retries.next().IsZero()) {
			earliest(x.probeAt)
		}
	case now.Before(x.blockedUntil):
		earliest(x.blockedUntil)
	case x.held < x.maxHeld:
		// Full: a finished send wakes the deliverer.
		earliest(x.retries.next())
	}
	if !at.IsZero() && at.Before(now) {
		at = now
	}
	return at
}

// shutdown stops sends in flight, records their outcomes and the cursor,
// and releases every event still held.
func (x *deliverer) shutdown() {
	x.cancelSends()
	for x.sending > 0 {
		x.handle(<-x.results)
	}
	release := func(its []*item) {
		for _, it := range its {
			x.s.pool.Put(it.ev)
		}
	}
	for _, b := range x.ready {
		release(b.items)
	}
	for _, b := range x.b.flush(nil) {
		release(b.items)
	}
	x.ready = nil
	x.commit(x.clock.Now())
}

// fill reads due retries and new records while there is room. A paused
// destination reads only when its probe is due and it holds nothing to
// probe with. It reports whether it stopped with more to read and room
// to read it.
func (x *deliverer) fill(now time.Time) bool {
	probeNeedsWork := x.paused && !x.probing && !now.Before(x.probeAt) && x.held == 0
	if (x.paused && !probeNeedsWork) || now.Before(x.blockedUntil) {
		return false
	}
	room := x.maxHeld - x.held
	if room <= 0 {
		return false
	}
	var due []*retryEntry
	for len(due) < room {
		e := x.retries.popDue(now)
		if e == nil {
			break
		}
		due = append(due, e)
	}
	room -= len(due)
	limit := 0
	if !x.caughtUp {
		limit = min(room, 512)
	}
	if len(due) == 0 && limit == 0 {
		return false
	}
	items, more, err := x.read(due, limit)
	if err != nil {
		x.log.Error("reading the spool failed", zap.Error(err))
		for _, e := range due {
			x.retries.requeue(e)
		}
		return false
	}
	var out []*batch
	for _, it := range items {
		if !x.admitItem(it, now) {
			continue
		}
		x.held++
		out = x.b.add(it, x.dest.GroupKey(it.ev), now, out)
	}
	x.ready = append(x.ready, out...)
	x.commit(now)
	return more && x.held < x.maxHeld && !x.paused
}

// admitItem dead-letters an item that is too old or that the adapter's
// Prepare refuses; it reports whether the item goes on.
func (x *deliverer) admitItem(it *item, now time.Time) bool {
	if x.maxAge > 0 && now.Sub(it.appended) > x.maxAge {
		x.deadLetter(it, reasonMaxAge, classified{}, now)
		return false
	}
	if err := x.dest.Prepare(it.ev); err != nil {
		x.deadLetter(it, reasonPrepare, classify(err), now)
		return false
	}
	return true
}

// collect moves due batches to the send queue: by age, everything when
// flushing, and the oldest when the batcher holds all it may (many
// groups, none full).
func (x *deliverer) collect(now time.Time) {
	switch {
	case x.flushing || (x.held >= x.maxHeld && len(x.ready) == 0):
		x.ready = x.b.flush(x.ready)
	default:
		x.ready = x.b.due(now, x.ready)
	}
}

// dispatch starts sends while senders are free and the destination takes
// requests; a paused destination gets one probe at a time.
func (x *deliverer) dispatch(now time.Time) {
	for x.sending < x.senders && len(x.ready) > 0 {
		probe := false
		if x.paused {
			if x.probing || now.Before(x.probeAt) {
				return
			}
			probe = true
		} else if now.Before(x.blockedUntil) {
			return
		}
		b := x.ready[0]
		x.ready = x.ready[1:]
		if x.expire(b, now) {
			continue
		}
		if x.dryRun {
			x.held -= len(b.items)
			for _, it := range b.items {
				x.done(it)
			}
			x.stats.dryRun += len(b.items)
			x.commit(now)
			continue
		}
		b.probe = probe
		x.probing = x.probing || probe
		x.sending++
		go x.send(b)
	}
}

// expire dead-letters the items of b past retry.max_age; it reports
// whether b is now empty.
func (x *deliverer) expire(b *batch, now time.Time) bool {
	if x.maxAge <= 0 {
		return false
	}
	kept := b.items[:0]
	for _, it := range b.items {
		if now.Sub(it.appended) > x.maxAge {
			x.held--
			x.deadLetter(it, reasonMaxAge, classified{}, now)
			continue
		}
		kept = append(kept, it)
	}
	clear(b.items[len(kept):])
	b.items = kept
	if len(kept) == 0 {
		x.commit(now)
		return true
	}
	return false
}

// send runs one request; it is the only code that runs off the
// deliverer's goroutine, and it touches nothing but its batch.
func (x *deliverer) send(b *batch) {
	evs := make([]*enrich.Event, len(b.items))
	for i, it := range b.items {
		evs[i] = it.ev
	}
	ctx, cancel := context.WithTimeout(x.sendCtx, x.timeout)
	start := time.Now()
	per, err := safeSend(ctx, x.dest, evs)
	dur := time.Since(start)
	cancel()
	x.results <- sendResult{b: b, perEvent: per, err: err, dur: dur}
}

// safeSend turns an adapter panic into a retryable error, so one bad
// event cannot take the process down.
func safeSend(ctx context.Context, d Destination, evs []*enrich.Event) (per []error, err error) {
	defer func() {
		if r := recover(); r != nil {
			per, err = nil, fmt.Errorf("adapter panic: %v", r)
		}
	}()
	return d.Send(ctx, evs)
}

// gauges publishes the oldest-event age, at most once a second of clock
// time (the retry set is scanned).
func (x *deliverer) gauges(now time.Time) {
	if now.Before(x.nextGauge) {
		return
	}
	x.nextGauge = now.Add(time.Second)
	oldest := x.track.oldest()
	if r := x.retries.oldest(); r != 0 && (oldest == 0 || r < oldest) {
		oldest = r
	}
	switch {
	case oldest != 0:
		x.d.oldestMs.Store(oldest)
	case x.caughtUp && x.held == 0:
		x.d.oldestMs.Store(0)
	}
}

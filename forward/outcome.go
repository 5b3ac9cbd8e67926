package forward

import (
	"time"

	"go.uber.org/zap"
)

// handle records what a send goroutine reports (DESIGN §5 retry table).
func (x *deliverer) handle(r sendResult) {
	x.sending--
	now := x.clock.Now()
	x.d.m.duration.Update(r.dur.Seconds())
	b := r.b
	if b.probe {
		x.probing = false
		b.probe = false
	}
	if r.err != nil {
		if isCancel(r.err) && x.sendCtx.Err() != nil {
			x.requeue(b) // shutdown, not a failure: no attempt counted
			return
		}
		x.failBatch(b, classify(r.err), now)
		x.commit(now)
		return
	}
	if len(r.perEvent) != 0 && len(r.perEvent) != len(b.items) {
		x.log.Error("adapter returned a result count that does not match the batch; missing results count as delivered",
			zap.Int("batch", len(b.items)), zap.Int("results", len(r.perEvent)))
	}
	if first, ok := allRetryable(r.perEvent, len(b.items)); ok {
		// Nothing got through: the destination is struggling, not the
		// events. Back off as a whole and keep the cursor where it is.
		x.failBatch(b, first, now)
		x.commit(now)
		return
	}
	x.consecutive = 0
	if x.paused {
		x.resume()
	}
	var (
		paused  []*item
		retried bool
	)
	for i, it := range b.items {
		var err error
		if i < len(r.perEvent) {
			err = r.perEvent[i]
		}
		if err == nil {
			x.held--
			x.done(it)
			continue
		}
		c := classify(err)
		x.fails.note(x.log, now, c, 1)
		switch c.kind {
		case failTooLarge:
			x.held--
			x.deadLetter(it, reasonTooLarge, c, now)
		case failPermanent:
			x.held--
			x.deadLetter(it, reasonRejected, c, now)
		case failPause:
			paused = append(paused, it)
		default:
			x.held--
			x.retryLater(it, c, now)
			retried = true
		}
	}
	if retried {
		x.d.m.retries.Inc()
	}
	if len(paused) > 0 {
		x.pause(now)
		x.requeue(&batch{group: b.group, items: paused, first: b.first})
	}
	x.commit(now)
}

// allRetryable reports whether every event of a batch of n failed with a
// retryable error, and returns the first one's classification.
func allRetryable(per []error, n int) (classified, bool) {
	if len(per) != n || n == 0 {
		return classified{}, false
	}
	var first classified
	for i, err := range per {
		if err == nil {
			return classified{}, false
		}
		c := classify(err)
		if c.kind != failRetry {
			return classified{}, false
		}
		if i == 0 || c.wait > first.wait {
			first = c
		}
	}
	return first, true
}

// failBatch applies a failure of the whole request to b.
func (x *deliverer) failBatch(b *batch, c classified, now time.Time) {
	x.fails.note(x.log, now, c, len(b.items))
	if c.kind != failPause && x.paused {
		// A probe got an answer other than 401/403: credentials work.
		x.resume()
	}
	switch c.kind {
	case failPause:
		x.pause(now)
		x.requeue(b)
	case failTooLarge:
		if len(b.items) == 1 {
			x.held--
			x.deadLetter(b.items[0], reasonTooLarge, c, now)
			return
		}
		h := len(b.items) / 2
		first := &batch{group: b.group, first: b.first, items: append([]*item(nil), b.items[:h]...)}
		second := &batch{group: b.group, first: b.first, items: append([]*item(nil), b.items[h:]...)}
		x.ready = append([]*batch{first, second}, x.ready...)
	case failPermanent:
		for _, it := range b.items {
			x.held--
			x.deadLetter(it, reasonRejected, c, now)
		}
	default:
		counted := c.wait == 0
		wait := c.wait
		if counted {
			x.consecutive++
			wait = backoff(x.s.jit, x.consecutive, x.s.o.backoffBase, x.maxBackoff)
		} else if wait > x.maxBackoff {
			wait = x.maxBackoff
		}
		kept := b.items[:0]
		for _, it := range b.items {
			if counted {
				it.attempts++
			}
			if x.maxAttempts > 0 && it.attempts >= x.maxAttempts {
				x.held--
				x.deadLetter(it, reasonMaxAttempts, c, now)
				continue
			}
			kept = append(kept, it)
		}
		clear(b.items[len(kept):])
		b.items = kept
		x.stats.retried += len(kept)
		x.d.m.retries.Inc()
		x.blockedUntil = now.Add(wait)
		if len(kept) > 0 {
			x.requeue(b)
		}
	}
}

// requeue puts b first in the send queue.
func (x *deliverer) requeue(b *batch) {
	x.ready = append(x.ready, nil)
	copy(x.ready[1:], x.ready)
	x.ready[0] = b
}

// done records a delivered item.
func (x *deliverer) done(it *item) {
	x.op.done = append(x.op.done, it)
	x.stats.delivered++
	if isOrder(it) {
		x.stats.orders++
	}
}

// deadLetter records an item for the destination's DLQ.
func (x *deliverer) deadLetter(it *item, reason string, c classified, now time.Time) {
	json := it.raw
	if it.ev != nil {
		json = it.ev.AppendJSON(nil)
	}
	x.op.dead = append(x.op.dead, deadItem{
		it: it, seq: it.seq, di: it.di, nd: it.nd, size: it.size, entry: it.retry,
		dl: deadLetter{dead: now, appended: it.appended, reason: reason, attempts: it.attempts,
			status: c.status, excerpt: c.excerpt, json: json},
	})
	x.stats.dead++
	if isOrder(it) {
		x.stats.ordersDead++
	}
}

// retryLater parks a failed item in the retry set, or dead-letters it
// when it ran out of attempts. A Retry-After wait is not an attempt.
func (x *deliverer) retryLater(it *item, c classified, now time.Time) {
	wait := c.wait
	if wait == 0 {
		it.attempts++
		wait = backoff(x.s.jit, it.attempts, x.s.o.backoffBase, x.maxBackoff)
	} else if wait > x.maxBackoff {
		wait = x.maxBackoff
	}
	if x.maxAttempts > 0 && it.attempts >= x.maxAttempts {
		x.deadLetter(it, reasonMaxAttempts, c, now)
		return
	}
	x.op.retry = append(x.op.retry, retryItem{it: it, state: retryState{
		attempts: it.attempts, next: now.Add(wait), status: c.status, excerpt: c.excerpt,
	}})
	x.stats.retried++
}

// pause stops sending after a 401/403 and schedules the next probe.
func (x *deliverer) pause(now time.Time) {
	if !x.paused {
		x.paused = true
		x.d.paused.Store(true)
		x.probes = 0
		x.log.Error("destination refused the credentials (401/403): delivery paused; its events stay in its backlog " +
			"and it is probed until it accepts them again")
	}
	x.probes++
	wait := x.s.o.probeInterval
	for i := 1; i < x.probes && wait < x.maxBackoff; i++ {
		wait *= 2
	}
	x.probeAt = now.Add(min(wait, max(x.maxBackoff, x.s.o.probeInterval)))
}

func (x *deliverer) resume() {
	x.paused = false
	x.d.paused.Store(false)
	x.probes = 0
	x.log.Info("destination accepts requests again: delivery resumed")
}

// commit records the pending outcomes and the cursor. It retries a
// failed commit (a full disk) until it works or the deliverer must stop;
// until then the items stay unresolved, so nothing is lost or skipped.
func (x *deliverer) commit(now time.Time) {
	op := x.op
	if cur := x.track.cursor(x.readPos); cur != x.persisted {
		op.cursor, op.setCursor = cur, true
	}
	if op.empty() {
		return
	}
	if err := x.submit(op); err != nil {
		x.abandon(op)
		return
	}
	x.resolved(op)
	if op.setCursor {
		x.persisted = op.cursor
	}
	op.reset()
	m := &x.d.m
	m.delivered.Add(x.stats.delivered)
	m.retried.Add(x.stats.retried)
	m.deadLettered.Add(x.stats.dead)
	m.dryRun.Add(x.stats.dryRun)
	x.d.ordersDelivered.Add(int64(x.stats.orders))
	x.d.ordersDead.Add(int64(x.stats.ordersDead))
	x.stats = outcomeCounts{}
}

// submit hands op to the writer, retrying with backoff while the store
// refuses; it gives up only when told to stop hard.
func (x *deliverer) submit(op *resolveOp) error {
	wait := 100 * time.Millisecond
	for {
		err := x.store(op)
		if err == nil {
			return nil
		}
		x.log.Error("recording delivery outcomes failed; retrying", zap.Error(err), zap.Duration("in", wait))
		c, stop := x.clock.After(wait)
		select {
		case <-c:
		case <-x.hard:
			stop()
			return err
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// resolved applies a committed op to the in-memory state.
func (x *deliverer) resolved(op *resolveOp) {
	forget := func(it *item) {
		if it.tracked {
			x.track.resolve(it.seq)
		}
		if it.retry != nil {
			x.retries.remove(it.retry)
		}
		x.s.pool.Put(it.ev)
		x.freeItem(it)
	}
	for _, it := range op.done {
		forget(it)
	}
	for i := range op.dead {
		switch d := &op.dead[i]; {
		case d.it != nil:
			forget(d.it)
		case d.entry != nil:
			x.retries.remove(d.entry)
		}
	}
	for i := range op.retry {
		r := &op.retry[i]
		it := r.it
		if e := it.retry; e != nil {
			e.state = r.state
			x.retries.requeue(e)
		} else {
			x.retries.add(&retryEntry{seq: it.seq, di: it.di, nd: it.nd, size: it.size, appended: it.appended, state: r.state, idx: -1})
			if it.tracked {
				x.track.resolve(it.seq)
			}
		}
		x.s.pool.Put(it.ev)
		x.freeItem(it)
	}
}

// abandon drops an op that could not be recorded before a hard stop: its
// items stay unresolved on disk and are read again at the next start.
func (x *deliverer) abandon(op *resolveOp) {
	for _, it := range op.done {
		x.s.pool.Put(it.ev)
	}
	for i := range op.dead {
		if it := op.dead[i].it; it != nil {
			x.s.pool.Put(it.ev)
		}
	}
	for i := range op.retry {
		x.s.pool.Put(op.retry[i].it.ev)
	}
	op.reset()
	x.stats = outcomeCounts{}
}

package forward

import (
	"bytes"
	"cmp"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// trimBudget bounds the records one trim pass moves, so the deliverer
// stays responsive; a pass that used it all runs again at once.
const trimBudget = 1024

// trim enforces backlog.max_bytes and backlog.max_age (DESIGN §5
// "Isolation and backpressure"): past them, this destination's oldest
// events move to its DLQ, so a dead destination neither fills the disk
// nor pushes the spool to spool.max_bytes, where ingest would get 429s.
// Over the byte cap it trims to 90% of it, so it does not run for every
// new event. It reports whether more work remains right now.
func (x *deliverer) trim(now time.Time) bool {
	c := x.d.cfg.Backlog
	var excess int64
	if maxB := c.MaxBytes.Bytes(); maxB > 0 {
		if cur := x.d.backlogBytes.Load(); cur > maxB {
			excess = cur - (maxB - maxB/10)
		}
	}
	var cut time.Time
	if c.MaxAge > 0 {
		if o := x.d.oldestMs.Load(); o != 0 && time.UnixMilli(o).Before(now.Add(-c.MaxAge.D())) {
			cut = now.Add(-c.MaxAge.D())
		}
	}
	if excess <= 0 && cut.IsZero() {
		return false
	}
	budget := trimBudget
	var freed int64
	wanted := func(appended time.Time) bool { return freed < excess || appended.Before(cut) }

	// The retry set first: it holds the oldest events.
	var fromRetry []*retryEntry
	for _, e := range x.retries.oldestFirst() {
		if budget == 0 || !wanted(e.appended) {
			break
		}
		x.retries.take(e)
		fromRetry = append(fromRetry, e)
		freed += int64(e.size)
		budget--
	}
	// Then events held in memory but not being sent.
	budget = x.trimHeld(wanted, &freed, budget, now)
	overflow := len(fromRetry)
	start := x.readPos
	err := x.s.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		pending := tx.Bucket(bucketPending)
		var key [8]byte
		for _, e := range fromRetry {
			v := events.Get(seqKey(key[:0], e.seq))
			var js []byte
			if v != nil {
				if _, _, _, off, err := recordDestIndex(v, x.d.name); err == nil {
					js = bytes.Clone(v[off:])
				}
			}
			x.op.dead = append(x.op.dead, deadItem{seq: e.seq, di: e.di, nd: e.nd, size: e.size, entry: e, dl: deadLetter{
				dead: now, appended: e.appended, reason: reasonBacklog, attempts: e.state.attempts,
				status: e.state.status, excerpt: e.state.excerpt, json: js}})
		}
		// Then the unread backlog, oldest first.
		cur := events.Cursor()
		k, v := cur.Seek(seqKey(key[:0], x.readPos+1))
		for ; k != nil && budget > 0; k, v = cur.Next() {
			seq, _ := keySeq(k)
			di, nd, appended, off, err := recordDestIndex(v, x.d.name)
			if err != nil || di < 0 {
				x.readPos = seq
				continue
			}
			if !isPending(pending.Get(k), di) {
				x.readPos = seq
				continue
			}
			if !wanted(appended) {
				x.d.oldestMs.Store(appended.UnixMilli())
				return nil
			}
			x.readPos = seq
			x.op.dead = append(x.op.dead, deadItem{seq: seq, di: di, nd: nd, size: len(v), dl: deadLetter{
				dead: now, appended: appended, reason: reasonBacklog, json: bytes.Clone(v[off:])}})
			freed += int64(len(v))
			budget--
			overflow++
		}
		if k == nil {
			x.caughtUp = true
			if x.track.oldest() == 0 && x.retries.oldest() == 0 {
				x.d.oldestMs.Store(0)
			}
		}
		return nil
	})
	if err != nil {
		x.log.Error("reading the spool to trim the backlog failed", zap.Error(err))
		x.readPos = start
		for _, e := range fromRetry {
			x.retries.requeue(e)
		}
		x.op.reset()
		return false
	}
	if overflow > 0 {
		x.log.Warn("backlog over its cap: oldest events moved to the DLQ",
			zap.Int("events", overflow), zap.Int64("backlog_bytes", x.d.backlogBytes.Load()))
		x.d.m.backlogOverflow.Add(overflow)
		x.stats.dead += overflow
	}
	x.commit(now)
	return budget == 0
}

// trimHeld dead-letters held items that are not being sent, oldest
// first, while wanted says so; it returns the bytes freed and the budget
// left.
func (x *deliverer) trimHeld(wanted func(time.Time) bool, freed *int64, budget int, now time.Time) int {
	var all []*item
	for _, b := range x.ready {
		all = append(all, b.items...)
	}
	for _, b := range x.b.open {
		all = append(all, b.items...)
	}
	slices.SortFunc(all, func(a, b *item) int { return cmp.Compare(a.seq, b.seq) })
	drop := map[*item]bool{}
	for _, it := range all {
		if budget == 0 || !wanted(it.appended) {
			break
		}
		drop[it] = true
		*freed += int64(it.size)
		budget--
	}
	if len(drop) == 0 {
		return budget
	}
	keep := func(items []*item) []*item {
		kept := items[:0]
		for _, it := range items {
			if drop[it] {
				x.held--
				x.deadLetter(it, reasonBacklog, classified{}, now)
				continue
			}
			kept = append(kept, it)
		}
		clear(items[len(kept):])
		return kept
	}
	ready := x.ready[:0]
	for _, b := range x.ready {
		if b.items = keep(b.items); len(b.items) > 0 {
			ready = append(ready, b)
		}
	}
	clear(x.ready[len(ready):])
	x.ready = ready
	for g, b := range x.b.open {
		if b.items = keep(b.items); len(b.items) == 0 {
			delete(x.b.open, g)
		}
	}
	x.d.m.backlogOverflow.Add(len(drop))
	return budget
}

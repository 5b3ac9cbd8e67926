package forward

import (
	"bytes"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/forward/status"
)

// scanLimit bounds the records one read looks at, admitted or not, so a
// destination that takes few of the events never holds a long read
// transaction (which would delay the writer when the file grows).
const scanLimit = 4096

// read loads the records of due retry entries and up to limit new records
// for this destination after readPos, in one short read transaction.
// Records not admitted to this destination, or already done for it, are
// skipped. A record whose event does not decode is dead-lettered as it
// is. more reports that it stopped before the end of the spool.
func (x *deliverer) read(due []*retryEntry, limit int) (items []*item, more bool, err error) {
	if x.d.ext != nil {
		return x.readExternal(due, limit)
	}
	now := x.clock.Now()
	var key [8]byte
	err = x.s.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		pending := tx.Bucket(bucketPending)
		ec, pc := events.Cursor(), pending.Cursor()
		for _, e := range due {
			v := seekGet(ec, seqKey(key[:0], e.seq))
			if v == nil {
				// Resolved behind our back (cannot happen) or lost: forget it.
				x.log.Warn("retry entry without its event", zap.Uint64("seq", e.seq))
				x.op.done = append(x.op.done, x.newItem(item{seq: e.seq, di: e.di, nd: e.nd, retry: e}))
				continue
			}
			_, _, _, off, err := recordDestIndex(v, x.d.name)
			if err != nil {
				return err
			}
			it := x.newItem(item{seq: e.seq, di: e.di, nd: e.nd, size: len(v), appended: e.appended, attempts: e.state.attempts, retry: e})
			items = x.decode(items, it, v[off:], now, x.light)
		}
		if limit <= 0 {
			return nil
		}
		c := events.Cursor()
		n, scanned := 0, 0
		k, v := c.Seek(seqKey(key[:0], x.readPos+1))
		for ; k != nil && n < limit && scanned < scanLimit; k, v = c.Next() {
			scanned++
			seq, _ := keySeq(k)
			x.readPos = seq
			di, nd, appended, off, err := recordDestIndex(v, x.d.name)
			if err != nil {
				x.log.Error("skipping an unreadable spool record", zap.Uint64("seq", seq), zap.Error(err))
				continue
			}
			if di < 0 {
				continue
			}
			if !isPending(seekGet(pc, k), di) {
				continue // done before a crash lost the cursor's last move
			}
			it := x.newItem(item{seq: seq, di: di, nd: nd, size: len(v), appended: appended, tracked: true})
			x.track.add(seq, appended.UnixMilli())
			items = x.decode(items, it, v[off:], now, x.light)
			n++
		}
		if k == nil {
			x.caughtUp = true
		}
		more = k != nil
		return nil
	})
	return items, more, err
}

// decode turns it's stored JSON into a pooled event and appends it to
// items, or dead-letters it. light loads the event in its light form when
// the JSON allows (see storedJSONSender); otherwise it is decoded in full.
func (x *deliverer) decode(items []*item, it *item, js []byte, now time.Time, light bool) []*item {
	ev := x.s.pool.Get()
	if light && ev.LoadStoredJSON(js) == nil {
		it.ev = ev
		it.jsonLen = len(js)
		return append(items, it)
	}
	if err := ev.DecodeJSON(&x.parser, js); err != nil {
		x.s.pool.Put(ev)
		x.log.Error("dead-lettering a stored event that does not decode", zap.Uint64("seq", it.seq), zap.Error(err))
		it.raw = bytes.Clone(js)
		x.deadLetter(it, reasonUndecodable, classified{excerpt: status.Excerpt(err.Error())}, now)
		return items
	}
	it.ev = ev
	it.jsonLen = len(js)
	return append(items, it)
}

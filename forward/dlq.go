package forward

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/enrich"
)

// Dead-letter reasons: a short, fixed vocabulary (it is shown by the CLI
// and could become a metric label).
const (
	reasonRejected    = "rejected"            // the destination refused it (other 4xx, 501, 505)
	reasonPrepare     = "prepare"             // the adapter's Prepare refused it before sending
	reasonTooLarge    = "too_large"           // 413 for this event alone
	reasonMaxAttempts = "max_attempts"        // retry.max_attempts reached
	reasonMaxAge      = "max_age"             // older than retry.max_age
	reasonBacklog     = "backlog_overflow"    // past backlog.max_bytes / max_age
	reasonUndecodable = "undecodable"         // the stored event did not decode
	reasonRemoved     = "destination_removed" // no longer in the config at start-up
)

// putDeadLetter appends dl to the queue in b and enforces dlq.max_bytes
// and dlq.max_age on it (oldest entries dropped and counted). c and dd
// are the queue's counters and this transaction's change to them; nil for
// the queue of a destination that is no longer configured.
func (t *txn) putDeadLetter(b *bolt.Bucket, c *counters, dd *delta, dl *deadLetter) error {
	n, err := b.NextSequence()
	if err != nil {
		return err
	}
	start := len(t.arena)
	t.arena = appendDeadLetter(t.arena, dl)
	v := t.arena[start:len(t.arena):len(t.arena)]
	if err := b.Put(t.key(n), v); err != nil {
		return err
	}
	if dd != nil {
		dd.add(1, int64(len(v)))
	}
	return t.trimDeadLetters(b, c, dd)
}

// trimDeadLetters drops the oldest entries of b while the queue is over
// dlq.max_bytes or they are older than dlq.max_age.
func (t *txn) trimDeadLetters(b *bolt.Bucket, c *counters, dd *delta) error {
	maxBytes := t.s.cfg.DLQ.MaxBytes.Bytes()
	maxAge := t.s.cfg.DLQ.MaxAge.D()
	// Collect first, delete after: bbolt cursors misbehave on buckets
	// emptied earlier in the same transaction.
	var drop [][]byte
	var freed int64
	cur := b.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		over := maxBytes > 0 && c != nil && dd != nil && c.bytes.Load()+dd.bytes-freed > maxBytes
		if !over {
			if maxAge <= 0 {
				break
			}
			dt, err := deadLetterTime(v)
			if err == nil && !dt.Before(t.now.Add(-maxAge)) {
				break
			}
		}
		drop = append(drop, bytes.Clone(k))
		freed += int64(len(v))
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	if dd != nil && len(drop) > 0 {
		dd.add(-int64(len(drop)), -freed)
		dd.dropped += int64(len(drop))
	}
	return nil
}

// trimAllDeadLetters applies dlq.max_age to every queue; entries expire
// even when nothing new arrives. The writer runs it once an hour.
func (t *txn) trimAllDeadLetters() error {
	if err := t.trimDeadLetters(t.quarantineBucket(), &t.s.quarantine, &t.quarD); err != nil {
		return err
	}
	dlq := t.dlqBucket()
	return dlq.ForEach(func(name, v []byte) error {
		b := dlq.Bucket(name)
		if v != nil || b == nil {
			return nil
		}
		if d := t.s.byName[string(name)]; d != nil {
			return t.trimDeadLetters(b, &d.dlq, &t.dlq[d.idx])
		}
		return t.trimDeadLetters(b, nil, nil)
	})
}

// deadLetterBucket returns (creating) the queue of dest.
func (t *txn) deadLetterBucket(dest string) (*bolt.Bucket, error) {
	return t.dlqBucket().CreateBucketIfNotExists([]byte(dest))
}

// quarantineOp stores events that failed validation on browser routes.
type quarantineOp struct {
	waiter
	entries []deadLetter
	n       int
}

func newQuarantineOp(now time.Time, events []*enrich.Event, reasons []string) *quarantineOp {
	op := &quarantineOp{waiter: newWaiter(), entries: make([]deadLetter, len(events))}
	var buf []byte
	for i, e := range events {
		r := "invalid"
		if i < len(reasons) && reasons[i] != "" {
			r = reasons[i]
		}
		start := len(buf)
		buf = e.AppendJSON(buf)
		op.entries[i] = deadLetter{dead: now, appended: now, reason: r}
		op.entries[i].json = buf[start:len(buf):len(buf)]
	}
	// buf may have moved while growing: re-slice every entry from the
	// final buffer.
	off := 0
	for i := range op.entries {
		n := len(op.entries[i].json)
		op.entries[i].json = buf[off : off+n : off+n]
		off += n
	}
	return op
}

func (op *quarantineOp) apply(t *txn) error {
	op.n = 0
	for i := range op.entries {
		if err := t.putDeadLetter(t.quarantineBucket(), &t.s.quarantine, &t.quarD, &op.entries[i]); err != nil {
			return err
		}
		op.n++
	}
	return nil
}

func (op *quarantineOp) committed(t *txn) { t.s.met.quarantined.Add(op.n) }

// moveOrphans dead-letters, at start-up, the pending records of
// destinations that are no longer configured, and forgets their cursors
// and retry sets: nobody would ever deliver them, and they would hold
// the spool's bytes forever. Replay works again if the destination comes
// back under the same name.
func (s *Spool) moveOrphans(orphans []orphan) error {
	const chunk = 4096
	for len(orphans) > 0 {
		n := min(chunk, len(orphans))
		part := orphans[:n]
		orphans = orphans[n:]
		t := &txn{s: s, backlog: make([]delta, len(s.dests)), dlq: make([]delta, len(s.dests))}
		err := s.db.Update(func(tx *bolt.Tx) error {
			t.begin(tx, s.o.clock.Now())
			for _, o := range part {
				k := seqKey(nil, o.seq)
				rec := t.events.Get(k)
				if rec == nil {
					continue
				}
				h, err := decodeRecordHeader(rec, nil)
				if err != nil {
					return err
				}
				b, err := t.deadLetterBucket(o.name)
				if err != nil {
					return err
				}
				dl := deadLetter{dead: t.now, appended: h.appended, reason: reasonRemoved, json: rec[h.jsonOff:]}
				if err := t.putDeadLetter(b, nil, nil, &dl); err != nil {
					return err
				}
				if err := t.clearPending(o.seq, o.di, len(h.dests), len(rec)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("forward: dead-lettering events of removed destinations: %w", err)
		}
		t.publish()
		s.log.Warn("spool: events for destinations no longer configured were moved to their DLQ",
			zap.Int("events", len(part)))
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		dests := tx.Bucket(bucketDests)
		var gone [][]byte
		if err := dests.ForEach(func(name, _ []byte) error {
			if s.byName[string(name)] == nil {
				gone = append(gone, append([]byte(nil), name...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, name := range gone {
			if err := dests.DeleteBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
}

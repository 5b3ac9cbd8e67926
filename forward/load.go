package forward

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// orphan is a pending record for a destination no longer configured.
type orphan struct {
	seq  uint64
	di   int
	name string
}

// loadScan is what the start-up scan found besides the counters.
type loadScan struct {
	orphans    []orphan
	stalePend  [][]byte // pending entries without an event (deleted)
	staleRetry map[string][][]byte
}

// load checks every record header, pending mask, cursor, retry state and
// dead letter of the file, rebuilds the in-memory counters, and repairs
// what a bug could leave behind without losing an event. A value that
// does not decode is corruption.
func (s *Spool) load() error {
	var sc loadScan
	sc.staleRetry = map[string][][]byte{}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if err := s.scanEvents(tx, &sc); err != nil {
			return err
		}
		if err := s.scanDests(tx, &sc); err != nil {
			return err
		}
		if err := checkIDIndex(tx); err != nil {
			return err
		}
		return s.scanDLQ(tx)
	}); err != nil {
		return err
	}
	if err := s.repair(&sc); err != nil {
		return fmt.Errorf("forward: repairing spool: %w", err)
	}
	return s.moveOrphans(sc.orphans)
}

func (s *Spool) scanEvents(tx *bolt.Tx, sc *loadScan) error {
	events := tx.Bucket(bucketEvents)
	pc := tx.Bucket(bucketPending).Cursor()
	pk, pv := pc.First()
	var names []string
	ec := events.Cursor()
	for k, v := ec.First(); k != nil; k, v = ec.Next() {
		seq, ok := keySeq(k)
		if !ok {
			return fmt.Errorf("%w: event key %x", errCorrupt, k)
		}
		h, err := decodeRecordHeader(v, names)
		if err != nil {
			return fmt.Errorf("%w: event %d: %v", errCorrupt, seq, err)
		}
		names = h.dests
		for pk != nil && bytes.Compare(pk, k) < 0 {
			sc.stalePend = append(sc.stalePend, bytes.Clone(pk))
			pk, pv = pc.Next()
		}
		var mask uint64
		if pk != nil && bytes.Equal(pk, k) {
			if len(pv) != 8 {
				return fmt.Errorf("%w: pending mask of event %d", errCorrupt, seq)
			}
			mask = binary.LittleEndian.Uint64(pv)
			pk, pv = pc.Next()
		} else {
			mask = allPending(len(h.dests))
		}
		if seq > events.Sequence() {
			return fmt.Errorf("%w: event %d past the sequence %d", errCorrupt, seq, events.Sequence())
		}
		s.bytes.Add(int64(len(v)))
		s.events.Add(1)
		for i, name := range h.dests {
			if mask&(1<<uint(i)) == 0 {
				continue
			}
			d := s.byName[name]
			if d == nil {
				sc.orphans = append(sc.orphans, orphan{seq: seq, di: i, name: name})
				continue
			}
			d.backlogBytes.Add(int64(len(v)))
			d.backlogEvents.Add(1)
			d.oldestMs.CompareAndSwap(0, h.appended.UnixMilli())
		}
	}
	for ; pk != nil; pk, _ = pc.Next() {
		sc.stalePend = append(sc.stalePend, bytes.Clone(pk))
	}
	return nil
}

// scanDests loads each configured destination's cursor and retry set.
func (s *Spool) scanDests(tx *bolt.Tx, sc *loadScan) error {
	last := tx.Bucket(bucketEvents).Sequence()
	events := tx.Bucket(bucketEvents)
	pending := tx.Bucket(bucketPending)
	for _, d := range s.dests {
		d.cursor = last // a new destination starts at the end
		b := tx.Bucket(bucketDests).Bucket([]byte(d.name))
		if b == nil {
			continue
		}
		if v := b.Get(keyCursor); v != nil {
			c, ok := keySeq(v)
			if !ok || c > last {
				return fmt.Errorf("%w: cursor of %q", errCorrupt, d.name)
			}
			d.cursor = c
		}
		rb := b.Bucket(bucketRetry)
		if rb == nil {
			continue
		}
		err := rb.ForEach(func(k, v []byte) error {
			seq, ok := keySeq(k)
			st, err := decodeRetryState(v)
			if !ok || err != nil {
				return fmt.Errorf("%w: retry entry of %q: %v", errCorrupt, d.name, err)
			}
			rec := events.Get(k)
			if rec == nil {
				sc.staleRetry[d.name] = append(sc.staleRetry[d.name], bytes.Clone(k))
				return nil
			}
			di, nd, appended, _, err := recordDestIndex(rec, d.name)
			if err != nil {
				return fmt.Errorf("%w: event %d: %v", errCorrupt, seq, err)
			}
			if di < 0 || !isPending(pending.Get(k), di) {
				sc.staleRetry[d.name] = append(sc.staleRetry[d.name], bytes.Clone(k))
				return nil
			}
			d.retries = append(d.retries, &retryEntry{seq: seq, di: di, nd: nd, size: len(rec), appended: appended, state: st})
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// scanDLQ checks every dead letter and counts the configured
// destinations' queues and the quarantine.
func (s *Spool) scanDLQ(tx *bolt.Tx) error {
	count := func(b *bolt.Bucket, c *counters, what string) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("%w: nested bucket in %s", errCorrupt, what)
			}
			if _, err := decodeDeadLetter(v); err != nil {
				return fmt.Errorf("%w: %s: %v", errCorrupt, what, err)
			}
			if c != nil {
				c.events.Add(1)
				c.bytes.Add(int64(len(v)))
			}
			return nil
		})
	}
	if err := count(tx.Bucket(bucketQuarantine), &s.quarantine, "quarantine"); err != nil {
		return err
	}
	return tx.Bucket(bucketDLQ).ForEach(func(name, v []byte) error {
		b := tx.Bucket(bucketDLQ).Bucket(name)
		if v != nil || b == nil {
			return fmt.Errorf("%w: dlq entry outside a destination", errCorrupt)
		}
		var c *counters
		if d := s.byName[string(name)]; d != nil {
			c = &d.dlq
		}
		return count(b, c, "dlq of "+string(name))
	})
}

// repair fixes what the scan found and creates each destination's bucket.
func (s *Spool) repair(sc *loadScan) error {
	if len(sc.stalePend) > 0 {
		s.log.Warn("spool: dropped pending entries without an event", zap.Int("entries", len(sc.stalePend)))
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		pending := tx.Bucket(bucketPending)
		for _, k := range sc.stalePend {
			if err := pending.Delete(k); err != nil {
				return err
			}
		}
		dests := tx.Bucket(bucketDests)
		for _, d := range s.dests {
			b, err := dests.CreateBucketIfNotExists([]byte(d.name))
			if err != nil {
				return err
			}
			if _, err := b.CreateBucketIfNotExists(bucketRetry); err != nil {
				return err
			}
			if err := b.Put(keyCursor, seqKey(nil, d.cursor)); err != nil {
				return err
			}
			if _, err := tx.Bucket(bucketDLQ).CreateBucketIfNotExists([]byte(d.name)); err != nil {
				return err
			}
			for _, k := range sc.staleRetry[d.name] {
				if err := b.Bucket(bucketRetry).Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

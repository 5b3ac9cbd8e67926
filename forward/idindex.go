package forward

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The dedup id index (DESIGN §4 "Dedup"): the DedupKey of every appended
// event, committed with it, in one bucket per hour of arrival under "ids",
// so that dropping what left dedup.window is deleting whole buckets. It
// outlives the events: a duplicate arriving after the original was
// delivered is still recognised.
//
// Keys are hashes, so a B+tree keyed by them would rewrite a random leaf
// per key per commit — most of the group commit's cost at high rates.
// Instead each hour bucket holds sorted runs (key = run number, value =
// 16-byte keys back to back, sorted), like a small LSM tree: a commit
// writes its keys as one run and merges it with the newest runs while
// they are not larger (a binary counter: O(log n) runs, each key
// rewritten O(log n) times, sequentially), up to maxRunBytes so that no
// commit rewrites much. Seen binary-searches every run of the window; it
// is only asked when the dedup stage's Bloom filter and cache say "maybe".

// maxRunBytes caps a merged run (2 MiB, 131072 keys).
const maxRunBytes = 16 << 17

// hourOf numbers the hour t falls in.
func hourOf(t time.Time) int64 { return t.Unix() / 3600 }

func hourKey(h int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(h)) }

// idBucket returns the current hour's bucket, creating it.
func (t *txn) idBucket() (*bolt.Bucket, error) {
	return t.idsBucket().CreateBucketIfNotExists(t.keep(hourKey(hourOf(t.now))))
}

// putIDs writes the transaction's dedup keys as one sorted run, merged
// with the newest runs of the hour while those are not larger.
func (t *txn) putIDs() error {
	if len(t.ids16) == 0 {
		return nil
	}
	slices.SortFunc(t.ids16, bytes.Compare)
	t.ids16 = slices.CompactFunc(t.ids16, bytes.Equal)
	b, err := t.idBucket()
	if err != nil {
		return err
	}
	run := make([]byte, 0, 16*len(t.ids16))
	for _, k := range t.ids16 {
		run = append(run, k...)
	}
	// Walk back from the newest run once, and delete only afterwards:
	// bbolt's Cursor.Last loops forever on a bucket whose leaves were all
	// emptied earlier in the same transaction.
	var merged [][]byte
	c := b.Cursor()
	for k, v := c.Last(); k != nil && len(v) <= len(run) && len(v)+len(run) <= maxRunBytes; k, v = c.Prev() {
		run = mergeRuns(v, run)
		merged = append(merged, bytes.Clone(k))
	}
	for _, k := range merged {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	n, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(t.key(n), run)
}

// mergeRuns merges two sorted runs into a new one, without duplicates.
func mergeRuns(a, b []byte) []byte {
	out := make([]byte, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		switch c := bytes.Compare(a[:16], b[:16]); {
		case c < 0:
			out, a = append(out, a[:16]...), a[16:]
		case c > 0:
			out, b = append(out, b[:16]...), b[16:]
		default:
			out, a, b = append(out, a[:16]...), a[16:], b[16:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// runHas binary-searches a run for key.
func runHas(run []byte, key *[16]byte) bool {
	n := len(run) / 16
	i := sort.Search(n, func(i int) bool { return bytes.Compare(run[16*i:16*i+16], key[:]) >= 0 })
	return i < n && bytes.Equal(run[16*i:16*i+16], key[:])
}

// pruneIDIndex deletes the hour buckets entirely older than window.
func pruneIDIndex(ids *bolt.Bucket, now int64, window time.Duration) error {
	if window <= 0 {
		return nil
	}
	cutoff := hourKey(now - int64(window/time.Hour) - 1)
	var old [][]byte
	c := ids.Cursor()
	for k, v := c.First(); k != nil && bytes.Compare(k, cutoff) < 0; k, v = c.Next() {
		if v == nil { // a bucket
			old = append(old, bytes.Clone(k))
		}
	}
	for _, k := range old {
		if err := ids.DeleteBucket(k); err != nil {
			return err
		}
	}
	return nil
}

// checkIDIndex verifies the runs' shape at start-up.
func checkIDIndex(tx *bolt.Tx) error {
	ids := tx.Bucket(bucketIDs)
	return ids.ForEach(func(h, v []byte) error {
		b := ids.Bucket(h)
		if v != nil || b == nil || len(h) != 8 {
			return fmt.Errorf("%w: id index entry outside an hour bucket", errCorrupt)
		}
		return b.ForEach(func(k, run []byte) error {
			if len(k) != 8 || run == nil || len(run)%16 != 0 {
				return fmt.Errorf("%w: id index run", errCorrupt)
			}
			return nil
		})
	})
}

// Seen reports whether key was committed within dedup.window (the dedup
// stage asks after its Bloom filter and hot cache said "maybe").
func (s *Spool) Seen(key [16]byte) (bool, error) {
	now := s.o.clock.Now()
	from := hourKey(hourOf(now.Add(-s.cfg.Dedup.Window.D())))
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		ids := tx.Bucket(bucketIDs)
		c := ids.Cursor()
		for h, v := c.Seek(from); h != nil && !found; h, v = c.Next() {
			b := ids.Bucket(h)
			if v != nil || b == nil {
				continue
			}
			rc := b.Cursor()
			// Newest runs first: a duplicate is most often recent.
			for k, run := rc.Last(); k != nil; k, run = rc.Prev() {
				if runHas(run, &key) {
					found = true
					break
				}
			}
		}
		return nil
	})
	return found, err
}

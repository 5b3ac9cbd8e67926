package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The DLQ and quarantine operations of DESIGN §5, as plain Go. The CLI
// calls them on a spool it opened itself when sidetrack is stopped; the
// admin API calls them on the running spool (proxy declares the
// interface). Every method is safe while delivery runs: changes go
// through the writer like everything else.

// DeadLetterJSON is one line of DLQShow and QuarantineShow output.
type DeadLetterJSON struct {
	Destination string          `json:"destination,omitempty"`
	ID          uint64          `json:"id"`
	DeadAt      time.Time       `json:"dead_at"`
	AppendedAt  time.Time       `json:"appended_at"`
	Reason      string          `json:"reason"`
	Attempts    int             `json:"attempts,omitempty"`
	Status      int             `json:"status,omitempty"`
	Excerpt     string          `json:"excerpt,omitempty"`
	Event       json.RawMessage `json:"event,omitempty"`
	// EventRaw holds a stored event that is not valid JSON.
	EventRaw string `json:"event_raw,omitempty"`
}

// DLQList returns the number of dead letters per destination: every
// configured destination (0 when empty) and any removed one that still
// has a queue.
func (s *Spool) DLQList() (map[string]int, error) {
	out := make(map[string]int, len(s.dests))
	for _, d := range s.dests {
		out[d.name] = 0
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketDLQ)
		return root.ForEach(func(name, v []byte) error {
			if b := root.Bucket(name); v == nil && b != nil {
				out[string(name)] = b.Stats().KeyN
			}
			return nil
		})
	})
	return out, err
}

// DLQShow writes up to limit dead letters of dest, oldest first, as
// NDJSON (DeadLetterJSON lines). limit <= 0 means 100.
func (s *Spool) DLQShow(dest string, limit int, w io.Writer) error {
	return s.show(func(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketDLQ).Bucket([]byte(dest)) }, dest, limit, w)
}

// QuarantineList returns the number of quarantined events.
func (s *Spool) QuarantineList() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketQuarantine).Stats().KeyN
		return nil
	})
	return n, err
}

// QuarantineShow writes up to limit quarantined events, oldest first, as
// NDJSON. limit <= 0 means 100.
func (s *Spool) QuarantineShow(limit int, w io.Writer) error {
	return s.show(func(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketQuarantine) }, "", limit, w)
}

func (s *Spool) show(bucket func(*bolt.Tx) *bolt.Bucket, dest string, limit int, w io.Writer) error {
	if limit <= 0 {
		limit = 100
	}
	var lines [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := bucket(tx)
		if b == nil {
			if _, ok := s.byName[dest]; ok || dest == "" {
				return nil
			}
			return fmt.Errorf("forward: no dead letters for %q: %w", dest, errUnknownDest)
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(lines) < limit; k, v = c.Next() {
			seq, _ := keySeq(k)
			dl, err := decodeDeadLetter(v)
			if err != nil {
				return err
			}
			j := DeadLetterJSON{Destination: dest, ID: seq, DeadAt: dl.dead.UTC(), AppendedAt: dl.appended.UTC(),
				Reason: dl.reason, Attempts: dl.attempts, Status: dl.status, Excerpt: dl.excerpt}
			if json.Valid(dl.json) {
				j.Event = bytes.Clone(dl.json)
			} else {
				j.EventRaw = string(dl.json)
			}
			line, err := json.Marshal(j)
			if err != nil {
				return err
			}
			lines = append(lines, append(line, '\n'))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := w.Write(l); err != nil {
			return err
		}
	}
	return nil
}

// DLQReplay puts dest's dead letters that died within since (0 = all)
// back into the spool for that destination only, oldest first, and
// returns how many. The events keep their event_id, so a receiver that
// dedups is safe if one was delivered after all.
func (s *Spool) DLQReplay(dest string, since time.Duration) (int, error) {
	d := s.byName[dest]
	if d == nil {
		return 0, fmt.Errorf("forward: cannot replay %q: %w", dest, errUnknownDest)
	}
	total := 0
	var after uint64
	for {
		op := &replayOp{waiter: newWaiter(), d: d, since: since, after: after}
		if err := s.submit(context.Background(), op); err != nil {
			return total, err
		}
		total += op.n
		if !op.more {
			return total, nil
		}
		after = op.last
	}
}

// DLQPurge deletes dest's dead letters and returns how many there were.
func (s *Spool) DLQPurge(dest string) (int, error) {
	op := &purgeOp{waiter: newWaiter(), dest: dest, d: s.byName[dest]}
	err := s.submit(context.Background(), op)
	return op.n, err
}

// replayOp moves a chunk of dead letters back into the events bucket.
type replayOp struct {
	waiter
	d     *destState
	since time.Duration
	after uint64 // resume after this DLQ key

	n    int
	more bool
	last uint64
}

const replayChunk = 1000

func (op *replayOp) apply(t *txn) error {
	op.n, op.more = 0, false
	qb, err := t.deadLetterBucket(op.d.name)
	if err != nil {
		return err
	}
	type entry struct {
		k, v []byte
	}
	var take []entry
	c := qb.Cursor()
	k, v := c.Seek(seqKey(nil, op.after+1))
	for ; k != nil; k, v = c.Next() {
		if len(take) == replayChunk {
			op.more = true
			break
		}
		dl, err := decodeDeadLetter(v)
		if err != nil {
			return err
		}
		seq, _ := keySeq(k)
		op.last = seq
		if op.since > 0 && dl.dead.Before(t.now.Add(-op.since)) {
			continue
		}
		take = append(take, entry{bytes.Clone(k), bytes.Clone(v)})
	}
	names := []string{op.d.name}
	for _, e := range take {
		dl, _ := decodeDeadLetter(e.v)
		t.seq++
		key := t.key(t.seq)
		start := len(t.arena)
		t.arena = appendRecord(t.arena, t.now, names, dl.json)
		rec := t.arena[start:len(t.arena):len(t.arena)]
		if err := t.events.Put(key, rec); err != nil {
			return err
		}
		if err := qb.Delete(e.k); err != nil {
			return err
		}
		t.spool.add(1, int64(len(rec)))
		t.backlog[op.d.idx].add(1, int64(len(rec)))
		t.dlq[op.d.idx].add(-1, -int64(len(e.v)))
		op.n++
	}
	return nil
}

func (op *replayOp) committed(*txn) { op.d.wake() }

// purgeOp empties one destination's DLQ.
type purgeOp struct {
	waiter
	dest string
	d    *destState // nil for a destination no longer configured
	n    int
}

func (op *purgeOp) apply(t *txn) error {
	op.n = 0
	b := t.dlqBucket().Bucket([]byte(op.dest))
	if b == nil {
		if op.d == nil {
			return fmt.Errorf("forward: no dead letters for %q: %w", op.dest, errUnknownDest)
		}
		return nil
	}
	var bytesN int64
	if err := b.ForEach(func(_, v []byte) error {
		op.n++
		bytesN += int64(len(v))
		return nil
	}); err != nil {
		return err
	}
	if err := t.dlqBucket().DeleteBucket([]byte(op.dest)); err != nil {
		return err
	}
	if op.d != nil {
		if _, err := t.dlqBucket().CreateBucket([]byte(op.dest)); err != nil {
			return err
		}
		t.dlq[op.d.idx].add(-int64(op.n), -bytesN)
	}
	return nil
}

func (op *purgeOp) committed(*txn) {}

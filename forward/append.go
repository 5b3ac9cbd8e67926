package forward

import (
	"math/bits"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// appendOp carries one Append call's events to the writer, already
// encoded by the caller's goroutine so the writer only copies bytes into
// bbolt. It is pooled: a steady ingest allocates nothing here.
type appendOp struct {
	waiter
	buf  []byte     // records back to back
	ends []int      // end offset of each record in buf
	nd   []uint8    // admitted destinations per record
	dm   []uint64   // per record: bit i = s.dests[i] admitted
	keys [][16]byte // dedup keys to commit

	notify uint64 // destinations that got events in the last commit
}

func (s *Spool) getAppendOp() *appendOp {
	if v := s.ops.Get(); v != nil {
		return v.(*appendOp)
	}
	return &appendOp{waiter: newWaiter()}
}

func (s *Spool) putAppendOp(op *appendOp) {
	if cap(op.buf) > 4<<20 {
		op.buf = nil // do not pin an outlier request's memory
	}
	op.buf = op.buf[:0]
	op.ends = op.ends[:0]
	op.nd = op.nd[:0]
	op.dm = op.dm[:0]
	op.keys = op.keys[:0]
	s.ops.Put(op)
}

// add routes and encodes e. The caller releases e afterwards.
func (op *appendOp) add(s *Spool, e *enrich.Event, now time.Time) {
	if e.DedupKey != ([16]byte{}) {
		op.keys = append(op.keys, e.DedupKey)
	}
	var dm uint64
	e.Destinations = e.Destinations[:0]
	for _, d := range s.dests {
		switch d.admit.admit(e) {
		case admitted:
			dm |= 1 << uint(d.idx)
			e.Destinations = append(e.Destinations, d.name)
		case consentBlocked:
			d.m.consentBlocked.Inc()
		}
	}
	if dm == 0 {
		s.met.unrouted.Inc()
		return
	}
	op.buf = appendRecordHeader(op.buf, now, e.Destinations)
	op.buf = e.AppendJSON(op.buf)
	op.ends = append(op.ends, len(op.buf))
	op.nd = append(op.nd, uint8(len(e.Destinations)))
	op.dm = append(op.dm, dm)
}

func (op *appendOp) apply(t *txn) error {
	op.notify = 0
	start := 0
	for i, end := range op.ends {
		t.seq++
		k := t.key(t.seq)
		rec := op.buf[start:end]
		if err := t.events.Put(k, rec); err != nil {
			return err
		}
		size := int64(len(rec))
		t.spool.add(1, size)
		for dm := op.dm[i]; dm != 0; dm &= dm - 1 {
			di := bits.TrailingZeros64(dm)
			t.backlog[di].add(1, size)
		}
		op.notify |= op.dm[i]
		start = end
	}
	for i := range op.keys {
		t.ids16 = append(t.ids16, op.keys[i][:])
	}
	return nil
}

func (op *appendOp) committed(t *txn) {
	for dm := op.notify; dm != 0; dm &= dm - 1 {
		t.s.dests[bits.TrailingZeros64(dm)].wake()
	}
}

// wake tells the deliverer there is something new, without blocking.
func (d *destState) wake() {
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

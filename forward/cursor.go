package forward

import "sort"

// tracker computes a destination's cursor. The deliverer reads records in
// sequence order but resolves them out of order (batches per group, several
// in flight, retries), so the cursor it may persist is "everything up to
// here is resolved": delivered, dead-lettered, or parked in the retry set.
// A crash then re-reads from the cursor: at least once, never lost.
type tracker struct {
	q    []trackEntry // read order, which is sequence order
	head int          // q[:head] are resolved and forgotten
}

type trackEntry struct {
	seq      uint64
	appended int64 // unix ms, for the oldest-age gauge and backlog.max_age
	done     bool
}

// add records that seq was read and is now the deliverer's to resolve.
func (t *tracker) add(seq uint64, appendedMs int64) {
	t.q = append(t.q, trackEntry{seq: seq, appended: appendedMs})
}

// resolve marks seq resolved and forgets the resolved prefix.
func (t *tracker) resolve(seq uint64) {
	live := t.q[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].seq >= seq })
	if i == len(live) || live[i].seq != seq {
		return
	}
	live[i].done = true
	for t.head < len(t.q) && t.q[t.head].done {
		t.head++
	}
	if t.head == len(t.q) {
		t.q, t.head = t.q[:0], 0
	} else if t.head > 1024 && t.head > len(t.q)/2 {
		n := copy(t.q, t.q[t.head:])
		t.q, t.head = t.q[:n], 0
	}
}

// cursor is the last sequence number that may be persisted, given that
// every record up to readPos was read.
func (t *tracker) cursor(readPos uint64) uint64 {
	if t.head == len(t.q) {
		return readPos
	}
	return t.q[t.head].seq - 1
}

// oldest returns the appended time of the oldest unresolved record (0 when
// none).
func (t *tracker) oldest() int64 {
	if t.head == len(t.q) {
		return 0
	}
	return t.q[t.head].appended
}

// len is the number of unresolved records.
func (t *tracker) len() int {
	n := 0
	for _, e := range t.q[t.head:] {
		if !e.done {
			n++
		}
	}
	return n
}

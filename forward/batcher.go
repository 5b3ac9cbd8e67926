package forward

import (
	"slices"
	"strings"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// item is one event on its way to one destination.
type item struct {
	seq      uint64
	di       int // the destination's position in the record header
	nd       int // destinations in the record header
	size     int // record bytes, for backlog accounting
	jsonLen  int // encoded event bytes, for batch.max_bytes
	appended time.Time
	ev       *enrich.Event
	raw      []byte // the stored JSON when it did not decode (ev is nil)
	attempts int
	retry    *retryEntry // set when the item came from the retry set
	tracked  bool        // read from the backlog: the cursor waits for it
}

// newItem returns v in an item from the deliverer's free list. Items are
// created and resolved by the deliverer's goroutine only, so the list
// needs no lock, and a steady delivery allocates none.
func (x *deliverer) newItem(v item) *item {
	if n := len(x.free); n > 0 {
		it := x.free[n-1]
		x.free = x.free[:n-1]
		*it = v
		return it
	}
	it := new(item)
	*it = v
	return it
}

// freeItem takes back a resolved item: nothing refers to it any more
// (its batch is gone and its outcome committed).
func (x *deliverer) freeItem(it *item) {
	if len(x.free) >= x.maxHeld {
		return
	}
	*it = item{}
	x.free = append(x.free, it)
}

// batch is a group of items sent in one request.
type batch struct {
	group string
	items []*item
	bytes int
	first time.Time // when its first item was added
	probe bool      // the one batch a paused destination tries
}

// batcher groups items by the adapter's GroupKey and closes a group's
// batch when it reaches max_events or max_bytes, or max_wait after its
// first item. It has no goroutine: the deliverer asks it what is due.
type batcher struct {
	maxEvents int
	maxBytes  int
	maxWait   time.Duration
	open      map[string]*batch
}

func newBatcher(maxEvents, maxBytes int, maxWait time.Duration) batcher {
	return batcher{maxEvents: max(maxEvents, 1), maxBytes: maxBytes, maxWait: maxWait, open: map[string]*batch{}}
}

// add puts it in its group's batch and appends to out the batches that
// are complete.
func (b *batcher) add(it *item, group string, now time.Time, out []*batch) []*batch {
	cur := b.open[group]
	if cur != nil && b.maxBytes > 0 && cur.bytes+it.jsonLen > b.maxBytes {
		// it does not fit: the batch goes as it is.
		out = append(out, cur)
		delete(b.open, group)
		cur = nil
	}
	if cur == nil {
		// The key may point into an event's arena (GroupKey returns what
		// it likes): the batcher keeps its own copy, once per batch.
		group = strings.Clone(group)
		cur = &batch{group: group, first: now}
		b.open[group] = cur
	}
	cur.items = append(cur.items, it)
	cur.bytes += it.jsonLen
	if len(cur.items) >= b.maxEvents || (b.maxBytes > 0 && cur.bytes >= b.maxBytes) {
		out = append(out, cur)
		delete(b.open, group)
	}
	return out
}

// due appends to out the batches whose first item waited max_wait.
func (b *batcher) due(now time.Time, out []*batch) []*batch {
	start := len(out)
	for g, cur := range b.open {
		if !now.Before(cur.first.Add(b.maxWait)) {
			out = append(out, cur)
			delete(b.open, g)
		}
	}
	sortBatches(out[start:])
	return out
}

// flush appends every open batch to out, oldest first.
func (b *batcher) flush(out []*batch) []*batch {
	start := len(out)
	for g, cur := range b.open {
		out = append(out, cur)
		delete(b.open, g)
	}
	sortBatches(out[start:])
	return out
}

// next is when the next open batch falls due (zero when none is open).
func (b *batcher) next() time.Time {
	var t time.Time
	for _, cur := range b.open {
		if d := cur.first.Add(b.maxWait); t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return t
}

// sortBatches orders batches by their first sequence number, so that
// within a destination older events go first.
func sortBatches(bs []*batch) {
	slices.SortFunc(bs, func(a, b *batch) int {
		switch {
		case a.items[0].seq < b.items[0].seq:
			return -1
		case a.items[0].seq > b.items[0].seq:
			return 1
		}
		return 0
	})
}

func sortEntries(es []*retryEntry) {
	slices.SortFunc(es, func(a, b *retryEntry) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
}

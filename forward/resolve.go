package forward

// resolveOp records what happened to some of one destination's items:
// delivered, dead-lettered, parked in the retry set, and where its cursor
// now stands. The deliverer reuses one, committing it synchronously.
type resolveOp struct {
	waiter
	d *destState

	done  []*item // delivered: the destination is done with them
	dead  []deadItem
	retry []retryItem

	cursor    uint64
	setCursor bool
}

// deadItem is an item, or a record never turned into one (backlog
// trimming), to dead-letter.
type deadItem struct {
	it    *item // nil for a record trimmed unread or from the retry set
	seq   uint64
	di    int
	nd    int
	size  int
	entry *retryEntry // set when it leaves the retry set
	dl    deadLetter
}

// retryItem parks an item in the retry set with state.
type retryItem struct {
	it    *item
	state retryState
}

func newResolveOp(d *destState) *resolveOp { return &resolveOp{waiter: newWaiter(), d: d} }

func (op *resolveOp) empty() bool {
	return len(op.done) == 0 && len(op.dead) == 0 && len(op.retry) == 0 && !op.setCursor
}

func (op *resolveOp) reset() {
	clear(op.done)
	clear(op.dead)
	clear(op.retry)
	op.done, op.dead, op.retry = op.done[:0], op.dead[:0], op.retry[:0]
	op.setCursor = false
}

func (op *resolveOp) apply(t *txn) error {
	d := op.d
	db := t.destsBucket().Bucket([]byte(d.name))
	if db == nil {
		return errUnknownDest
	}
	rb := db.Bucket(bucketRetry)
	backlog := &t.backlog[d.idx]
	for _, it := range op.done {
		if err := t.clearPending(it.seq, it.di, it.nd, it.size); err != nil {
			return err
		}
		if it.retry != nil {
			if err := rb.Delete(t.key(it.seq)); err != nil {
				return err
			}
		}
		backlog.add(-1, -int64(it.size))
	}
	if len(op.dead) > 0 {
		qb, err := t.deadLetterBucket(d.name)
		if err != nil {
			return err
		}
		for i := range op.dead {
			x := &op.dead[i]
			if err := t.putDeadLetter(qb, &d.dlq, &t.dlq[d.idx], &x.dl); err != nil {
				return err
			}
			if err := t.clearPending(x.seq, x.di, x.nd, x.size); err != nil {
				return err
			}
			if x.entry != nil {
				if err := rb.Delete(t.key(x.seq)); err != nil {
					return err
				}
			}
			backlog.add(-1, -int64(x.size))
		}
	}
	for i := range op.retry {
		r := &op.retry[i]
		start := len(t.arena)
		t.arena = appendRetryState(t.arena, &r.state)
		if err := rb.Put(t.key(r.it.seq), t.arena[start:len(t.arena):len(t.arena)]); err != nil {
			return err
		}
	}
	if op.setCursor {
		if err := db.Put(keyCursor, t.key(op.cursor)); err != nil {
			return err
		}
	}
	return nil
}

func (op *resolveOp) committed(*txn) {}

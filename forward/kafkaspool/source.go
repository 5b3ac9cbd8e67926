package kafkaspool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/forward/status"
)

// bufferRecords bounds the records fetched but not yet read by the
// deliverer, per destination.
const bufferRecords = 4096

// commitInterval is how often resolved offsets are committed; a crash
// re-delivers at most what was resolved in the last interval.
const commitInterval = 100 * time.Millisecond

// Source consumes the spool topic in the consumer group of one
// destination and feeds its deliverer (it satisfies forward.Log). A
// partition's offset is committed only up to the first record not yet
// delivered or dead-lettered, so a crash, a restart or a rebalance
// re-delivers (at least once) and never skips.
type Source struct {
	cl       *kgo.Client
	dest     string
	topic    string
	dlqTopic string
	session  time.Duration
	log      *zap.Logger

	mu      sync.Mutex
	parts   map[int32]*partState
	buf     []*kgo.Record // fetched, not handed out yet
	byseq   map[uint64]*pending
	nextSeq uint64
	wake    func()
	room    chan struct{} // signalled when Read made room in buf
	dirty   chan struct{} // signalled when something was resolved

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	consumed, committed, redelivered, revoked, deadLettered *metrics.Counter
}

// pending is a record handed to the deliverer and not resolved yet.
type pending struct {
	p        *partState
	offset   int64
	appended time.Time
	value    []byte
}

// partState tracks one owned partition: every record fetched from it, in
// offset order, until the resolved prefix is committed.
type partState struct {
	partition int32
	q         []entry
	head      int
	// fetched is the offset after the last record fetched (-1: none yet).
	fetched int64
	// committed is the last offset committed (-1: none by us).
	committed int64
	gone      bool // revoked or lost: outcomes no longer count here
	// out counts records handed to the deliverer and not resolved.
	out int
	// hw is the partition's high watermark at the last fetch.
	hw int64
}

type entry struct {
	offset int64
	done   bool
}

// commitPoint is the offset to commit: the first unresolved record, or
// the end of what was fetched; -1 when nothing was fetched.
func (p *partState) commitPoint() int64 {
	for p.head < len(p.q) && p.q[p.head].done {
		p.head++
	}
	if p.head == len(p.q) {
		p.q, p.head = p.q[:0], 0
		return p.fetched
	}
	if p.head > 1024 && p.head > len(p.q)/2 {
		n := copy(p.q, p.q[p.head:])
		p.q, p.head = p.q[:n], 0
	}
	return p.q[p.head].offset
}

func (p *partState) resolve(offset int64) {
	live := p.q[p.head:]
	lo, hi := 0, len(live)
	for lo < hi {
		m := (lo + hi) / 2
		if live[m].offset < offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(live) && live[lo].offset == offset {
		live[lo].done = true
	}
}

// NewSource joins the consumer group Group(cfg.Spool.Group, destination)
// on cfg.Spool.Topic. A new group starts at the topic's beginning, so a
// forwarder started after the edges still gets every event.
func NewSource(cfg *config.Config, destination string, log *zap.Logger, opts ...Option) (*Source, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o := buildOptions(opts)
	sc := cfg.Spool
	s := &Source{
		dest: destination, topic: sc.Topic, dlqTopic: DLQTopic(sc.Topic, destination), session: sc.SessionTimeout.D(),
		log:   log.Named("kafka_source").With(zap.String("destination", destination)),
		parts: map[int32]*partState{}, byseq: map[uint64]*pending{},
		wake: func() {}, room: make(chan struct{}, 1), dirty: make(chan struct{}, 1),
	}
	l := `{destination="` + destination + `"}`
	s.consumed = o.metrics.NewCounter(`sidetrack_kafka_consumed_total` + l)
	s.committed = o.metrics.NewCounter(`sidetrack_kafka_commits_total` + l)
	s.redelivered = o.metrics.NewCounter(`sidetrack_kafka_redelivered_total` + l)
	s.revoked = o.metrics.NewCounter(`sidetrack_kafka_partitions_revoked_total` + l)
	s.deadLettered = o.metrics.NewCounter(`sidetrack_kafka_dead_letters_total` + l)
	o.metrics.NewGauge(`sidetrack_kafka_lag`+l, func() float64 { return float64(s.lag()) })
	o.metrics.NewGauge(`sidetrack_kafka_partitions`+l, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.parts))
	})
	kopts := append(clientOptions(sc, s.log),
		kgo.ConsumerGroup(Group(sc.Group, destination)),
		kgo.ConsumeTopics(sc.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(sc.SessionTimeout.D()),
		kgo.HeartbeatInterval(max(sc.SessionTimeout.D()/10, 100*time.Millisecond)),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revokedCB),
		kgo.OnPartitionsLost(s.lost),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(visitorPartitioner()),
	)
	cl, err := kgo.NewClient(append(kopts, o.kgo...)...)
	if err != nil {
		return nil, fmt.Errorf("spool: kafka client: %w", err)
	}
	s.cl = cl
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.poll()
	go s.commitLoop()
	return s, nil
}

// lag is how many records of the owned partitions are not resolved yet:
// from each commit point to the high watermark last seen.
func (s *Source) lag() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, st := range s.parts {
		at := st.commitPoint()
		if at < 0 {
			continue // nothing fetched yet: unknown
		}
		n += max(st.hw-at, 0)
	}
	return n
}

// SetWake implements forward.Log.
func (s *Source) SetWake(wake func()) {
	s.mu.Lock()
	s.wake = wake
	s.mu.Unlock()
}

func (s *Source) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range m[s.topic] {
		s.parts[p] = &partState{partition: p, fetched: -1, committed: -1}
	}
}

// revokedCB hands a leaving partition over cleanly: it stops reading
// from it, waits (at most revokeWait) for the records of it in flight here
// to be resolved, commits, and forgets it. Records still unresolved then
// (parked for a retry, or slow) are delivered again by the new owner and
// counted as redelivered when they resolve here.
func (s *Source) revokedCB(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	ps := m[s.topic]
	s.mu.Lock()
	s.dropBuffered(ps)
	s.mu.Unlock()
	// Heartbeats may wait for this callback: stay well inside the
	// session timeout.
	deadline := time.Now().Add(min(revokeWait, s.session/3))
	for time.Now().Before(deadline) && s.inFlight(ps) > 0 && ctx.Err() == nil && s.ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	s.commit(ctx, ps)
	s.drop(ps)
}

// revokeWait bounds how long a rebalance waits for records in flight (and
// a third of spool.session_timeout).
const revokeWait = 3 * time.Second

// inFlight counts the unresolved records of partitions ps.
func (s *Source) inFlight(ps []int32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range ps {
		if st := s.parts[p]; st != nil {
			n += st.out
		}
	}
	return n
}

// lost forgets partitions without committing (the group moved on).
func (s *Source) lost(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.drop(m[s.topic])
}

func (s *Source) drop(ps []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		if st := s.parts[p]; st != nil {
			st.gone = true
			delete(s.parts, p)
			s.revoked.Inc()
		}
	}
	s.dropBuffered(ps)
}

// dropBuffered forgets fetched records of ps not handed out yet (their
// entries stay unresolved, so nothing is committed past them). s.mu is
// held.
func (s *Source) dropBuffered(ps []int32) {
	kept := s.buf[:0]
	for _, r := range s.buf {
		if !slices.Contains(ps, r.Partition) {
			kept = append(kept, r)
		}
	}
	clear(s.buf[len(kept):])
	s.buf = kept
}

// poll fetches while the buffer has room. BlockRebalanceOnPoll keeps a
// rebalance from running between a fetch and its records being tracked.
func (s *Source) poll() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		n := bufferRecords - len(s.buf)
		s.mu.Unlock()
		if n <= 0 {
			select {
			case <-s.room:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		fs := s.cl.PollRecords(s.ctx, n)
		if fs.IsClientClosed() || s.ctx.Err() != nil {
			s.cl.AllowRebalance()
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("fetching from kafka failed", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		got := 0
		s.mu.Lock()
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if st := s.parts[p.Partition]; st != nil && p.HighWatermark > st.hw {
				st.hw = p.HighWatermark
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			st := s.parts[r.Partition]
			if st == nil || r.Offset < st.fetched {
				return
			}
			st.q = append(st.q, entry{offset: r.Offset})
			st.fetched = r.Offset + 1
			s.buf = append(s.buf, r)
			got++
		})
		wake := s.wake
		s.mu.Unlock()
		s.cl.AllowRebalance()
		if got > 0 {
			s.consumed.Add(got)
			wake()
		}
	}
}

// Read implements forward.Log.
func (s *Source) Read(limit int, fn func(seq uint64, appended time.Time, event []byte)) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(limit, len(s.buf))
	for _, r := range s.buf[:n] {
		s.nextSeq++
		p := &pending{p: s.parts[r.Partition], offset: r.Offset, appended: appendedAt(r), value: r.Value}
		p.p.out++
		s.byseq[s.nextSeq] = p
		fn(s.nextSeq, p.appended, p.value)
	}
	rest := copy(s.buf, s.buf[n:])
	clear(s.buf[rest:])
	s.buf = s.buf[:rest]
	if n > 0 {
		select {
		case s.room <- struct{}{}:
		default:
		}
	}
	return n, nil
}

// Lookup implements forward.Log.
func (s *Source) Lookup(seq uint64) (time.Time, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byseq[seq]
	if p == nil || p.p.gone {
		if p != nil {
			p.p.out--
			delete(s.byseq, seq)
		}
		return time.Time{}, nil, false
	}
	return p.appended, p.value, true
}

// Resolve implements forward.Log: dead letters are produced to the
// destination's DLQ topic (acks=all) before anything is marked resolved.
func (s *Source) Resolve(ctx context.Context, done []uint64, dead []status.DeadLetter) error {
	if len(dead) > 0 {
		recs := make([]*kgo.Record, len(dead))
		for i := range dead {
			d := &dead[i]
			recs[i] = &kgo.Record{Topic: s.dlqTopic, Value: d.Event, Headers: []kgo.RecordHeader{
				{Key: HeaderAppended, Value: appendMillis(nil, d.Appended)},
				{Key: HeaderDead, Value: appendMillis(nil, d.Dead)},
				{Key: HeaderReason, Value: []byte(d.Reason)},
				{Key: HeaderAttempts, Value: itoa(d.Attempts)},
				{Key: HeaderStatus, Value: itoa(d.Status)},
				{Key: HeaderExcerpt, Value: []byte(d.Excerpt)},
			}}
		}
		if err := s.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("kafka dead-letter topic %s: %w", s.dlqTopic, err)
		}
		s.deadLettered.Add(len(dead))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mark := func(seq uint64) {
		p := s.byseq[seq]
		if p == nil {
			return
		}
		delete(s.byseq, seq)
		p.p.out--
		if p.p.gone {
			// The new owner reads it again from the committed offset.
			s.redelivered.Inc()
			return
		}
		p.p.resolve(p.offset)
	}
	for _, seq := range done {
		mark(seq)
	}
	for i := range dead {
		mark(dead[i].Seq)
	}
	select {
	case s.dirty <- struct{}{}:
	default:
	}
	return nil
}

// commitLoop commits resolved offsets at most every commitInterval.
func (s *Source) commitLoop() {
	defer s.wg.Done()
	t := time.NewTicker(commitInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.dirty:
		}
		s.commit(s.ctx, nil)
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// commit commits the commit points of ps (nil: every owned partition)
// that moved since the last commit.
func (s *Source) commit(ctx context.Context, ps []int32) {
	offsets := map[int32]kgo.EpochOffset{}
	s.mu.Lock()
	var moved []*partState
	consider := func(st *partState) {
		if st == nil || st.gone {
			return
		}
		if at := st.commitPoint(); at > st.committed {
			offsets[st.partition] = kgo.EpochOffset{Epoch: -1, Offset: at}
			st.committed = at
			moved = append(moved, st)
		}
	}
	if ps == nil {
		for _, st := range s.parts {
			consider(st)
		}
	} else {
		for _, p := range ps {
			consider(s.parts[p])
		}
	}
	s.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	var failed error
	s.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{s.topic: offsets},
		func(_ *kgo.Client, _ *kmsgCommitReq, resp *kmsgCommitResp, err error) {
			failed = commitError(resp, err)
		})
	if failed != nil {
		s.log.Warn("committing offsets failed; they are committed again later", zap.Error(failed))
		s.mu.Lock()
		for _, st := range moved {
			st.committed = -1 // try again on the next pass
		}
		s.mu.Unlock()
		select {
		case s.dirty <- struct{}{}:
		default:
		}
		return
	}
	s.committed.Inc()
}

// Metrics are registered in the set given by WithMetrics.

// Close commits what is resolved, leaves the group (its partitions move
// to the other forwarders at once) and closes the client.
func (s *Source) Close() {
	s.cancel()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.commit(ctx, nil)
	s.cl.Close() // leaves the group; revoke callbacks commit nothing new
}

package kafkaspool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// Option adjusts a Sink or a Source.
type Option func(*options)

type options struct {
	kgo        []kgo.Opt
	committed  func(keys [][16]byte)
	retryAfter time.Duration
	metrics    *metrics.Set
}

// WithClientOptions adds franz-go options after the package's own (tests
// use kgo.MetadataMinAge so clients notice a moved leader quickly).
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(o *options) { o.kgo = append(o.kgo, opts...) }
}

// WithCommitted calls fn with the dedup keys of each acknowledged append,
// so the dedup stage confirms its reservations (like forward.WithCommitted).
func WithCommitted(fn func(keys [][16]byte)) Option {
	return func(o *options) { o.committed = fn }
}

// WithRetryAfter sets the Retry-After given to clients while Kafka does
// not acknowledge in time (default 2s).
func WithRetryAfter(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.retryAfter = d
		}
	}
}

// WithMetrics registers the series in set instead of a set of their own.
func WithMetrics(set *metrics.Set) Option { return func(o *options) { o.metrics = set } }

func buildOptions(opts []Option) options {
	o := options{retryAfter: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.metrics == nil {
		o.metrics = metrics.NewSet()
	}
	return o
}

// BusyError says Kafka did not acknowledge within spool.timeout (brokers
// slow, partitions without a leader, the producer buffer full): nothing
// was acknowledged to the client, which gets 429 and retries after Wait.
type BusyError struct {
	Wait time.Duration
	Err  error
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("kafka spool: not acknowledged in time, retry after %s: %v", e.Wait, e.Err)
}

// RetryAfter is the wait to give the client.
func (e *BusyError) RetryAfter() time.Duration { return e.Wait }

// Unwrap returns the producer's error.
func (e *BusyError) Unwrap() error { return e.Err }

// ErrDraining is returned once Close began (the proxy answers 503).
var ErrDraining error = drainingError{}

type drainingError struct{}

func (drainingError) Error() string  { return "kafka spool: draining (sidetrack is shutting down)" }
func (drainingError) Draining() bool { return true }

// Sink appends accepted events to the spool topic: proxy.Sink for an edge
// replica with spool.type kafka. Append returns only after Kafka
// acknowledged every record (acks=all, idempotent producer), so a 2xx
// means the events are on the brokers' in-sync replicas.
type Sink struct {
	cl         *kgo.Client
	topic      string
	quarantine string
	timeout    time.Duration
	pool       *enrich.EventPool
	o          options
	log        *zap.Logger
	draining   atomic.Bool
	recs       sync.Pool // *work

	appended, failed, busy, quarantined *metrics.Counter
	// partial counts records acknowledged by Kafka in an append that
	// failed as a whole: each may reach destinations twice.
	partial *metrics.Counter
}

type work struct {
	buf  []byte
	ends []int // per event: value, key, appended, visitor ends in buf
	recs []*kgo.Record
}

// NewSink connects to cfg.Spool.Brokers. The client connects lazily: an
// unreachable cluster shows as failing appends (503) and /readyz, not as a
// failed start, so replicas come up in any order.
func NewSink(cfg *config.Config, log *zap.Logger, pool *enrich.EventPool, opts ...Option) (*Sink, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if pool == nil {
		pool = &enrich.EventPool{}
	}
	o := buildOptions(opts)
	sc := cfg.Spool
	s := &Sink{
		topic: sc.Topic, quarantine: QuarantineTopic(sc.Topic), timeout: sc.Timeout.D(),
		pool: pool, o: o, log: log.Named("kafka_spool"),
		appended:    o.metrics.NewCounter(`sidetrack_kafka_spool_appended_total`),
		failed:      o.metrics.NewCounter(`sidetrack_kafka_spool_append_errors_total`),
		busy:        o.metrics.NewCounter(`sidetrack_kafka_spool_busy_total`),
		quarantined: o.metrics.NewCounter(`sidetrack_quarantine_total`),
		partial:     o.metrics.NewCounter(`sidetrack_kafka_spool_partial_total`),
	}
	if s.timeout <= 0 {
		s.timeout = 5 * time.Second
	}
	kopts := append(clientOptions(sc, s.log),
		kgo.DefaultProduceTopic(sc.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent writes need acks=all, and 2xx promises it
		kgo.RecordPartitioner(visitorPartitioner()),
		kgo.RecordDeliveryTimeout(s.timeout),
		kgo.ProducerLinger(0),
	)
	cl, err := kgo.NewClient(append(kopts, o.kgo...)...)
	if err != nil {
		return nil, fmt.Errorf("spool: kafka client: %w", err)
	}
	s.cl = cl
	return s, nil
}

// clientOptions are what every client of the spool shares.
func clientOptions(sc config.Spool, log *zap.Logger) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(sc.Brokers...),
		kgo.ClientID("sidetrack"),
		kgo.WithLogger(kgoLogger{log}),
		// A moved leader is noticed within a fraction of a second, not
		// franz-go's default 5s, so appends wait less during a failover.
		kgo.MetadataMinAge(250 * time.Millisecond),
		// The quarantine and dead-letter topics appear on first use where
		// the brokers allow it; elsewhere they are created ahead
		// (docs/deployment.md).
		kgo.AllowAutoTopicCreation(),
	}
	if sc.TLS {
		// nil RootCAs: the system roots; kgo sets each broker's host as
		// the server name.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	// Validate admits only these mechanisms.
	user, pass := sc.SASL.User, sc.SASL.Password.Reveal()
	switch sc.SASL.Mechanism {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
	}
	return opts
}

// Metrics returns the sink's series, for /metrics.
func (s *Sink) Metrics() *metrics.Set { return s.o.metrics }

// Ready reports whether appends may succeed (for /readyz): not draining,
// and a broker answered recently.
func (s *Sink) Ready() error {
	if s.draining.Load() {
		return ErrDraining
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka spool: no broker answers: %w", err)
	}
	return nil
}

// Append produces one record per event and waits for every
// acknowledgement, then releases the events; on error the caller keeps
// them (proxy.Sink's contract). Records of one call may be acknowledged
// in part before an error: the client retries the whole call, and the
// duplicates are those DESIGN §5 allows (dedup on the edge catches the
// retry when Redis is shared).
func (s *Sink) Append(ctx context.Context, events []*enrich.Event) error {
	if len(events) == 0 {
		return nil
	}
	if s.draining.Load() {
		return ErrDraining
	}
	w, _ := s.recs.Get().(*work)
	if w == nil {
		w = &work{}
	}
	defer s.putWork(w)
	now := time.Now()
	var keys [][16]byte
	// Encode everything first, then slice the final buffer: appending
	// may move it.
	for _, e := range events {
		w.buf = e.AppendJSON(w.buf)
		w.ends = append(w.ends, len(w.buf))
		w.buf = append(w.buf, e.EventID...)
		w.ends = append(w.ends, len(w.buf))
		w.buf = appendMillis(w.buf, now)
		w.ends = append(w.ends, len(w.buf))
		w.buf = append(w.buf, e.VisitorID()...)
		w.ends = append(w.ends, len(w.buf))
		if e.DedupKey != ([16]byte{}) {
			keys = append(keys, e.DedupKey)
		}
	}
	start := 0
	for i := range events {
		o := w.ends[4*i : 4*i+4]
		w.recs = append(w.recs, &kgo.Record{Topic: s.topic,
			Value: w.buf[start:o[0]:o[0]], Key: w.buf[o[0]:o[1]:o[1]],
			Headers: []kgo.RecordHeader{
				{Key: HeaderAppended, Value: w.buf[o[1]:o[2]:o[2]]},
				{Key: HeaderVisitor, Value: w.buf[o[2]:o[3]:o[3]]},
			}})
		start = o[3]
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res := s.cl.ProduceSync(ctx, w.recs...)
	if err := res.FirstErr(); err != nil {
		// Records Kafka took although the request fails: the client's
		// retry appends them again (the duplicates DESIGN §5 allows).
		for _, r := range res {
			if r.Err == nil {
				s.partial.Inc()
			}
		}
		return s.classify(err)
	}
	s.appended.Add(len(events))
	if s.o.committed != nil && len(keys) > 0 {
		s.o.committed(keys)
	}
	for _, e := range events {
		s.pool.Put(e)
	}
	return nil
}

func (s *Sink) putWork(w *work) {
	clear(w.recs)
	w.recs = w.recs[:0]
	w.buf = w.buf[:0]
	w.ends = w.ends[:0]
	if cap(w.buf) > 4<<20 {
		w.buf = nil
	}
	s.recs.Put(w)
}

// classify turns a producer error into the proxy's vocabulary: a timeout
// is "busy, retry after" (429), anything else a plain error (503).
func (s *Sink) classify(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, kgo.ErrMaxBuffered) {
		s.busy.Inc()
		return &BusyError{Wait: s.o.retryAfter, Err: err}
	}
	s.failed.Inc()
	s.log.Warn("appending to kafka failed", zap.Error(err))
	return fmt.Errorf("kafka spool: %w", err)
}

// Quarantine produces events that failed validation to the quarantine
// topic, each with its reason, and releases them.
func (s *Sink) Quarantine(ctx context.Context, events []*enrich.Event, reasons []string) error {
	if len(events) == 0 {
		return nil
	}
	if s.draining.Load() {
		return ErrDraining
	}
	now := appendMillis(nil, time.Now())
	recs := make([]*kgo.Record, len(events))
	for i, e := range events {
		reason := ""
		if i < len(reasons) {
			reason = reasons[i]
		}
		recs[i] = &kgo.Record{Topic: s.quarantine, Key: []byte(e.EventID), Value: e.AppendJSON(nil), Headers: []kgo.RecordHeader{
			{Key: HeaderAppended, Value: now},
			{Key: HeaderReason, Value: []byte(reason)},
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return s.classify(err)
	}
	s.quarantined.Add(len(events))
	for _, e := range events {
		s.pool.Put(e)
	}
	return nil
}

// Close stops taking events and waits, until ctx ends, for records in
// flight; then it closes the client.
func (s *Sink) Close(ctx context.Context) error {
	s.draining.Store(true)
	err := s.cl.Flush(ctx)
	s.cl.Close()
	return err
}

// kgoLogger sends franz-go's warnings and errors to zap.
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	if level == kgo.LogLevelError {
		k.l.Error(msg, fields...)
		return
	}
	k.l.Warn(msg, fields...)
}

// itoa formats small numbers for headers.
func itoa(n int) []byte { return strconv.AppendInt(nil, int64(n), 10) }

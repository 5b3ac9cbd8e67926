// Package kafka is the Kafka destination: every event becomes one record
// on the configured topic, keyed by the visitor (so one visitor's events
// keep their order within a partition), with the canonical event JSON as
// the value and event_name, event_id and source as headers. See
// docs/destinations/kafka.md.
//
// The producer is github.com/twmb/franz-go's kgo client: idempotent (the
// broker drops a batch the client resends after a lost acknowledgement)
// with acks=all, so an event counts as delivered only once every in-sync
// replica has it. Send produces the whole batch and waits for every
// record's acknowledgement; each record's error is classified on its own.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// Record headers set on every record.
const (
	HeaderEventName = "event_name"
	HeaderEventID   = "event_id"
	HeaderSource    = "source"
)

// Defaults.
const (
	// DefaultCompression is used when compression is not set: snappy is
	// what Kafka's own clients default to in practice, is cheap on CPU
	// and shrinks event JSON several times; every broker version reads it.
	DefaultCompression = "snappy"
	// MaxRecordBytes is the largest record value the producer accepts
	// (franz-go's batch limit, which mirrors the brokers' default
	// max.message.bytes). A larger event is refused permanently.
	MaxRecordBytes = 1_000_012
	defaultTimeout = 10 * time.Second
	closeTimeout   = 10 * time.Second
)

// Limits is the request bound type every adapter returns.
type Limits = status.Limits

// Option adjusts an Adapter.
type Option func(*options)

type options struct {
	kgo []kgo.Opt
}

// WithClientOptions appends franz-go client options after the adapter's
// own (so they win): tests use it for kgo.MetadataMinAge, and a
// deployment could tune linger or retries.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(o *options) { o.kgo = append(o.kgo, opts...) }
}

// Adapter is the Kafka destination. It is safe for concurrent use.
type Adapter struct {
	name    string
	topic   string
	timeout time.Duration
	log     *zap.Logger
	cl      *kgo.Client
	work    sync.Pool // *work
	auth    authHook
}

// New checks cfg and builds the producer. It does not wait for the
// brokers: a cluster that is down at start-up delays delivery, not
// start-up.
func New(cfg config.Destination, log *zap.Logger, opts ...Option) (*Adapter, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o := cfg.Options
	fail := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("kafka destination %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	if len(o.Brokers) == 0 {
		return fail("brokers: at least one host:port is required")
	}
	if o.Topic == "" {
		return fail("topic is required")
	}
	codec, err := compression(o.Compression)
	if err != nil {
		return fail("%v", err)
	}
	a := &Adapter{
		name:    cfg.Name,
		topic:   o.Topic,
		timeout: cfg.Timeout.D(),
		log:     log.With(zap.String("destination", cfg.Name)),
	}
	if a.timeout <= 0 {
		a.timeout = defaultTimeout
	}
	kopts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.ClientID("sidetrack"),
		// Idempotent writes are kgo's default; they require acks from
		// every in-sync replica, which is also what "delivered" means
		// here.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec...),
		kgo.ProducerBatchMaxBytes(MaxRecordBytes),
		kgo.WithLogger(kgoLogger{a.log}),
		kgo.WithHooks(&a.auth),
	}
	if o.TLS {
		// nil RootCAs: the system roots. The server name is taken from
		// each broker's host by kgo.
		kopts = append(kopts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	switch o.SASL.Mechanism {
	case "":
	case "plain":
		kopts = append(kopts, kgo.SASL(plain.Auth{User: o.SASL.User, Pass: o.SASL.Password.Reveal()}.AsMechanism()))
	case "scram-sha-256":
		kopts = append(kopts, kgo.SASL(scram.Auth{User: o.SASL.User, Pass: o.SASL.Password.Reveal()}.AsSha256Mechanism()))
	case "scram-sha-512":
		kopts = append(kopts, kgo.SASL(scram.Auth{User: o.SASL.User, Pass: o.SASL.Password.Reveal()}.AsSha512Mechanism()))
	default:
		return fail("sasl.mechanism %q is not one of plain, scram-sha-256, scram-sha-512", o.SASL.Mechanism)
	}
	var opt options
	for _, fn := range opts {
		fn(&opt)
	}
	kopts = append(kopts, opt.kgo...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return fail("%v", err)
	}
	a.cl = cl
	if o.SASL.Mechanism == "plain" && !o.TLS {
		a.log.Warn("kafka SASL PLAIN without tls: the password crosses the network in clear")
	}
	a.log.Debug("kafka destination ready", zap.Strings("brokers", o.Brokers), zap.String("topic", o.Topic),
		zap.String("compression", codecName(o.Compression)), zap.Bool("tls", o.TLS), zap.String("sasl", o.SASL.Mechanism))
	return a, nil
}

func codecName(c string) string {
	if c == "" {
		return DefaultCompression
	}
	return c
}

// compression maps the config's codec name to franz-go's codecs.
func compression(name string) ([]kgo.CompressionCodec, error) {
	switch codecName(name) {
	case "none":
		return []kgo.CompressionCodec{kgo.NoCompression()}, nil
	case "gzip":
		return []kgo.CompressionCodec{kgo.GzipCompression()}, nil
	case "snappy":
		return []kgo.CompressionCodec{kgo.SnappyCompression()}, nil
	case "lz4":
		return []kgo.CompressionCodec{kgo.Lz4Compression()}, nil
	case "zstd":
		return []kgo.CompressionCodec{kgo.ZstdCompression()}, nil
	}
	return nil, fmt.Errorf("compression %q is not one of none, gzip, snappy, lz4, zstd", name)
}

// Name is the configured destination name.
func (a *Adapter) Name() string { return a.name }

// Limits sets no bound of its own: Kafka's limit is per record
// (MaxRecordBytes, enforced per event in Send), and records of one Send
// travel in as many produce requests as partitions need, so capping the
// batch's bytes would only shrink those requests.
func (a *Adapter) Limits() Limits { return Limits{} }

// GroupKey puts every event in one group: the partitioner routes each
// record by its key.
func (a *Adapter) GroupKey(*enrich.Event) string { return "" }

// Prepare accepts every event: any event is a valid record.
func (a *Adapter) Prepare(*enrich.Event) error { return nil }

// Key returns the record key of e: the visitor (Event.VisitorID), so that
// one visitor's events land on one partition in order.
func Key(e *enrich.Event) string { return e.VisitorID() }

// work holds one Send's reusable records and bytes.
type work struct {
	buf  []byte
	offs []recOffs
	recs []kgo.Record
	ptrs []*kgo.Record
	hdrs []kgo.RecordHeader
}

// recOffs locates one record's key, value and header values in work.buf,
// as ends of consecutive parts: key, value, name, id, source.
type recOffs [5]int

func (a *Adapter) getWork() *work {
	if v := a.work.Get(); v != nil {
		return v.(*work)
	}
	return &work{}
}

// Send produces one record per event and waits until Kafka acknowledged
// or failed each of them (bounded by the destination's timeout). A record
// counts as delivered only when acknowledged by all in-sync replicas.
func (a *Adapter) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	w := a.getWork()
	defer a.release(w)

	// Encode everything into one buffer first: slicing it while it still
	// grows would leave records pointing at an old copy.
	b := w.buf[:0]
	offs := w.offs[:0]
	for _, e := range batch {
		var o recOffs
		b = append(b, Key(e)...)
		o[0] = len(b)
		b = e.AppendJSON(b)
		o[1] = len(b)
		b = append(b, e.Name...)
		o[2] = len(b)
		b = append(b, e.EventID...)
		o[3] = len(b)
		b = append(b, e.Source...)
		o[4] = len(b)
		offs = append(offs, o)
	}
	w.buf, w.offs = b, offs

	n := len(batch)
	w.recs = grow(w.recs, n)
	w.ptrs = grow(w.ptrs, n)
	w.hdrs = grow(w.hdrs, 3*n)
	start := 0
	for i, o := range offs {
		h := w.hdrs[3*i : 3*i+3 : 3*i+3]
		h[0] = kgo.RecordHeader{Key: HeaderEventName, Value: b[o[1]:o[2]]}
		h[1] = kgo.RecordHeader{Key: HeaderEventID, Value: b[o[2]:o[3]]}
		h[2] = kgo.RecordHeader{Key: HeaderSource, Value: b[o[3]:o[4]]}
		w.recs[i] = kgo.Record{Key: b[start:o[0]], Value: b[o[0]:o[1]], Headers: h}
		w.ptrs[i] = &w.recs[i]
		start = o[4]
	}

	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	results := a.cl.ProduceSync(ctx, w.ptrs[:n]...)

	per := make([]error, n)
	failed, cancelled := 0, 0
	for _, r := range results {
		if r.Err == nil {
			continue
		}
		i := index(w.ptrs[:n], r.Record)
		if i < 0 {
			continue
		}
		per[i] = a.classify(r.Err, len(r.Record.Value))
		failed++
		if errors.Is(r.Err, context.Canceled) {
			cancelled++
		}
	}
	if cancelled == n {
		// Shutdown cut the whole batch short: one error, so the
		// delivery core requeues it without counting an attempt.
		return nil, context.Canceled
	}
	if failed > 0 {
		a.log.Debug("kafka did not acknowledge every record", zap.Int("records", n), zap.Int("failed", failed),
			zap.Error(results.FirstErr()))
	}
	return per, nil
}

// index finds r among ptrs. Only failed records are looked up, so the
// scan costs nothing on the delivered path.
func index(ptrs []*kgo.Record, r *kgo.Record) int {
	for i, p := range ptrs {
		if p == r {
			return i
		}
	}
	return -1
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// release drops references into the batch's events and returns w to the
// pool. Oversized buffers are not kept.
func (a *Adapter) release(w *work) {
	clear(w.recs)
	clear(w.ptrs)
	clear(w.hdrs)
	if cap(w.buf) > 8<<20 {
		w.buf = nil
	}
	a.work.Put(w)
}

// classify turns a record's produce error into a delivery error (DESIGN §5).
func (a *Adapter) classify(err error, size int) error {
	var ke *kerr.Error
	switch {
	case errors.Is(err, context.Canceled):
		return err // shutdown, not a failure
	case isAuthErr(err):
		return refused(err)
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		// Retried (bounded by retry.max_attempts/max_age): the topic may
		// be being created.
		return status.Retry(fmt.Errorf("kafka topic %q does not exist (create it): %w", a.topic, err))
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return status.Permanent(fmt.Errorf("kafka refused a record of %d bytes as too large: %w", size, err))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, kgo.ErrRecordRetries):
		if authErr := a.auth.err.Load(); authErr != nil {
			// The record waited because no connection got past SASL:
			// the credentials are the problem, not the time.
			return refused(*authErr)
		}
		return status.Retry(fmt.Errorf("kafka did not acknowledge the record in time: %w", err))
	case errors.As(err, &ke):
		if kerr.IsRetriable(ke) {
			return status.Retry(fmt.Errorf("kafka: %w", err))
		}
		return status.Permanent(fmt.Errorf("kafka: %w", err))
	}
	// Connection failures, a client being closed: retried.
	return status.Network(fmt.Errorf("kafka: %w", err))
}

// isAuthErr reports a credentials or ACL failure.
func isAuthErr(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.Is(err, kerr.IllegalSaslState) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// refused pauses the destination (as HTTP 403 does) until an operator
// fixes the credentials or ACLs; the events stay in its backlog.
func refused(err error) error {
	return status.FromHTTP(http.StatusForbidden, "", time.Time{}, "kafka refused the producer: "+err.Error())
}

// authHook remembers whether the latest broker connection failed its SASL
// authentication. A producer whose connections all fail SASL never gets a
// record error that says so (its records wait for metadata until the
// deadline), so Send consults this to tell bad credentials from a slow
// cluster.
type authHook struct{ err atomic.Pointer[error] }

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (h *authHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	switch {
	case err == nil:
		h.err.Store(nil)
	case isAuthErr(err):
		h.err.Store(&err)
	}
}

// Close waits (bounded) for records still being produced, then closes the
// client's connections and goroutines.
func (a *Adapter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := a.cl.Flush(ctx)
	a.cl.Close()
	if err != nil {
		return fmt.Errorf("kafka destination %q: flush on close: %w", a.name, err)
	}
	return nil
}

// kgoLogger sends franz-go's log lines to zap: its errors and warnings as
// such, its chatty info lines at debug.
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	if k.l.Core().Enabled(zap.DebugLevel) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var lvl = zap.DebugLevel
	switch level {
	case kgo.LogLevelError:
		lvl = zap.ErrorLevel
	case kgo.LogLevelWarn:
		lvl = zap.WarnLevel
	}
	ce := k.l.Check(lvl, "kafka client: "+msg)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		fields = append(fields, zap.Any(key, keyvals[i+1]))
	}
	ce.Write(fields...)
}

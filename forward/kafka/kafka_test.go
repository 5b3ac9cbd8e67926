package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/kafka"
)

// destination is the shape of forward.Destination; guard_test.go checks
// against the real interface.
type destination interface {
	Name() string
	Limits() kafka.Limits
	GroupKey(*enrich.Event) string
	Prepare(*enrich.Event) error
	Send(context.Context, []*enrich.Event) ([]error, error)
	Close() error
}

var _ destination = (*kafka.Adapter)(nil)

type (
	retryable interface{ Retryable() bool }
	permanent interface{ Permanent() bool }
	paused    interface{ Paused() bool }
)

func class(err error) string {
	if err == nil {
		return "delivered"
	}
	var (
		r  retryable
		p  permanent
		pa paused
	)
	switch {
	case errors.As(err, &pa) && pa.Paused():
		return "paused"
	case errors.As(err, &p) && p.Permanent():
		return "permanent"
	case errors.As(err, &r) && r.Retryable():
		return "retry"
	}
	return "unclassified: " + err.Error()
}

const topic = "events"

var t0 = time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)

// cluster starts an in-process Kafka cluster on 127.0.0.1 with the events
// topic (3 partitions).
func cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	// kfake listens on 127.0.0.1 only.
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func kafkaCfg(c *kfake.Cluster, x config.DestinationX) config.Destination {
	x.Brokers = c.ListenAddrs()
	if x.Topic == "" {
		x.Topic = topic
	}
	return config.Destination{Name: "bus", Type: config.TypeKafka, Timeout: config.Duration(10 * time.Second), Options: x}
}

func newKafka(t testing.TB, cfg config.Destination, opts ...kgo.Opt) *kafka.Adapter {
	t.Helper()
	a, err := kafka.New(cfg, nil, kafka.WithClientOptions(append([]kgo.Opt{kgo.MetadataMinAge(50 * time.Millisecond)}, opts...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func events(prefix string, n int) []*enrich.Event {
	out := make([]*enrich.Event, n)
	for i := range out {
		e := &enrich.Event{
			EventID: fmt.Sprintf("%s-%d", prefix, i), Name: "page_viewed", Source: enrich.SourceGA4,
			ReceivedAt: t0, OccurredAt: t0, URL: fmt.Sprintf("https://shop.example/p/%d", i),
		}
		switch i % 4 {
		case 0:
			e.DeviceID, e.AnonymousID = fmt.Sprintf("dev-%d", i%7), "anon"
		case 1:
			e.AnonymousID, e.UserID = fmt.Sprintf("anon-%d", i%5), "user"
		case 2:
			e.UserID = fmt.Sprintf("user-%d", i%3)
		}
		out[i] = e
	}
	return out
}

// consume reads every record of the topic.
func consume(t testing.TB, c *kfake.Cluster, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(50*time.Millisecond),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Read until the high watermarks are reached: every produced record.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want || want == 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), want, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		out = append(out, fs.Records()...)
		if want == 0 {
			break
		}
	}
	// Anything beyond want shows up within one more short poll.
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	out = append(out, cl.PollFetches(short).Records()...)
	return out
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func sendOK(t *testing.T, a *kafka.Adapter, evs []*enrich.Event) {
	t.Helper()
	per, err := a.Send(context.Background(), evs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(per) != len(evs) {
		t.Fatalf("%d results for %d events", len(per), len(evs))
	}
	for i, err := range per {
		if err != nil {
			t.Fatalf("event %d: %v (%s)", i, err, class(err))
		}
	}
}

func TestProduceAndConsume(t *testing.T) {
	for _, codec := range []string{"", "none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run("compression="+codec, func(t *testing.T) {
			c := cluster(t)
			a := newKafka(t, kafkaCfg(c, config.DestinationX{Compression: codec}))
			if a.Name() != "bus" || a.Limits() != (kafka.Limits{}) || a.GroupKey(&enrich.Event{}) != "" || a.Prepare(&enrich.Event{}) != nil {
				t.Fatal("unexpected Name/Limits/GroupKey/Prepare")
			}
			evs := events("e", 40)
			sendOK(t, a, evs)
			recs := consume(t, c, len(evs))
			if len(recs) != len(evs) {
				t.Fatalf("%d records for %d events", len(recs), len(evs))
			}
			byID := map[string]*enrich.Event{}
			for _, e := range evs {
				byID[e.EventID] = e
			}
			partOf := map[string]int32{}
			lastOffset := map[string]int64{}
			for _, r := range recs {
				e := byID[header(r, kafka.HeaderEventID)]
				if e == nil {
					t.Fatalf("record with unknown event id %q", header(r, kafka.HeaderEventID))
				}
				delete(byID, e.EventID)
				if string(r.Key) != kafka.Key(e) || string(r.Value) != string(e.AppendJSON(nil)) ||
					header(r, kafka.HeaderEventName) != e.Name || header(r, kafka.HeaderSource) != string(e.Source) || len(r.Headers) != 3 {
					t.Fatalf("record %q %s %v for %s", r.Key, r.Value, r.Headers, e.EventID)
				}
				var v map[string]any
				if json.Unmarshal(r.Value, &v) != nil {
					t.Fatalf("value is not JSON: %s", r.Value)
				}
				// One visitor, one partition, in send order.
				k := string(r.Key)
				if p, ok := partOf[k]; ok && p != r.Partition {
					t.Fatalf("key %q on partitions %d and %d", k, p, r.Partition)
				}
				partOf[k] = r.Partition
				if o, ok := lastOffset[k]; ok && r.Offset <= o {
					t.Fatalf("key %q out of order", k)
				}
				lastOffset[k] = r.Offset
			}
			if len(partOf) < 2 {
				t.Fatalf("every key on one partition: %v", partOf)
			}
		})
	}
}

func TestKey(t *testing.T) {
	for _, c := range []struct {
		e    enrich.Event
		want string
	}{
		{enrich.Event{EventID: "e", DeviceID: "d", AnonymousID: "a", UserID: "u"}, "d"},
		{enrich.Event{EventID: "e", AnonymousID: "a", UserID: "u"}, "a"},
		{enrich.Event{EventID: "e", UserID: "u"}, "u"},
		{enrich.Event{EventID: "e"}, "e"},
	} {
		if got := kafka.Key(&c.e); got != c.want {
			t.Errorf("Key(%+v) = %q, want %q", c.e, got, c.want)
		}
	}
}

// Produce requests fail for a while; the producer retries on its own and
// every acknowledged event is in the topic exactly once. With
// REQUEST_TIMED_OUT the broker applied the write but the acknowledgement
// was lost: only the idempotent producer's sequence numbers keep the
// retry from duplicating it, which the second case shows by turning
// idempotence off.
func TestBrokerFaults(t *testing.T) {
	for _, c := range []struct {
		name       string
		err        *kerr.Error
		idempotent bool
		wantDups   bool
	}{
		{"not leader", kerr.NotLeaderForPartition, true, false},
		{"not enough replicas", kerr.NotEnoughReplicas, true, false},
		{"ack lost, idempotent", kerr.RequestTimedOut, true, false},
		{"ack lost, not idempotent", kerr.RequestTimedOut, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := cluster(t)
			var opts []kgo.Opt
			if !c.idempotent {
				opts = append(opts, kgo.DisableIdempotentWrite())
			}
			a := newKafka(t, kafkaCfg(cl, config.DestinationX{}), opts...)
			sendOK(t, a, events("warm", 3)) // metadata loaded, producer id assigned
			h := cl.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: c.err, Count: 3})
			defer h.Remove()
			evs := events("f", 60)
			sendOK(t, a, evs)
			if h.Hits() == 0 {
				t.Fatal("the fault never hit: the test proves nothing")
			}
			recs := consume(t, cl, 63)
			seen := map[string]int{}
			for _, r := range recs {
				seen[header(r, kafka.HeaderEventID)]++
			}
			dups := 0
			for _, e := range append(events("warm", 3), evs...) {
				switch n := seen[e.EventID]; {
				case n == 0:
					t.Errorf("acknowledged event %s missing", e.EventID)
				case n > 1:
					dups += n - 1
				}
			}
			t.Logf("fault hits %d, records %d, duplicates %d", h.Hits(), len(recs), dups)
			if (dups > 0) != c.wantDups {
				t.Fatalf("%d duplicates (want any: %v)", dups, c.wantDups)
			}
		})
	}
}

func TestMissingTopic(t *testing.T) {
	c := cluster(t)
	a := newKafka(t, kafkaCfg(c, config.DestinationX{Topic: "no-such-topic"}))
	per, err := a.Send(context.Background(), events("m", 3))
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range per {
		if class(err) != "retry" || !strings.Contains(err.Error(), `"no-such-topic" does not exist`) || !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("event %d: %v (%s)", i, err, class(err))
		}
	}
}

func TestRecordTooLarge(t *testing.T) {
	c := cluster(t)
	a := newKafka(t, kafkaCfg(c, config.DestinationX{}))
	evs := events("big", 3)
	evs[1].Title = strings.Repeat("x", kafka.MaxRecordBytes)
	per, err := a.Send(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if class(per[1]) != "permanent" || !strings.Contains(per[1].Error(), "too large") {
		t.Fatalf("big record: %v (%s)", per[1], class(per[1]))
	}
	// Records on other partitions are unaffected. The big record fails
	// before it is buffered, so even its own partition goes through.
	if per[0] != nil || per[2] != nil {
		t.Fatalf("results %v", per)
	}
}

func TestAuthorizationPauses(t *testing.T) {
	c := cluster(t)
	a := newKafka(t, kafkaCfg(c, config.DestinationX{}))
	sendOK(t, a, events("w", 1))
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.TopicAuthorizationFailed, Count: -1})
	defer h.Remove()
	per, err := a.Send(context.Background(), events("x", 2))
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range per {
		if class(err) != "paused" {
			t.Fatalf("event %d: %v (%s)", i, err, class(err))
		}
	}
}

func TestUnreachableAndCancel(t *testing.T) {
	c := cluster(t)
	cfg := kafkaCfg(c, config.DestinationX{})
	cfg.Timeout = config.Duration(500 * time.Millisecond)
	a := newKafka(t, cfg)
	c.Close()
	per, err := a.Send(context.Background(), events("u", 2))
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range per {
		if class(err) != "retry" {
			t.Fatalf("event %d: %v (%s)", i, err, class(err))
		}
	}

	c2 := cluster(t)
	b := newKafka(t, kafkaCfg(c2, config.DestinationX{}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if per, err := b.Send(ctx, events("c", 2)); per != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v %v", per, err)
	}
}

// Close waits for a Send whose records are still in flight: they are
// acknowledged, not failed.
func TestCloseFlushes(t *testing.T) {
	c := cluster(t)
	a, err := kafka.New(kafkaCfg(c, config.DestinationX{}), nil, kafka.WithClientOptions(kgo.MetadataMinAge(50*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	sendOK(t, a, events("w", 1))
	release := make(chan struct{})
	var held atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if held.Add(1) == 1 {
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	var (
		wg  sync.WaitGroup
		per []error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		per, err = a.Send(context.Background(), events("late", 20))
	}()
	for held.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a produce request was held", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range per {
		if e != nil {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	if n := len(consume(t, c, 21)); n != 21 {
		t.Fatalf("%d records, want 21", n)
	}
}

func TestNew(t *testing.T) {
	for _, c := range []struct {
		name string
		x    config.DestinationX
		msg  string
	}{
		{"no brokers", config.DestinationX{Topic: "t"}, "brokers"},
		{"no topic", config.DestinationX{Brokers: []string{"127.0.0.1:9092"}}, "topic"},
		{"bad compression", config.DestinationX{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", Compression: "brotli"}, "compression"},
		{"bad sasl", config.DestinationX{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", SASL: config.SASL{Mechanism: "gssapi", User: "u", Password: "p"}}, "sasl"},
	} {
		if _, err := kafka.New(config.Destination{Name: "bus", Options: c.x}, nil); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		a, err := kafka.New(config.Destination{Name: "bus", Options: config.DestinationX{
			Brokers: []string{"127.0.0.1:9"}, Topic: "t", TLS: true, SASL: config.SASL{Mechanism: mech, User: "u", Password: "p"},
		}}, nil)
		if err != nil {
			t.Fatalf("%s: %v", mech, err)
		}
		a.Close()
	}
}

// SASL against a cluster that requires it: the right credentials deliver.
func TestSASL(t *testing.T) {
	for _, mech := range []struct{ cfg, kfake string }{
		{"plain", "PLAIN"}, {"scram-sha-256", "SCRAM-SHA-256"}, {"scram-sha-512", "SCRAM-SHA-512"},
	} {
		t.Run(mech.cfg, func(t *testing.T) {
			c := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech.kfake, "shop", "s3cret"))
			a := newKafka(t, kafkaCfg(c, config.DestinationX{SASL: config.SASL{Mechanism: mech.cfg, User: "shop", Password: "s3cret"}}))
			sendOK(t, a, events("s", 2))
		})
	}
}

// Refused credentials pause the destination. A real broker answers a bad
// SaslAuthenticate with SASL_AUTHENTICATION_FAILED (kfake just closes the
// connection, which looks like a network failure), so the control answers
// the way Kafka does. The records never get that error themselves: they
// wait for metadata until the deadline, and Send tells why.
func TestSASLRefused(t *testing.T) {
	c := cluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "shop", "s3cret"))
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	cfg := kafkaCfg(c, config.DestinationX{SASL: config.SASL{Mechanism: "plain", User: "shop", Password: "wrong-pass"}})
	cfg.Timeout = config.Duration(time.Second)
	a := newKafka(t, cfg)
	per, err := a.Send(context.Background(), events("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range per {
		if class(err) != "paused" || !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
			t.Fatalf("event %d: %v (%s)", i, err, class(err))
		}
		if strings.Contains(err.Error(), "wrong-pass") {
			t.Fatalf("error carries the password: %v", err)
		}
	}
}

// BenchmarkSend500 produces 500-event batches to an in-process cluster and
// waits for every acknowledgement (acks=all, idempotent, snappy).
func BenchmarkSend500(b *testing.B) {
	c := cluster(b, kfake.NumBrokers(1))
	a := newKafka(b, kafkaCfg(c, config.DestinationX{}))
	evs := events("bench", 500)
	ctx := context.Background()
	var bytes int64
	for _, e := range evs {
		bytes += int64(len(e.AppendJSON(nil)))
	}
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		per, err := a.Send(ctx, evs)
		if err != nil || per[0] != nil || per[499] != nil {
			b.Fatal(err, per[0])
		}
	}
}

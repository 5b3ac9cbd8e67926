package kafkaspool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/valyala/fastjson"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/kafkaspool"
	"github.com/sidetrack/sidetrack/forward/status"
)

const topic = "spool"

func cluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topic), kfake.AllowAutoTopicCreation(),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func spoolConfig(c *kfake.Cluster) *config.Config {
	cfg := config.Default()
	cfg.Spool.Type = "kafka"
	cfg.Spool.Brokers = c.ListenAddrs()
	cfg.Spool.Topic = topic
	cfg.Spool.Timeout = config.Duration(2 * time.Second)
	cfg.Spool.SessionTimeout = config.Duration(time.Second)
	return cfg
}

var fast = kafkaspool.WithClientOptions(kgo.MetadataMinAge(50*time.Millisecond), kgo.FetchMaxWait(50*time.Millisecond))

func newSink(t *testing.T, c *kfake.Cluster, opts ...kafkaspool.Option) *kafkaspool.Sink {
	t.Helper()
	return newSinkB(t, c, opts...)
}

func newSinkB(t testing.TB, c *kfake.Cluster, opts ...kafkaspool.Option) *kafkaspool.Sink {
	t.Helper()
	s, err := kafkaspool.NewSink(spoolConfig(c), nil, nil, append([]kafkaspool.Option{fast}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func events(prefix string, n int) []*enrich.Event {
	out := make([]*enrich.Event, n)
	for i := range out {
		out[i] = &enrich.Event{EventID: fmt.Sprintf("%s-%d", prefix, i), Name: "page_viewed",
			Source: enrich.SourceCollect, DeviceID: fmt.Sprintf("dev-%d", i%3), DedupKey: [16]byte{byte(i + 1)}}
	}
	return out
}

// readAll reads every record of t from the start.
func readAll(t *testing.T, c *kfake.Cluster, top string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(top),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), want, top)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func TestSinkAppend(t *testing.T) {
	c := cluster(t)
	var (
		mu        sync.Mutex
		confirmed int
	)
	s := newSink(t, c, kafkaspool.WithCommitted(func(keys [][16]byte) { mu.Lock(); confirmed += len(keys); mu.Unlock() }))
	if err := s.Ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}
	if err := s.Append(context.Background(), events("e", 30)); err != nil {
		t.Fatal(err)
	}
	if confirmed != 30 {
		t.Errorf("dedup confirmed %d keys, want 30", confirmed)
	}
	recs := readAll(t, c, topic, 30)
	partOf := map[string]int32{}
	for _, r := range recs {
		var e enrich.Event
		if err := e.DecodeJSON(new(fastjson.Parser), r.Value); err != nil {
			t.Fatalf("value does not decode: %v", err)
		}
		if string(r.Key) != e.EventID {
			t.Errorf("key %q, want the event id %q", r.Key, e.EventID)
		}
		if p, ok := partOf[e.DeviceID]; ok && p != r.Partition {
			t.Errorf("device %s on partitions %d and %d: its order is lost", e.DeviceID, p, r.Partition)
		}
		partOf[e.DeviceID] = r.Partition
	}
}

func TestSinkErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        *kerr.Error
		retryAfter bool // 429 + Retry-After; else 503
	}{
		{"brokers keep failing: not acknowledged in time", kerr.NotEnoughReplicas, true},
		{"refused for good", kerr.TopicAuthorizationFailed, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(t)
			s := newSink(t, c)
			h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: tc.err, Count: -1})
			defer h.Remove()
			err := s.Append(context.Background(), events("x", 2))
			if err == nil {
				t.Fatal("appended while every produce fails")
			}
			var ra interface{ RetryAfter() time.Duration }
			if got := errors.As(err, &ra) && ra.RetryAfter() > 0; got != tc.retryAfter {
				t.Fatalf("err %v: retry-after %v, want %v", err, got, tc.retryAfter)
			}
		})
	}
	t.Run("draining", func(t *testing.T) {
		s := newSink(t, cluster(t))
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		var d interface{ Draining() bool }
		if err := s.Append(context.Background(), events("d", 1)); !errors.As(err, &d) || !d.Draining() {
			t.Fatalf("after Close: %v, want a draining error", err)
		}
	})
}

func TestSinkQuarantine(t *testing.T) {
	c := cluster(t)
	s := newSink(t, c)
	if err := s.Quarantine(context.Background(), events("q", 1), []string{"missing field: name"}); err != nil {
		t.Fatal(err)
	}
	r := readAll(t, c, kafkaspool.QuarantineTopic(topic), 1)[0]
	for _, h := range r.Headers {
		if h.Key == kafkaspool.HeaderReason && string(h.Value) == "missing field: name" {
			return
		}
	}
	t.Fatalf("no reason header: %v", r.Headers)
}

// drain reads up to n records from src, waiting for them.
func drain(t *testing.T, src *kafkaspool.Source, n int) (seqs []uint64, ids []string) {
	t.Helper()
	woke := make(chan struct{}, 1)
	src.SetWake(func() {
		select {
		case woke <- struct{}{}:
		default:
		}
	})
	deadline := time.After(20 * time.Second)
	for len(seqs) < n {
		_, err := src.Read(n-len(seqs), func(seq uint64, _ time.Time, ev []byte) {
			var e enrich.Event
			if err := e.DecodeJSON(new(fastjson.Parser), ev); err != nil {
				t.Error(err)
			}
			seqs, ids = append(seqs, seq), append(ids, e.EventID)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seqs) < n {
			select {
			case <-woke:
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatalf("read %d of %d records", len(seqs), n)
			}
		}
	}
	return seqs, ids
}

// A source commits only past resolved records: the next consumer of the
// group starts at the first record not delivered or dead-lettered.
func TestSourceCommitsOnlyResolved(t *testing.T) {
	c := cluster(t)
	cfg := spoolConfig(c)
	// One partition's worth of order: one device.
	evs := events("r", 10)
	for _, e := range evs {
		e.DeviceID = "one-device"
	}
	if err := newSink(t, c).Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	set := metrics.NewSet()
	src, err := kafkaspool.NewSource(cfg, "hook", nil, fast, kafkaspool.WithMetrics(set))
	if err != nil {
		t.Fatal(err)
	}
	seqs, ids := drain(t, src, 10)
	if ids[0] != "r-0" || ids[9] != "r-9" {
		t.Fatalf("order lost: %v", ids)
	}
	// r-0..r-2 delivered, r-3 still retrying, r-4 dead-lettered, the rest
	// in flight when the forwarder stops.
	err = src.Resolve(context.Background(), seqs[:3], []status.DeadLetter{{Seq: seqs[4], Reason: "rejected", Status: 400, Event: []byte(`{"event_id":"r-4"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	var m bytes.Buffer
	set.WritePrometheus(&m)
	if want := `sidetrack_kafka_lag{destination="hook"} 7`; !strings.Contains(m.String(), want) {
		t.Errorf("metrics lack %q (r-3 holds the commit point back):\n%s", want, m.String())
	}
	src.Close()
	dl := readAll(t, c, kafkaspool.DLQTopic(topic, "hook"), 1)
	if string(dl[0].Value) != `{"event_id":"r-4"}` {
		t.Errorf("dead letter %q", dl[0].Value)
	}

	next, err := kafkaspool.NewSource(cfg, "hook", nil, fast)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	_, again := drain(t, next, 7)
	if again[0] != "r-3" || again[6] != "r-9" {
		t.Fatalf("the next consumer read %v; want r-3 (the first unresolved) to r-9", again)
	}
	other, err := kafkaspool.NewSource(cfg, "other", nil, fast)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, all := drain(t, other, 10); all[0] != "r-0" {
		t.Fatalf("another destination's group must start at the beginning, got %v", all[0])
	}
}

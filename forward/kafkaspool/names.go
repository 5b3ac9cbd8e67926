package kafkaspool

import (
	"encoding/binary"
	"hash/fnv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record header keys.
const (
	// HeaderAppended is the edge's accept time, unix milliseconds, 8 bytes
	// big-endian.
	HeaderAppended = "appended"
	// HeaderVisitor is what partitions the record.
	HeaderVisitor = "visitor"
	// HeaderReason, HeaderAttempts, HeaderStatus and HeaderExcerpt
	// describe a dead letter or a quarantined event.
	HeaderReason   = "reason"
	HeaderAttempts = "attempts"
	HeaderStatus   = "status"
	HeaderExcerpt  = "excerpt"
	// HeaderDead is when delivery gave up, like HeaderAppended.
	HeaderDead = "dead"
)

// DLQTopic is the dead-letter topic of one destination.
func DLQTopic(topic, destination string) string { return topic + ".dlq." + destination }

// QuarantineTopic holds events that failed validation on browser routes.
func QuarantineTopic(topic string) string { return topic + ".quarantine" }

// Group is the consumer group of one destination.
func Group(prefix, destination string) string { return prefix + "-" + destination }

func appendMillis(dst []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(max(t.UnixMilli(), 0)))
}

func header(r *kgo.Record, key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// appendedAt reads HeaderAppended, falling back to the broker timestamp.
func appendedAt(r *kgo.Record) time.Time {
	if v := header(r, HeaderAppended); len(v) == 8 {
		return time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
	}
	return r.Timestamp
}

// visitorPartitioner hashes HeaderVisitor (the key, the event id, would
// scatter a device's events); records without it go by their key.
func visitorPartitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(r *kgo.Record, n int) int {
		return func(r *kgo.Record, n int) int {
			v := header(r, HeaderVisitor)
			if v == nil {
				v = r.Key
			}
			h := fnv.New32a()
			_, _ = h.Write(v)
			return int(h.Sum32() % uint32(n))
		}
	})
}

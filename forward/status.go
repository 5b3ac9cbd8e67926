package forward

import (
	"time"

	"github.com/valyala/fastjson"
	bolt "go.etcd.io/bbolt"
)

// DestinationStatus is one destination's delivery health, for the status
// page. Counters run since the process started; sizes are current.
type DestinationStatus struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Verified is false for destinations whose 2xx does not mean the
	// events were accepted: GA4 (relay and Measurement Protocol) answers
	// 2xx to malformed input, so its deliveries are sent, not verified.
	Verified     bool   `json:"verified"`
	Delivered    uint64 `json:"delivered"`
	Retried      uint64 `json:"retried"`
	DeadLettered uint64 `json:"dead_lettered"`
	Dropped      uint64 `json:"dropped"`
	// Retries counts failed requests (a batch retried as a whole is one).
	Retries        uint64 `json:"retries"`
	ConsentBlocked uint64 `json:"consent_blocked"`
	DryRun         bool   `json:"dry_run"`
	Paused         bool   `json:"paused"`
	DLQEvents      int64  `json:"dlq_events"`
	DLQBytes       int64  `json:"dlq_bytes"`
	BacklogEvents  int64  `json:"backlog_events"`
	BacklogBytes   int64  `json:"backlog_bytes"`
	// OldestAgeSeconds is the age of the oldest undelivered event (0 when
	// none is waiting).
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// OrdersDelivered and OrdersDeadLettered count order_completed
	// events: the purchases this destination got, to set against the
	// orders placed.
	OrdersDelivered    int64 `json:"orders_delivered"`
	OrdersDeadLettered int64 `json:"orders_dead_lettered"`
}

// SpoolStatus is the spool's state for the status page.
type SpoolStatus struct {
	Bytes            int64               `json:"bytes"`
	Events           int64               `json:"events"`
	MaxBytes         int64               `json:"max_bytes"`
	DiskFull         bool                `json:"disk_full"`
	QuarantineEvents int64               `json:"quarantine_events"`
	Destinations     []DestinationStatus `json:"destinations"`
}

// Status returns the spool's and every destination's state. It reads
// counters only; it never touches the file.
func (s *Spool) Status() SpoolStatus {
	now := s.o.clock.Now()
	out := SpoolStatus{
		Bytes: s.bytes.Load(), Events: s.events.Load(), MaxBytes: s.cfg.Spool.MaxBytes.Bytes(),
		DiskFull: s.diskFull.Load(), QuarantineEvents: s.quarantine.events.Load(),
		Destinations: make([]DestinationStatus, 0, len(s.dests)),
	}
	for _, d := range s.dests {
		m := &d.m
		ds := DestinationStatus{
			Name: d.name, Type: d.cfg.Type, Verified: d.cfg.Type != "ga4",
			DryRun: d.cfg.DryRun, Paused: d.paused.Load(),
			DLQEvents: d.dlq.events.Load(), DLQBytes: d.dlq.bytes.Load(),
			BacklogEvents: d.backlogEvents.Load(), BacklogBytes: d.backlogBytes.Load(),
			OrdersDelivered: d.ordersDelivered.Load(), OrdersDeadLettered: d.ordersDead.Load(),
		}
		if m.delivered != nil {
			ds.Delivered, ds.Retried, ds.DeadLettered, ds.Dropped = m.delivered.Get(), m.retried.Get(), m.deadLettered.Get(), m.dropped.Get()
			ds.Retries, ds.ConsentBlocked = m.retries.Get(), m.consentBlocked.Get()
		}
		if ms := d.oldestMs.Load(); ms != 0 {
			ds.OldestAgeSeconds = max(0, now.Sub(time.UnixMilli(ms)).Seconds())
		}
		out.Destinations = append(out.Destinations, ds)
	}
	return out
}

// DLQDepth is the number of dead letters across destinations (the
// dlq_depth alert).
func (s *Spool) DLQDepth() int64 {
	var n int64
	for _, d := range s.dests {
		n += d.dlq.events.Load()
	}
	return n
}

// QuarantinedEvent is a quarantined event as the status page shows it:
// what and why, never the event's content.
type QuarantinedEvent struct {
	Name   string    `json:"name"`
	Source string    `json:"source"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// maxShownName bounds names read back from quarantined events: they come
// from clients.
const maxShownName = 64

// RecentQuarantine returns up to limit quarantined events, newest first,
// with only their name, source, reason and time.
func (s *Spool) RecentQuarantine(limit int) ([]QuarantinedEvent, error) {
	if limit <= 0 {
		limit = 20
	}
	out := []QuarantinedEvent{}
	var p fastjson.Parser
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketQuarantine)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			dl, err := decodeDeadLetter(v)
			if err != nil {
				continue
			}
			q := QuarantinedEvent{Reason: dl.reason, At: dl.dead.UTC()}
			if j, err := p.ParseBytes(dl.json); err == nil {
				q.Name = shown(j.GetStringBytes("name"))
				q.Source = shown(j.GetStringBytes("source"))
			}
			out = append(out, q)
		}
		return nil
	})
	return out, err
}

// shown copies b, cut to maxShownName bytes with control bytes replaced.
func shown(b []byte) string {
	if len(b) > maxShownName {
		b = b[:maxShownName]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// isOrder reports whether it is a placed order (the canonical
// order_completed: gtag purchase, Segment Order Completed, …).
func isOrder(it *item) bool { return it.ev != nil && it.ev.Name == "order_completed" }

package forward

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
)

// recordingDest keeps, per event id, the JSON it would send and the name
// it saw, and whether the event came light (as stored).
type recordingDest struct {
	name   string
	stored bool // answers SendsStoredJSON
	mu     sync.Mutex
	got    map[string]recorded
}

type recorded struct {
	json  []byte
	name  string
	light bool
}

func (d *recordingDest) Name() string                  { return d.name }
func (d *recordingDest) Limits() Limits                { return Limits{} }
func (d *recordingDest) GroupKey(*enrich.Event) string { return "" }
func (d *recordingDest) Prepare(*enrich.Event) error   { return nil }
func (d *recordingDest) Close() error                  { return nil }
func (d *recordingDest) SendsStoredJSON() bool         { return d.stored }

func (d *recordingDest) Send(_ context.Context, b []*enrich.Event) ([]error, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range b {
		// The event's strings live in its arena, reused after Send.
		d.got[strings.Clone(e.EventID)] = recorded{json: e.AppendJSON(nil), name: strings.Clone(e.Name), light: e.StoredJSON() != nil}
	}
	return nil, nil
}

func (d *recordingDest) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

// TestStoredJSONSenderGetsStoredBytes: an adapter that sends events as
// stored gets light events whose payload, id and name are those a full
// decode gives another adapter, byte for byte; one that does not opt in
// still gets decoded events.
func TestStoredJSONSenderGetsStoredBytes(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "never", []string{
		dest("full", "batch: {max_events: 7, max_wait: 1ms}"),
		dest("light", "batch: {max_events: 7, max_wait: 1ms}"),
	}, "")
	full := &recordingDest{name: "full", got: map[string]recorded{}}
	light := &recordingDest{name: "light", stored: true, got: map[string]recorded{}}
	pool := &enrich.EventPool{}
	s, err := Open(cfg, []Destination{full, light}, testLogger(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSpool(t, s)
	ids := ids("ev-", 40)
	evs := make([]*enrich.Event, len(ids))
	for i, id := range ids {
		e := newEvent(pool, id)
		e.Name = []string{"page_viewed", "order_completed", "product_added"}[i%3]
		e.URL = e.InternString("https://shop.example/p?q=<a>&x=\"y\"")
		e.Title = e.InternString("Grüße — ✓\n\t")
		e.Commerce.Value = enrich.Some(19.99 * float64(i))
		e.Commerce.Items = append(e.Commerce.Items, enrich.Item{ID: "SKU", Price: enrich.Some(1e-7)})
		e.Properties = append(e.Properties, enrich.Prop{Key: "n", Kind: enrich.PropNumber, Num: 1e21})
		e.Attribution.FirstTouch.At = time.UnixMilli(1700000000123).UTC()
		evs[i] = e
	}
	if err := s.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both destinations", func() bool { return full.count() == len(ids) && light.count() == len(ids) })
	for _, id := range ids {
		f, l := full.got[id], light.got[id]
		if f.light || !l.light {
			t.Fatalf("%s: full got light %v, light got light %v", id, f.light, l.light)
		}
		if !bytes.Equal(f.json, l.json) || f.name != l.name {
			t.Errorf("%s: payloads differ:\nfull  %s %s\nlight %s %s", id, f.name, f.json, l.name, l.json)
		}
	}
	// Outcomes are counted after their commit, which may trail the sends.
	for _, d := range s.dests {
		waitFor(t, d.name+"'s order count", func() bool { return d.ordersDelivered.Load() == int64(len(ids)/3) })
	}
}

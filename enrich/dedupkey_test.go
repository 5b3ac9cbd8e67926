package enrich

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sidetrack/sidetrack/config"
)

var ddT0 = time.Date(2025, 6, 1, 12, 0, 3, 0, time.UTC)

// ddKeyStage is a Dedup used only for key derivation (no goroutines run
// the key code, but NewDedup starts the loop, so it is closed).
func ddKeyStage(t testing.TB, cross []string) *Dedup {
	t.Helper()
	cfg := &config.Config{}
	cfg.Dedup.CrossSource = cross
	cfg.Dedup.Capacity = 1000
	d, err := NewDedup(cfg, DedupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// ddEv builds an event the way decoders do (strings in its arena).
type ddEv struct {
	src                Source
	name, orig, id, tx string
	idem               string
	cid, pageLoad      string
	seq                int64
	index              int
	device, url        string
	at                 time.Time
}

func (x ddEv) event() *Event {
	e := &Event{Source: x.src, Name: x.name, HitSeq: x.seq, Index: x.index}
	e.OriginalName = e.InternString(x.orig)
	if e.OriginalName == "" {
		e.OriginalName = e.InternString(x.name)
	}
	e.EventID = e.InternString(x.id)
	e.Commerce.TransactionID = e.InternString(x.tx)
	e.IdempotencyKey = e.InternString(x.idem)
	e.AnonymousID = e.InternString(x.cid)
	e.PageLoadID = e.InternString(x.pageLoad)
	e.DeviceID = e.InternString(x.device)
	e.URL = e.InternString(x.url)
	e.OccurredAt = x.at
	if e.OccurredAt.IsZero() {
		e.OccurredAt = ddT0
	}
	return e
}

func TestDedupKeyRules(t *testing.T) {
	d := ddKeyStage(t, nil)
	ga4Hit := ddEv{src: SourceGA4, name: "page_viewed", orig: "page_view", cid: "585712067.1795442481", pageLoad: "1234", seq: 3, index: 0}
	page := ddEv{src: SourceCollect, name: "page_viewed", device: "dev-1", url: "https://Shop.Example/p?x=1#top", at: ddT0}
	tests := []struct {
		name string
		a, b ddEv
		same bool
	}{
		{"same messageId same source", ddEv{src: SourceSegment, name: "product_added", id: "m-1"}, ddEv{src: SourceSegment, name: "product_added", id: "m-1"}, true},
		{"same messageId other source", ddEv{src: SourceSegment, name: "product_added", id: "m-1"}, ddEv{src: SourceCollect, name: "product_added", id: "m-1"}, false},
		{"same id other name", ddEv{src: SourceCollect, name: "product_added", id: "m-1"}, ddEv{src: SourceCollect, name: "product_viewed", id: "m-1"}, false},
		{"order across sources by transaction id", ddEv{src: SourceGA4, name: "order_completed", tx: "T1", cid: "1.2", seq: 9}, ddEv{src: SourceBackend, name: "order_completed", tx: "T1", id: "srv-77"}, true},
		{"order from segment and backend", ddEv{src: SourceSegment, name: "order_completed", tx: "T1", id: "m-9"}, ddEv{src: SourceBackend, name: "order_completed", tx: "T1"}, true},
		{"other orders", ddEv{src: SourceBackend, name: "order_completed", tx: "T1"}, ddEv{src: SourceBackend, name: "order_completed", tx: "T2"}, false},
		{"purchase vs paid", ddEv{src: SourceBackend, name: "order_completed", tx: "T1"}, ddEv{src: SourceBackend, name: "order_paid", tx: "T1"}, false},
		{"paid vs refunded", ddEv{src: SourceBackend, name: "order_paid", tx: "T1"}, ddEv{src: SourceBackend, name: "order_refunded", tx: "T1"}, false},
		{"order_paid is per source", ddEv{src: SourceSegment, name: "order_paid", tx: "T1"}, ddEv{src: SourceBackend, name: "order_paid", tx: "T1"}, false},
		{"refund retried", ddEv{src: SourceBackend, name: "order_refunded", tx: "T1"}, ddEv{src: SourceBackend, name: "order_refunded", tx: "T1"}, true},
		{"partial refunds told apart by event id", ddEv{src: SourceBackend, name: "order_refunded", tx: "T1", id: "r-1"}, ddEv{src: SourceBackend, name: "order_refunded", tx: "T1", id: "r-2"}, false},
		{"id is not a transaction id", ddEv{src: SourceCollect, name: "order_completed", id: "T1"}, ddEv{src: SourceCollect, name: "order_completed", tx: "T1"}, false},
		{"idempotency key", ddEv{src: SourceCollect, name: "lead_submitted", idem: "k-1"}, ddEv{src: SourceCollect, name: "lead_submitted", idem: "k-1"}, true},
		{"idempotency key is not an event id", ddEv{src: SourceCollect, name: "lead_submitted", idem: "k-1"}, ddEv{src: SourceCollect, name: "lead_submitted", id: "k-1"}, false},
		{"ga4 hit resent", ga4Hit, ga4Hit, true},
		{"ga4 next hit", ga4Hit, func() ddEv { x := ga4Hit; x.seq = 4; return x }(), false},
		{"ga4 other line", ga4Hit, func() ddEv { x := ga4Hit; x.index = 1; return x }(), false},
		{"ga4 other page load", ga4Hit, func() ddEv { x := ga4Hit; x.pageLoad = "99"; return x }(), false},
		{"ga4 other event name", ga4Hit, func() ddEv { x := ga4Hit; x.orig = "scroll"; x.name = "scroll"; return x }(), false},
		{"page view within 10s, url case and fragment", page, func() ddEv {
			x := page
			x.url, x.at = "HTTPS://shop.example/p?x=1", ddT0.Add(6*time.Second)
			return x
		}(), true},
		{"page view next bucket", page, func() ddEv { x := page; x.at = ddT0.Add(7 * time.Second); return x }(), false},
		{"page view path case matters", page, func() ddEv { x := page; x.url = "https://shop.example/P?x=1"; return x }(), false},
		{"page view other device", page, func() ddEv { x := page; x.device = "dev-2"; return x }(), false},
		{"page view bare host", ddEv{src: SourceCollect, name: "page_viewed", device: "d", url: "https://shop.example"}, ddEv{src: SourceCollect, name: "page_viewed", device: "d", url: "https://shop.example/"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.a.event(), tc.b.event()
			if !d.eventKey(a) || !d.eventKey(b) {
				t.Fatal("no key derived")
			}
			if (a.DedupKey == b.DedupKey) != tc.same {
				t.Errorf("keys equal = %v, want %v (%x vs %x)", a.DedupKey == b.DedupKey, tc.same, a.DedupKey, b.DedupKey)
			}
			for _, e := range []*Event{a, b} {
				if e.EventID == "" {
					t.Errorf("event id not set")
				}
			}
		})
	}
}

func TestDedupEventIDs(t *testing.T) {
	d := ddKeyStage(t, nil)
	v8 := func(t *testing.T, s string) {
		t.Helper()
		u, err := uuid.Parse(s)
		if err != nil || u.Version() != 8 || u.Variant() != uuid.RFC4122 || len(s) != 36 {
			t.Errorf("%q is not a UUIDv8 (%v)", s, err)
		}
	}
	tests := []struct {
		name  string
		ev    ddEv
		want  string // "" = check kind only
		check func(*testing.T, string)
		key   bool
	}{
		{"client id kept", ddEv{src: SourceSegment, name: "x", id: "m-1"}, "m-1", nil, true},
		{"order keeps the client's id", ddEv{src: SourceSegment, name: "order_completed", tx: "T1", id: "m-1"}, "m-1", nil, true},
		{"idempotency key becomes the id", ddEv{src: SourceCollect, name: "x", idem: "idem-1"}, "idem-1", nil, true},
		{"idempotency key in a batch", ddEv{src: SourceCollect, name: "x", idem: "idem-1", index: 2}, "", v8, true},
		{"order without id", ddEv{src: SourceBackend, name: "order_completed", tx: "T1"}, "", v8, true},
		{"ga4 hit", ddEv{src: SourceGA4, name: "scroll", cid: "1.2", pageLoad: "5", seq: 2}, "", v8, true},
		{"page view", ddEv{src: SourceCollect, name: "page_viewed", device: "dev", url: "https://s/"}, "", v8, true},
		{"page view without any id", ddEv{src: SourceCollect, name: "page_viewed", url: "https://s/"}, "", func(t *testing.T, s string) {
			if u, err := uuid.Parse(s); err != nil || u.Version() != 7 {
				t.Errorf("%q is not a UUIDv7", s)
			}
		}, false},
		{"nothing to go by", ddEv{src: SourceForm, name: "lead_submitted"}, "", func(t *testing.T, s string) {
			if u, err := uuid.Parse(s); err != nil || u.Version() != 7 {
				t.Errorf("%q is not a UUIDv7", s)
			}
		}, false},
		{"ga4 without cid", ddEv{src: SourceGA4, name: "scroll"}, "", func(t *testing.T, s string) {
			if u, err := uuid.Parse(s); err != nil || u.Version() != 7 {
				t.Errorf("%q is not a UUIDv7", s)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.ev.event()
			got := d.eventKey(e)
			if got != tc.key {
				t.Fatalf("key derived = %v, want %v", got, tc.key)
			}
			if !got && e.DedupKey != ([16]byte{}) {
				t.Errorf("DedupKey set without a key")
			}
			if tc.want != "" && e.EventID != tc.want {
				t.Errorf("event id %q, want %q", e.EventID, tc.want)
			}
			if tc.check != nil {
				tc.check(t, e.EventID)
			}
		})
	}
	// Derived ids are deterministic: a resent hit gets the same id.
	a, b := ddEv{src: SourceGA4, name: "scroll", cid: "1.2", pageLoad: "5", seq: 2}.event(), ddEv{src: SourceGA4, name: "scroll", cid: "1.2", pageLoad: "5", seq: 2}.event()
	d.eventKey(a)
	d.eventKey(b)
	if a.EventID != b.EventID {
		t.Errorf("derived ids differ: %s %s", a.EventID, b.EventID)
	}
	// Every source of a cross-source order without ids sends the same
	// event_id, the id Meta and Google deduplicate by.
	g, s := ddEv{src: SourceGA4, name: "order_completed", tx: "T9", cid: "1.2"}.event(), ddEv{src: SourceBackend, name: "order_completed", tx: "T9"}.event()
	d.eventKey(g)
	d.eventKey(s)
	if g.EventID != s.EventID {
		t.Errorf("order event ids differ: %s %s", g.EventID, s.EventID)
	}
}

// Keys are persisted (spool index, snapshots): they must not change
// between versions without changing dedupKeyTag.
func TestDedupKeyStable(t *testing.T) {
	d := ddKeyStage(t, nil)
	// The values were reproduced independently (Python hashlib over the
	// documented preimage layout).
	tests := []struct {
		ev   ddEv
		want string
	}{
		{ddEv{src: SourceSegment, name: "product_added", id: "m-1"}, "44c42ba1677588a3db038a93c97d5d4d"},
		{ddEv{src: SourceBackend, name: "order_completed", tx: "T1"}, "3d9a696e0e280f17f21e801cfcc91cc5"},
		{ddEv{src: SourceGA4, name: "page_viewed", orig: "page_view", cid: "1.2", pageLoad: "7", seq: 1}, "5db2d87c30286a3a22376265a598a670"},
	}
	for _, tc := range tests {
		e := tc.ev.event()
		d.eventKey(e)
		if got := hex.EncodeToString(e.DedupKey[:]); got != tc.want {
			t.Errorf("%+v: key %s, want %s", tc.ev, got, tc.want)
		}
	}
	e := ddEv{src: SourceGA4, name: "page_viewed", orig: "page_view", cid: "1.2", pageLoad: "7", seq: 1}.event()
	d.eventKey(e)
	if e.EventID != "af7628ea-a09c-8f3d-b5bb-c2ccbf791329" {
		t.Errorf("derived GA4 event id %s", e.EventID)
	}
}

func TestDedupCrossSourceConfig(t *testing.T) {
	// Leads configured as cross-source: the browser's and the backend's
	// report of one lead share the client's event id.
	d := ddKeyStage(t, []string{"order_completed", "lead_submitted"})
	a, b := ddEv{src: SourceCollect, name: "lead_submitted", id: "L-1"}.event(), ddEv{src: SourceBackend, name: "lead_submitted", id: "L-1"}.event()
	d.eventKey(a)
	d.eventKey(b)
	if a.DedupKey != b.DedupKey {
		t.Error("cross-source lead keys differ")
	}
	// An explicitly empty list turns cross-source dedup off.
	off := ddKeyStage(t, []string{})
	a, b = ddEv{src: SourceGA4, name: "order_completed", tx: "T1"}.event(), ddEv{src: SourceBackend, name: "order_completed", tx: "T1"}.event()
	off.eventKey(a)
	off.eventKey(b)
	if a.DedupKey == b.DedupKey {
		t.Error("orders deduplicated across sources with cross_source: []")
	}
}

func TestDedupCanonURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://Shop.Example/A?b=C#frag", "https://shop.example/A?b=C"},
		{"HTTPS://SHOP.EXAMPLE", "https://shop.example/"},
		{"https://shop.example?q=1", "https://shop.example/?q=1"},
		{"/relative/Path", "/relative/Path"},
		{"", ""},
	}
	for _, tc := range tests {
		b := appendCanonURL(nil, tc.in)
		if got := string(b[4:]); got != tc.want || int(b[3]) != len(tc.want) {
			t.Errorf("appendCanonURL(%q) = %q (len byte %d), want %q", tc.in, got, b[3], tc.want)
		}
	}
}

func TestDedupKeyAllocs(t *testing.T) {
	d := ddKeyStage(t, nil)
	var pool EventPool
	longURL := "https://shop.example/" + strings.Repeat("p", 100)
	tests := []struct {
		name string
		fill func(e *Event)
	}{
		{"client id", func(e *Event) { e.Source, e.Name, e.EventID = SourceSegment, "product_added", "m-1" }},
		{"order", func(e *Event) {
			e.Source, e.Name, e.Commerce.TransactionID = SourceBackend, "order_completed", "T-1000"
		}},
		{"ga4 derived", func(e *Event) {
			e.Source, e.Name, e.OriginalName, e.AnonymousID, e.PageLoadID, e.HitSeq = SourceGA4, "page_viewed", "page_view", "1.2", "77", 3
		}},
		{"page view", func(e *Event) {
			e.Source, e.Name, e.DeviceID, e.URL, e.OccurredAt = SourceCollect, "page_viewed", "dev-1", longURL, ddT0
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := pool.Get()
			e.Intern(make([]byte, 512)) // a warmed arena, as pooled events have
			allocs := testing.AllocsPerRun(200, func() {
				e.Reset()
				tc.fill(e)
				d.eventKey(e)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per key", allocs)
			}
		})
	}
}

func BenchmarkDedupKey(b *testing.B) {
	d := ddKeyStage(b, nil)
	e := &Event{}
	e.Intern(make([]byte, 512))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e.Reset()
		e.Source, e.Name, e.OriginalName, e.AnonymousID, e.PageLoadID, e.HitSeq = SourceGA4, "page_viewed", "page_view", "585712067.1795442481", "1234567", int64(i)
		d.eventKey(e)
	}
}

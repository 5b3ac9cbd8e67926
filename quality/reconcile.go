package quality

import (
	"hash/maphash"
	"strconv"
	"time"
)

// Reconciliation kinds (the `kind` label of sidetrack_reconciliation_ratio).
const (
	// ReconBackendMatched is the share of backend orders (order_completed,
	// order_paid from a server key) that a browser purchase with the same
	// transaction id matched: what the ad platforms' browser tags saw of
	// the orders actually placed.
	ReconBackendMatched = "backend_matched"
	// ReconBrowserMatched is the share of browser purchases that a backend
	// order matched: browser purchases the shop's backend never confirmed
	// (test orders, replays, fraud, a broken backend integration).
	ReconBrowserMatched = "browser_matched"
)

type side uint8

const (
	sideBackend side = 1 << iota
	sideBrowser
)

// reconEntry is one transaction id (hashed: ids are not kept).
type reconEntry struct {
	key   uint64
	at    int64 // unix seconds of the first sighting
	sides side
}

// reconciler matches transaction ids seen from the backend and from the
// browser within a window, in bounded memory: a FIFO ring of entries in
// order of first sighting and a map from hashed id to ring slot. Running
// counts make the ratios O(1).
type reconciler struct {
	seed     maphash.Seed
	window   time.Duration
	capacity int
	// ring grows by append until it holds capacity entries (head+n is
	// then always len(ring)), and wraps around from then on.
	ring  []reconEntry
	head  int // oldest
	n     int
	index map[uint64]int

	backend, browser, both int64
	// Totals since start, for the page ("orders seen").
	backendTotal, browserTotal, matchedTotal uint64
	evicted                                  uint64
}

// newReconciler returns an empty reconciler; its ring and index grow with
// use up to capacity (about 50 bytes per id), so a quiet shop does not pay
// for a busy one's table.
func newReconciler(capacity int, window time.Duration, seed maphash.Seed) reconciler {
	return reconciler{seed: seed, window: window, capacity: capacity, index: map[uint64]int{}}
}

func (r *reconciler) add(tx string, s side, now time.Time) {
	key := maphash.String(r.seed, tx)
	r.expire(now)
	if i, ok := r.index[key]; ok {
		e := &r.ring[i]
		if e.sides&s != 0 {
			return
		}
		e.sides |= s
		r.count(s, 1)
		if e.sides == sideBackend|sideBrowser {
			r.both++
			r.matchedTotal++
		}
		return
	}
	if r.n == r.capacity {
		r.evictHead()
		r.evicted++
	}
	e := reconEntry{key: key, at: now.Unix(), sides: s}
	var i int
	if len(r.ring) < r.capacity {
		i = len(r.ring)
		r.ring = append(r.ring, e)
	} else {
		i = (r.head + r.n) % len(r.ring)
		r.ring[i] = e
	}
	r.n++
	r.index[key] = i
	r.count(s, 1)
}

func (r *reconciler) count(s side, d int64) {
	if s&sideBackend != 0 {
		r.backend += d
		if d > 0 {
			r.backendTotal++
		}
	}
	if s&sideBrowser != 0 {
		r.browser += d
		if d > 0 {
			r.browserTotal++
		}
	}
}

// expire drops entries first seen before the window.
func (r *reconciler) expire(now time.Time) {
	cut := now.Add(-r.window).Unix()
	for r.n > 0 && r.ring[r.head].at < cut {
		r.evictHead()
	}
}

func (r *reconciler) evictHead() {
	e := r.ring[r.head]
	delete(r.index, e.key)
	if e.sides&sideBackend != 0 {
		r.backend--
	}
	if e.sides&sideBrowser != 0 {
		r.browser--
	}
	if e.sides == sideBackend|sideBrowser {
		r.both--
	}
	r.head++
	if r.head == r.capacity {
		r.head = 0
	}
	r.n--
}

// Reconciliation is the order reconciliation over the window.
type Reconciliation struct {
	// Window is how far back orders are matched.
	Window string `json:"window"`
	// BackendOrders and BrowserPurchases are the distinct transaction ids
	// seen from each side within the window; Matched were seen from both.
	BackendOrders    int64 `json:"backend_orders"`
	BrowserPurchases int64 `json:"browser_purchases"`
	Matched          int64 `json:"matched"`
	// The ratios are 0 when their side saw nothing.
	BackendMatchedRatio float64 `json:"backend_matched_ratio"`
	BrowserMatchedRatio float64 `json:"browser_matched_ratio"`
	// Totals since the process started.
	BackendOrdersTotal    uint64 `json:"backend_orders_total"`
	BrowserPurchasesTotal uint64 `json:"browser_purchases_total"`
	MatchedTotal          uint64 `json:"matched_total"`
	// Evicted counts ids dropped before their window ended because the
	// table was full: when it grows, ratios undercount matches.
	Evicted uint64 `json:"evicted"`
}

// Reconciliation returns the current order reconciliation.
func (t *Tracker) Reconciliation() Reconciliation {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := &t.recon
	r.expire(t.now())
	out := Reconciliation{
		Window: shortDuration(t.reconWindow), BackendOrders: r.backend, BrowserPurchases: r.browser, Matched: r.both,
		BackendOrdersTotal: r.backendTotal, BrowserPurchasesTotal: r.browserTotal, MatchedTotal: r.matchedTotal,
		Evicted: r.evicted,
	}
	if r.backend > 0 {
		out.BackendMatchedRatio = float64(r.both) / float64(r.backend)
	}
	if r.browser > 0 {
		out.BrowserMatchedRatio = float64(r.both) / float64(r.browser)
	}
	return out
}

// shortDuration writes whole hours as "24h" rather than "24h0m0s".
func shortDuration(d time.Duration) string {
	if d >= time.Hour && d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}

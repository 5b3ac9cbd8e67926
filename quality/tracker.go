package quality

import (
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// Sizes. They bound memory and the number of metric series whatever the
// clients send.
const (
	// MaxNames is how many event names get their own coverage figures;
	// later names share the "other" row (label values stay bounded).
	MaxNames = 64
	// maxPairs bounds the (name, field) pairs of schema violations.
	maxPairs = 128
	// maxDrift bounds the table of unknown names.
	maxDrift = 100
	// nameMinutes is the per-name window: coverage is kept for an hour.
	nameMinutes = 60
	// globalMinutes keeps totals for 25 hours, so the last hour can be
	// compared with the same hour of the previous day.
	globalMinutes = 25 * 60
	// maxLabel is the longest name or field kept as a label.
	maxLabel = 64
	// Other is the row that names past MaxNames (and odd ones) fold into.
	Other = "other"
)

// dimension indexes the per-name counters.
type dimension int

const (
	dAccepted dimension = iota
	dClickID
	dConsent
	dHashedEmail
	dSourceMedium
	dJoined
	dDirect
	dAttributed // events with any source: the direct share's denominator
	dFailed     // invalid or quarantined
	nDims
)

// dimensionNames are the `dimension` label values, in the order of
// DESIGN §7.
var dimensionNames = [...]string{"click_id", "consent", "hashed_email", "source_medium", "joined", "direct"}

// Dimensions returns the coverage dimension names (the `dimension` label).
func Dimensions() []string { return append([]string(nil), dimensionNames[:]...) }

// global indexes the process-wide per-minute totals.
type global int

const (
	gObserved   global = iota // every decoded event but duplicates and bots
	gAccepted                 // accepted
	gAttributed               // accepted with a source
	gDirect                   // accepted and direct
	gFailed                   // invalid or quarantined
	gUnknown                  // accepted or failed with a name the naming stage did not know
	nGlobal
)

type nameBucket struct {
	minute int64
	counts [MaxNames + 1][nDims]uint32
}

type pairBucket struct {
	minute int64
	counts [maxPairs + 1]uint32
}

type globalBucket struct {
	minute int64
	counts [nGlobal]uint32
}

type pairKey struct {
	name  int
	field string
}

type pair struct {
	name  int
	field string
}

// driftEntry is one unknown name.
type driftEntry struct {
	count    uint64
	lastSeen time.Time
}

// Option adjusts a Tracker.
type Option func(*Tracker)

// WithClock replaces time.Now (tests move time by hand).
func WithClock(now func() time.Time) Option { return func(t *Tracker) { t.now = now } }

// WithDLQDepth tells the tracker how to read the total dead-letter count
// for the dlq_depth alert (delivery owns it).
func WithDLQDepth(f func() int64) Option { return func(t *Tracker) { t.dlqDepth = f } }

// WithReconciliation sets the reconciliation window and how many orders it
// remembers (defaults 24h and 100 000).
func WithReconciliation(window time.Duration, capacity int) Option {
	return func(t *Tracker) {
		if window > 0 {
			t.reconWindow = window
		}
		if capacity > 0 {
			t.reconCap = capacity
		}
	}
}

// Tracker computes data-quality figures from observed events. It is safe
// for concurrent use.
type Tracker struct {
	now      func() time.Time
	dlqDepth func() int64
	alerts   config.Alerts
	set      *metrics.Set

	reconWindow time.Duration
	reconCap    int

	mu sync.Mutex
	// names maps an event name to its row; row 0 is "other".
	names    map[string]int
	rows     []string
	byName   [nameMinutes]nameBucket
	pairs    map[pairKey]int
	pairList []pair // index 0 is ("other", "other")
	byPair   [nameMinutes]pairBucket
	totals   [globalMinutes]globalBucket

	drift         map[string]*driftEntry
	driftOverflow uint64
	unknownTotal  uint64

	recon reconciler
}

// New returns a Tracker with the alert thresholds of cfg.Alerts (cfg may
// be nil: no alerts).
func New(cfg *config.Config, opts ...Option) *Tracker {
	t := &Tracker{
		now:         time.Now,
		set:         metrics.NewSet(),
		reconWindow: 24 * time.Hour,
		reconCap:    100_000,
		names:       map[string]int{},
		rows:        []string{Other},
		pairs:       map[pairKey]int{},
		pairList:    []pair{{0, Other}},
		drift:       map[string]*driftEntry{},
	}
	if cfg != nil {
		t.alerts = cfg.Alerts
	}
	for _, o := range opts {
		o(t)
	}
	t.recon = newReconciler(t.reconCap, t.reconWindow, maphash.MakeSeed())
	t.registerMetrics()
	return t
}

// Metrics returns the tracker's series (coverage, reconciliation,
// alerts), computed when scraped.
func (t *Tracker) Metrics() *metrics.Set { return t.set }

// ObserveEvent implements proxy.EventObserver. It runs on the request
// path: it reads e and copies nothing but a name seen for the first time.
func (t *Tracker) ObserveEvent(e *enrich.Event, o enrich.Outcome, reason string) {
	if o == enrich.Bot {
		return
	}
	now := t.now()
	minute := now.Unix() / 60
	t.mu.Lock()
	defer t.mu.Unlock()
	if o == enrich.Duplicate || o == enrich.NoID {
		// A duplicate is not a new event, but a backend order that dedup
		// took for the browser's purchase still matches it.
		if o == enrich.Duplicate {
			t.reconcile(e, now)
		}
		return
	}
	g := t.global(minute)
	g[gObserved]++
	unknown := e.Quality.Has(enrich.FlagUnknownEvent)
	if unknown {
		g[gUnknown]++
		t.noteUnknown(e, now)
	}
	row := t.row(e.Name)
	c := &t.nameBucket(minute).counts[row]
	if o == enrich.Invalid || o == enrich.Quarantined {
		g[gFailed]++
		c[dFailed]++
		t.pairBucket(minute).counts[t.pair(row, fieldOf(reason))]++
		return
	}
	// Accepted.
	g[gAccepted]++
	c[dAccepted]++
	a := &e.Attribution
	if a.ClickIDs != (enrich.ClickIDs{}) || a.LastTouch.ClickIDKind != "" {
		c[dClickID]++
	}
	if e.Consent.Analytics == enrich.Granted {
		c[dConsent]++
	}
	if e.UserData.EM != "" || e.UserData.Google.EM != "" {
		c[dHashedEmail]++
	}
	if validSourceMedium(a.Source, a.Medium) {
		c[dSourceMedium]++
	}
	if e.Quality.Has(enrich.FlagJoined) {
		c[dJoined]++
	}
	if a.Source != "" {
		c[dAttributed]++
		g[gAttributed]++
		if a.Source == enrich.DirectSource {
			c[dDirect]++
			g[gDirect]++
		}
	}
	t.reconcile(e, now)
}

// validSourceMedium: both set and neither a placeholder.
func validSourceMedium(src, med string) bool {
	return src != "" && med != "" && src != "(not set)" && med != "(not set)"
}

// fieldOf reads the field out of a quarantine reason ("invalid:currency",
// "decode:en"); a reason without one counts as "unspecified".
func fieldOf(reason string) string {
	if i := strings.IndexByte(reason, ':'); i >= 0 && i+1 < len(reason) {
		return reason[i+1:]
	}
	return "unspecified"
}

// reconcile records order events. Caller holds mu.
func (t *Tracker) reconcile(e *enrich.Event, now time.Time) {
	tx := e.Commerce.TransactionID
	if tx == "" {
		return
	}
	switch {
	case e.Source == enrich.SourceBackend && (e.Name == "order_completed" || e.Name == "order_paid"):
		t.recon.add(tx, sideBackend, now)
	case e.Source != enrich.SourceBackend && e.Name == "order_completed":
		t.recon.add(tx, sideBrowser, now)
	}
}

// row returns name's row, assigning one while rows are left. Caller holds
// mu.
func (t *Tracker) row(name string) int {
	if r, ok := t.names[name]; ok {
		return r
	}
	if len(t.rows) > MaxNames || !labelSafe(name) {
		return 0
	}
	clone := strings.Clone(name)
	r := len(t.rows)
	t.rows = append(t.rows, clone)
	t.names[clone] = r
	t.registerName(r, clone)
	return r
}

// pair returns the (row, field) violation slot. Caller holds mu.
func (t *Tracker) pair(row int, field string) int {
	if p, ok := t.pairs[pairKey{row, field}]; ok {
		return p
	}
	if len(t.pairList) > maxPairs || !labelSafe(field) {
		return 0
	}
	f := strings.Clone(field)
	p := len(t.pairList)
	t.pairList = append(t.pairList, pair{row, f})
	t.pairs[pairKey{row, f}] = p
	return p
}

// noteUnknown counts an unknown name in the drift table. Caller holds mu.
func (t *Tracker) noteUnknown(e *enrich.Event, now time.Time) {
	t.unknownTotal++
	name := e.OriginalName
	if name == "" {
		name = e.Name
	}
	if d := t.drift[name]; d != nil {
		d.count++
		d.lastSeen = now
		return
	}
	if len(t.drift) >= maxDrift || !labelSafe(name) {
		t.driftOverflow++
		return
	}
	t.drift[strings.Clone(name)] = &driftEntry{count: 1, lastSeen: now}
}

func (t *Tracker) nameBucket(minute int64) *nameBucket {
	b := &t.byName[minute%nameMinutes]
	if b.minute != minute {
		*b = nameBucket{minute: minute}
	}
	return b
}

func (t *Tracker) pairBucket(minute int64) *pairBucket {
	b := &t.byPair[minute%nameMinutes]
	if b.minute != minute {
		*b = pairBucket{minute: minute}
	}
	return b
}

func (t *Tracker) global(minute int64) *[nGlobal]uint32 {
	b := &t.totals[minute%globalMinutes]
	if b.minute != minute {
		*b = globalBucket{minute: minute}
	}
	return &b.counts
}

// sumName adds row's counters over the minutes (now-n, now]. Caller holds
// mu.
func (t *Tracker) sumName(row int, now int64, n int) (out [nDims]uint64) {
	for m := now - int64(n) + 1; m <= now; m++ {
		b := &t.byName[m%nameMinutes]
		if b.minute != m {
			continue
		}
		for d := range out {
			out[d] += uint64(b.counts[row][d])
		}
	}
	return out
}

// sumGlobal adds the totals over the minutes (end-n, end]. Caller holds
// mu.
func (t *Tracker) sumGlobal(end int64, n int) (out [nGlobal]uint64) {
	for m := end - int64(n) + 1; m <= end; m++ {
		if m < 0 {
			continue
		}
		b := &t.totals[m%globalMinutes]
		if b.minute != m {
			continue
		}
		for g := range out {
			out[g] += uint64(b.counts[g])
		}
	}
	return out
}

// ratio of a dimension over its denominator; ok is false without events.
func ratio(c [nDims]uint64, d dimension) (float64, bool) {
	den := c[dAccepted]
	if d == dDirect {
		den = c[dAttributed]
	}
	if den == 0 {
		return 0, false
	}
	return float64(c[d]) / float64(den), true
}

// dims maps the exported dimension order to counters.
var dims = [...]dimension{dClickID, dConsent, dHashedEmail, dSourceMedium, dJoined, dDirect}

// labelSafe keeps odd bytes out of metric labels and the page.
func labelSafe(s string) bool {
	if s == "" || len(s) > maxLabel {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// registerName adds the coverage gauges of a new row. Caller holds mu;
// the gauges take it when scraped.
func (t *Tracker) registerName(row int, name string) {
	for i, d := range dims {
		t.set.NewGauge(`sidetrack_coverage_ratio{name=`+strconv.Quote(name)+`,dimension="`+dimensionNames[i]+`"}`, func() float64 {
			t.mu.Lock()
			defer t.mu.Unlock()
			r, _ := ratio(t.sumName(row, t.now().Unix()/60, nameMinutes), d)
			return r
		})
	}
}

func (t *Tracker) registerMetrics() {
	t.registerName(0, Other)
	for _, k := range []string{ReconBackendMatched, ReconBrowserMatched} {
		t.set.NewGauge(`sidetrack_reconciliation_ratio{kind="`+k+`"}`, func() float64 {
			r := t.Reconciliation()
			if k == ReconBackendMatched {
				return r.BackendMatchedRatio
			}
			return r.BrowserMatchedRatio
		})
	}
	for _, name := range alertNames {
		t.set.NewGauge(`sidetrack_alert_firing{alert="`+name+`"}`, func() float64 {
			for _, a := range t.Alerts() {
				if a.Name == name && a.Firing {
					return 1
				}
			}
			return 0
		})
	}
}

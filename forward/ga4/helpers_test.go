package ga4_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/ga4"
)

// destination is the shape of forward.Destination; guard_test.go checks
// against the real interface.
type destination interface {
	Name() string
	Limits() ga4.Limits
	GroupKey(*enrich.Event) string
	Prepare(*enrich.Event) error
	Send(context.Context, []*enrich.Event) ([]error, error)
	Close() error
}

var _ destination = (*ga4.Adapter)(nil)

// The behaviour interfaces the delivery core reads errors through.
type (
	retryable  interface{ Retryable() bool }
	retryAfter interface{ RetryAfter() time.Duration }
	permanent  interface{ Permanent() bool }
	paused     interface{ Paused() bool }
	tooLarge   interface{ TooLarge() bool }
)

// class names what the delivery core will do with err.
func class(err error) string {
	if err == nil {
		return "delivered"
	}
	var (
		r  retryable
		p  permanent
		pa paused
		tl tooLarge
	)
	switch {
	case errors.As(err, &r) && r.Retryable():
		return "retry"
	case errors.As(err, &p) && p.Permanent():
		return "permanent"
	case errors.As(err, &pa) && pa.Paused():
		return "paused"
	case errors.As(err, &tl) && tl.TooLarge():
		return "too large"
	}
	return "unclassified: " + err.Error()
}

func wait(err error) time.Duration {
	var ra retryAfter
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

// t0 is the tests' clock: the gtag captures were made shortly before it.
var t0 = time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)

const (
	mid    = "G-TEST123"
	secret = "s3cr3t-API-value"
)

func clock() time.Time { return t0 }

func gaCfg(endpoint string, x config.DestinationX) config.Destination {
	x.Endpoint = endpoint
	if x.MeasurementID == "" {
		x.MeasurementID = mid
	}
	return config.Destination{Name: "ga4", Type: config.TypeGA4, Options: x}
}

func newAdapter(t testing.TB, cfg config.Destination, opts ...ga4.Option) *ga4.Adapter {
	t.Helper()
	a, err := ga4.New(cfg, zap.NewNop(), append([]ga4.Option{ga4.WithClock(clock)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// sendAll sends events and fails the test unless every one is delivered.
func sendAll(t *testing.T, a *ga4.Adapter, events []*enrich.Event) {
	t.Helper()
	for i, e := range events {
		if err := a.Prepare(e); err != nil {
			t.Fatalf("Prepare(event %d %s): %v", i, e.Name, err)
		}
	}
	per, err := a.Send(context.Background(), events)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	for i, err := range per {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

// capture is one request of proxy/testdata/ga4/gtag.ndjson: a real
// gtag.js hit.
type capture struct {
	Scenario string     `json:"scenario"`
	Seq      int        `json:"seq"`
	TS       time.Time  `json:"ts"`
	Method   string     `json:"method"`
	URL      string     `json:"url"`
	Headers  [][]string `json:"headers"`
	Body     string     `json:"body"`
}

func (c capture) header(name string) string {
	for _, h := range c.Headers {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}

func (c capture) rawQuery() string {
	_, q, _ := strings.Cut(c.URL, "?")
	return q
}

// hits returns the capture's events as Google reads them: query
// parameters overridden by each body line's.
func (c capture) hits(t *testing.T) []map[string]string {
	t.Helper()
	q, err := url.ParseQuery(c.rawQuery())
	if err != nil {
		t.Fatal(err)
	}
	r := relayRequest{query: q}
	for _, l := range strings.Split(strings.ReplaceAll(c.Body, "\r\n", "\n"), "\n") {
		if l == "" {
			continue
		}
		v, err := url.ParseQuery(l)
		if err != nil {
			t.Fatal(err)
		}
		r.lines = append(r.lines, v)
	}
	return r.events()
}

func loadCaptures(t *testing.T) []capture {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "proxy", "testdata", "ga4", "gtag.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []capture
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c capture
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("%d captures; the fixture has 20", len(out))
	}
	return out
}

// canonical is the naming stage's answer for the GA4 names in the
// captures (enrich/data/event_aliases.tsv).
func canonical(en string) string {
	switch en {
	case "page_view":
		return "page_viewed"
	case "scroll":
		return "page_scrolled"
	case "view_item":
		return "product_viewed"
	case "add_to_cart":
		return "product_added"
	case "begin_checkout":
		return "checkout_started"
	case "purchase":
		return "order_completed"
	case "sign_up":
		return "signed_up"
	case "user_engagement":
		return "user_engaged"
	case "generate_lead":
		return "lead_submitted"
	}
	return en
}

// eventFromHit decodes one hit's parameters into an event the way
// proxy/ga4.go and the consent and naming stages do, for the parameters
// the relay must give back.
func eventFromHit(t *testing.T, h map[string]string, at time.Time) *enrich.Event {
	t.Helper()
	e := &enrich.Event{Source: enrich.SourceGA4, ReceivedAt: at, OccurredAt: at}
	num := func(k, v string) float64 {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", k, v, err)
		}
		return f
	}
	integer := func(k, v string) int64 {
		if v == "" || v == "NaN" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", k, v, err)
		}
		return n
	}
	for k, v := range h {
		switch {
		case k == "v":
			e.GA.Version = v
		case k == "tid":
			e.GAMeasurementID = v
		case k == "gtm":
			e.GA.GTM = v
		case k == "_p":
			e.PageLoadID = v
		case k == "cid":
			e.AnonymousID = v
		case k == "uid":
			e.UserID = v
		case k == "sid":
			e.GASessionID = v
		case k == "sct":
			e.GASessionNumber = integer(k, v)
		case k == "_s":
			e.HitSeq = integer(k, v)
		case k == "_et":
			e.GA.EngagementMS = integer(k, v)
		case k == "seg":
			e.GA.SessionEngaged = v == "1"
		case k == "_fv":
			e.GA.FirstVisit = true
		case k == "_ss":
			e.GA.SessionStart = true
		case k == "en":
			e.Name, e.OriginalName = canonical(v), v
		case k == "dl":
			e.URL = v
		case k == "dr":
			e.Referrer = v
		case k == "dt":
			e.Title = v
		case k == "ul":
			e.Context.Locale = v
		case k == "sr":
			e.Context.Screen = v
		case k == "cu":
			e.Commerce.Currency = v
		case k == "gcs":
			e.Consent.GCS = v
		case k == "gcd":
			e.Consent.GCD = v
		case k == "npa":
			e.Consent.NPA = v
		case k == "ep.transaction_id":
			e.Commerce.TransactionID = v
		case k == "ep.coupon":
			e.Commerce.Coupon = v
		case k == "epn.value":
			e.Commerce.Value = enrich.Some(num(k, v))
		case k == "epn.tax":
			e.Commerce.Tax = enrich.Some(num(k, v))
		case k == "epn.shipping":
			e.Commerce.Shipping = enrich.Some(num(k, v))
		case strings.HasPrefix(k, "ep."):
			e.Properties.Set(enrich.Prop{Key: k[3:], Kind: enrich.PropString, Str: v})
		case strings.HasPrefix(k, "epn."):
			e.Properties.Set(enrich.Prop{Key: k[4:], Kind: enrich.PropNumber, Num: num(k, v)})
		case strings.HasPrefix(k, "up."):
			e.UserProperties.Set(enrich.Prop{Key: k[3:], Kind: enrich.PropString, Str: v})
		case strings.HasPrefix(k, "upn."):
			e.UserProperties.Set(enrich.Prop{Key: k[4:], Kind: enrich.PropNumber, Num: num(k, v)})
		}
	}
	for n := 1; ; n++ {
		v, ok := h["pr"+strconv.Itoa(n)]
		if !ok {
			break
		}
		e.Commerce.Items = append(e.Commerce.Items, parseItem(t, v))
	}
	e.Consent.Ads, e.Consent.Analytics, e.Consent.AdUserData, e.Consent.AdPersonalization = consentFromGCD(e.Consent.GCD)
	e.EventID = fmt.Sprintf("%s.%s.%d", e.PageLoadID, e.OriginalName, e.HitSeq)
	return e
}

func parseItem(t *testing.T, v string) enrich.Item {
	t.Helper()
	var it enrich.Item
	for _, f := range splitItem(v) {
		if len(f) < 2 {
			continue
		}
		val := f[2:]
		num := func() enrich.OptFloat {
			x, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatalf("item %q: %v", v, err)
			}
			return enrich.Some(x)
		}
		switch f[:2] {
		case "id":
			it.ID = val
		case "nm":
			it.Name = val
		case "br":
			it.Brand = val
		case "ca":
			it.Category = val
		case "c2":
			it.Category2 = val
		case "c3":
			it.Category3 = val
		case "c4":
			it.Category4 = val
		case "c5":
			it.Category5 = val
		case "va":
			it.Variant = val
		case "cp":
			it.Coupon = val
		case "af":
			it.Affiliation = val
		case "li":
			it.ListID = val
		case "ln":
			it.ListName = val
		case "lo":
			it.LocationID = val
		case "pr":
			it.Price = num()
		case "qt":
			it.Quantity = num()
		case "ds":
			it.Discount = num()
		case "lp":
			it.Index = num()
		}
	}
	return it
}

// splitItem splits a prN value at single '~', "~~" standing for '~'.
func splitItem(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '~' {
			if i+1 < len(v) && v[i+1] == '~' {
				cur.WriteByte('~')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(v[i])
	}
	return append(out, cur.String())
}

// consentFromGCD reads gcd's letters (positions 2, 4, 6, 8) as the consent
// stage does: n r t v granted, m p q u denied, anything else unknown.
func consentFromGCD(gcd string) (ads, analytics, adUserData, adPers enrich.ConsentState) {
	st := func(pos int) enrich.ConsentState {
		if pos >= len(gcd) {
			return enrich.Unknown
		}
		switch gcd[pos] {
		case 'n', 'r', 't', 'v':
			return enrich.Granted
		case 'm', 'p', 'q', 'u':
			return enrich.Denied
		}
		return enrich.Unknown
	}
	return st(2), st(4), st(6), st(8)
}

// ipOpener stands in for (*enrich.Privacy).OpenIP.
type ipOpener map[string]string

func (o ipOpener) OpenIP(sealed string) (netip.Addr, error) {
	s, ok := o[sealed]
	if !ok {
		return netip.Addr{}, errors.New("open ip: no configured secret opens it")
	}
	return netip.ParseAddr(s)
}

// serverEvent is a backend event (Segment or a server SDK): no GA hit
// context.
func serverEvent(id, name string) *enrich.Event {
	return &enrich.Event{
		EventID:    id,
		DeviceID:   "dev-" + id,
		Name:       name,
		Source:     enrich.SourceBackend,
		ReceivedAt: t0.Add(-time.Minute),
		OccurredAt: t0.Add(-2 * time.Minute),
	}
}

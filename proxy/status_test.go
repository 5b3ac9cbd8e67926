package proxy

import (
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

func TestStatusEndpoints(t *testing.T) {
	env := startTracking(t, func(c *config.Config) {
		c.Admin.Token = config.Secret("s3cret-token")
		c.Destinations = []config.Destination{{Name: "g", Type: "ga4"}}
	})
	env.HandleStatus(StatusSources{
		Delivery: func() (any, error) {
			return map[string]any{"destinations": []map[string]any{{"name": "g", "delivered": 3}}}, nil
		},
		Quality: func() (any, error) { return nil, errors.New("quality is down") },
		Quarantine: func() (any, error) {
			return []map[string]string{{"name": "purchase", "reason": "invalid:currency"}}, nil
		},
	})
	for i := range 3 {
		env.do(t, "GET", hit(i), "")
	}
	env.do(t, "GET", "/page", "")
	base := "http://" + env.adminAddr

	code, page, hdr := httpGet(t, base+"/status", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("/status: %d %v", code, hdr)
	}
	// Self-contained: no URL in the page but the SVG namespace, and no
	// element that loads one.
	urls := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`).FindAllString(page, -1)
	for _, u := range urls {
		if u != "http://www.w3.org" {
			t.Errorf("page names an external URL: %s", u)
		}
	}
	for _, tag := range []string{"<link", "<img", "<iframe", "src=", "@import", "url("} {
		if strings.Contains(page, tag) {
			t.Errorf("page contains %q", tag)
		}
	}

	if code, _, _ := httpGet(t, base+"/status.json", ""); code != 401 {
		t.Errorf("/status.json without token: %d", code)
	}
	code, body, _ := httpGet(t, base+"/status.json", "s3cret-token")
	if code != 200 {
		t.Fatalf("/status.json: %d %s", code, body)
	}
	var s struct {
		Ready      bool
		Throughput struct {
			Requests uint64            `json:"requests_total"`
			Events   map[string]uint64 `json:"events_total"`
			Windows  map[string]map[string]float64
		}
		Delivery   struct{ Destinations []struct{ Delivered int } }
		Quality    any
		Quarantine []struct{ Name, Reason string }
		Notes      []string
		Errors     map[string]string
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if !s.Ready || s.Throughput.Requests != 4 || s.Throughput.Events["accepted"] != 3 || len(s.Throughput.Windows) != 3 {
		t.Errorf("throughput %+v", s.Throughput)
	}
	if len(s.Delivery.Destinations) != 1 || s.Delivery.Destinations[0].Delivered != 3 {
		t.Errorf("delivery %+v", s.Delivery)
	}
	if s.Quality != nil || s.Errors["quality"] != "quality is down" {
		t.Errorf("quality %v, errors %v", s.Quality, s.Errors)
	}
	if len(s.Quarantine) != 1 || s.Quarantine[0].Reason != "invalid:currency" {
		t.Errorf("quarantine %+v", s.Quarantine)
	}
	if len(s.Notes) != 1 || !strings.Contains(s.Notes[0], "GA4") {
		t.Errorf("notes %q", s.Notes)
	}
}

// hit is a GA4 hit that dedup takes as new for each i.
func hit(i int) string { return strings.Replace(ga4Hit, "_s=1", "_s="+strconv.Itoa(i+1), 1) }

// TestStatusThroughput checks the rates against samples taken at known
// times.
func TestStatusThroughput(t *testing.T) {
	env := startTracking(t, nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &statusState{s: env.Server, now: func() time.Time { return now }, start: now}
	st.sample()
	// 10 beacons over 10 s, then 20 over 50 s.
	for i := range 10 {
		env.do(t, "GET", hit(i), "")
	}
	now = now.Add(10 * time.Second)
	st.sample()
	for i := range 20 {
		env.do(t, "GET", hit(10+i), "")
	}
	now = now.Add(50 * time.Second)
	st.sample()
	now = now.Add(10 * time.Second)
	tp := st.throughput()
	want := map[string]float64{"1m": 20.0 / 60, "5m": 30.0 / 70, "10m": 30.0 / 70}
	for w, v := range want {
		r := tp.Windows[w]
		if math.Abs(r.Events-v) > 1e-9 || math.Abs(r.Accepted-v) > 1e-9 || math.Abs(r.Requests-v) > 1e-9 || math.Abs(r.Tracking-v) > 1e-9 {
			t.Errorf("%s: %+v, want %v/s", w, r, v)
		}
	}
	if len(tp.Series) != 2 || tp.Series[0].Events != 1 || math.Abs(tp.Series[1].Events-0.4) > 1e-9 {
		t.Errorf("series %+v", tp.Series)
	}
	// The ring keeps the last statusSamples samples.
	for range statusSamples + 5 {
		now = now.Add(statusInterval)
		st.sample()
	}
	if st.n != statusSamples || len(st.throughput().Series) != statusSamples-1 {
		t.Errorf("%d samples kept", st.n)
	}
}

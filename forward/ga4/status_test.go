package ga4_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/ga4"
	"github.com/sidetrack/sidetrack/forward/status"
)

func answer(code int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}
}

// twoEvents is one group of each route: they share one request.
func twoEvents(mode string) []*enrich.Event {
	var out []*enrich.Event
	for i := range 2 {
		e := serverEvent(fmt.Sprint("s", i), "page_viewed")
		e.DeviceID = "one-device"
		if mode == ga4.ModeRelay {
			e.Source = enrich.SourceGA4
			e.AnonymousID = "11.22"
		}
		out = append(out, e)
	}
	return out
}

func TestStatusClasses(t *testing.T) {
	for _, mode := range []string{ga4.ModeRelay, ga4.ModeMP} {
		for _, tc := range []struct {
			name    string
			respond http.HandlerFunc
			class   string
			wait    time.Duration
			excerpt string
		}{
			{"200", answer(200, `{}`), "delivered", 0, ""},
			{"204", answer(204, ""), "delivered", 0, ""},
			{"400 permanent", answer(400, `bad request`), "permanent", 0, "bad request"},
			{"404 permanent", answer(404, "not found"), "permanent", 0, "not found"},
			{"401 pauses", answer(401, "unauthorized"), "paused", 0, ""},
			{"403 pauses", answer(403, "forbidden"), "paused", 0, ""},
			{"408 retry", answer(408, ""), "retry", 0, ""},
			{"413 splits", answer(413, "too big"), "too large", 0, ""},
			{"429 Retry-After seconds", answer(429, "slow down", "Retry-After", "7"), "retry", 7 * time.Second, "slow down"},
			{"503 Retry-After date", answer(503, "", "Retry-After", t0.Add(90*time.Second).Format(http.TimeFormat)), "retry", 90 * time.Second, ""},
			{"500 retry", answer(500, "boom"), "retry", 0, "boom"},
			{"502 retry", answer(502, ""), "retry", 0, ""},
			{"501 permanent", answer(501, ""), "permanent", 0, ""},
			{"505 permanent", answer(505, ""), "permanent", 0, ""},
			{"redirect not followed", answer(302, "moved", "Location", "https://elsewhere.example/x?token=1"), "permanent", 0, "redirect not followed: moved"},
			{"long answer excerpted", answer(500, strings.Repeat("x", 1<<20)), "retry", 0, strings.Repeat("x", 256)},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				f := newFakeGoogle(t, clock)
				f.setRespond(tc.respond)
				a := newAdapter(t, gaCfg(f.URL, config.DestinationX{Mode: mode, APISecret: secret}))
				per, err := a.Send(context.Background(), twoEvents(mode))
				if got := class(err); got != tc.class {
					t.Fatalf("class %s, want %s (err %v, per %v)", got, tc.class, err, per)
				}
				if err == nil && (len(per) != 2 || per[0] != nil || per[1] != nil) {
					t.Fatalf("per-event results %v", per)
				}
				if got := wait(err); got != tc.wait {
					t.Errorf("wait %v, want %v", got, tc.wait)
				}
				var se *status.Error
				if err != nil && (!errors.As(err, &se) || se.Code == 0) {
					t.Fatalf("error %v carries no status code", err)
				}
				if tc.excerpt != "" && se.Excerpt != tc.excerpt {
					t.Errorf("excerpt %q, want %q", se.Excerpt, tc.excerpt)
				}
				if err != nil && strings.Contains(err.Error(), "token") {
					t.Errorf("error shows the redirect's target: %v", err)
				}
				if n := len(f.relayHits()) + len(f.mpRequests()); n != 1 {
					t.Errorf("%d requests for one group", n)
				}
			})
		}
	}
}

// TestStopsAfterRetryableFailure: once Google is failing, the batch's
// other requests are not tried; they share the failure.
func TestStopsAfterRetryableFailure(t *testing.T) {
	f := newFakeGoogle(t, clock)
	f.setRespond(answer(503, ""))
	a := newAdapter(t, mpCfg(f.URL, config.DestinationX{}))
	var events []*enrich.Event
	for i := range 3 {
		events = append(events, serverEvent(fmt.Sprint("d", i), "page_viewed")) // three devices, three requests
	}
	per, err := a.Send(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range per {
		if class(e) != "retry" {
			t.Errorf("event %d: %v", i, e)
		}
	}
	if n := len(f.mpRequests()); n != 1 {
		t.Errorf("%d requests to a failing endpoint, want 1", n)
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	f := newFakeGoogle(t, clock)
	f.setRespond(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	cfg := mpCfg(f.URL, config.DestinationX{})
	cfg.Timeout = config.Duration(50 * time.Millisecond)
	a := newAdapter(t, cfg)
	_, err := a.Send(context.Background(), twoEvents(ga4.ModeMP))
	if got := class(err); got != "retry" {
		t.Fatalf("class %s (err %v)", got, err)
	}
	if !status.IsTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("not a timeout: %v", err)
	}
}

func TestConnectionRefusedIsRetryableAndQuiet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	core, logs := observer.New(zapcore.DebugLevel)
	a, err := ga4.New(mpCfg("http://"+addr, config.DestinationX{}), zap.New(core), ga4.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = a.Send(context.Background(), twoEvents(ga4.ModeMP))
	if got := class(err); got != "retry" {
		t.Fatalf("class %s (err %v)", got, err)
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "api_secret") {
		t.Errorf("error shows the api_secret: %v", err)
	}
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, secret) {
			t.Errorf("log shows the api_secret: %s", line)
		}
	}
}

func TestCancelledContextIsNotAFailure(t *testing.T) {
	f := newFakeGoogle(t, clock)
	for _, mode := range []string{ga4.ModeRelay, ga4.ModeMP} {
		a := newAdapter(t, gaCfg(f.URL, config.DestinationX{Mode: mode, APISecret: secret}))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		events := append(twoEvents(mode), serverEvent("other-device", "page_viewed"))
		_, err := a.Send(ctx, events)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: error %v", mode, err)
		}
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFakeGoogle(t, clock)
	f.setRespond(answer(500, "internal"))
	a, err := ga4.New(mpCfg(f.URL, config.DestinationX{Validate: true}), zap.New(core), ga4.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = a.Send(context.Background(), twoEvents(ga4.ModeMP))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v", err)
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the test proves nothing")
	}
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, secret) {
			t.Errorf("log shows the api_secret: %s", line)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		x    config.DestinationX
		msg  string
	}{
		{"mode", config.DestinationX{Mode: "beacon", MeasurementID: mid}, "mode"},
		{"measurement id", config.DestinationX{MeasurementID: "UA-1234-1"}, "measurement_id"},
		{"mp without secret", config.DestinationX{Mode: ga4.ModeMP, MeasurementID: mid}, "api_secret"},
		{"region", config.DestinationX{MeasurementID: mid, Region: "us"}, "region"},
		{"endpoint", config.DestinationX{MeasurementID: mid, Endpoint: "ftp://x"}, "endpoint"},
		{"endpoint with query", config.DestinationX{MeasurementID: mid, Endpoint: "http://127.0.0.1/?a=b"}, "endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ga4.New(config.Destination{Name: "g", Type: config.TypeGA4, Options: tc.x}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want one about %s", err, tc.msg)
			}
		})
	}
}

// TestDocsConfigExamples: every YAML example of docs/destinations/ga4.md
// loads, validates and builds an adapter.
func TestDocsConfigExamples(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "destinations", "ga4.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 2 {
		t.Fatalf("%d yaml blocks in the docs; want one per mode", len(blocks))
	}
	modes := map[string]bool{}
	for i, m := range blocks {
		cfg, err := config.Parse([]byte(m[1]), nil)
		if err != nil {
			t.Fatalf("block %d: %v\n%s", i, err, m[1])
		}
		cfg.Dev = true
		if err := cfg.Validate(); err != nil {
			t.Fatalf("block %d: %v\n%s", i, err, m[1])
		}
		for _, d := range cfg.Destinations {
			if d.Type != config.TypeGA4 {
				continue
			}
			a, err := ga4.New(d, nil)
			if err != nil {
				t.Fatalf("block %d: %v", i, err)
			}
			a.Close()
			modes[d.Options.Mode] = true
		}
	}
	if !modes[ga4.ModeRelay] || !modes[ga4.ModeMP] {
		t.Errorf("modes documented: %v", modes)
	}
}

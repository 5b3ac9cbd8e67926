package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the bench binary as the
// ceiling child (startCeilingChild re-executes os.Executable).
func TestMain(m *testing.M) {
	if kind := os.Getenv(childEnv); kind != "" {
		serveChild(kind)
		return
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole bench in-process, short and small: it builds
// and starts sidetrack, drives the mix scenario, drains and accounts. It
// asserts delivery guarantees and the report's shape, never speed.
func TestSmoke(t *testing.T) {
	d := 2 * time.Second
	if testing.Short() {
		d = time.Second
	}
	var logs bytes.Buffer
	rep, err := run(context.Background(), options{
		Duration: d, Connections: 4, Scenario: "mix", Baseline: true,
		DedupCap: 100000, DrainMax: 30 * time.Second,
	}, &logs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Log(text.String())
	a := rep.Accounting
	if !a.Checked || a.Sent == 0 || a.UniqueEventsAcked == 0 || a.DuplicatesSent == 0 {
		t.Fatalf("no load was accounted: %+v", a)
	}
	if a.Lost != 0 || a.DoubleDelivered != 0 || !a.DrainComplete {
		t.Fatalf("lost %d, double-delivered %d, drain complete %v", a.Lost, a.DoubleDelivered, a.DrainComplete)
	}
	if rep.Failed() {
		t.Fatal("report says failed")
	}
	if rep.Ceiling == nil || rep.Ceiling.Requests == 0 || rep.ReqRatio <= 0 {
		t.Fatalf("no baseline: %+v", rep.Ceiling)
	}

	path := t.TempDir() + "/report.json"
	if err := writeJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	for _, k := range []string{"scenario", "sidetrack", "ceiling", "accounting", "budgets", "req_per_s_ratio"} {
		if _, ok := got[k]; !ok {
			t.Errorf("report JSON lacks %q", k)
		}
	}
	acc, _ := got["accounting"].(map[string]any)
	for _, k := range []string{"lost", "double_delivered", "delivered_distinct", "unique_events_acked"} {
		if _, ok := acc[k]; !ok {
			t.Errorf("accounting lacks %q", k)
		}
	}
	st, _ := got["sidetrack"].(map[string]any)
	for _, k := range []string{"requests_per_s", "latency_us", "server_cpu_us_per_request", "peak_rss_bytes"} {
		if _, ok := st[k]; !ok {
			t.Errorf("sidetrack phase lacks %q", k)
		}
	}
}

// TestWorkloadScenarios checks each scenario's request mix on the
// generator alone: unique ids are unique, duplicates repeat an earlier
// request byte for byte, pass-through only in passmix.
func TestWorkloadScenarios(t *testing.T) {
	root, err := moduleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scenario           string
		ga4, collect, pass bool
		dups               bool
	}{
		{"collect", false, true, false, false},
		{"ga4", true, false, false, false},
		{"mix", true, true, false, true},
		{"passmix", true, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			wl, err := newWorkload(root, tt.scenario, "t")
			if err != nil {
				t.Fatal(err)
			}
			ws := &workerState{w: 1, rng: newRNG(1)}
			seen := map[string]bool{}
			kinds := map[int]int{}
			dups := 0
			for range 2000 {
				s := wl.next(ws)
				kinds[s.kind]++
				if s.dup {
					dups++
					if s.id != ws.last.id || !bytes.Equal(s.uri, ws.last.uri) || !bytes.Equal(s.body, ws.last.body) {
						t.Fatal("duplicate is not an exact copy of the last request")
					}
					continue
				}
				if s.kind == kindPass {
					continue
				}
				if seen[s.id] {
					t.Fatalf("id %s sent twice as unique", s.id)
				}
				seen[s.id] = true
				if !bytes.Contains(append(s.uri, s.body...), []byte(s.id)) {
					t.Fatalf("request does not carry its id %s", s.id)
				}
				ws.remember(s)
			}
			if (kinds[kindGA4] > 0) != tt.ga4 || (kinds[kindCollect] > 0) != tt.collect || (kinds[kindPass] > 0) != tt.pass || (dups > 0) != tt.dups {
				t.Errorf("kinds %v dups %d, want ga4 %v collect %v pass %v dups %v", kinds, dups, tt.ga4, tt.collect, tt.pass, tt.dups)
			}
		})
	}
	if _, err := newWorkload(root, "nope", "t"); err == nil {
		t.Error("unknown scenario accepted")
	}
}

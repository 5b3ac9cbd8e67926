// Command bench is sidetrack's end-to-end load suite: it builds and starts
// sidetrack with a bench config, a fake shop origin and a counting webhook
// destination, drives it with a closed-loop fasthttp generator, checks that
// every acknowledged event was delivered exactly once, and reports
// throughput, latency and CPU next to the budgets of docs/design.md §8.
//
//	go run ./bench -duration 10s -scenario mix
//
// See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options are the command-line settings of one bench run.
type options struct {
	Duration    time.Duration
	Connections int
	Scenario    string
	JSONPath    string
	Target      string
	Baseline    bool
	Pin         bool
	DedupCap    int
	DrainMax    time.Duration
	Keep        bool
	// ModuleRoot is where `go build` finds sidetrack; empty means ask `go env GOMOD`.
	ModuleRoot string
}

func main() {
	if os.Getenv(ceilingEnv) != "" {
		serveCeiling()
		return
	}
	var o options
	flag.DurationVar(&o.Duration, "duration", 10*time.Second, "load duration per measured phase")
	flag.IntVar(&o.Connections, "connections", 64, "concurrent connections (closed loop: one request in flight each)")
	flag.StringVar(&o.Scenario, "scenario", "mix", "collect | ga4 | mix | passmix")
	flag.StringVar(&o.JSONPath, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&o.Target, "target", "", "bench an already running sidetrack at this base URL (no child, accounting limited to answers)")
	flag.BoolVar(&o.Baseline, "baseline", true, "also measure the ceiling (bare fasthttp answering 204) and report ratios")
	flag.BoolVar(&o.Pin, "pin", false, "pin sidetrack (and the ceiling) to CPU 0 with taskset and the generator to CPU 1")
	flag.IntVar(&o.DedupCap, "dedup-capacity", 1000000, "dedup.capacity of the bench config")
	flag.DurationVar(&o.DrainMax, "drain-max", 60*time.Second, "longest wait for deliveries after the load")
	flag.BoolVar(&o.Keep, "keep", false, "keep the temporary directory (config, sidetrack.log, spool) for inspection")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	rep.WriteText(os.Stdout)
	if o.JSONPath != "" {
		if err := writeJSON(o.JSONPath, rep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
	}
	if rep.Failed() {
		os.Exit(1)
	}
}

// writeJSON writes the report to path.
func writeJSON(path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// logf writes progress lines so a long run shows where it is.
func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "bench: "+format+"\n", args...)
}

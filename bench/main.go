// Command bench is sidetrack's end-to-end load suite: it builds and starts
// sidetrack with a bench config, a fake shop origin and a counting webhook
// destination, measures it in rounds next to anchors (a bare fasthttp
// ceiling, the origin, nginx, Benthos) with wrk or a fasthttp closed-loop
// generator, measures open-loop latency at fixed rates, checks that every
// acknowledged event was delivered exactly once, and reports throughput,
// latency, CPU and memory next to the budgets of docs/design.md §8.
//
//	go run ./bench -duration 10s -scenario mix
//
// See docs/benchmarks.md.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
	Rounds      int
	Generator   string // auto | wrk | fasthttp
	Nginx       string // auto | off | path
	Benthos     string // auto | cached | off | path
	// Open-loop latency: one run at Rate, or at each of Rates, or at the
	// Fractions of the closed-loop peak (Sweep), else at half peak and peak.
	Rate            float64
	Rates           []float64
	Sweep           bool
	Fractions       []float64
	LatencyDuration time.Duration
	SVGPath         string
	// ModuleRoot is where `go build` finds sidetrack; empty means ask `go env GOMOD`.
	ModuleRoot string
	// Topology is single (one sidetrack with its local spool) or scaleout
	// (Edges replicas on Kafka, Forwarders `sidetrack forward` processes).
	Topology                      string
	Edges, Forwarders, Partitions int
}

func main() {
	if kind := os.Getenv(childEnv); kind != "" {
		serveChild(kind)
		return
	}
	o := options{Fractions: []float64{0.1, 0.25, 0.5, 0.75, 0.9, 1, 1.1}}
	flag.DurationVar(&o.Duration, "duration", 10*time.Second, "load duration of each throughput phase")
	flag.IntVar(&o.Connections, "connections", 64, "concurrent connections (closed loop: one request in flight each; open loop: lanes)")
	flag.StringVar(&o.Scenario, "scenario", "mix", strings.Join(validScenarios, " | "))
	flag.StringVar(&o.JSONPath, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&o.Target, "target", "", "bench an already running sidetrack at this base URL (no child, no anchors, accounting limited to answers)")
	flag.BoolVar(&o.Baseline, "baseline", true, "also measure the ceiling and the anchors (origin, nginx, Benthos) and report ratios")
	flag.BoolVar(&o.Pin, "pin", false, "pin sidetrack, the ceiling and the anchors to CPU 0 (taskset) and the generator and fakes to CPU 1")
	flag.IntVar(&o.DedupCap, "dedup-capacity", 1000000, "dedup.capacity of the bench config")
	flag.DurationVar(&o.DrainMax, "drain-max", 60*time.Second, "longest wait for deliveries after the load")
	flag.BoolVar(&o.Keep, "keep", false, "keep the temporary directory (config, sidetrack.log, spool, nginx) for inspection")
	flag.IntVar(&o.Rounds, "rounds", 3, "rounds of the throughput phases; the report takes medians")
	flag.StringVar(&o.Generator, "generator", "auto", "throughput generator: auto (the fasthttp generator), fasthttp, or wrk (when installed)")
	flag.StringVar(&o.Nginx, "nginx", "auto", "nginx binary for the pass-through anchor: auto (PATH, /usr/sbin), off, or a path")
	flag.StringVar(&o.Benthos, "benthos", "auto", "Benthos binary: auto (cached, else build once into the user cache dir), cached, off, or a path")
	flag.Float64Var(&o.Rate, "rate", 0, "one open-loop latency run at this many requests/s (instead of half peak and peak)")
	flag.Func("rates", "comma-separated open-loop rates (requests/s) to sweep", func(v string) (err error) {
		o.Rates, err = floats(v)
		return err
	})
	flag.BoolVar(&o.Sweep, "sweep", false, "open-loop sweep at -fractions of the closed-loop peak, charted to -svg")
	flag.Func("fractions", "comma-separated fractions of the closed-loop peak for -sweep (default 0.1,0.25,0.5,0.75,0.9,1,1.1)", func(v string) (err error) {
		o.Fractions, err = floats(v)
		return err
	})
	flag.DurationVar(&o.LatencyDuration, "latency-duration", 5*time.Second, "duration of each open-loop point (0: no latency runs)")
	flag.StringVar(&o.SVGPath, "svg", "", "write the latency-vs-rate chart here (default with -sweep or -rates: bench-latency.svg)")
	flag.StringVar(&o.Topology, "topology", "single", "single (one sidetrack, local spool) or scaleout (edges → in-process Kafka → forwarders)")
	flag.IntVar(&o.Edges, "edges", 2, "with -topology scaleout: edge replicas (spool.type kafka)")
	flag.IntVar(&o.Forwarders, "forwarders", 2, "with -topology scaleout: `sidetrack forward` processes")
	flag.IntVar(&o.Partitions, "partitions", 4, "with -topology scaleout: partitions of the spool topic")
	svgFrom := flag.String("svg-from", "", "redraw the chart from a -json report (to -svg, default bench-latency.svg) and exit")
	flag.Parse()
	if *svgFrom != "" {
		if err := redraw(*svgFrom, cmp.Or(o.SVGPath, "bench-latency.svg")); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		return
	}
	if o.SVGPath == "" && (o.Sweep || len(o.Rates) > 0) {
		o.SVGPath = "bench-latency.svg"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch o.Topology {
	case "single":
	case "scaleout":
		os.Exit(scaleOut(ctx, o))
	default:
		fmt.Fprintf(os.Stderr, "bench: -topology %q: want single or scaleout\n", o.Topology)
		os.Exit(2)
	}
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

// scaleOut runs the scale-out topology and returns the exit status.
func scaleOut(ctx context.Context, o options) int {
	rep, err := RunScaleOut(ctx, ScaleOutOptions{
		Edges: o.Edges, Forwarders: o.Forwarders, Partitions: o.Partitions,
		Connections: o.Connections, Duration: o.Duration, DrainMax: o.DrainMax, ModuleRoot: o.ModuleRoot,
	}, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	rep.WriteText(os.Stdout)
	if o.JSONPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(o.JSONPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// floats parses a comma-separated list of positive numbers.
func floats(v string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(v, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, x)
	}
	return out, nil
}

// redraw writes the latency chart of a -json report to svgPath.
func redraw(jsonPath, svgPath string) error {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	if len(rep.Latency) == 0 {
		return fmt.Errorf("%s has no latency points", jsonPath)
	}
	return os.WriteFile(svgPath, latencySVG(&rep), 0o644)
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

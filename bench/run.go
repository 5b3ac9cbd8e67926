package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Phase names, in the order each round runs them.
const (
	phCeiling  = "ceiling"
	phOrigin   = "origin"
	phNginx    = "nginx"
	phPass     = "sidetrack-pass"
	phBenthos  = "benthos"
	phSidetrck = "sidetrack"
)

// phaseServer is something a phase drives: its base URL, the processes whose
// CPU it costs, and the requests it gets.
type phaseServer struct {
	name    string
	what    string
	base    string
	pids    func() []int // nil: CPU unknown (-target)
	wl      *workload
	keepIDs bool
}

// run performs one bench: o.Rounds rounds of the throughput phases
// (ceiling, anchors, sidetrack), then the open-loop latency points, then
// the delivery drain and accounting. Progress goes to logw; the report is
// returned for the caller to print.
func run(ctx context.Context, o options, logw io.Writer) (*Report, error) {
	if o.Connections < 1 || o.Duration <= 0 {
		return nil, errors.New("-connections and -duration must be positive")
	}
	if o.Rounds < 1 {
		o.Rounds = 1
	}
	root := o.ModuleRoot
	if root == "" {
		var err error
		if root, err = moduleRoot(ctx); err != nil {
			return nil, err
		}
	}
	serverCPU, benchCPU := -1, -1
	if o.Pin {
		if _, err := exec.LookPath("taskset"); err != nil {
			return nil, errors.New("-pin needs taskset (util-linux)")
		}
		if err := pinSelf(1); err != nil {
			return nil, fmt.Errorf("pinning the generator to CPU 1: %w", err)
		}
		serverCPU, benchCPU = 0, 1
	}
	gen, err := newGenerator(o)
	if err != nil {
		return nil, err
	}
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	wl, err := newWorkload(root, o.Scenario, runID)
	if err != nil {
		return nil, err
	}
	passWL, err := newWorkload(root, "pass", runID)
	if err != nil {
		return nil, err
	}
	postWL, err := newWorkload(root, "collect", runID)
	if err != nil {
		return nil, err
	}
	postWL.collectPath = "/post"
	dir, err := os.MkdirTemp("", "sidetrack-bench-")
	if err != nil {
		return nil, err
	}
	if o.Keep {
		logf(logw, "keeping %s (config, sidetrack.log, spool)", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	rep := &Report{
		Scenario: o.Scenario, Target: "child", Duration: o.Duration.String(), Connections: o.Connections,
		Pinned: o.Pin, Started: time.Now().UTC(), Rounds: o.Rounds, Generator: gen.name(),
		Method: "throughput phases closed loop (" + gen.name() + "; each connection waits for its answer before " +
			"sending again, so their latency understates open-loop latency); latency points open loop at a fixed " +
			"rate, latency from each request's scheduled send time (HdrHistogram, corrected for coordinated omission)",
	}
	if o.Target != "" {
		rep.Target = o.Target
	}

	var servers []*phaseServer
	if o.Baseline {
		ch, base, err := startServerChild("ceiling", serverCPU)
		if err != nil {
			return nil, err
		}
		defer ch.kill()
		servers = append(servers, &phaseServer{name: phCeiling, what: "bare fasthttp answering 204, scenario requests",
			base: base, pids: pidsOf(ch), wl: wl})
	}

	base := strings.TrimSuffix(o.Target, "/")
	var st *child
	var cnt *counter
	var admin string
	if base == "" {
		logf(logw, "building sidetrack in %s", root)
		bin, err := buildSidetrack(ctx, root, dir)
		if err != nil {
			return nil, err
		}
		och, origin, err := startServerChild("origin", benchCPU)
		if err != nil {
			return nil, err
		}
		defer och.kill()
		if o.Baseline {
			servers = append(servers, &phaseServer{name: phOrigin, what: "the fake shop origin directly, pass-through pages",
				base: origin, pids: pidsOf(och), wl: passWL})
		}
		if ngx := findNginx(o.Nginx); ngx != "" && o.Baseline {
			nch, nbase, err := startNginx(ngx, dir, strings.TrimPrefix(origin, "http://"), serverCPU)
			if err != nil {
				rep.Notes = append(rep.Notes, "nginx anchor skipped: "+err.Error())
			} else {
				defer nch.stop(5 * time.Second)
				servers = append(servers, &phaseServer{name: phNginx, what: "nginx proxy_pass (keepalive) to the origin, pass-through pages",
					base: nbase, pids: func() []int { return procTree(nch.pid()) }, wl: passWL})
			}
		} else if o.Baseline {
			rep.Notes = append(rep.Notes, "nginx anchor skipped: no nginx binary (or -nginx off)")
		}
		if o.Baseline {
			if bbin, why := findBenthos(ctx, o.Benthos, func(f string, a ...any) { logf(logw, f, a...) }); bbin != "" {
				bch, bbase, err := startBenthos(bbin, dir, serverCPU)
				if err != nil {
					rep.Notes = append(rep.Notes, "Benthos anchor skipped: "+err.Error())
				} else {
					defer bch.stop(5 * time.Second)
					servers = append(servers, &phaseServer{name: phBenthos, what: "Benthos http_server → drop, /collect JSON bodies",
						base: bbase, pids: pidsOf(bch), wl: postWL})
				}
			} else {
				rep.Notes = append(rep.Notes, "Benthos anchor skipped: "+why)
			}
		}
		cnt = newCounter()
		hook, err := startServer(cnt.handle)
		if err != nil {
			return nil, err
		}
		defer hook.Close()
		st, base, admin, err = startSidetrack(bin, dir, benchConfig(dir, origin, hook.URL(), o.DedupCap), serverCPU)
		if err != nil {
			return nil, err
		}
		defer st.stop(15 * time.Second)
		if slices.ContainsFunc(servers, func(s *phaseServer) bool { return s.name == phNginx }) {
			servers = append(servers, &phaseServer{name: phPass, what: "sidetrack passing pages through to the origin (compare with nginx)",
				base: base, pids: pidsOf(st), wl: passWL})
		}
	}
	sidetrack := &phaseServer{name: phSidetrck, what: "sidetrack, scenario " + o.Scenario, base: base, wl: wl, keepIDs: cnt != nil}
	if st != nil {
		sidetrack.pids = pidsOf(st)
	}
	servers = append(servers, sidetrack)

	// Rounds: every phase once per round, in the same order, so slow drifts
	// of a shared machine spread over all phases; the report takes medians.
	phases := map[string][]Phase{}
	var acked [][]string
	acc := &rep.Accounting
	var allocsBefore, allocsAfter, allocEvents int64
	for r := range o.Rounds {
		for _, s := range servers {
			logf(logw, "round %d/%d: %s (%s) for %s", r+1, o.Rounds, s.name, s.base, o.Duration)
			var m0 int64
			if s == sidetrack && admin != "" {
				m0, _ = mallocs(admin)
			}
			m, err := measure(ctx, s, gen, load{conns: o.Connections, d: o.Duration, tag: fmt.Sprintf("r%d%s", r, s.name[:1]), keepIDs: s.keepIDs})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			if s == sidetrack && admin != "" {
				if m1, err := mallocs(admin); err == nil && m0 > 0 {
					allocsBefore += m0
					allocsAfter += m1
					allocEvents += m.res.EventsOK + m.res.DupsSent
				}
			}
			phases[s.name] = append(phases[s.name], m.phase)
			if s == sidetrack {
				acc.add(m.res)
				acked = append(acked, m.res.Acked...)
				if m.phase.PeakRSSBytes > rep.PeakRSSBytes {
					rep.PeakRSSBytes = m.phase.PeakRSSBytes
				}
				rep.RssAnonBytes = max(rep.RssAnonBytes, m.phase.RssAnonBytes)
			}
			if m.res.Partial != "" {
				rep.Notes = append(rep.Notes, s.name+": "+m.res.Partial)
			}
		}
	}
	for _, s := range servers {
		rep.Phases = append(rep.Phases, summarize(s.name, s.what, phases[s.name]))
	}
	rep.Sidetrack = rep.phase(phSidetrck).Median
	if p := rep.phase(phCeiling); p != nil {
		rep.Ceiling = &p.Median
	}
	if allocEvents > 0 {
		rep.AllocsPerEvent = round(float64(allocsAfter-allocsBefore)/float64(allocEvents), 1)
	}

	// Open-loop latency at fixed rates: fractions of the closed-loop peak
	// just measured, or the rates asked for.
	peak := rep.Sidetrack.RequestsPerSec
	rep.PeakRequestsPerSec = peak
	rep.LatencyDuration = o.LatencyDuration.String()
	for i, pt := range latencyPlan(o, peak) {
		logf(logw, "latency: sidetrack open loop at %.0f req/s for %s", pt.rate, o.LatencyDuration)
		m, err := measure(ctx, sidetrack, gen, load{conns: o.Connections, d: o.LatencyDuration, rate: pt.rate,
			tag: "l" + strconv.Itoa(i), keepIDs: sidetrack.keepIDs})
		if err != nil {
			return nil, fmt.Errorf("latency at %.0f req/s: %w", pt.rate, err)
		}
		acc.add(m.res)
		acked = append(acked, m.res.Acked...)
		rep.Latency = append(rep.Latency, latencyPoint(pt, m))
	}
	if o.SVGPath != "" && len(rep.Latency) > 0 {
		if err := os.WriteFile(o.SVGPath, latencySVG(rep), 0o644); err != nil {
			return nil, err
		}
		rep.SVG = o.SVGPath
	}

	if cnt != nil {
		logf(logw, "load done; waiting for deliveries (at most %s)", o.DrainMax)
		t0 := time.Now()
		acc.DrainComplete = drain(ctx, cnt, acc.UniqueEventsAcked, acked, o.DrainMax)
		acc.DrainSeconds = round(time.Since(t0).Seconds(), 1)
		if !acc.DrainComplete {
			rep.Notes = append(rep.Notes, deliveryMetrics(admin)...)
		}
		acc.Checked = true
		c := cnt.snapshot()
		acc.DeliveredDistinct, acc.DeliveredTotal, acc.WebhookRequests = c.Distinct, c.Total, c.Requests
		acc.Lost, acc.DoubleDelivered, acc.Extra, acc.LostSample = cnt.account(acked)
		if c.BadBodies > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%d webhook bodies did not parse", c.BadBodies))
		}
		if hwm, anon, err := procMem(st.pid()); err == nil {
			rep.PeakRSSBytes = max(rep.PeakRSSBytes, hwm)
			rep.RssAnonBytes = max(rep.RssAnonBytes, anon)
		}
	}

	rep.ratios()
	rep.budgets(o.DedupCap)
	rep.Notes = append(rep.Notes, saturated(rep.Phases, o.Pin)...)
	rep.Notes = append(rep.Notes,
		"generator CPU: "+gen.cpuNote(),
		"server CPU is utime+stime of the server's processes from /proc/<pid>/stat over the phase (10 ms resolution)")
	if o.Rounds < 3 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d round(s), not the medians of ≥ 3 interleaved rounds DESIGN §8 asks for", o.Rounds))
	}
	if !o.Pin {
		rep.Notes = append(rep.Notes, "not pinned: sidetrack, the generator and the fakes share all CPUs (use -pin on a 2-core machine)")
	}
	return rep, nil
}

// saturated names the phases whose generator used (nearly) all the CPU it
// had: there the generator, not the server, set the pace, and ratios to
// that phase are off. Pinned, the generator and the fakes share one CPU.
func saturated(phases []*PhaseSummary, pinned bool) []string {
	cores := 1.0
	if !pinned {
		cores = float64(runtime.NumCPU())
	}
	var notes []string
	for _, p := range phases {
		m := p.Median
		if m.Seconds <= 0 {
			continue
		}
		if use := m.GeneratorCPUSec / m.Seconds; use >= 0.9*cores {
			notes = append(notes, fmt.Sprintf("GENERATOR-BOUND: in the %s phase the generator used %.2f of %.0f CPU(s); its req/s is a floor, not the server's limit", p.Name, use, cores))
		}
	}
	return notes
}

// pidsOf is the child's own pid as a CPU source.
func pidsOf(c *child) func() []int { return func() []int { return []int{c.pid()} } }

// measured is one load phase with the raw result.
type measured struct {
	phase Phase
	res   *loadResult
}

// measure drives s with l and reads the server's and the generator's CPU
// around it.
func measure(ctx context.Context, s *phaseServer, gen generator, l load) (*measured, error) {
	var pids []int
	if s.pids != nil {
		pids = s.pids()
	}
	var before time.Duration
	if len(pids) > 0 {
		var err error
		if before, err = treeCPU(pids); err != nil {
			return nil, err
		}
	}
	res, genCPU, err := gen.run(ctx, s.base, s.wl, l)
	if err != nil {
		return nil, err
	}
	m := &measured{phase: phaseFrom(res), res: res}
	m.phase.GeneratorCPUSec = round(genCPU.Seconds(), 2)
	if res.Sent > 0 {
		m.phase.GeneratorUsReq = round(float64(genCPU.Microseconds())/float64(res.Sent), 1)
	}
	if len(pids) > 0 {
		after, err := treeCPU(pids)
		if err != nil {
			return nil, err
		}
		cpu := after - before
		m.phase.ServerCPUSec = round(cpu.Seconds(), 2)
		if res.Sent > 0 {
			m.phase.ServerCPUUsReq = round(float64(cpu.Microseconds())/float64(res.Sent), 1)
		}
		if hwm, anon, err := procMem(pids[0]); err == nil {
			m.phase.PeakRSSBytes, m.phase.RssAnonBytes = hwm, anon
		}
	}
	if res.Sent == 0 {
		return nil, fmt.Errorf("no request completed against %s (%s)", s.base, res.FirstError)
	}
	return m, nil
}

// drain waits until every acked event was delivered, or deliveries stop
// growing for 5 s, or limit passes; it reports whether all arrived.
func drain(ctx context.Context, cnt *counter, acked int64, ackedIDs [][]string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c := cnt.snapshot()
		if c.Distinct >= acked {
			// Distinct may include events of requests the bench saw fail:
			// only the acked ids themselves say the drain is done.
			if lost, _, _, _ := cnt.account(ackedIDs); lost == 0 {
				// Give late duplicates a moment to show up.
				time.Sleep(300 * time.Millisecond)
				return true
			}
		}
		if c.Total != last {
			last, lastChange = c.Total, time.Now()
		} else if time.Since(lastChange) > 5*time.Second {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// selfCPU is the bench process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pinSelf pins every thread of the bench process to cpu. Affinity is per
// thread on Linux; threads the Go runtime starts later inherit it from the
// thread that creates them, which is pinned by then.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return err
		}
	}
	return nil
}

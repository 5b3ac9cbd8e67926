package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// run performs one bench: the ceiling phase (with o.Baseline), then the
// sidetrack phase, then the delivery drain and accounting. Progress goes
// to logw; the report is returned for the caller to print.
func run(ctx context.Context, o options, logw io.Writer) (*Report, error) {
	if o.Connections < 1 || o.Duration <= 0 {
		return nil, errors.New("-connections and -duration must be positive")
	}
	root := o.ModuleRoot
	if root == "" {
		var err error
		if root, err = moduleRoot(ctx); err != nil {
			return nil, err
		}
	}
	if o.Pin {
		if _, err := exec.LookPath("taskset"); err != nil {
			return nil, errors.New("-pin needs taskset (util-linux)")
		}
		if err := pinSelf(1); err != nil {
			return nil, fmt.Errorf("pinning the generator to CPU 1: %w", err)
		}
	}
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	wl, err := newWorkload(root, o.Scenario, runID)
	if err != nil {
		return nil, err
	}
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
		Pinned: o.Pin, Started: time.Now().UTC(),
		Method: "closed loop (each connection waits for its answer before sending again; latency per request " +
			"from send to full answer, so coordinated omission applies: percentiles understate open-loop latency)",
	}
	if o.Target != "" {
		rep.Target = o.Target
	}

	if o.Baseline {
		logf(logw, "ceiling: bare fasthttp 204 for %s", o.Duration)
		ch, base, err := startCeilingChild(o.Pin)
		if err != nil {
			return nil, err
		}
		p, err := measure(ctx, ch.pid(), base, wl, o, false)
		ch.kill()
		if err != nil {
			return nil, err
		}
		rep.Ceiling = &p.phase
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
		origin, err := startServer(originHandler)
		if err != nil {
			return nil, err
		}
		defer origin.Close()
		cnt = newCounter()
		hook, err := startServer(cnt.handle)
		if err != nil {
			return nil, err
		}
		defer hook.Close()
		st, base, admin, err = startSidetrack(bin, dir, benchConfig(dir, origin.URL(), hook.URL(), o.DedupCap), o.Pin)
		if err != nil {
			return nil, err
		}
		defer st.stop(15 * time.Second)
	}
	logf(logw, "sidetrack at %s: scenario %s, %d connections, %s", base, o.Scenario, o.Connections, o.Duration)
	pid := 0
	if st != nil {
		pid = st.pid()
	}
	m, err := measure(ctx, pid, base, wl, o, cnt != nil)
	if err != nil {
		return nil, err
	}
	rep.Sidetrack = m.phase
	a := &rep.Accounting
	a.Sent, a.Answered2xx, a.DuplicatesSent, a.PassThroughSent, a.UniqueEventsAcked =
		m.res.Sent, m.res.OK, m.res.DupsSent, m.res.PassSent, m.res.EventsOK

	if cnt != nil {
		logf(logw, "load done; waiting for deliveries (at most %s)", o.DrainMax)
		t0 := time.Now()
		a.DrainComplete = drain(ctx, cnt, m.res.EventsOK, m.res.Acked, o.DrainMax)
		a.DrainSeconds = round(time.Since(t0).Seconds(), 1)
		if !a.DrainComplete {
			rep.Notes = append(rep.Notes, deliveryMetrics(admin)...)
		}
		if cpu, err := procCPU(pid); err == nil {
			rep.Sidetrack.ServerCPUDrain = round((cpu - m.cpuBefore).Seconds(), 2)
		}
		a.Checked = true
		c := cnt.snapshot()
		a.DeliveredDistinct, a.DeliveredTotal, a.WebhookRequests = c.Distinct, c.Total, c.Requests
		a.Lost, a.DoubleDelivered, a.Extra, a.LostSample = cnt.account(m.res.Acked)
		if c.BadBodies > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%d webhook bodies did not parse", c.BadBodies))
		}
	}

	if rep.Ceiling != nil && rep.Ceiling.RequestsPerSec > 0 {
		rep.ReqRatio = round(rep.Sidetrack.RequestsPerSec/rep.Ceiling.RequestsPerSec, 2)
		if rep.Ceiling.ServerCPUUsReq > 0 && rep.Sidetrack.ServerCPUUsReq > 0 {
			rep.CPURatio = round(rep.Sidetrack.ServerCPUUsReq/rep.Ceiling.ServerCPUUsReq, 2)
		}
	}
	rep.budgets(o.DedupCap)
	rep.Notes = append(rep.Notes,
		"generator CPU is the whole bench process (getrusage): the load generator plus the fake origin and the counting webhook",
		"server CPU is utime+stime of the server process from /proc/<pid>/stat over the load phase (10 ms resolution)",
		"one round per phase, not the medians of ≥ 3 interleaved rounds DESIGN §8 asks for: repeat runs before trusting a ratio")
	if !o.Pin {
		rep.Notes = append(rep.Notes, "not pinned: sidetrack, the generator and the fakes share all CPUs (use -pin on a 2-core machine)")
	}
	return rep, nil
}

// measured is one load phase with the raw result and the server's CPU at its start.
type measured struct {
	phase     Phase
	res       *loadResult
	cpuBefore time.Duration
}

// measure drives base for o.Duration and reads the server's (pid, when
// known) and the bench's own CPU around it.
func measure(ctx context.Context, pid int, base string, wl *workload, o options, keepIDs bool) (*measured, error) {
	var before, after time.Duration
	if pid > 0 {
		var err error
		if before, err = procCPU(pid); err != nil {
			return nil, err
		}
	}
	genBefore := selfCPU()
	res, err := drive(ctx, base, wl, o.Connections, o.Duration, keepIDs)
	if err != nil {
		return nil, err
	}
	genCPU := selfCPU() - genBefore
	m := &measured{phase: phaseFrom(res), res: res, cpuBefore: before}
	m.phase.GeneratorCPUSec = round(genCPU.Seconds(), 2)
	if res.Sent > 0 {
		m.phase.GeneratorUsReq = round(float64(genCPU.Microseconds())/float64(res.Sent), 1)
	}
	if pid > 0 {
		if after, err = procCPU(pid); err != nil {
			return nil, err
		}
		cpu := after - before
		m.phase.ServerCPUSec = round(cpu.Seconds(), 2)
		if res.Sent > 0 {
			m.phase.ServerCPUUsReq = round(float64(cpu.Microseconds())/float64(res.Sent), 1)
		}
		if hwm, anon, err := procMem(pid); err == nil {
			m.phase.PeakRSSBytes, m.phase.RssAnonBytes = hwm, anon
		}
	}
	if res.Sent == 0 {
		return nil, fmt.Errorf("no request completed against %s", base)
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

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkGen drives closed-loop phases with wrk (https://github.com/wg/wrk)
// and a Lua script that replays the scenario's requests with fresh ids.
// Open-loop phases go to the fasthttp generator.
//
// Accounting with wrk: wrk's Lua response() does not say which request an
// answer belongs to, so the bench cannot collect acknowledged ids one by
// one. Instead the script cycles through a fixed sequence of request
// templates (made by the scenario's own generator), numbers each thread's
// unique events, and reports per thread how many requests it generated.
// The bench replays the sequence to rebuild every id that was sent, and
// counts as acknowledged all of them except each thread's last
// connections/threads requests, which may still have been in flight when
// wrk stopped (those are neither lost nor acked: if sidetrack delivered
// them they show as "not acked by the bench"). wrk calls request() once on
// its first thread to check the script and never sends that request: the
// replay skips it. This holds only when wrk
// saw no socket error and no status ≥ 400; otherwise the report says the
// accounting is partial.
type wrkGen struct {
	bin     string
	threads int
}

// newWrkGen finds wrk; with required it is an error when wrk is missing,
// else the result is nil.
func newWrkGen(required bool) (*wrkGen, error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		if required {
			return nil, fmt.Errorf("-generator wrk: %w", err)
		}
		return nil, nil
	}
	return &wrkGen{bin: bin, threads: 2}, nil
}

func (g *wrkGen) name() string { return "wrk" }

func (g *wrkGen) cpuNote() string {
	return "closed-loop phases: wrk's own CPU (rusage of the wrk process); open-loop latency points: the whole bench process (fasthttp generator and counting webhook)"
}

// wrkTemplates is how many requests of the scenario the script cycles through.
const wrkTemplates = 997

// wrkTemplate is one request of the cycled sequence.
type wrkTemplate struct {
	kind   byte // 'u' unique event request, 'd' duplicate of the previous unique, 'p' pass-through
	events int
}

const idMark = "@@ID@@"

// script writes the Lua script for wl and returns the template kinds.
func wrkScript(wl *workload, prefix string) (string, []wrkTemplate) {
	ws := &workerState{w: 0, tag: "tpl", rng: newRNG(0)}
	var sb strings.Builder
	sb.WriteString("tpl = {\n")
	kinds := make([]wrkTemplate, 0, wrkTemplates)
	for range wrkTemplates {
		s := wl.next(ws)
		k := wrkTemplate{kind: 'u', events: max(s.events, 1)}
		switch {
		case s.kind == kindPass:
			k.kind = 'p'
		case s.dup:
			k.kind = 'd'
		default:
			ws.remember(s)
		}
		kinds = append(kinds, k)
		uri, body := string(s.uri), string(s.body)
		if s.id != "" {
			uri, body = strings.ReplaceAll(uri, s.id, idMark), strings.ReplaceAll(body, s.id, idMark)
		}
		fmt.Fprintf(&sb, "{k=%q,m=%s,p=%s,h={[\"User-Agent\"]=%s", string(k.kind), luaQuote(s.method), luaQuote(uri), luaQuote(userAgent))
		if s.auth != "" {
			fmt.Fprintf(&sb, ",[\"Authorization\"]=%s", luaQuote(s.auth))
		}
		if s.kind == kindForm {
			fmt.Fprintf(&sb, ",[\"Referer\"]=%s", luaQuote("https://shop.example"+formPath))
		}
		if len(body) > 0 || s.method == "POST" {
			fmt.Fprintf(&sb, ",[\"Content-Type\"]=%s},b=%s},\n", luaQuote(s.ctype), luaQuote(body))
		} else {
			sb.WriteString("}},\n")
		}
	}
	sb.WriteString("}\n")
	fmt.Fprintf(&sb, "prefix = %s\n", luaQuote(prefix))
	sb.WriteString(wrkLua)
	return sb.String(), kinds
}

// wrkLua is the script's logic; tpl and prefix come before it.
const wrkLua = `
nthreads = 0
threads = {}
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end
gen, uniq, dups, pass, n, i = 0, 0, 0, 0, 0, 0
last = nil
function request()
  i = i % #tpl + 1
  gen = gen + 1
  local t = tpl[i]
  if t.k == "p" then
    pass = pass + 1
    return wrk.format(t.m, t.p, t.h, t.b)
  end
  if t.k == "d" and last ~= nil then
    dups = dups + 1
    return last
  end
  n = n + 1
  uniq = uniq + 1
  local id = prefix .. "t" .. tid .. "-" .. n
  local body = nil
  if t.b ~= nil then body = (string.gsub(t.b, "@@ID@@", id)) end
  last = wrk.format(t.m, (string.gsub(t.p, "@@ID@@", id)), t.h, body)
  return last
end
function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    parts[#parts + 1] = string.format('{"gen":%d,"uniq":%d,"dups":%d,"pass":%d}', t:get("gen"), t:get("uniq"), t:get("dups"), t:get("pass"))
  end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"threads":[%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)), math.floor(latency:percentile(99)),
    math.floor(latency:percentile(99.9)), latency.max, table.concat(parts, ",")))
end
`

// luaQuote is s as a Lua string literal.
func luaQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// wrkOut is what the script's done() prints.
type wrkOut struct {
	Requests   int64 `json:"requests"`
	DurationUs int64 `json:"duration_us"`
	Connect    int64 `json:"connect"`
	Read       int64 `json:"read"`
	Write      int64 `json:"write"`
	Status     int64 `json:"status"`
	Timeout    int64 `json:"timeout"`
	P50        int64 `json:"p50"`
	P90        int64 `json:"p90"`
	P99        int64 `json:"p99"`
	P999       int64 `json:"p999"`
	Max        int64 `json:"max"`
	Threads    []struct {
		Gen, Uniq, Dups, Pass int64
	} `json:"threads"`
}

func (g *wrkGen) run(ctx context.Context, base string, wl *workload, l load) (*loadResult, time.Duration, error) {
	if l.rate > 0 {
		return fasthttpGen{}.run(ctx, base, wl, l)
	}
	threads := min(g.threads, l.conns)
	prefix := "b" + wl.runID + "-" + l.tag
	script, kinds := wrkScript(wl, prefix)
	dir, err := os.MkdirTemp("", "sidetrack-bench-wrk-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "bench.lua")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		return nil, 0, err
	}
	secs := max(int(l.d.Round(time.Second)/time.Second), 1)
	cmd := exec.CommandContext(ctx, g.bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(l.conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "30s", "-s", path, strings.TrimSuffix(base, "/")+"/")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("wrk: %v: %s%s", err, tail(stderr.Bytes()), tail(stdout.Bytes()))
	}
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var out wrkOut
	found := false
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if js, ok := strings.CutPrefix(sc.Text(), "WRKJSON "); ok {
			if err := json.Unmarshal([]byte(js), &out); err != nil {
				return nil, 0, fmt.Errorf("wrk output: %w", err)
			}
			found = true
		}
	}
	if !found {
		return nil, 0, fmt.Errorf("wrk printed no summary: %s", tail(stdout.Bytes()))
	}
	res := &loadResult{
		Elapsed: time.Duration(out.DurationUs) * time.Microsecond,
		Sent:    out.Requests,
		OK:      out.Requests - out.Status,
		Errors:  out.Connect + out.Read + out.Write + out.Timeout,
		Lat:     &Latency{P50: out.P50, P90: out.P90, P99: out.P99, P999: out.P999, Max: out.Max},
		Hist:    newHist(),
		Lag:     newHist(),
	}
	if out.Status > 0 {
		res.Non2xx = map[int]int64{400: out.Status} // wrk counts status ≥ 400 without telling which
		res.FirstError = fmt.Sprintf("%d answers with status ≥ 400 (wrk does not say which; rerun with -generator fasthttp)", out.Status)
	}
	inflight := (l.conns + threads - 1) / threads
	for tid, t := range out.Threads {
		res.DupsSent += t.Dups
		res.PassSent += t.Pass
		var ids []string
		n := 0
		for k := int64(0); k < t.Gen; k++ {
			tp := kinds[k%int64(len(kinds))]
			if tp.kind != 'u' {
				continue
			}
			n++
			if tid == 0 && k == 0 {
				continue // wrk calls request() once on thread 0 to verify the script, and never sends it
			}
			if k >= t.Gen-int64(inflight) {
				continue // maybe still in flight when wrk stopped
			}
			res.EventsOK += int64(tp.events)
			if l.keepIDs {
				s := spec{id: prefix + "t" + strconv.Itoa(tid) + "-" + strconv.Itoa(n), events: tp.events}
				ids = s.eventIDs(ids)
			}
		}
		res.Acked = append(res.Acked, ids)
	}
	if res.Errors > 0 || out.Status > 0 {
		res.Partial = "wrk saw socket errors or status ≥ 400: acknowledged ids are not known exactly, lost may count failed requests"
	}
	return res, cpu, nil
}

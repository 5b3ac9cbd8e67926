package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkHotPath runs the whole ingest path in this process: a request
// over loopback TCP → route → decode → enrichment stages → dedup → spool
// append and group commit → answer, with delivery to a local webhook
// running alongside, as in the bench suite's config. Many connections send
// at once so group commits batch as they do under load. Allocations per
// op count the client and the fake destination too (both are fasthttp and
// allocate close to nothing), so allocs/op is an upper bound of the server's
// per-request allocations, and so is cpu-ns/op (the process's CPU time per
// request, steadier than ns/op on a shared machine) of its CPU time; run
// with -cpuprofile to see where the time goes.
func BenchmarkHotPath(b *testing.B) {
	hits := benchGA4Hits(b)
	for _, sc := range []string{"ga4", "collect", "mix"} {
		b.Run(sc, func(b *testing.B) {
			addr, admin := startInProcess(b)
			hc := &fasthttp.HostClient{Addr: addr, MaxConns: 64, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
			defer hc.CloseIdleConnections()
			var seq atomic.Int64
			head, tail, _ := strings.Cut(hotCollectBody, "{{ID}}")
			b.SetParallelism(32)
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				var uri, body []byte
				for pb.Next() {
					n := seq.Add(1)
					req.Reset()
					req.Header.Set("User-Agent", hotUA)
					ga4 := sc == "ga4" || (sc == "mix" && n%5 < 3)
					if ga4 {
						h := hits[int(n)%len(hits)]
						uri = append(append(append(uri[:0], "http://"+addr...), h.uri...), "&ep.event_id=e"...)
						uri = strconv.AppendInt(uri, n, 10)
						if h.hasTx {
							uri = strconv.AppendInt(append(uri, "&ep.transaction_id=T"...), n, 10)
						}
						req.Header.SetMethod(h.method)
						if h.method == "POST" {
							req.Header.SetContentType("text/plain;charset=UTF-8")
						}
					} else {
						uri = append(append(uri[:0], "http://"+addr...), "/collect"...)
						body = append(strconv.AppendInt(append(body[:0], head...), n, 10), tail...)
						req.Header.SetMethod("POST")
						req.Header.SetContentType("application/json")
						req.SetBody(body)
					}
					req.SetRequestURIBytes(uri)
					if err := hc.Do(req, resp); err != nil {
						b.Error(err)
						return
					}
					if c := resp.StatusCode(); c < 200 || c > 299 {
						b.Errorf("status %d: %s", c, resp.Body())
						return
					}
				}
			})
			b.StopTimer()
			// CPU time is steadier than wall time on a shared machine.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			if c := adminCounter(b, admin, "sidetrack_spool_commits_total"); c > 0 {
				b.ReportMetric(float64(b.N)/c, "req/commit")
			}
		})
	}
}

// adminCounter reads one unlabelled counter from the admin /metrics.
func adminCounter(b *testing.B, admin, name string) float64 {
	code, body, err := fasthttp.Get(nil, "http://"+admin+"/metrics")
	if err != nil || code != 200 {
		b.Fatalf("admin /metrics: %d %v", code, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// processCPU is the user+system CPU time of this process so far, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

const hotUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// hotCollectBody is the bench suite's ~1 KB /collect event.
const hotCollectBody = `{"name":"product_added","event_id":"{{ID}}","url":"https://shop.example/products/linen-shirt?utm_source=newsletter&utm_medium=email&utm_campaign=spring",` +
	`"referrer":"https://shop.example/shop/spring-sale","title":"Linen shirt - Example Shop","value":79.98,"currency":"EUR",` +
	`"items":[{"id":"SKU-1001","name":"Linen shirt","brand":"Northwind","category":"Apparel","variant":"blue / M","price":39.99,"quantity":2,"coupon":"SPRING10","discount":4.00},` +
	`{"id":"SKU-2040","name":"Canvas tote","brand":"Northwind","category":"Bags","price":19.98,"quantity":1}],` +
	`"user_id":"cust-77812","consent":{"analytics":"granted","ads":"granted","ad_user_data":"granted","ad_personalization":"granted"},` +
	`"properties":{"list":"spring-sale","position":3,"cart_size":3,"logged_in":true,"experiment":"checkout-b","page_type":"product","ab_bucket":"treatment-2","stock":"in_stock","shipping_estimate":"2-3 days","recommendation_source":"also-bought"},` +
	`"user":{"email":"jane.doe@example.com","phone":"+49 30 1234567","first_name":"Jane","last_name":"Doe","city":"Berlin","zip":"10115","country":"DE"}}`

type hotHit struct {
	method, uri string
	hasTx       bool
}

// benchGA4Hits reads the captured single-event gtag hits with consent not
// denied, without their ids (the benchmark makes each unique).
func benchGA4Hits(b *testing.B) []hotHit {
	f, err := os.Open(filepath.Join("proxy", "testdata", "ga4", "gtag.ndjson"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var hits []hotHit
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Method    string            `json:"method"`
			URL       string            `json:"url"`
			Query     map[string]string `json:"query"`
			BodyBytes int               `json:"body_bytes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			b.Fatal(err)
		}
		if rec.BodyBytes != 0 || rec.Query["gcs"] == "G100" || rec.Query["en"] == "" {
			continue
		}
		p, q, _ := strings.Cut(rec.URL, "?")
		h := hotHit{method: rec.Method}
		var keep []string
		for _, kv := range strings.Split(q, "&") {
			switch k, _, _ := strings.Cut(kv, "="); k {
			case "ep.event_id":
			case "ep.transaction_id":
				h.hasTx = true
			default:
				keep = append(keep, kv)
			}
		}
		h.uri = p + "?" + strings.Join(keep, "&")
		hits = append(hits, h)
	}
	if len(hits) == 0 {
		b.Fatal("no GA4 hits")
	}
	return hits
}

// startInProcess runs serve with the bench suite's config (one webhook
// destination, batches of 500) against a local fasthttp webhook that
// answers 200, and returns the public and admin addresses.
func startInProcess(b *testing.B) (public, admin string) {
	b.Helper()
	dir := b.TempDir()
	hookLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hook := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(200) }}
	go func() { _ = hook.Serve(hookLn) }()
	b.Cleanup(func() { _ = hook.Shutdown() })
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0"}
origin: "http://127.0.0.1:9"
secrets: ["bench-secret-0123456789abcdef"]
cookies: {secure: false}
log: {level: warn}
ingest:
  rate_limit: {per_client: 0/s}
consent:
  default: {analytics: granted, ads: granted, ad_user_data: granted, ad_personalization: granted}
dedup: {capacity: 1000000}
spool: {dir: %q}
destinations:
  - {name: hook, type: webhook, url: "http://%s/hook", batch: {max_events: 500, max_wait: 50ms}}
drain_delay: 0s
shutdown_timeout: 10s
`, filepath.Join(dir, "spool"), hookLn.Addr())
	path := filepath.Join(dir, "sidetrack.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, serveOptions{
			// No derived memory limit: sub-benchmarks start instances one
			// after another, and a stopped one stays reachable for up to
			// 10 s (fasthttp's idle-worker cleaner holds its server), which
			// would push this process against a limit sized for one
			// instance. The bench suite (one process per run) measures it.
			configPath: path, env: append(cleanEnv(), "GOMEMLIMIT=off"), stdout: os.Stdout, stderr: os.Stderr,
			signals: make(chan os.Signal),
			ready:   func(public, admin net.Addr) { ready <- [2]string{public.String(), admin.String()} },
		})
	}()
	select {
	case addrs := <-ready:
		b.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		})
		return addrs[0], addrs[1]
	case err := <-done:
		b.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("sidetrack did not start")
	}
	return "", ""
}

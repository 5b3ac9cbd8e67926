package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// childEnv makes the bench binary (or the test binary, see TestMain) serve
// as one of the bench's servers instead of running a bench: "ceiling" or
// "origin". Each then runs in its own process, so its CPU is measured
// apart from the generator's.
const childEnv = "BENCH_CHILD"

// serveChild serves what childEnv names: the ceiling of DESIGN §8 (a bare
// fasthttp server that answers every request 204) or the fake shop origin.
// It prints its address on stdout and serves until killed.
func serveChild(kind string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("child listening %s\n", ln.Addr())
	h := func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }
	if kind == "origin" {
		h = originHandler
	}
	srv := &fasthttp.Server{
		Handler:               h,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

// server is a fasthttp server on an ephemeral loopback port.
type server struct {
	ln  net.Listener
	srv *fasthttp.Server
}

// startServer serves h on 127.0.0.1:0.
func startServer(h fasthttp.RequestHandler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// ReadBufferSize: X-Sidetrack-Event-Ids alone may be 4 KiB, past
	// fasthttp's default header limit (which would answer 431).
	s := &server{ln: ln, srv: &fasthttp.Server{Handler: h, ReadTimeout: 30 * time.Second, MaxRequestBodySize: 16 << 20, ReadBufferSize: 64 << 10}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the server's base URL.
func (s *server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server.
func (s *server) Close() { _ = s.srv.Shutdown() }

// originPage is what the fake shop answers to every pass-through request:
// a small HTML page, roughly a cached product page's head.
var originPage = []byte(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Linen shirt - Example Shop</title>
<link rel="stylesheet" href="/assets/shop.css"><script async src="/gtag/js?id=G-TEST123"></script></head>
<body><header><a href="/">Example Shop</a></header><main><h1>Linen shirt</h1><p>Blue, M. 39.99 EUR.</p>
<form method="post" action="/cart"><button>Add to cart</button></form></main></body></html>
`)

// originHandler is the fake shop.
func originHandler(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(originPage)
}

// counter is the fake webhook destination: it parses each batch and counts
// deliveries per event id, so the bench can tell lost from double-delivered.
type counter struct {
	mu        sync.Mutex
	seen      map[string]uint32
	total     int64 // deliveries, duplicates included
	requests  int64
	badBodies int64
	parsers   fastjson.ParserPool
}

func newCounter() *counter { return &counter{seen: make(map[string]uint32, 1<<20)} }

// handle answers a webhook batch 200 after counting its event ids.
func (c *counter) handle(ctx *fasthttp.RequestCtx) {
	p := c.parsers.Get()
	defer c.parsers.Put(p)
	v, err := p.ParseBytes(ctx.PostBody())
	if err != nil {
		c.mu.Lock()
		c.badBodies++
		c.mu.Unlock()
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		return
	}
	events := v.GetArray("events")
	c.mu.Lock()
	c.requests++
	for _, e := range events {
		id := string(e.GetStringBytes("properties", "bench_id"))
		if id == "" {
			id = string(e.GetStringBytes("event_id"))
		}
		c.seen[id]++
		c.total++
	}
	c.mu.Unlock()
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// counts is a snapshot of the counter.
type counts struct {
	Distinct, Total, Requests, BadBodies int64
}

func (c *counter) snapshot() counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return counts{Distinct: int64(len(c.seen)), Total: c.total, Requests: c.requests, BadBodies: c.badBodies}
}

// account compares the acknowledged unique ids with what was delivered:
// lost are acked ids never delivered, doubled are ids delivered more than
// once, extra are delivered ids the generator never had acked (events of
// failed requests, or events sidetrack made itself).
func (c *counter) account(acked [][]string) (lost, doubled, extra int64, lostSample []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ackedSet := 0
	for _, ids := range acked {
		for _, id := range ids {
			ackedSet++
			if c.seen[id] == 0 {
				lost++
				if len(lostSample) < 5 {
					lostSample = append(lostSample, id)
				}
			}
		}
	}
	for _, n := range c.seen {
		if n > 1 {
			doubled++
		}
	}
	extra = int64(len(c.seen)) - (int64(ackedSet) - lost)
	return lost, doubled, extra, lostSample
}

// startServerChild starts the ceiling or the origin (kind) in its own
// process (this executable with childEnv set), under taskset when cpu ≥ 0.
func startServerChild(kind string, cpu int) (*child, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	ch, err := startChild(exe, nil, []string{childEnv + "=" + kind}, cpu, "")
	if err != nil {
		return nil, "", err
	}
	sc := bufio.NewScanner(ch.stdout)
	deadline := time.AfterFunc(30*time.Second, ch.kill)
	defer deadline.Stop()
	for sc.Scan() {
		var addr string
		if _, err := fmt.Sscanf(sc.Text(), "child listening %s", &addr); err == nil {
			go func() {
				for sc.Scan() {
				}
			}()
			return ch, "http://" + addr, nil
		}
	}
	ch.kill()
	return nil, "", fmt.Errorf("%s child did not start", kind)
}

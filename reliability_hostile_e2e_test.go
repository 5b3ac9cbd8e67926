package main

// Hostile input against the real binary (docs/reliability.md): boundary
// sizes, lying Content-Length, request smuggling, open-proxy attempts with
// a canary that must see no connection, forged and oversized cookies,
// header and cookie bombs, and slow clients holding many connections while
// ordinary traffic keeps succeeding.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingShop is an origin that marks its answers (X-Origin) and counts
// the requests it receives, so a test can tell its answers from
// sidetrack's own and spot a request the client never sent.
type countingShop struct {
	hits  atomic.Int64
	mu    sync.Mutex
	paths []string
}

func (s *countingShop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	s.paths = append(s.paths, r.URL.Path)
	s.mu.Unlock()
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("X-Origin", "1")
	if r.URL.Path == "/big" {
		// A large answer for slow readers.
		chunk := strings.Repeat("b", 64<<10)
		for range 64 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		return
	}
	io.WriteString(w, "shop")
}

// exchange writes raw to addr, half-closes, and reads every answer until
// sidetrack closes the connection. It returns the status codes and how
// many answers came from the origin.
func exchange(t *testing.T, addr, raw string) (codes []int, fromOrigin int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // failure guard
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return codes, fromOrigin
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.Header.Get("X-Origin") == "1" {
			fromOrigin++
		}
	}
}

// collectBody is a /collect JSON body of exactly n bytes (n ≥ 60): one
// event padded with whitespace, which JSON allows anywhere between tokens.
func collectBody(id string, n int) string {
	ev := `{"name":"reliability_probe","event_id":"` + id + `"}`
	return ev + strings.Repeat(" ", n-len(ev))
}

func TestReliabilityHostileInput(t *testing.T) {
	shop := &countingShop{}
	dir := t.TempDir()
	in := start(t, dir, testConfig(dir, origin(t, shop), "server: {read_timeout: 2s}\n"))
	addr := strings.TrimPrefix(in.base, "http://")
	const (
		maxBody   = 512 << 10 // ingest.max_body default
		maxHeader = 16 << 10  // server.max_header_bytes default
	)
	accepted := 0 // events answered 204, to be found in the ndjson file
	results := map[string]int{}

	t.Run("collect body boundaries", func(t *testing.T) {
		cases := []struct {
			size int
			want int
		}{{0, 400}, {maxBody - 1, 204}, {maxBody, 204}, {maxBody + 1, 413}}
		for _, tc := range cases {
			body := ""
			if tc.size > 0 {
				body = collectBody(fmt.Sprintf("size-%d", tc.size), tc.size)
			}
			raw := fmt.Sprintf("POST /collect HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\nAuthorization: Bearer server-key-0123456789\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			codes, _ := exchange(t, addr, raw)
			if len(codes) != 1 || codes[0] != tc.want {
				t.Errorf("body of %d bytes: answers %v, want [%d]", tc.size, codes, tc.want)
			}
			if tc.want == 204 {
				accepted++
			}
			results["body boundaries"]++
		}
	})

	t.Run("header and cookie boundaries", func(t *testing.T) {
		// The whole request head (request line, headers, blank line) is
		// what server.max_header_bytes bounds.
		head := func(name string, total int) string {
			prefix := "GET /page HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n" + name + ": "
			return prefix + strings.Repeat("a", total-len(prefix)-4) + "\r\n\r\n"
		}
		cases := []struct {
			name  string
			total int
			want  int
		}{
			{"X-Pad", 0, 200},
			{"X-Pad", maxHeader - 1, 200},
			{"X-Pad", maxHeader, 200},
			{"X-Pad", maxHeader + 1, 431},
			{"Cookie", maxHeader - 1, 200},
			{"Cookie", maxHeader, 200},
			{"Cookie", maxHeader + 1, 431},
		}
		for _, tc := range cases {
			raw := "GET /page HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
			if tc.total > 0 {
				raw = head(tc.name, tc.total)
			}
			codes, _ := exchange(t, addr, raw)
			if len(codes) != 1 || codes[0] != tc.want {
				t.Errorf("%s head of %d bytes: answers %v, want [%d]", tc.name, tc.total, codes, tc.want)
			}
			results["header boundaries"]++
		}
	})

	t.Run("bombs", func(t *testing.T) {
		var many, cookies strings.Builder
		for i := range 5000 {
			fmt.Fprintf(&many, "X-H%d: v\r\n", i)
			fmt.Fprintf(&cookies, "c%d=v; ", i)
		}
		for _, tc := range []struct {
			name, raw string
			want      int
		}{
			{"5000 headers", "GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n" + many.String() + "\r\n", 431},
			{"5000 cookies", "GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\nCookie: " + cookies.String() + "\r\n\r\n", 431},
			{"500 cookies on a beacon", "POST /collect HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\nConnection: close\r\nCookie: " +
				strings.Repeat("stk_did=x; ", 500) + "\r\nContent-Length: 46\r\n\r\n" + `{"name":"reliability_probe","event_id":"bomb"}`, 204},
		} {
			codes, _ := exchange(t, addr, tc.raw)
			if len(codes) != 1 || codes[0] != tc.want {
				t.Errorf("%s: answers %v, want [%d]", tc.name, codes, tc.want)
			}
			if tc.want == 204 {
				accepted++
			}
			results["bombs"]++
		}
	})

	t.Run("smuggling and lying lengths", func(t *testing.T) {
		next := "GET /smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n"
		cases := []struct{ name, raw string }{
			{"CL.TE", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + next},
			{"TE.CL", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n" + next},
			{"TE xchunked", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + next},
			{"TE space before colon", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + next},
			{"TE tab", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n" + next},
			{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + next},
			{"TE twice", "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n" + next},
			{"TE upper case", "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n" + next},
			{"duplicate CL", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" + next},
			{"CL with sign", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: +5\r\n\r\nhello" + next},
			{"CL hex", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0x5\r\n\r\nhello" + next},
			{"CL shorter than body", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2\r\n\r\nhello" + next},
			{"CL longer than body", "POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100\r\n\r\nhello" + next},
			{"chunk size overflow", "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff1\r\nx\r\n0\r\n\r\n" + next},
			{"bare LF", "POST / HTTP/1.1\nHost: shop.test\nContent-Length: 5\n\nhello" + next},
			{"collect CL.TE", "POST /collect HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer server-key-0123456789\r\nContent-Type: application/json\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + next},
		}
		for _, tc := range cases {
			before := shop.hits.Load()
			codes, fromOrigin := exchange(t, addr, tc.raw)
			seen := int(shop.hits.Load() - before)
			// Every request the origin got is one whose answer went back
			// to this client: nothing was smuggled past sidetrack's framing.
			if seen != fromOrigin {
				t.Errorf("%s: the origin saw %d requests, the client got %d of their answers (%v): desync", tc.name, seen, fromOrigin, codes)
			}
			if len(codes) == 0 {
				t.Errorf("%s: no answer at all", tc.name)
			}
			t.Logf("%s: answers %v, %d from the origin", tc.name, codes, fromOrigin)
			results["smuggling"]++
		}
	})

	t.Run("open proxy canary", func(t *testing.T) {
		canary, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var conns atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				c, err := canary.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				c.Close()
			}
		})
		ca := canary.Addr().String()
		for _, raw := range []string{
			"GET http://" + ca + "/steal HTTP/1.1\r\nHost: " + ca + "\r\n\r\n",
			"GET https://" + ca + "/steal HTTP/1.1\r\nHost: shop.test\r\n\r\n",
			"GET http://user:pw@" + ca + "/x HTTP/1.1\r\nHost: shop.test\r\n\r\n",
			"GET http://" + ca + "/ HTTP/1.0\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: " + ca + "\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-Host: " + ca + "\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: shop.test\r\nForwarded: host=" + ca + "\r\n\r\n",
			"GET //" + ca + "/x HTTP/1.1\r\nHost: shop.test\r\n\r\n",
			"CONNECT " + ca + " HTTP/1.1\r\nHost: " + ca + "\r\n\r\n",
			"POST http://" + ca + "/collect HTTP/1.1\r\nHost: " + ca + "\r\nContent-Length: 2\r\n\r\nhi",
			"GET /g/collect?tid=G-1&en=page_view&dl=http://" + ca + "/ HTTP/1.1\r\nHost: " + ca + "\r\n\r\n",
		} {
			codes, _ := exchange(t, addr, raw)
			if len(codes) == 0 {
				t.Errorf("no answer to %q", raw)
			}
			if len(codes) == 1 && codes[0] == 204 {
				accepted++ // the GA4 hit is a beacon like any other
			}
			results["open proxy"]++
		}
		canary.Close()
		wg.Wait()
		if n := conns.Load(); n != 0 {
			t.Fatalf("the canary saw %d connections: sidetrack reached a host the request named", n)
		}
	})

	t.Run("forged, oversized and replayed cookies", func(t *testing.T) {
		post := func(id, cookie string) (int, []*http.Cookie) {
			req, _ := http.NewRequest("POST", in.base+"/collect", strings.NewReader(`{"name":"reliability_probe","event_id":"`+id+`"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
			if cookie != "" {
				req.Header.Set("Cookie", cookie)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, resp.Cookies()
		}
		code, set := post("cookie-fresh", "")
		var did string
		for _, c := range set {
			if c.Name == "stk_did" {
				did = c.Value
			}
		}
		if code != 204 || did == "" {
			t.Fatalf("fresh beacon: %d, stk_did %q", code, did)
		}
		for _, tc := range []struct{ id, cookie string }{
			{"cookie-forged", "stk_did=forged-device-id-0000"},
			{"cookie-forged-mac", "stk_did=" + did[:len(did)-2] + "zz"},
			{"cookie-oversized", "stk_did=" + strings.Repeat("A", 8<<10)},
			{"cookie-binary", "stk_did=%00%ff%fe; stk_ses=@@@"},
			{"cookie-replayed", "stk_did=" + did},
		} {
			if code, _ := post(tc.id, tc.cookie); code != 204 {
				t.Errorf("%s: %d, want 204 (a bad cookie is replaced, never an error)", tc.id, code)
			}
			results["cookies"]++
		}
		accepted += 6
		evs := in.waitEvents(accepted)
		byID := map[string]map[string]any{}
		for _, e := range evs {
			if id, _ := e["event_id"].(string); id != "" {
				byID[id] = e
			}
		}
		fresh, _ := byID["cookie-fresh"]["device_id"].(string)
		for _, id := range []string{"cookie-forged", "cookie-forged-mac", "cookie-oversized", "cookie-binary"} {
			dev, _ := byID[id]["device_id"].(string)
			if dev == "" || dev == fresh || strings.Contains(dev, "forged") || strings.Contains(dev, "AAAA") {
				t.Errorf("%s: device_id %q (fresh one %q): a forged cookie was believed", id, dev, fresh)
			}
		}
		if dev, _ := byID["cookie-replayed"]["device_id"].(string); dev != fresh {
			t.Errorf("replayed cookie: device_id %q, want the same pseudonymous id %q", dev, fresh)
		}
	})

	t.Run("slow clients", func(t *testing.T) {
		attackers := 200
		if reliabilityLong() {
			attackers = 2000
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var opened atomic.Int64
		slow := func(kind int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("tcp", addr)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				opened.Add(1)
				var first string
				switch kind {
				case 0: // slowloris: a head that never ends
					first = "GET / HTTP/1.1\r\nHost: shop.test\r\n"
				case 1: // slow body
					first = "POST /collect HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
				default: // slow reader: asks for 4 MiB and reads nothing
					first = "GET /big HTTP/1.1\r\nHost: shop.test\r\n\r\n"
				}
				_, _ = io.WriteString(c, first)
				for alive := true; alive; {
					select {
					case <-stop:
						c.Close()
						return
					case <-time.After(200 * time.Millisecond):
						if kind < 2 {
							_, err := io.WriteString(c, "x")
							alive = err == nil
						} else {
							// Reading nothing; the server gives up on its own.
							_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
							_, err := c.Read(make([]byte, 1))
							alive = err == nil || isTimeout(err)
						}
					}
				}
				c.Close()
			}
		}
		for i := range attackers {
			wg.Add(1)
			go slow(i % 3)
		}
		// Ordinary traffic while they hold their connections.
		for opened.Load() < int64(attackers) {
			time.Sleep(10 * time.Millisecond)
		}
		client := &http.Client{Timeout: 30 * time.Second}
		ok, failed := 0, 0
		normal := 200
		for i := range normal {
			var code int
			if i%2 == 0 {
				code = postEvent(client, in.base, fmt.Sprintf("during-slow-%d", i))
				if code == 204 {
					accepted++
				}
			} else if resp, err := client.Get(in.base + "/page"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			if code == 204 || code == 200 {
				ok++
			} else {
				failed++
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("slow clients: %d attackers (slowloris, slow body, slow reader) opened %d connections; ordinary requests ok %d, failed %d",
			attackers, opened.Load(), ok, failed)
		if failed > 0 {
			t.Errorf("%d of %d ordinary requests failed while slow clients held connections", failed, normal)
		}
		results["slow clients"] = int(opened.Load())
	})

	// Nothing hostile was turned into an event, and every 204 was.
	evs := in.waitEvents(accepted)
	if len(evs) != accepted {
		t.Errorf("%d events written, want the %d answered 204", len(evs), accepted)
	}
	t.Logf("hostile input: %v requests by kind; %d events accepted and written", results, len(evs))
	in.stop()
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

package proxy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
)

func gz(t testing.TB, parts ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, p := range parts {
		zw := gzip.NewWriter(&out)
		if _, err := zw.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func TestReadBodyOverTheWire(t *testing.T) {
	const limit = 100 << 10 // larger than fasthttp's 8 KiB prefetch
	o := newOrigin(t, nil)
	p := startProxy(t, testConfig(o.URL), Options{}, func(s *Server) {
		s.addTracking("/echo", RouteCollect, func(ctx *fasthttp.RequestCtx) {
			body, err := readBody(ctx, limit, nil)
			switch {
			case errors.Is(err, errBodyTooLarge):
				ctx.SetStatusCode(413)
			case err != nil:
				ctx.SetStatusCode(400)
			default:
				ctx.SetStatusCode(200)
				fmt.Fprintf(ctx, "%d %s", len(body), patternSumBytes(body))
			}
		})
	})
	tests := []struct {
		name string
		raw  string
		want int
		n    int
	}{
		{"small", post(1000, false), 200, 1000},
		{"empty", post(0, false), 200, 0},
		{"at limit", post(limit, false), 200, limit},
		{"over limit", post(limit+1, false), 413, 0},
		{"chunked within", post(limit, true), 200, limit},
		{"chunked over", post(limit+1, true), 413, 0},
		// A Content-Length over the limit is refused without waiting for
		// the rest of a body that never comes (fasthttp itself waits for
		// its 8 KiB prefetch before calling the handler).
		{"huge declared, little sent", "POST /echo HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1073741824\r\n\r\n" + strings.Repeat("x", 16<<10), 413, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawExchange(t, p.addr, tc.raw, "POST")
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want == 200 {
				want := fmt.Sprintf("%d %s", tc.n, patternSumBytes(patternBytes(tc.n)))
				if string(body) != want {
					t.Errorf("handler read %q, want %q", body, want)
				}
			}
		})
	}
	if o.hits.Load() != 0 {
		t.Error("tracking route fell through to the origin")
	}
}

func post(n int, chunked bool) string {
	body := string(patternBytes(n))
	if chunked {
		var b strings.Builder
		for len(body) > 0 {
			k := min(len(body), 7000)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", k, body[:k])
			body = body[k:]
		}
		b.WriteString("0\r\n\r\n")
		return "POST /echo HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + b.String()
	}
	return "POST /echo HTTP/1.1\r\nHost: shop.test\r\nContent-Length: " + strconv.Itoa(n) + "\r\nConnection: close\r\n\r\n" + body
}

func patternBytes(n int) []byte {
	b, _ := io.ReadAll(&patternReader{n: n})
	return b
}

func patternSumBytes(b []byte) string {
	var sum uint64
	for i, c := range b {
		sum = sum*31 + uint64(c) + uint64(i)
	}
	return strconv.FormatUint(sum, 16)
}

func TestReadBodyBuffered(t *testing.T) {
	// Without StreamRequestBody (in-process callers) the body is in memory.
	var ctx fasthttp.RequestCtx
	ctx.Request.SetBodyString("hello")
	dst := make([]byte, 0, 64)
	got, err := readBody(&ctx, 5, dst)
	if err != nil || string(got) != "hello" || &got[0] != &dst[:1][0] {
		t.Errorf("readBody = %q, %v (aliases dst: %v)", got, err, err == nil && &got[0] == &dst[:1][0])
	}
	if _, err := readBody(&ctx, 4, nil); !errors.Is(err, errBodyTooLarge) {
		t.Errorf("over limit: %v", err)
	}
}

func TestGunzipLimited(t *testing.T) {
	s := &Server{}
	hello := []byte("hello, gzip")
	zeros := make([]byte, 16<<20)
	valid := gz(t, hello)
	corrupt := bytes.Clone(valid)
	corrupt[len(corrupt)-5] ^= 0xff // CRC
	tests := []struct {
		name  string
		src   []byte
		limit int
		want  []byte
		err   error
	}{
		{"valid", valid, 100, hello, nil},
		{"exactly the limit", valid, len(hello), hello, nil},
		{"one byte over", valid, len(hello) - 1, nil, errBodyTooLarge},
		{"two members", gz(t, []byte("ab"), []byte("cd")), 100, []byte("abcd"), nil},
		{"empty payload", gz(t, nil), 10, []byte{}, nil},
		{"zip bomb", gz(t, zeros), 1 << 20, nil, errBodyTooLarge},
		{"truncated", valid[:len(valid)-6], 100, nil, errBadGzip},
		{"bad checksum", corrupt, 100, nil, errBadGzip},
		{"not gzip", []byte("plain text"), 100, nil, errBadGzip},
		{"empty input", nil, 100, nil, errBadGzip},
		{"trailing garbage", append(bytes.Clone(valid), "junk"...), 100, nil, errBadGzip},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.gunzipLimited(nil, tc.src, tc.limit)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && !bytes.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGunzipBombStaysSmall(t *testing.T) {
	s := &Server{}
	bomb := gz(t, make([]byte, 64<<20))
	const limit = 1 << 20
	var err error
	alloc := allocDuring(func() { _, err = s.gunzipLimited(nil, bomb, limit) })
	if !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if alloc > 4*limit {
		t.Errorf("a 64 MiB bomb with a 1 MiB limit allocated %d bytes", alloc)
	}
}

func TestGunzipReusesDstAndPool(t *testing.T) {
	s := &Server{}
	src := gz(t, []byte("payload"))
	dst := make([]byte, 0, 1024)
	got, err := s.gunzipLimited(dst, src, 1024)
	if err != nil || &got[0] != &dst[:1][0] {
		t.Fatalf("dst not reused: %v", err)
	}
	// sync.Pool drops items at random under the race detector.
	if n := testing.AllocsPerRun(100, func() { got, _ = s.gunzipLimited(got, src, 1024) }); n > 0 && !raceEnabled() {
		t.Errorf("warm gunzipLimited allocates %.1f times", n)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := strings.Repeat(strconv.Itoa(i), 1000)
			z := gz(t, []byte(want))
			for range 50 {
				out, err := s.gunzipLimited(nil, z, 2000)
				if err != nil || string(out) != want {
					t.Errorf("concurrent gunzip: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// raceEnabled reports a -race build (from the build settings, so no
// build-tagged file is needed).
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, kv := range bi.Settings {
		if kv.Key == "-race" && kv.Value == "true" {
			return true
		}
	}
	return false
}

func TestIsGzip(t *testing.T) {
	tests := []struct {
		b    []byte
		want bool
	}{
		{[]byte{0x1f, 0x8b, 8, 0}, true},
		{[]byte{0x1f, 0x8b, 8}, true},
		{[]byte{0x1f, 0x8b}, false},
		{[]byte{0x1f, 0x8b, 9}, false},
		{[]byte(`{"a":1}`), false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := isGzip(tc.b); got != tc.want {
			t.Errorf("isGzip(%x) = %v", tc.b, got)
		}
	}
}

func FuzzGunzipLimited(f *testing.F) {
	f.Add(gz(f, []byte("hello")), uint16(100))
	f.Add(gz(f, []byte("a"), []byte("b")), uint16(1))
	f.Add(gz(f, make([]byte, 5000)), uint16(4096))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0}, uint16(10))
	f.Add([]byte("not gzip"), uint16(10))
	s := &Server{}
	f.Fuzz(func(t *testing.T, src []byte, limit uint16) {
		got, err := s.gunzipLimited(nil, src, int(limit))
		if err != nil {
			if !errors.Is(err, errBodyTooLarge) && !errors.Is(err, errBadGzip) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(got) > int(limit) {
			t.Fatalf("%d bytes out, limit %d", len(got), limit)
		}
		// Cross-check the data with the standard library. klauspost is
		// more lenient about a broken header after a complete member
		// (stdlib says unexpected EOF); the decoded bytes must still agree.
		zr, zerr := gzip.NewReader(bytes.NewReader(src))
		if zerr != nil {
			t.Fatalf("stdlib rejects the first header we accepted: %v", zerr)
		}
		want, _ := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
		if !bytes.Equal(want, got) {
			t.Fatalf("stdlib decodes %q, we decode %q", want, got)
		}
	})
}

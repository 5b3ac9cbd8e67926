package enrich

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func idFuzzSigner() *cookieSigner {
	return newCookieSigner([]string{"fuzz-secret-new-0123456789", "fuzz-secret-old-0123456789"})
}

// FuzzDeviceCookie: arbitrary values never panic, and whatever verifies
// re-seals to a value that verifies to the same id.
func FuzzDeviceCookie(f *testing.F) {
	s := idFuzzSigner()
	sc := s.get()
	f.Add(string(sc.sealDevice([16]byte{1, 2, 3})))
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add(strings.Repeat("_", 44))
	f.Add("not a cookie")
	s.put(sc)
	f.Fuzz(func(t *testing.T, v string) {
		sc := s.get()
		defer s.put(sc)
		id, vr := sc.openDevice(v)
		if vr < ckStale {
			return
		}
		again, vr2 := sc.openDevice(string(sc.sealDevice(id)))
		if vr2 != ckOK || again != id {
			t.Fatalf("round trip: %v %x vs %x", vr2, again, id)
		}
	})
}

// FuzzSessionCookie: arbitrary values and devices never panic; a sealed
// session opens to what was sealed, only for its own device.
func FuzzSessionCookie(f *testing.F) {
	s := idFuzzSigner()
	sc := s.get()
	f.Add(string(sc.sealSession([16]byte{9}, [16]byte{1}, idT0)), byte(1), int64(0))
	f.Add("", byte(0), int64(-1))
	f.Add(strings.Repeat("A", 55), byte(0), int64(1<<62))
	s.put(sc)
	f.Fuzz(func(t *testing.T, v string, devByte byte, unix int64) {
		sc := s.get()
		defer s.put(sc)
		dev := [16]byte{devByte}
		sc.openSession(v, dev)

		sid := [16]byte{devByte, 7}
		at := time.Unix(unix%(1<<40), 0)
		sealed := string(sc.sealSession(sid, dev, at))
		got, last, vr := sc.openSession(sealed, dev)
		if vr != ckOK || got != sid || (unix%(1<<40) >= 0 && !last.Equal(at)) {
			t.Fatalf("round trip: %v %x %v", vr, got, last)
		}
		other := dev
		other[15] ^= 1
		if _, _, vr := sc.openSession(sealed, other); vr != ckBad {
			t.Fatal("session verified for another device")
		}
	})
}

// FuzzTouchesCookie: arbitrary values never panic; arbitrary touches seal
// into ≤ 1 KiB and open to their (rune-safely truncated) fields.
func FuzzTouchesCookie(f *testing.F) {
	s := idFuzzSigner()
	f.Add("", "google", "cpc", "spring", "Paid Search", "gclid", int64(1700000000))
	f.Add("garbage", strings.Repeat("é", 200), "", strings.Repeat("x", 500), "", "", int64(-5))
	f.Add(strings.Repeat("A", 1100), "\xff\xfe", "m", "c", "ch", "k", int64(0))
	f.Fuzz(func(t *testing.T, v, src, med, camp, ch, kind string, at int64) {
		sc := s.get()
		defer s.put(sc)
		dev := [16]byte{3}
		sc.openTouches(v, dev)

		tc := Touch{Source: src, Medium: med, Campaign: camp, Channel: ch, ClickIDKind: kind}
		if at > 0 {
			tc.At = time.Unix(at%(1<<36), 0)
		}
		var zero Touch
		val := sc.sealTouches(&tc, &zero, dev, 20000)
		if tc.IsZero() {
			if val != nil {
				t.Fatal("zero touches sealed")
			}
			return
		}
		if len(val) > 1024 {
			t.Fatalf("touches cookie is %d bytes", len(val))
		}
		first, last, written, vr := sc.openTouches(string(val), dev)
		if vr != ckOK || !first.ok || last.ok || written != 20000 {
			t.Fatalf("open: %v %v %v %d", vr, first.ok, last.ok, written)
		}
		for _, p := range []struct {
			got  []byte
			in   string
			capN int
		}{{first.source, src, ckMaxSource}, {first.medium, med, ckMaxMedium}, {first.campaign, camp, ckMaxCampaign}, {first.channel, ch, ckMaxChannel}, {first.clickKind, kind, ckMaxClickKin}} {
			if !strings.HasPrefix(p.in, string(p.got)) || len(p.got) > p.capN {
				t.Fatalf("field %q from %q", p.got, p.in)
			}
			if utf8.ValidString(p.in) && !utf8.Valid(p.got) {
				t.Fatalf("truncation split a rune: %q", p.got)
			}
		}
	})
}

func FuzzGACookie(f *testing.F) {
	for _, s := range []string{"GA1.1.585712067.1795442481", "GA1.2.1.2", "GA1.1.", "GA1..1.2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		cid, ok := ParseGACookie(v)
		if ok && (!strings.HasSuffix(v, cid) || strings.Count(cid, ".") != 1) {
			t.Fatalf("cid %q from %q", cid, v)
		}
		if !ok && cid != "" {
			t.Fatal("cid without ok")
		}
	})
}

func FuzzGASessionCookie(f *testing.F) {
	for _, s := range []string{
		"GS1.1.1689765380.3.1.1689766550.0.0.0",
		"GS2.1.s1795442481$o1$g0$t1795442481$j60$l0$h679041404",
		"GS2.1.$$$", "GS1.1....", "GS2.1.s$o", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, ok := ParseGASessionCookie(v)
		if ok && (s.ID == "" || s.Number <= 0 || !strings.Contains(v, s.ID)) {
			t.Fatalf("%+v from %q", s, v)
		}
		if !ok && s != (GASession{}) {
			t.Fatal("session without ok")
		}
	})
}

func FuzzFBCookie(f *testing.F) {
	for _, s := range []string{"fb.1.1554763741205.1098115397", "fb.1.1.a.b", "fb..1.x", "fb.1.1.", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ok := ValidFBCookie(v)
		ms := FBCookieMillis(v)
		if !ok && ms != 0 {
			t.Fatalf("ms %d for invalid %q", ms, v)
		}
		if ok {
			parts := strings.SplitN(v, ".", 4)
			if len(parts) != 4 || parts[0] != "fb" || parts[3] == "" || strconv.FormatInt(ms, 10) != strings.TrimLeft(parts[2], "0") && ms != 0 {
				t.Fatalf("valid %q parsed as ms %d", v, ms)
			}
		}
		if ok && (strings.ContainsAny(v, " ;,\"\\") || len(v) > 512) {
			t.Fatalf("unsafe value accepted: %q", v)
		}
	})
}

// FuzzCookieScope: no Host header panics, and a Domain is always a suffix
// of the host that has a dot.
func FuzzCookieScope(f *testing.F) {
	for _, s := range []string{"shop.example.co.uk:8443", "[::1]:80", "a.myshopify.com", "localhost", ".", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		s := cookieScopeOf(host)
		if s.domain != "" && (!strings.Contains(s.domain, ".") || !strings.Contains(strings.ToLower(host), s.domain)) {
			t.Fatalf("domain %q for host %q", s.domain, host)
		}
	})
}

// idBenchSetup returns an identity and a returning visitor's request.
func idBenchSetup(b *testing.B) (*Identity, *Request) {
	clk := &idClock{t: idT0}
	id := idNew(b, idConfig("bench-secret-0123456789"), clk)
	req := idReq("shop.example.com")
	req.ReceivedAt = clk.now()
	e := idEvent(SourceGA4)
	id.Apply(req, e, &EventResult{})
	e.Attribution.FirstTouch = Touch{Source: "google", Medium: "cpc", Campaign: "spring", Channel: "Paid Search", ClickIDKind: "gclid", At: idT0}
	e.Attribution.LastTouch = e.Attribution.FirstTouch
	res := &Result{}
	id.Finish(req, []*Event{e}, res)
	ret := idReq("shop.example.com", res.Cookies...)
	ret.Cookies = append(ret.Cookies,
		Cookie{"_ga", "GA1.1.585712067.1795442481"},
		Cookie{"_ga_TEST123", "GS2.1.s1795442481$o1$g0$t1795442481$j60$l0$h679041404"})
	ret.ReceivedAt = clk.now().Add(time.Minute)
	return id, ret
}

// BenchmarkIdentityApplyReturning: a returning visitor with valid device,
// session, touches, _fbp and GA cookies (target: 0 allocs).
func BenchmarkIdentityApplyReturning(b *testing.B) {
	id, req := idBenchSetup(b)
	var pool EventPool
	var r EventResult
	b.ReportAllocs()
	done := benchCPU(b)
	for b.Loop() {
		e := pool.Get()
		e.Source = SourceGA4
		e.GAMeasurementID = "G-TEST123"
		id.Apply(req, e, &r)
		pool.Put(e)
	}
	done()
}

// BenchmarkIdentityFinishReturning: the per-request cookie work for the
// same visitor (one event).
func BenchmarkIdentityFinishReturning(b *testing.B) {
	id, req := idBenchSetup(b)
	e := &Event{Source: SourceGA4, GAMeasurementID: "G-TEST123"}
	id.Apply(req, e, &EventResult{})
	events := []*Event{e}
	res := &Result{}
	n := len(req.Cookies)
	b.ReportAllocs()
	done := benchCPU(b)
	for b.Loop() {
		res.Reset()
		req.Cookies = req.Cookies[:n]
		id.Finish(req, events, res)
		req.arena = req.arena[:0]
	}
	done()
}

// BenchmarkIdentityApplyNewVisitor: first hit, minting ids and _fbp.
func BenchmarkIdentityApplyNewVisitor(b *testing.B) {
	clk := &idClock{t: idT0}
	id := idNew(b, idConfig("bench-secret-0123456789"), clk)
	var pool EventPool
	req := idReq("shop.example.com")
	req.ReceivedAt = idT0
	var r EventResult
	b.ReportAllocs()
	done := benchCPU(b)
	for b.Loop() {
		req.Cookies = req.Cookies[:0]
		req.arena = req.arena[:0]
		e := pool.Get()
		id.Apply(req, e, &r)
		pool.Put(e)
	}
	done()
}

// benchCPU reports the process CPU time per op ("cpu-ns/op") next to the
// wall-clock ns/op: on a shared 2-core machine the wall clock includes
// time stolen by neighbours, the CPU time does not. Call the returned
// function after the loop.
func benchCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// BenchmarkIdentityApplyCookieless: analytics denied, the daily id.
func BenchmarkIdentityApplyCookieless(b *testing.B) {
	clk := &idClock{t: idT0}
	id := idNew(b, idConfig("bench-secret-0123456789"), clk)
	var pool EventPool
	req := idReq("shop.example.com")
	req.ReceivedAt = idT0
	var r EventResult
	b.ReportAllocs()
	done := benchCPU(b)
	for b.Loop() {
		e := pool.Get()
		e.Consent.Analytics, e.Consent.Ads = Denied, Denied
		id.Apply(req, e, &r)
		pool.Put(e)
	}
	done()
}

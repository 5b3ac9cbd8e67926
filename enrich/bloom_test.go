package enrich

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// ddKey returns a distinct, well-mixed key per (ns, i), as real keys are
// SHA-256 output.
func ddKey(ns string, i int) [16]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	s := sha256.Sum256(append([]byte(ns), b[:]...))
	var k [16]byte
	copy(k[:], s[:16])
	return k
}

func TestBloomSizing(t *testing.T) {
	// 10 M keys per window at 1e-4: each of the 4 generations holds a
	// third of the window's keys at 1e-4/4, in 16 stripes.
	m, k := bloomSizing(10_000_000, 1e-4)
	perStripe := math.Ceil(math.Ceil(10_000_000.0/3) / bloomStripes)
	wantM := math.Ceil(-perStripe * math.Log(1e-4/4) / (math.Ln2 * math.Ln2))
	if float64(m) != wantM || k != 16 {
		t.Fatalf("m=%d k=%d, want m=%.0f k=16", m, k, wantM)
	}
	b := newRotatingBloom(10_000_000, 1e-4, 48*time.Hour, 0)
	t.Logf("10M keys @1e-4: %d bits per stripe, %d stripes, %d hash functions, %.1f MiB for %d generations",
		m, bloomStripes, k, float64(b.bits())/8/(1<<20), bloomGenerations)
	if mib := float64(b.bits()) / 8 / (1 << 20); mib < 35 || mib > 38 {
		t.Errorf("%.1f MiB, documented as ≈ 35.1 MiB", mib)
	}
}

// The measured heap of a filter for 10 M keys at 1e-4 with every
// generation present matches what the bit size predicts (docs/dedup.md).
func TestBloomMemoryMeasured(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	window := 48 * time.Hour
	b := newRotatingBloom(10_000_000, 1e-4, window, 0)
	for i := int64(1); i < bloomGenerations; i++ {
		b.rotate(i * b.span)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(b.gens.Load().g) != bloomGenerations {
		t.Fatalf("%d generations", len(b.gens.Load().g))
	}
	got := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	want := float64(b.bits()) / 8
	t.Logf("measured %.1f MiB, computed %.1f MiB", got/(1<<20), want/(1<<20))
	if got < 0.97*want || got > 1.05*want {
		t.Errorf("measured %.0f bytes, computed %.0f", got, want)
	}
	// Rotation keeps it flat.
	for i := int64(bloomGenerations); i < 3*bloomGenerations; i++ {
		b.rotate(i * b.span)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := float64(after.HeapAlloc) - float64(before.HeapAlloc); got > 1.05*want {
		t.Errorf("after rotations: %.0f bytes, computed %.0f", got, want)
	}
	runtime.KeepAlive(b)
}

func TestBloomRetention(t *testing.T) {
	window := 30 * time.Hour
	b := newRotatingBloom(1000, 1e-6, window, 0)
	span := b.span
	// Keys added across a span, each checked at its own deadlines.
	for _, off := range []int64{0, 1, span / 2, span - 1} {
		b := newRotatingBloom(1000, 1e-6, window, 0)
		key := ddKey("ret", int(off))
		b.rotate(3*span + off)
		b.add(key[:])
		at := 3*span + off
		b.rotate(at + int64(window))
		if !b.test(key[:]) {
			t.Errorf("offset %d: forgotten before the window passed", off)
		}
		b.rotate(at + int64(window) + span)
		if b.test(key[:]) {
			t.Errorf("offset %d: still present window+span later", off)
		}
		if len(b.gens.Load().g) > bloomGenerations {
			t.Errorf("%d generations", len(b.gens.Load().g))
		}
	}
	// Idle for longer than the window: everything is forgotten at once.
	key := ddKey("idle", 0)
	b.add(key[:])
	b.rotate(10 * int64(window))
	if b.test(key[:]) || len(b.gens.Load().g) != 1 {
		t.Errorf("after a long idle: present=%v gens=%d", b.test(key[:]), len(b.gens.Load().g))
	}
	if b.next.Load() <= 10*int64(window) {
		t.Error("next rotation not in the future")
	}
}

func TestBloomFalsePositiveRate(t *testing.T) {
	capacity, fp := 300_000, 1e-3
	if testing.Short() {
		capacity = 60_000
	}
	window := 3 * time.Hour
	b := newRotatingBloom(int64(capacity), fp, window, 0)
	// A full window of keys spread evenly, so every generation is loaded
	// as sized.
	for i := range capacity {
		now := int64(window) * int64(i) / int64(capacity)
		b.rotate(now)
		k := ddKey("in", i)
		b.add(k[:])
	}
	probes, hits := 200_000, 0
	for i := range probes {
		k := ddKey("out", i)
		if b.test(k[:]) {
			hits++
		}
	}
	rate := float64(hits) / float64(probes)
	t.Logf("false-positive rate %.5f (target %.5f)", rate, fp)
	if rate > 2*fp {
		t.Errorf("false-positive rate %.5f above 2× the target %.5f", rate, fp)
	}
}

func TestBloomSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dedup.bloom")
	window := 30 * time.Hour
	span := int64(window) / (bloomGenerations - 1)
	b := newRotatingBloom(5000, 1e-4, window, 0)
	for g := range 3 {
		b.rotate(int64(g) * span)
		for i := range 100 {
			k := ddKey("snap", g*1000+i)
			b.add(k[:])
		}
	}
	if err := b.writeSnapshot(path, 2*span+5); err != nil {
		t.Fatal(err)
	}
	r := newRotatingBloom(5000, 1e-4, window, 2*span+10)
	written, err := r.readSnapshot(path, 2*span+10)
	if err != nil {
		t.Fatal(err)
	}
	if written != 2*span+5 {
		t.Errorf("written %d", written)
	}
	for g := range 3 {
		for i := range 100 {
			if k := ddKey("snap", g*1000+i); !r.test(k[:]) {
				t.Fatalf("generation %d key %d lost", g, i)
			}
		}
	}
	// Read later: the generations that left the window meanwhile are gone.
	late := newRotatingBloom(5000, 1e-4, window, 0)
	if _, err := late.readSnapshot(path, 4*span); err != nil {
		t.Fatal(err)
	}
	if k := ddKey("snap", 0); late.test(k[:]) {
		t.Error("generation 0 survived past its lifetime")
	}
	if k := ddKey("snap", 2000); !late.test(k[:]) {
		t.Error("generation 2 lost")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestBloomSnapshotRejects(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	window := 30 * time.Hour
	b := newRotatingBloom(5000, 1e-4, window, 0)
	k := ddKey("x", 1)
	b.add(k[:])
	if err := b.writeSnapshot(good, 1); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := append([]byte(nil), data...)
		c[i] ^= 0x40
		return c
	}
	tests := []struct {
		name     string
		data     []byte
		settings *rotatingBloom // nil: same settings as written
		mismatch bool
	}{
		{"empty", nil, nil, false},
		{"garbage", []byte("not a snapshot at all, definitely not"), nil, false},
		{"truncated", data[:len(data)/2], nil, false},
		{"bit flip in bits", flip(len(data) / 2), nil, false},
		{"bit flip in header", flip(20), nil, false},
		{"bit flip in checksum", flip(len(data) - 1), nil, false},
		{"other capacity", data, newRotatingBloom(50_000, 1e-4, window, 0), true},
		{"other window", data, newRotatingBloom(5000, 1e-4, 2*window, 0), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "case")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			r := tc.settings
			if r == nil {
				r = newRotatingBloom(5000, 1e-4, window, 0)
			}
			gens := r.gens.Load()
			_, err := r.readSnapshot(path, 1)
			if err == nil {
				t.Fatal("accepted")
			}
			if errors.Is(err, errSnapshotMismatch) != tc.mismatch {
				t.Errorf("error %v, mismatch want %v", err, tc.mismatch)
			}
			if r.gens.Load() != gens || r.test(k[:]) {
				t.Error("filter changed by a rejected snapshot")
			}
		})
	}
}

// Adds, tests, rotations and snapshots at once (run with -race): a key is
// found from the moment its add returns, whichever generation took it.
func TestBloomConcurrent(t *testing.T) {
	window := 30 * time.Hour
	b := newRotatingBloom(100_000, 1e-4, window, 0)
	path := filepath.Join(t.TempDir(), "dedup.bloom")
	const workers, perWorker = 4, 5000
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k := ddKey("conc", w*perWorker+i)
				b.add(k[:])
				if !b.test(k[:]) {
					errs <- fmt.Sprintf("worker %d key %d missing right after add", w, i)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// n-1 rotations: no generation that took a key is dropped.
		for r := int64(1); r < bloomGenerations; r++ {
			b.rotate(r * b.span)
			if err := b.writeSnapshot(path, r*b.span); err != nil {
				errs <- err.Error()
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	for i := range workers * perWorker {
		if k := ddKey("conc", i); !b.test(k[:]) {
			t.Fatalf("key %d lost", i)
		}
	}
	if n := len(b.gens.Load().g); n != bloomGenerations {
		t.Errorf("%d generations", n)
	}
}

// The snapshot body parser (what follows a verified checksum) never panics
// and never allocates beyond the configured sizing, whatever the bytes.
func FuzzBloomSnapshotBody(f *testing.F) {
	const window = time.Hour
	b := newRotatingBloom(1000, 1e-2, window, 0)
	for i := range 50 {
		k := ddKey("fz", i)
		b.add(k[:])
	}
	b.rotate(b.span)
	path := filepath.Join(f.TempDir(), "seed")
	if err := b.writeSnapshot(path, b.span); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	body := data[:len(data)-8]
	f.Add(body)
	f.Add(body[:len(body)/3])
	f.Add(body[:bloomSnapHdrLen])
	f.Add([]byte(bloomSnapMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newRotatingBloom(1000, 1e-2, window, 0)
		_, gs, err := r.parseSnapshotBody(bufio.NewReader(bytes.NewReader(data)), 2*r.span)
		if err == nil && (len(gs.g) == 0 || len(gs.g) > bloomGenerations) {
			t.Fatalf("accepted %d generations", len(gs.g))
		}
	})
}

func BenchmarkBloomTest(b *testing.B) {
	f := newRotatingBloom(10_000_000, 1e-4, 48*time.Hour, 0)
	for i := int64(1); i < bloomGenerations; i++ {
		f.rotate(i * f.span)
	}
	keys := make([][16]byte, 1024)
	for i := range keys {
		keys[i] = ddKey("b", i)
		f.add(keys[i][:])
	}
	b.Run("present", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f.test(keys[i&1023][:])
		}
	})
	b.Run("absent", func(b *testing.B) {
		absent := make([][16]byte, 1024)
		for i := range absent {
			absent[i] = ddKey("a", i)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f.test(absent[i&1023][:])
		}
	})
}

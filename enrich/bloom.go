package enrich

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/cespare/xxhash/v2"
)

// bloomGenerations is the number of rotating generations. A key lives in
// the generation that was current when it was added and is forgotten when
// that generation is dropped, bloomGenerations-1 spans later at the
// earliest: with span = window/(n-1) a key is remembered for at least the
// window and at most window+span. Four generations keep that overshoot at a
// third of the window for ~1.5× the memory of one ideal filter (two would
// need ~2.1×, one filter cannot forget at all).
const bloomGenerations = 4

// bloomMinKeys is the smallest generation sizing, so a tiny configured
// capacity (tests) does not yield a filter that saturates at once.
const bloomMinKeys = 1024

// rotatingBloom is a time-windowed Bloom filter (DESIGN §4 "Dedup"): keys
// are added to the current generation and tested against all of them.
// Memory is flat however long it runs: a rotation allocates one generation
// and drops the oldest.
//
// Generations are immutable once they stop being current, which lets a
// snapshot write them without holding the lock.
type rotatingBloom struct {
	mu   sync.RWMutex
	gens []bloomGen // oldest first; the last is current
	n    int
	span int64 // ns
	m, k uint  // per generation
	// next is when the current generation's span ends (unix ns), read
	// without the lock on every check.
	next atomic.Int64
}

type bloomGen struct {
	start int64 // unix ns; generation starts are span-aligned
	f     *bloom.BloomFilter
}

// bloomSizing returns the per-generation bits and hash count for capacity
// keys per window at false-positive rate fp across all generations: each
// generation holds the keys of one span (capacity/(n-1)) and a test
// consults n of them, so each gets fp/n.
func bloomSizing(capacity int64, fp float64) (m, k uint) {
	perGen := max(uint(math.Ceil(float64(capacity)/float64(bloomGenerations-1))), bloomMinKeys)
	return bloom.EstimateParameters(perGen, fp/bloomGenerations)
}

func newRotatingBloom(capacity int64, fp float64, window time.Duration, now int64) *rotatingBloom {
	m, k := bloomSizing(capacity, fp)
	b := &rotatingBloom{n: bloomGenerations, span: max(int64(window)/(bloomGenerations-1), 1), m: m, k: k}
	b.gens = []bloomGen{{start: now, f: bloom.New(m, k)}}
	b.next.Store(now + b.span)
	return b
}

// bits is the filter's total size in bits when every generation exists.
func (b *rotatingBloom) bits() uint64 { return uint64(b.m) * uint64(b.n) }

// rotate starts new generations until the current one covers now.
func (b *rotatingBloom) rotate(now int64) {
	if now < b.next.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rotateLocked(now)
}

func (b *rotatingBloom) rotateLocked(now int64) {
	cur := b.gens[len(b.gens)-1].start
	if now < cur+b.span {
		return
	}
	steps := (now - cur) / b.span
	if steps >= int64(b.n) {
		// Idle for longer than the whole window: everything is forgotten.
		// Reuse the newest filter rather than allocating.
		f := b.gens[len(b.gens)-1].f
		f.ClearAll()
		b.gens = append(b.gens[:0], bloomGen{start: cur + steps*b.span, f: f})
	} else {
		for i := int64(1); i <= steps; i++ {
			g := bloomGen{start: cur + i*b.span, f: bloom.New(b.m, b.k)}
			if len(b.gens) == b.n {
				// Drop the oldest. Its filter is not reused: a snapshot may
				// still be writing it.
				copy(b.gens, b.gens[1:])
				b.gens[len(b.gens)-1] = g
			} else {
				b.gens = append(b.gens, g)
			}
		}
	}
	b.next.Store(b.gens[len(b.gens)-1].start + b.span)
}

// test reports whether any generation may hold key.
func (b *rotatingBloom) test(key []byte) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	// Newest first: a duplicate is most likely recent.
	for i := len(b.gens) - 1; i >= 0; i-- {
		if b.gens[i].f.Test(key) {
			return true
		}
	}
	return false
}

// add inserts key into the current generation.
func (b *rotatingBloom) add(key []byte) {
	b.mu.Lock()
	b.gens[len(b.gens)-1].f.Add(key)
	b.mu.Unlock()
}

// Snapshot file (cfg.Spool.Dir/dedup.bloom):
//
//	"STKBLOOM" | version u32 | written ns i64 | span ns i64 | m u64 | k u64 | count u32 |
//	count × (start ns i64 | BloomFilter.WriteTo) | xxhash64 of all before it
//
// Big-endian. The checksum is verified before anything is parsed, so a torn
// or corrupt file is ignored rather than half-loaded.
const (
	bloomSnapMagic   = "STKBLOOM"
	bloomSnapVersion = 1
)

// writeSnapshot writes the generations to path atomically (temporary
// file, fsync, rename). Older generations are immutable and written
// without the lock; the current one is copied under the read lock, so
// ingestion is held up for a memory copy, not for disk I/O.
func (b *rotatingBloom) writeSnapshot(path string, now int64) error {
	b.mu.RLock()
	gens := make([]bloomGen, len(b.gens))
	copy(gens, b.gens)
	last := len(gens) - 1
	gens[last].f = gens[last].f.Copy()
	b.mu.RUnlock()

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".dedup.bloom-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	h := xxhash.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	var hdr []byte
	hdr = append(hdr, bloomSnapMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, bloomSnapVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(now))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(b.span))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(b.m))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(b.k))
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(gens)))
	_, err = w.Write(hdr)
	for _, g := range gens {
		if err != nil {
			break
		}
		if _, err = w.Write(binary.BigEndian.AppendUint64(nil, uint64(g.start))); err == nil {
			_, err = g.f.WriteTo(w)
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		_, err = f.Write(binary.BigEndian.AppendUint64(nil, h.Sum64()))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// errSnapshotMismatch says a snapshot is intact but was written with other
// dedup settings (window, capacity or false-positive rate changed).
var errSnapshotMismatch = errors.New("written with different dedup settings")

// readSnapshot replaces the generations with those in path, then rotates
// to now (dropping generations that left the window while stopped). It
// returns when the snapshot was written: keys added after that are not in
// it. The filter is left unchanged on any error.
func (b *rotatingBloom) readSnapshot(path string, now int64) (written int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	written, err = b.parseSnapshot(f, now)
	if err != nil {
		return 0, err
	}
	return written, nil
}

func (b *rotatingBloom) parseSnapshot(f *os.File, now int64) (int64, error) {
	const hdrLen = 8 + 4 + 8 + 8 + 8 + 8 + 4
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size < hdrLen+8 {
		return 0, errors.New("truncated")
	}
	// Pass 1: checksum.
	h := xxhash.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size-8)); err != nil {
		return 0, err
	}
	var sum [8]byte
	if _, err := f.ReadAt(sum[:], size-8); err != nil {
		return 0, err
	}
	if binary.BigEndian.Uint64(sum[:]) != h.Sum64() {
		return 0, errors.New("checksum mismatch")
	}
	// Pass 2: parse.
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size-8), 1<<20)
	var hdr [hdrLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	if string(hdr[:8]) != bloomSnapMagic {
		return 0, errors.New("not a dedup snapshot")
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != bloomSnapVersion {
		return 0, fmt.Errorf("unknown version %d", v)
	}
	written := int64(binary.BigEndian.Uint64(hdr[12:]))
	span := int64(binary.BigEndian.Uint64(hdr[20:]))
	m, k := binary.BigEndian.Uint64(hdr[28:]), binary.BigEndian.Uint64(hdr[36:])
	count := int(binary.BigEndian.Uint32(hdr[44:]))
	if span != b.span || m != uint64(b.m) || k != uint64(b.k) {
		return 0, errSnapshotMismatch
	}
	if count < 1 || count > b.n {
		return 0, fmt.Errorf("%d generations", count)
	}
	gens := make([]bloomGen, 0, b.n)
	for i := 0; i < count; i++ {
		var ts [8]byte
		if _, err := io.ReadFull(r, ts[:]); err != nil {
			return 0, err
		}
		g := bloomGen{start: int64(binary.BigEndian.Uint64(ts[:])), f: &bloom.BloomFilter{}}
		if i > 0 && g.start <= gens[i-1].start {
			return 0, errors.New("generations out of order")
		}
		if _, err := g.f.ReadFrom(r); err != nil {
			return 0, err
		}
		if g.f.Cap() != b.m || g.f.K() != b.k {
			return 0, errors.New("generation size mismatch")
		}
		gens = append(gens, g)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return 0, errors.New("trailing data")
	}
	if gens[count-1].start > now+b.span {
		return 0, errors.New("written in the future (clock moved back?)")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gens = gens
	b.next.Store(gens[count-1].start + b.span)
	b.rotateLocked(now)
	return written, nil
}

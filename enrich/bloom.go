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

// bloomStripes splits each generation into independent filters chosen by
// a key byte, each with its own lock, so concurrent adds of different keys
// rarely contend. Each stripe holds 1/16 of the keys in 1/16 of the bits:
// the false-positive rate is that of one filter.
const bloomStripes = 16

// bloomMinKeys is the smallest generation sizing, so a tiny configured
// capacity (tests) does not yield a filter that saturates at once.
const bloomMinKeys = 1024

// rotatingBloom is a time-windowed Bloom filter (DESIGN §4 "Dedup"): keys
// are added to the current generation and tested against all of them.
// Memory is flat however long it runs: a rotation allocates one generation
// and drops the oldest.
//
// Concurrency: the generation list is an immutable value swapped
// atomically. Older generations are never written again, so tests read
// them without locks (and snapshots write them without copying); only the
// current generation is written, stripe by stripe under the stripes'
// locks. A rotation holds every stripe lock while it swaps the list, so an
// add that loaded the list under its stripe lock writes the generation
// that is current until it unlocks.
type rotatingBloom struct {
	gens    atomic.Pointer[bloomGens]
	stripes [bloomStripes]bloomStripe
	rotMu   sync.Mutex // serializes rotations and restores
	n       int
	span    int64 // ns
	m, k    uint  // per stripe
	// next is when the current generation's span ends (unix ns), read
	// without a lock on every check.
	next atomic.Int64
}

type bloomStripe struct {
	mu sync.RWMutex
	_  [40]byte // one cache line per stripe lock
}

// bloomGens is one immutable list of generations, oldest first; the last
// is current.
type bloomGens struct {
	g []bloomGen
}

type bloomGen struct {
	start   int64 // unix ns; generation starts are span-aligned
	stripes [bloomStripes]*bloom.BloomFilter
}

// bloomSizing returns the per-stripe bits and hash count for capacity keys
// per window at false-positive rate fp across all generations: each
// generation holds the keys of one span (capacity/(n-1)) and a test
// consults n of them, so each gets fp/n.
func bloomSizing(capacity int64, fp float64) (m, k uint) {
	perGen := max(uint(math.Ceil(float64(capacity)/float64(bloomGenerations-1))), bloomMinKeys)
	return bloom.EstimateParameters((perGen+bloomStripes-1)/bloomStripes, fp/bloomGenerations)
}

func newRotatingBloom(capacity int64, fp float64, window time.Duration, now int64) *rotatingBloom {
	m, k := bloomSizing(capacity, fp)
	b := &rotatingBloom{n: bloomGenerations, span: max(int64(window)/(bloomGenerations-1), 1), m: m, k: k}
	b.gens.Store(&bloomGens{g: []bloomGen{b.newGen(now)}})
	b.next.Store(now + b.span)
	return b
}

func (b *rotatingBloom) newGen(start int64) bloomGen {
	g := bloomGen{start: start}
	for i := range g.stripes {
		g.stripes[i] = bloom.New(b.m, b.k)
	}
	return g
}

// bits is the filter's total size in bits when every generation exists.
func (b *rotatingBloom) bits() uint64 { return uint64(b.m) * bloomStripes * uint64(b.n) }

func stripeOf(key []byte) int { return int(key[1]) % bloomStripes }

// rotate starts new generations until the current one covers now.
func (b *rotatingBloom) rotate(now int64) {
	if now < b.next.Load() {
		return
	}
	b.rotMu.Lock()
	defer b.rotMu.Unlock()
	old := b.gens.Load()
	if g := b.rotated(old, now); g != old {
		b.swap(g)
	}
}

// rotated returns the generation list advanced to now (gs itself when no
// rotation is due).
func (b *rotatingBloom) rotated(gs *bloomGens, now int64) *bloomGens {
	cur := gs.g[len(gs.g)-1].start
	if now < cur+b.span {
		return gs
	}
	steps := (now - cur) / b.span
	if steps >= int64(b.n) {
		// Idle for longer than the whole window: everything is forgotten.
		return &bloomGens{g: []bloomGen{b.newGen(cur + steps*b.span)}}
	}
	keep := gs.g[max(len(gs.g)+int(steps)-b.n, 0):]
	g := make([]bloomGen, 0, b.n) // fresh: the dropped generation must not stay reachable
	g = append(g, keep...)
	for i := int64(1); i <= steps; i++ {
		g = append(g, b.newGen(cur+i*b.span))
	}
	return &bloomGens{g: g}
}

// swap publishes gs while no add is in progress; rotMu is held.
func (b *rotatingBloom) swap(gs *bloomGens) {
	for i := range b.stripes {
		b.stripes[i].mu.Lock()
	}
	b.gens.Store(gs)
	b.next.Store(gs.g[len(gs.g)-1].start + b.span)
	for i := range b.stripes {
		b.stripes[i].mu.Unlock()
	}
}

// test reports whether any generation may hold key.
func (b *rotatingBloom) test(key []byte) bool {
	s := stripeOf(key)
	st := &b.stripes[s]
	st.mu.RLock()
	gs := b.gens.Load()
	cur := &gs.g[len(gs.g)-1]
	hit := cur.stripes[s].Test(key)
	st.mu.RUnlock()
	if hit {
		return true
	}
	// Older generations are immutable: no lock. Newest first, as a
	// duplicate is most likely recent.
	for i := len(gs.g) - 2; i >= 0; i-- {
		if gs.g[i].stripes[s].Test(key) {
			return true
		}
	}
	return false
}

// add inserts key into the current generation.
func (b *rotatingBloom) add(key []byte) {
	s := stripeOf(key)
	st := &b.stripes[s]
	st.mu.Lock()
	gs := b.gens.Load()
	gs.g[len(gs.g)-1].stripes[s].Add(key)
	st.mu.Unlock()
}

// Snapshot file (cfg.Spool.Dir/dedup.bloom):
//
//	"STKBLOOM" | version u32 | written ns i64 | span ns i64 | m u64 | k u64 |
//	stripes u32 | count u32 | count × (start ns i64 | stripes × BloomFilter.WriteTo) |
//	xxhash64 of all before it
//
// Big-endian. The checksum is verified before anything is parsed, so a torn
// or corrupt file is ignored rather than half-loaded.
const (
	bloomSnapMagic   = "STKBLOOM"
	bloomSnapVersion = 1
	bloomSnapHdrLen  = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4
)

// writeSnapshot writes the generations to path atomically (temporary
// file, fsync, rename). Older generations are immutable and written as
// they are; the current one is copied stripe by stripe under the stripe's
// read lock, so ingestion waits for a memory copy, never for disk I/O.
func (b *rotatingBloom) writeSnapshot(path string, now int64) error {
	gs := b.gens.Load()
	gens := append([]bloomGen(nil), gs.g...)
	cur := &gens[len(gens)-1]
	for i := range cur.stripes {
		st := &b.stripes[i]
		st.mu.RLock()
		// Copy the stripe of the generation that is current now; should a
		// rotation have happened since the load, gs's last generation is
		// immutable and the copy merely redundant.
		cur.stripes[i] = cur.stripes[i].Copy()
		st.mu.RUnlock()
	}

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
	hdr = binary.BigEndian.AppendUint32(hdr, bloomStripes)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(gens)))
	_, err = w.Write(hdr)
	for _, g := range gens {
		if err == nil {
			_, err = w.Write(binary.BigEndian.AppendUint64(nil, uint64(g.start)))
		}
		for _, f := range g.stripes {
			if err == nil {
				_, err = f.WriteTo(w)
			}
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
// it. The filter is left unchanged on any error. It runs before the
// filter is shared.
func (b *rotatingBloom) readSnapshot(path string, now int64) (written int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	written, gs, err := b.parseSnapshot(f, now)
	if err != nil {
		return 0, err
	}
	b.rotMu.Lock()
	defer b.rotMu.Unlock()
	b.swap(b.rotated(gs, now))
	return written, nil
}

func (b *rotatingBloom) parseSnapshot(f *os.File, now int64) (int64, *bloomGens, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	size := st.Size()
	if size < bloomSnapHdrLen+8 {
		return 0, nil, errors.New("truncated")
	}
	// Pass 1: checksum.
	h := xxhash.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size-8)); err != nil {
		return 0, nil, err
	}
	var sum [8]byte
	if _, err := f.ReadAt(sum[:], size-8); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(sum[:]) != h.Sum64() {
		return 0, nil, errors.New("checksum mismatch")
	}
	// Pass 2: parse.
	return b.parseSnapshotBody(bufio.NewReaderSize(io.NewSectionReader(f, 0, size-8), 1<<20), now)
}

// parseSnapshotBody parses a snapshot without its checksum. Every length
// is checked against the expected sizing before anything is allocated, so
// even a file with a valid checksum cannot make it allocate more than the
// configured filter.
func (b *rotatingBloom) parseSnapshotBody(r *bufio.Reader, now int64) (int64, *bloomGens, error) {
	var hdr [bloomSnapHdrLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	if string(hdr[:8]) != bloomSnapMagic {
		return 0, nil, errors.New("not a dedup snapshot")
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != bloomSnapVersion {
		return 0, nil, fmt.Errorf("unknown version %d", v)
	}
	written := int64(binary.BigEndian.Uint64(hdr[12:]))
	span := int64(binary.BigEndian.Uint64(hdr[20:]))
	m, k := binary.BigEndian.Uint64(hdr[28:]), binary.BigEndian.Uint64(hdr[36:])
	stripes := binary.BigEndian.Uint32(hdr[44:])
	count := int(binary.BigEndian.Uint32(hdr[48:]))
	if span != b.span || m != uint64(b.m) || k != uint64(b.k) || stripes != bloomStripes {
		return 0, nil, errSnapshotMismatch
	}
	if count < 1 || count > b.n {
		return 0, nil, fmt.Errorf("%d generations", count)
	}
	gens := make([]bloomGen, 0, b.n)
	for i := 0; i < count; i++ {
		var ts [8]byte
		if _, err := io.ReadFull(r, ts[:]); err != nil {
			return 0, nil, err
		}
		g := bloomGen{start: int64(binary.BigEndian.Uint64(ts[:]))}
		if i > 0 && g.start <= gens[i-1].start {
			return 0, nil, errors.New("generations out of order")
		}
		for j := range g.stripes {
			// BloomFilter.WriteTo: m u64 | k u64 | bitset length u64 | words.
			peek, err := r.Peek(24)
			if err != nil {
				return 0, nil, err
			}
			if binary.BigEndian.Uint64(peek) != uint64(b.m) || binary.BigEndian.Uint64(peek[8:]) != uint64(b.k) || binary.BigEndian.Uint64(peek[16:]) != uint64(b.m) {
				return 0, nil, errors.New("stripe size mismatch")
			}
			f := &bloom.BloomFilter{}
			if _, err := f.ReadFrom(r); err != nil {
				return 0, nil, err
			}
			if f.Cap() != b.m || f.K() != b.k {
				return 0, nil, errors.New("stripe size mismatch")
			}
			g.stripes[j] = f
		}
		gens = append(gens, g)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return 0, nil, errors.New("trailing data")
	}
	if gens[count-1].start > now+b.span {
		return 0, nil, errors.New("written in the future (clock moved back?)")
	}
	return written, &bloomGens{g: gens}, nil
}

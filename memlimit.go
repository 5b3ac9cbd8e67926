package main

import (
	"runtime/debug"
	"strings"

	"github.com/sidetrack/sidetrack/config"
)

// Memory the soft limit allows besides the bounded caches: the runtime,
// tables (phone metadata, channels, schemas), connection buffers, pooled
// events and requests in flight, and room for the garbage between two
// collections.
const memBase = 64 << 20

// dedupHotBytes is the dedup stage's hot cache at its default 65536 keys
// (≈ 200 bytes a key in ristretto, rounded up).
const dedupHotBytes = 16 << 20

// memoryLimit is the soft memory limit derived from the config: the
// caches that grow to their configured bounds (the dedup Bloom filter with
// all its generations, bloomBytes; the join cache, join.max_bytes; the
// dedup hot cache) plus memBase.
//
// Without it the heap grows to twice the live heap before each collection
// (GOGC=100): with the caches full that is far above what the process
// needs. With it the collector works harder only as the heap nears the
// limit, so steady-state memory stays near the live set, and when the live
// set is small nothing changes.
func memoryLimit(cfg *config.Config, bloomBytes uint64) int64 {
	limit := int64(memBase + dedupHotBytes + bloomBytes)
	if cfg.Join.Capacity > 0 {
		join := cfg.Join.MaxBytes.Bytes()
		if join <= 0 {
			join = 64 << 20 // the join stage's own default
		}
		limit += join
	}
	return limit
}

// applyMemoryLimit sets limit as the runtime's soft memory limit unless
// GOMEMLIMIT is set in env (the runtime honours that on its own), and
// returns the limit in effect and whether it was derived here.
func applyMemoryLimit(env []string, limit int64) (int64, bool) {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMEMLIMIT=") {
			return debug.SetMemoryLimit(-1), false
		}
	}
	debug.SetMemoryLimit(limit)
	return limit, true
}

package main

import (
	"runtime/debug"
	"testing"

	"github.com/sidetrack/sidetrack/config"
)

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		join  config.Join
		bloom uint64
		want  int64
	}{
		{"defaults", config.Join{Capacity: 1000000, MaxBytes: 64 << 20}, 36 << 20, (64 + 16 + 36 + 64) << 20},
		{"join off", config.Join{Capacity: 0, MaxBytes: 64 << 20}, 4 << 20, (64 + 16 + 4) << 20},
		{"join default bytes", config.Join{Capacity: 10}, 0, (64 + 16 + 64) << 20},
		{"big join", config.Join{Capacity: 10, MaxBytes: 1 << 30}, 0, (64+16)<<20 + 1<<30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Join: tc.join}
			if got := memoryLimit(cfg, tc.bloom); got != tc.want {
				t.Errorf("memoryLimit = %d MiB, want %d MiB", got>>20, tc.want>>20)
			}
		})
	}
}

// TestApplyMemoryLimit: GOMEMLIMIT in the environment wins; otherwise the
// derived limit is set.
func TestApplyMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })

	debug.SetMemoryLimit(1 << 40)
	if got, derived := applyMemoryLimit([]string{"HOME=/x", "GOMEMLIMIT=1TiB"}, 200<<20); derived || got != 1<<40 {
		t.Errorf("with GOMEMLIMIT: %d, %v; want the runtime's 1TiB, false", got, derived)
	}
	if got, derived := applyMemoryLimit([]string{"HOME=/x"}, 200<<20); !derived || got != 200<<20 || debug.SetMemoryLimit(-1) != 200<<20 {
		t.Errorf("without GOMEMLIMIT: %d, %v; want 200MiB, true", got, derived)
	}
}

package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sidetrack/sidetrack/enrich"
)

// bigEvent is an event of about n bytes, to fill a small disk quickly.
func bigEvent(pool *enrich.EventPool, id string, n int) *enrich.Event {
	e := newEvent(pool, id)
	e.Title = e.InternString(strings.Repeat("t", n))
	return e
}

func TestReliabilityDiskFullInjectedIsRetryAfterAndStoresNothing(t *testing.T) {
	cfg := immediate(testConfig(t, t.TempDir(), "always", []string{dest("a", "")}, ""))
	var fail atomic.Bool
	hook := withBeforeCommit(func() error {
		if fail.Load() {
			return fmt.Errorf("write spool.db: %w", syscall.ENOSPC)
		}
		return nil
	})
	pool := &enrich.EventPool{}
	s, err := Open(cfg, nil, testLogger(t), pool, hook)
	if err != nil {
		t.Fatal(err)
	}
	appendIDs(t, s, pool, "before")
	fail.Store(true)
	err = s.Append(context.Background(), []*enrich.Event{newEvent(pool, "during")})
	var full *FullError
	if !errors.As(err, &full) || !full.DiskFull || full.RetryAfter() <= 0 {
		t.Fatalf("append on a full disk: %v, want a disk-full FullError with RetryAfter", err)
	}
	if s.events.Load() != 1 || s.bytes.Load() <= 0 {
		t.Errorf("counters moved by a failed commit: %d events", s.events.Load())
	}
	fail.Store(false)
	appendIDs(t, s, pool, "after")
	closeSpool(t, s)

	a := newFakeDest("a")
	s, _ = openTest(t, cfg, nil, a)
	waitFor(t, "before and after delivered", func() bool { return a.count() == 2 })
	if a.times("during") != 0 {
		t.Error("an event refused with disk full was stored")
	}
	closeSpool(t, s)
}

// TestReliabilityDiskFullTmpfs fills a real, tiny tmpfs. It needs root (mount);
// elsewhere it is skipped with a message.
func TestReliabilityDiskFullTmpfs(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tiny tmpfs; the injected disk-full test covers the logic")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the injected disk-full test covers the logic", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	cfg := immediate(testConfig(t, dir, "50ms", []string{dest("a", "")}, ""))
	a := newFakeDest("a")
	gate := make(chan struct{})
	a.gate = gate
	s, pool := openTest(t, cfg, nil, a)
	closed := false
	t.Cleanup(func() { // before the umount: cleanups run last-in first-out
		if !closed {
			closeSoon(t, s)
		}
	})
	var acked []string
	var full *FullError
	for i := 0; i < 10000 && full == nil; i++ {
		id := fmt.Sprintf("df%05d", i)
		err := s.Append(context.Background(), []*enrich.Event{bigEvent(pool, id, 2000)})
		switch {
		case err == nil:
			acked = append(acked, id)
		case errors.As(err, &full):
		default:
			t.Fatalf("append %d: %v, want success or FullError", i, err)
		}
	}
	if full == nil || !full.DiskFull {
		t.Fatalf("the disk never filled (%d acked): %v", len(acked), full)
	}
	t.Logf("disk full after %d events: %v", len(acked), full)
	// Ingest keeps answering: stored (a page freed by a failed commit may
	// still take a small one) or 429, never a crash or another error.
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("more%02d", i)
		err := s.Append(context.Background(), []*enrich.Event{bigEvent(pool, id, 2000)})
		switch {
		case err == nil:
			acked = append(acked, id)
		case !errors.As(err, &full):
			t.Fatalf("append on a full disk: %v", err)
		}
	}
	close(gate)
	waitFor(t, "every acked event delivered", func() bool { return a.count() >= len(acked) })
	closed = true
	closeSpool(t, s)
	for _, id := range acked {
		if a.times(id) == 0 {
			t.Fatalf("acked %s not delivered", id)
		}
	}
	// The file is intact: it opens without being set aside.
	s, _ = openTest(t, cfg, nil)
	closeSpool(t, s)
	if aside, _ := os.ReadDir(dir); len(aside) != 1 {
		t.Errorf("spool dir after disk full: %v (a corrupt file was set aside?)", aside)
	}
}

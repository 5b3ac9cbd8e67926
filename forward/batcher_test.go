package forward

import (
	"testing"
	"time"
)

func TestBatcher(t *testing.T) {
	t0 := time.Unix(1000, 0)
	it := func(seq uint64, size int) *item { return &item{seq: seq, jsonLen: size} }
	cases := []struct {
		name                string
		maxEvents, maxBytes int
		adds                []struct {
			group string
			size  int
		}
		wantFull []int // sizes of batches closed by add, in order
		wantOpen int
	}{
		{"by count", 2, 0, []struct {
			group string
			size  int
		}{{"", 1}, {"", 1}, {"", 1}}, []int{2}, 1},
		{"by bytes", 100, 10, []struct {
			group string
			size  int
		}{{"", 4}, {"", 4}, {"", 4}}, []int{2}, 1},
		{"oversized alone", 100, 10, []struct {
			group string
			size  int
		}{{"", 50}}, []int{1}, 0},
		{"groups apart", 2, 0, []struct {
			group string
			size  int
		}{{"a", 1}, {"b", 1}, {"a", 1}}, []int{2}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatcher(tc.maxEvents, tc.maxBytes, time.Second)
			var full []*batch
			for i, a := range tc.adds {
				full = b.add(it(uint64(i+1), a.size), a.group, t0, full)
			}
			if len(full) != len(tc.wantFull) {
				t.Fatalf("%d full batches, want %d", len(full), len(tc.wantFull))
			}
			for i, n := range tc.wantFull {
				if len(full[i].items) != n {
					t.Errorf("batch %d has %d items, want %d", i, len(full[i].items), n)
				}
			}
			if len(b.open) != tc.wantOpen {
				t.Errorf("%d open batches, want %d", len(b.open), tc.wantOpen)
			}
		})
	}
}

func TestBatcherAge(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBatcher(10, 0, time.Second)
	b.add(&item{seq: 2}, "b", t0.Add(100*time.Millisecond), nil)
	b.add(&item{seq: 1}, "a", t0, nil)
	if got := b.next(); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("next = %v", got)
	}
	if due := b.due(t0.Add(999*time.Millisecond), nil); len(due) != 0 {
		t.Fatalf("%d due early", len(due))
	}
	if due := b.due(t0.Add(time.Second), nil); len(due) != 1 || due[0].group != "a" {
		t.Fatalf("due at 1s: %v", due)
	}
	if all := b.flush(nil); len(all) != 1 || all[0].group != "b" {
		t.Fatalf("flush: %v", all)
	}
}

func TestTrackerCursor(t *testing.T) {
	var tr tracker
	if c := tr.cursor(7); c != 7 {
		t.Fatalf("empty cursor = %d", c)
	}
	for _, s := range []uint64{3, 5, 8, 9} {
		tr.add(s, int64(s))
	}
	steps := []struct {
		resolve uint64
		want    uint64
	}{
		{5, 2}, // 3 still open
		{9, 2},
		{3, 7}, // 8 open: everything before it is done
		{8, 12},
	}
	for _, st := range steps {
		tr.resolve(st.resolve)
		if c := tr.cursor(12); c != st.want {
			t.Errorf("after resolving %d: cursor %d, want %d", st.resolve, c, st.want)
		}
	}
	if tr.oldest() != 0 || tr.len() != 0 {
		t.Errorf("not empty: oldest %d len %d", tr.oldest(), tr.len())
	}
}

func TestBackoffBounds(t *testing.T) {
	j := newJitter(zeroJitter{})
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: 5 * time.Second} {
		if got := backoff(j, attempt, time.Second, 5*time.Second); got != want {
			t.Errorf("attempt %d: %v, want %v (jitter at its maximum)", attempt, got, want)
		}
	}
	j = newJitter(nil)
	for i := 0; i < 1000; i++ {
		if got := backoff(j, 30, time.Second, time.Minute); got < 0 || got > time.Minute {
			t.Fatalf("backoff %v outside [0, 1m]", got)
		}
	}
}

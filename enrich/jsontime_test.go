package enrich

import (
	"testing"
	"time"
)

func TestAppendTime(t *testing.T) {
	for _, tc := range []time.Time{
		time.Date(2026, 11, 23, 14, 5, 6, 789_000_000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 0, time.FixedZone("x", 5*3600+1800)),
		time.Date(0, 1, 1, 0, 0, 0, 1_000_000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.UnixMilli(1700000000123),
		{},
	} {
		want := tc.UTC().AppendFormat([]byte("x"), timeLayout)
		if got := appendTime([]byte("x"), tc); string(got) != string(want) {
			t.Errorf("appendTime(%v) = %s, want %s", tc, got, want)
		}
	}
}

// FuzzAppendTime: the fast path agrees with time.AppendFormat everywhere.
func FuzzAppendTime(f *testing.F) {
	f.Add(int64(1700000000123), int64(456789))
	f.Add(int64(-62135596800000), int64(0))
	f.Fuzz(func(t *testing.T, ms, ns int64) {
		tm := time.UnixMilli(ms).Add(time.Duration(ns % 1e6))
		want := tm.UTC().AppendFormat(nil, timeLayout)
		if got := appendTime(nil, tm); string(got) != string(want) {
			t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	})
}

func BenchmarkAppendTime(b *testing.B) {
	tm := time.Date(2026, 11, 23, 14, 5, 6, 789_000_000, time.UTC)
	buf := make([]byte, 0, 64)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			buf = appendTime(buf[:0], tm)
		}
	})
	b.Run("AppendFormat", func(b *testing.B) {
		for b.Loop() {
			buf = tm.UTC().AppendFormat(buf[:0], timeLayout)
		}
	})
}

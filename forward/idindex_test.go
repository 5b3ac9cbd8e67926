package forward

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sidetrack/sidetrack/enrich"
)

func TestMergeRuns(t *testing.T) {
	k := func(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }
	a := append(append(k(1), k(3)...), k(5)...)
	b := append(append(k(2), k(3)...), k(9)...)
	got := mergeRuns(a, b)
	want := bytes.Join([][]byte{k(1), k(2), k(3), k(5), k(9)}, nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("merge = %x", got)
	}
	for _, x := range []byte{1, 2, 3, 5, 9} {
		key := [16]byte(k(x))
		if !runHas(got, &key) {
			t.Errorf("%d not found", x)
		}
	}
	for _, x := range []byte{0, 4, 10} {
		key := [16]byte(k(x))
		if runHas(got, &key) {
			t.Errorf("%d found", x)
		}
	}
}

// TestIDIndexRunsStayFewAndComplete appends keys over many commits and
// checks every key is seen, unknown keys are not, and the hour bucket
// holds O(log n) runs.
func TestIDIndexRunsStayFewAndComplete(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "never", []string{dest("a", "")}, "")
	s, pool := openTest(t, cfg, newFakeClock())
	rng := rand.New(rand.NewPCG(1, 2))
	var keys [][16]byte
	for c := 0; c < 300; c++ {
		n := 1 + rng.IntN(40)
		evs := make([]*enrich.Event, n)
		for i := range evs {
			var k [16]byte
			for j := range k {
				k[j] = byte(rng.Uint32())
			}
			keys = append(keys, k)
			evs[i] = newEvent(pool, "x")
			evs[i].DedupKey = k
		}
		if err := s.Append(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		if ok, err := s.Seen(k); !ok || err != nil {
			t.Fatalf("key %x not seen (%v)", k, err)
		}
	}
	for i := 0; i < 1000; i++ {
		var k [16]byte
		for j := range k {
			k[j] = byte(rng.Uint32())
		}
		if ok, _ := s.Seen(k); ok {
			t.Fatalf("unknown key %x seen", k)
		}
	}
	runs := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIDs).ForEachBucket(func(h []byte) error {
			runs += tx.Bucket(bucketIDs).Bucket(h).Stats().KeyN
			return nil
		})
	})
	if runs > 20 {
		t.Errorf("%d runs for %d keys: merging does not keep them few", runs, len(keys))
	}
	t.Logf("%d keys in %d runs", len(keys), runs)
	closeSpool(t, s)
}

package enrich

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"
)

// saltT0 is late on a UTC day, so tests can cross midnight.
var saltT0 = time.Date(2025, 6, 1, 23, 59, 0, 0, time.UTC)

func TestDailySaltDays(t *testing.T) {
	clk := &idClock{t: saltT0}
	d := NewDailySalt(nil, clk.now, nil)
	msg := []byte("ip\x00\xcb\x00\x71\x07")
	sum := func(at time.Time) [32]byte {
		t.Helper()
		s, err := d.Sum(at, msg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	day0 := sum(clk.now())
	if again := sum(clk.now().Add(-23 * time.Hour)); again != day0 {
		t.Fatal("same day, different sums")
	}
	if other, _ := d.Sum(clk.now(), []byte("ip\x00other")); other == day0 {
		t.Fatal("different messages, same sum")
	}

	clk.add(2 * time.Minute) // 00:01 on day 1
	day1 := sum(clk.now())
	if day1 == day0 {
		t.Fatal("a new day kept the salt")
	}
	// An event received just before midnight, processed just after,
	// still links with its own day.
	if late := sum(saltT0); late != day0 {
		t.Fatal("yesterday's salt not kept until the next rotation")
	}

	clk.add(24 * time.Hour) // day 2: day 0's salt is discarded
	day2 := sum(clk.now())
	if day2 == day1 || day2 == day0 {
		t.Fatal("day 2 reused an old salt")
	}
	if old := sum(saltT0); old == day0 {
		t.Fatal("day 0's salt still usable after the second rotation")
	}
	if y := sum(clk.now().Add(-24 * time.Hour)); y != day1 {
		t.Fatal("day 1's salt lost on the first rotation after it")
	}
	// A time in the future never rotates the salt.
	if fut := sum(clk.now().Add(72 * time.Hour)); fut != day2 {
		t.Fatal("a future event time changed the salt")
	}
}

// TestDailySaltSkippedDays: after a gap of several days the previous
// salt is not kept (it is not yesterday's).
func TestDailySaltSkippedDays(t *testing.T) {
	clk := &idClock{t: saltT0}
	d := NewDailySalt(nil, clk.now, nil)
	if _, err := d.Sum(clk.now(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	clk.add(5 * 24 * time.Hour)
	if _, err := d.Sum(clk.now(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if st := d.state.Load(); st.prev != nil {
		t.Fatalf("kept a salt from %d days ago", st.cur.day-st.prev.day)
	}
}

func TestDailySaltMatchesHMAC(t *testing.T) {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(i * 7)
	}
	d := NewDailySalt(nil, func() time.Time { return saltT0 }, bytes.NewReader(seed[:]))
	for _, n := range []int{0, 1, 19, 64, 65, 511, 512} {
		msg := bytes.Repeat([]byte{0xab}, n)
		got, err := d.Sum(saltT0, msg)
		if err != nil {
			t.Fatal(err)
		}
		h := hmac.New(sha256.New, seed[:])
		h.Write(msg)
		if !bytes.Equal(got[:], h.Sum(nil)) {
			t.Fatalf("len %d: not HMAC-SHA256", n)
		}
	}
	// Longer messages are hashed first.
	long := bytes.Repeat([]byte{1}, 2000)
	got, _ := d.Sum(saltT0, long)
	pre := sha256.Sum256(long)
	h := hmac.New(sha256.New, seed[:])
	h.Write(pre[:])
	if !bytes.Equal(got[:], h.Sum(nil)) {
		t.Fatal("long message: not HMAC of its SHA-256")
	}
}

func TestDailySaltSharedStore(t *testing.T) {
	clk := &idClock{t: saltT0}
	store := NewMemorySaltStore(clk.now)
	a := NewDailySalt(store, clk.now, nil)
	b := NewDailySalt(store, clk.now, nil)
	alone := NewDailySalt(nil, clk.now, nil)
	msg := []byte("ip\x00\x01\x02\x03\x04")
	sa, _ := a.Sum(clk.now(), msg)
	sb, _ := b.Sum(clk.now(), msg)
	sc, _ := alone.Sum(clk.now(), msg)
	if sa != sb {
		t.Fatal("replicas sharing a store disagree")
	}
	if sa == sc {
		t.Fatal("an independent salt collided")
	}
	// The store forgets a day's salt after its TTL.
	day := saltT0.Format(time.DateOnly)
	if _, ok, _ := store.Get(context.Background(), day); !ok {
		t.Fatal("store lost today's salt")
	}
	clk.add(saltTTL + time.Minute)
	if _, ok, _ := store.Get(context.Background(), day); ok {
		t.Fatal("store kept a salt past its TTL")
	}
}

type failingStore struct{ calls int }

func (f *failingStore) Get(context.Context, string) ([]byte, bool, error) {
	return nil, false, errors.New("down")
}

func (f *failingStore) SetNX(context.Context, string, []byte, time.Duration) ([]byte, error) {
	f.calls++
	return nil, errors.New("down")
}

func TestDailySaltStoreDown(t *testing.T) {
	st := &failingStore{}
	d := NewDailySalt(st, func() time.Time { return saltT0 }, nil)
	if _, err := d.Sum(saltT0, []byte("x")); err != nil {
		t.Fatalf("a failing store must fall back to a local salt: %v", err)
	}
	if st.calls != 1 || d.storeErrors.Load() != 1 {
		t.Fatalf("calls %d, errors %d", st.calls, d.storeErrors.Load())
	}
}

func TestDailySaltNoEntropy(t *testing.T) {
	d := NewDailySalt(nil, func() time.Time { return saltT0 }, bytes.NewReader(nil))
	if _, err := d.Sum(saltT0, []byte("x")); !errors.Is(err, errNoSalt) {
		t.Fatalf("err %v", err)
	}
}

// TestDailySaltConcurrentRotation runs Sum from many goroutines while the
// day changes (for -race).
func TestDailySaltConcurrentRotation(t *testing.T) {
	clk := &idClock{t: saltT0}
	d := NewDailySalt(NewMemorySaltStore(clk.now), clk.now, nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if _, err := d.Sum(clk.now(), []byte{byte(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		clk.add(12 * time.Hour)
	}
	wg.Wait()
	if got, want := d.state.Load().cur.day, unixDay(clk.now()); got != want {
		// A goroutine may not have called Sum after the last step.
		if _, err := d.Sum(clk.now(), nil); err != nil || d.state.Load().cur.day != want {
			t.Fatalf("day %d, want %d", got, want)
		}
	}
}

func TestUnixDay(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(86399, 0), 0},
		{time.Unix(86400, 0), 1},
		{time.Unix(-1, 0), -1},
		{time.Unix(-86400, 0), -1},
		{time.Date(2025, 6, 1, 23, 59, 0, 0, time.FixedZone("x", 5*3600)), unixDay(time.Date(2025, 6, 1, 18, 59, 0, 0, time.UTC))},
	} {
		if got := unixDay(tc.t); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.t, got, tc.want)
		}
	}
}

func TestDailySaltSumNoAlloc(t *testing.T) {
	d := NewDailySalt(nil, func() time.Time { return saltT0 }, nil)
	msg := []byte("ip\x00\x01\x02\x03\x04")
	d.Sum(saltT0, msg)
	if n := testing.AllocsPerRun(100, func() { d.Sum(saltT0, msg) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

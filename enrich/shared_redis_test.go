package enrich

import (
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// Two replicas sharing one Redis: a backend event on one finds the browser
// context the other learnt, and both hash with the same daily salt.
func TestJoinSharedThroughRedis(t *testing.T) {
	r := startDDRedis(t)
	replica := func() *Join {
		cfg := config.Default()
		cfg.Join.Capacity = 10000
		cfg.Join.Redis = r.addr()
		j, err := NewJoin(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(j.Close)
		return j
	}
	one, two := replica(), replica()
	var pool EventPool
	browser := joinBrowser(&pool, "order_completed", "dev-7", "user-7", "T7")
	browser.Attribution.ClickIDs.GCLID = browser.InternString("gclid-7")
	one.Apply(&Request{ReceivedAt: idT0}, browser, &EventResult{})
	pool.Put(browser)

	tests := []struct {
		name   string
		server *Event
		joined bool
	}{
		{"by transaction id", joinServer("T7", "", ""), true},
		{"by user id", joinServer("", "user-7", ""), true},
		{"by device id", joinServer("", "", "dev-7"), true},
		{"no match", joinServer("T8", "user-8", ""), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.server
			// The write is asynchronous: poll (a guard, not a timing
			// assertion) until the context is shared or the guard ends.
			for guard := time.Now().Add(5 * time.Second); ; {
				e.Quality = 0
				two.Apply(&Request{Server: true, ReceivedAt: idT0}, e, &EventResult{})
				if e.Quality.Has(FlagJoined) || !tc.joined || time.Now().After(guard) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if e.Quality.Has(FlagJoined) != tc.joined {
				t.Fatalf("joined = %v, want %v", e.Quality.Has(FlagJoined), tc.joined)
			}
			if tc.joined && (e.DeviceID != "dev-7" || e.Attribution.ClickIDs.GCLID != "gclid-7" ||
				e.Consent.AdPersonalization != Denied || e.Attribution.FirstTouch.Source != "google" ||
				!e.Attribution.FirstTouch.At.Equal(idT0)) {
				t.Errorf("context not carried across replicas: %+v", e)
			}
		})
	}
	if st := two.Stats(); st.SharedHits == 0 || st.SharedErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestDailySaltSharedThroughRedis(t *testing.T) {
	r := startDDRedis(t)
	store := func() *RedisSaltStore {
		s, err := NewRedisSaltStore(r.addr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	now := func() time.Time { return saltT0 }
	a, b := NewDailySalt(store(), now, nil), NewDailySalt(store(), now, nil)
	alone := NewDailySalt(nil, now, nil)
	msg := []byte("ip\x00\x01\x02\x03\x04")
	sa, err := a.Sum(saltT0, msg)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := b.Sum(saltT0, msg)
	sc, _ := alone.Sum(saltT0, msg)
	if sa != sb || sa == sc {
		t.Fatalf("replicas sharing Redis: equal=%v; independent salt equal=%v", sa == sb, sa == sc)
	}
	if a.storeErrors.Load()+b.storeErrors.Load() != 0 {
		t.Fatal("store errors with a live Redis")
	}
}

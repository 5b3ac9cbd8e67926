package enrich

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// ddRedis is a real redis-server on a loopback port, owned by the test.
type ddRedis struct {
	bin, port string
	cmd       *exec.Cmd
}

func startDDRedis(t *testing.T) *ddRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("REQUIRE_REDIS_TESTS") != "" {
			t.Fatal("redis-server is required (REQUIRE_REDIS_TESTS is set) but not installed")
		}
		t.Skip("redis-server is not installed (apt-get install redis-server): the Redis dedup tier is not tested")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	r := &ddRedis{bin: bin, port: port}
	r.start(t)
	t.Cleanup(r.kill)
	return r
}

func (r *ddRedis) addr() string { return "127.0.0.1:" + r.port }

func (r *ddRedis) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(r.bin, "--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	guard := time.Now().Add(10 * time.Second)
	for {
		if r.ping() {
			return
		}
		if time.Now().After(guard) {
			t.Fatal("redis-server did not answer PING")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *ddRedis) ping() bool {
	c, err := net.DialTimeout("tcp", r.addr(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func (r *ddRedis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *ddRedis) signal(t *testing.T, s syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(s); err != nil {
		t.Fatal(err)
	}
}

// newDDRedisEnv is a replica: its own local layers, the shared Redis.
func newDDRedisEnv(t *testing.T, redis string, tweak func(*DedupOptions)) *ddEnv {
	return newDDEnv(t, true, func(c *config.Config, o *DedupOptions) {
		c.Dedup.Redis = redis
		o.RedisTimeout = 200 * time.Millisecond // generous: CI machines are busy
		if tweak != nil {
			tweak(o)
		}
	})
}

func TestDedupRedisReplicas(t *testing.T) {
	ddNoLeaks(t)
	r := startDDRedis(t)
	a := newDDRedisEnv(t, r.addr(), nil)
	b := newDDRedisEnv(t, "redis://"+r.addr()+"/0", nil)

	steps := []struct {
		name   string
		env    *ddEnv
		fail   bool
		events []*Event
		want   []Outcome
	}{
		{"A takes m-1", a, false, []*Event{ev(SourceSegment, "x", "m-1")}, []Outcome{Accepted}},
		{"B sees m-1 as a duplicate", b, false, []*Event{ev(SourceSegment, "x", "m-2"), ev(SourceSegment, "x", "m-1"), ev(SourceSegment, "x", "m-3")}, []Outcome{Accepted, Duplicate, Accepted}},
		{"and A sees B's", a, false, []*Event{ev(SourceSegment, "x", "m-3"), ev(SourceSegment, "x", "m-2")}, []Outcome{Duplicate, Duplicate}},
		{"gtag's purchase reaches A", a, false, []*Event{ddEv{src: SourceGA4, name: "order_completed", tx: "T1", cid: "1.2"}.event()}, []Outcome{Accepted}},
		{"the backend's reaches B", b, false, []*Event{order(SourceBackend, "order_completed", "T1", "")}, []Outcome{Duplicate}},
		{"A fails to store m-4", a, true, []*Event{ev(SourceSegment, "x", "m-4")}, []Outcome{Accepted}},
		{"the retry on B is accepted", b, false, []*Event{ev(SourceSegment, "x", "m-4")}, []Outcome{Accepted}},
		{"and on A is then a duplicate", a, false, []*Event{ev(SourceSegment, "x", "m-4")}, []Outcome{Duplicate}},
	}
	for _, s := range steps {
		if got := s.env.send(s.fail, s.events...); ddOutcomes(got...) != ddOutcomes(s.want...) {
			t.Errorf("%s: %v, want %v", s.name, got, s.want)
		}
	}
	sa, sb := a.d.Stats(), b.d.Stats()
	if sa.RedisFallback+sb.RedisFallback != 0 {
		t.Errorf("fallbacks with a healthy Redis: %+v %+v", sa, sb)
	}
	if sa.New+sb.New+sa.BloomFalsePositive+sb.BloomFalsePositive != 6 || sa.Duplicate+sb.Duplicate != 5 {
		t.Errorf("stats A %+v B %+v", sa, sb)
	}
	// A duplicate found in Redis holds no reservation: releasing it (as the
	// proxy would if the rest of its request failed) frees nothing.
	e := ev(SourceSegment, "x", "m-1")
	var res Result
	b.p.Process(&Request{}, []*Event{e}, &res)
	if res.Events[0].Outcome != Duplicate || e.DedupKey != ([16]byte{}) {
		t.Errorf("outcome %v key %x", res.Events[0].Outcome, e.DedupKey)
	}
}

// Redis killed mid-run: every request still succeeds on the local layers,
// the fallbacks are counted, and the shared tier resumes when Redis is back.
func TestDedupRedisKilled(t *testing.T) {
	ddNoLeaks(t)
	r := startDDRedis(t)
	fast := func(o *DedupOptions) { o.RedisBackoff = 20 * time.Millisecond }
	a := newDDRedisEnv(t, r.addr(), fast)
	b := newDDRedisEnv(t, r.addr(), fast)
	if got := a.send(false, ev(SourceCollect, "x", "k-0")); got[0] != Accepted {
		t.Fatal(got)
	}

	r.kill()
	for i := 1; i <= 50; i++ {
		id := "k-" + strconv.Itoa(i)
		if got := a.send(false, ev(SourceCollect, "x", id), ev(SourceCollect, "x", id)); ddOutcomes(got...) != ddOutcomes(Accepted, Duplicate) {
			t.Fatalf("request %d with Redis down: %v", i, got)
		}
	}
	if st := a.d.Stats(); st.RedisFallback != 50 || st.New+st.BloomFalsePositive != 51 || st.Duplicate != 50 {
		t.Errorf("stats with Redis down: %+v", st)
	}

	r.start(t) // empty, on the same port
	guard := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		id := "back-" + strconv.Itoa(i)
		a.send(false, ev(SourceCollect, "x", id))
		if got := b.send(false, ev(SourceCollect, "x", id)); got[0] == Duplicate {
			break // A wrote to Redis again and B read it
		}
		if time.Now().After(guard) {
			t.Fatal("the shared tier did not resume after Redis came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A hung Redis (SIGSTOP) costs at most the timeout, never the request.
func TestDedupRedisStalled(t *testing.T) {
	ddNoLeaks(t)
	r := startDDRedis(t)
	a := newDDRedisEnv(t, r.addr(), func(o *DedupOptions) {
		o.RedisTimeout = 50 * time.Millisecond
		o.RedisBackoff = time.Hour // one timeout, then local only
	})
	b := newDDRedisEnv(t, r.addr(), nil)
	if got := a.send(false, ev(SourceCollect, "x", "s-0")); got[0] != Accepted {
		t.Fatal(got)
	}
	r.signal(t, syscall.SIGSTOP)
	for i := 1; i <= 20; i++ {
		if got := a.send(false, ev(SourceCollect, "x", "s-"+strconv.Itoa(i))); got[0] != Accepted {
			t.Fatalf("request %d with Redis hung: %v", i, got)
		}
	}
	// A released key whose DEL could not reach Redis is deleted later, so
	// the client's retry on another replica is not taken for a duplicate.
	a.send(true, ev(SourceCollect, "x", "s-0-never-stored"))
	st := a.d.Stats()
	if st.RedisFallback != 21 {
		t.Errorf("fallbacks %d, want 21: %+v", st.RedisFallback, st)
	}
	r.signal(t, syscall.SIGCONT)
	a.d.redis.downUntil.Store(0) // end the backoff now rather than in an hour
	a.d.redis.flushDeletes()
	if got := b.send(false, ev(SourceCollect, "x", "s-0-never-stored")); got[0] != Accepted {
		t.Errorf("retry of a released key on another replica: %v", got)
	}
	if got := b.send(false, ev(SourceCollect, "x", "s-0")); got[0] != Duplicate {
		t.Errorf("stored before the stall: %v", got)
	}
}

// Redis down at start is not a start-up failure.
func TestDedupRedisDownAtStart(t *testing.T) {
	ddNoLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	a := newDDRedisEnv(t, addr, nil)
	for i := range 3 {
		if got := a.send(false, ev(SourceCollect, "x", strconv.Itoa(i))); got[0] != Accepted {
			t.Fatal(got)
		}
	}
	if st := a.d.Stats(); st.RedisFallback != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestDedupRedisBadURL(t *testing.T) {
	cfg := &config.Config{}
	cfg.Dedup.Redis = "redis://127.0.0.1:6379/notadb"
	if d, err := NewDedup(cfg, DedupOptions{}); err == nil {
		d.Close()
		t.Fatal("accepted")
	}
}

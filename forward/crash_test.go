package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// The crash test re-executes the test binary as a child that appends
// under load, delivering at the same time, and prints every acknowledged
// id. The parent SIGKILLs it at a seeded random moment, then checks that
// every id the child printed is either still in the spool or was
// delivered, and that a restart delivers them all.
const (
	crashChildEnv = "RELIABILITY_CRASH_CHILD"
	crashFsyncEnv = "RELIABILITY_CRASH_FSYNC"
)

func crashConfig(dir, fsync string) (*config.Config, error) {
	return config.Parse([]byte(fmt.Sprintf(`
spool: {dir: %q, fsync: %s, max_bytes: 1GiB}
destinations:
  - {name: file, type: ndjson, path: %q, batch: {max_events: 50, max_wait: 5ms}}
`, dir, fsync, dir)), nil)
}

// crashChild is the child's main.
func crashChild() int {
	dir := os.Getenv(crashChildEnv)
	cfg, err := crashConfig(dir, os.Getenv(crashFsyncEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fd, err := newFileDest(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pool := &enrich.EventPool{}
	s, err := Open(cfg, []Destination{fd}, nil, pool)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := s.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Minute) // the parent kills it long before
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				n := 1 + i%3
				evs := make([]*enrich.Event, n)
				batchIDs := make([]string, n)
				for j := range evs {
					batchIDs[j] = fmt.Sprintf("c%d-%d-%d", g, i, j)
					evs[j] = newEvent(pool, batchIDs[j])
				}
				if err := s.Append(context.Background(), evs); err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					continue
				}
				out.Lock()
				fmt.Fprintln(os.Stdout, strings.Join(batchIDs, "\n"))
				out.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

// fileDest appends delivered ids to <dir>/delivered, one per line, before
// reporting success: the write survives a process crash.
type fileDest struct {
	mu sync.Mutex
	f  *os.File
}

func newFileDest(dir string) (*fileDest, error) {
	f, err := os.OpenFile(filepath.Join(dir, "delivered"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	return &fileDest{f: f}, err
}

func (d *fileDest) Name() string                  { return "file" }
func (d *fileDest) Limits() Limits                { return Limits{} }
func (d *fileDest) GroupKey(*enrich.Event) string { return "" }
func (d *fileDest) Prepare(*enrich.Event) error   { return nil }
func (d *fileDest) Close() error                  { return d.f.Close() }
func (d *fileDest) Send(_ context.Context, batch []*enrich.Event) ([]error, error) {
	var b strings.Builder
	for _, e := range batch {
		b.WriteString(e.EventID)
		b.WriteByte('\n')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := d.f.WriteString(b.String())
	return nil, err
}

func TestReliabilityCrashKeepsEveryAckedEvent(t *testing.T) {
	rounds := 9
	if testing.Short() {
		rounds = 3
	}
	if reliabilityLong() {
		rounds = 30
	}
	for r := 0; r < rounds; r++ {
		fsync := []string{"50ms", "always", "never"}[r%3]
		t.Run(fmt.Sprintf("round%d-%s", r, fsync), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(r), 42))
			killAfter := 100 + rng.IntN(20000)
			crashRound(t, fsync, killAfter)
		})
	}
}

func crashRound(t *testing.T, fsync string, killAfter int) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashFsyncEnv+"="+fsync)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	rd := bufio.NewReader(stdout)
	killed := false
	for {
		// A line cut by the kill has no newline and is not an ack.
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		acked[strings.TrimSuffix(line, "\n")] = true
		if !killed && len(acked) >= killAfter {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before the kill after %d acks: %s", len(acked), stderr.String())
	}

	delivered := readDelivered(t, dir)
	spooled := spooledIDs(t, dir, fsync)
	missing := 0
	for id := range acked {
		if !delivered[id] && !spooled[id] {
			missing++
			if missing < 10 {
				t.Errorf("acked %s is neither delivered nor spooled", id)
			}
		}
	}
	t.Logf("killed after %d acks: %d delivered, %d still spooled, %d missing", len(acked), len(delivered), len(spooled), missing)

	// A restart delivers what was left.
	cfg, err := crashConfig(dir, fsync)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := newFileDest(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(cfg, []Destination{fd}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted spool to deliver its backlog", func() bool { return s.events.Load() == 0 })
	closeSpool(t, s)
	delivered = readDelivered(t, dir)
	for id := range acked {
		if !delivered[id] {
			t.Errorf("acked %s never delivered after restart", id)
			break
		}
	}
}

func readDelivered(t *testing.T, dir string) map[string]bool {
	b, err := os.ReadFile(filepath.Join(dir, "delivered"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out[l] = true
		}
	}
	return out
}

// spooledIDs opens the file directly and lists the event ids still
// stored.
func spooledIDs(t *testing.T, dir, fsync string) map[string]bool {
	out := map[string]bool{}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o640, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("reopen after kill (fsync %s): %v", fsync, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			h, err := decodeRecordHeader(v, nil)
			if err != nil {
				return err
			}
			var e struct {
				ID string `json:"event_id"`
			}
			if err := json.Unmarshal(v[h.jsonOff:], &e); err != nil {
				return err
			}
			// A stored record is pending for some destination (no
			// pending entry means all of them).
			out[e.ID] = true
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

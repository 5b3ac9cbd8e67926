package ndjson_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/ndjson"
)

// destination is the shape of forward.Destination; guard_test.go checks
// against the real interface.
type destination interface {
	Name() string
	Limits() ndjson.Limits
	GroupKey(*enrich.Event) string
	Prepare(*enrich.Event) error
	Send(context.Context, []*enrich.Event) ([]error, error)
	Close() error
}

var _ destination = (*ndjson.Adapter)(nil)

// The behaviour interfaces the delivery core reads errors through.
type (
	retryable  interface{ Retryable() bool }
	retryAfter interface{ RetryAfter() time.Duration }
)

var t0 = time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)

// clock is a fake clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func dest(dir string, maxSize config.Size, maxAge time.Duration) config.Destination {
	return config.Destination{Name: "local", Type: config.TypeNDJSON,
		Options: config.DestinationX{Path: dir, MaxSize: maxSize, MaxAge: config.Duration(maxAge)}}
}

// batch makes n events with ids "<prefix>-<i>".
func batch(prefix string, n int) []*enrich.Event {
	out := make([]*enrich.Event, n)
	for i := range out {
		out[i] = &enrich.Event{
			EventID:    fmt.Sprintf("%s-%d", prefix, i),
			Name:       "page_viewed",
			Source:     enrich.SourceCollect,
			ReceivedAt: t0,
			OccurredAt: t0,
			URL:        "https://shop.example/p?q=\"x\"\n",
			Properties: enrich.Props{{Key: "i", Kind: enrich.PropNumber, Num: float64(i)}},
		}
	}
	return out
}

func newAdapter(t *testing.T, cfg config.Destination, opts ...ndjson.Option) *ndjson.Adapter {
	t.Helper()
	a, err := ndjson.New(cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func send(t *testing.T, a *ndjson.Adapter, events []*enrich.Event) {
	t.Helper()
	per, err := a.Send(context.Background(), events)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(per) != len(events) {
		t.Fatalf("Send returned %d results for %d events", len(per), len(events))
	}
	for i, e := range per {
		if e != nil {
			t.Fatalf("event %d: %v", i, e)
		}
	}
}

// readIDs returns the event ids of every line of path, failing on a line
// that is not a JSON object or lacks its newline.
func readIDs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("%s: partial final line %q", path, b[bytes.LastIndexByte(b, '\n')+1:])
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil || v.EventID == "" {
			t.Fatalf("%s: bad line %q: %v", path, sc.Bytes(), err)
		}
		ids = append(ids, v.EventID)
	}
	return ids
}

// files lists the directory's ndjson files, archives first in name order,
// the current file last.
func files(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "events-*.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	if _, err := os.Stat(filepath.Join(dir, ndjson.FileName)); err == nil {
		m = append(m, filepath.Join(dir, ndjson.FileName))
	}
	return m
}

func allIDs(t *testing.T, dir string) []string {
	var ids []string
	for _, f := range files(t, dir) {
		ids = append(ids, readIDs(t, f)...)
	}
	return ids
}

func ids(events ...[]*enrich.Event) []string {
	var out []string
	for _, b := range events {
		for _, e := range b {
			out = append(out, e.EventID)
		}
	}
	return out
}

func TestSendWritesOneJSONLinePerEvent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "events") // created by New
	a := newAdapter(t, dest(dir, 0, 0))
	if a.Name() != "local" || a.Limits() != (ndjson.Limits{}) || a.GroupKey(&enrich.Event{}) != "" || a.Prepare(&enrich.Event{}) != nil {
		t.Fatal("unexpected Name/Limits/GroupKey/Prepare")
	}
	b1, b2 := batch("a", 3), batch("b", 2)
	send(t, a, b1)
	send(t, a, b2)
	if per, err := a.Send(context.Background(), nil); per != nil || err != nil {
		t.Fatalf("empty batch: %v %v", per, err)
	}
	got := readIDs(t, filepath.Join(dir, ndjson.FileName))
	if want := ids(b1, b2); !slices.Equal(got, want) {
		t.Fatalf("ids %v, want %v", got, want)
	}
	// Each line is exactly AppendJSON's output.
	b, _ := os.ReadFile(filepath.Join(dir, ndjson.FileName))
	first, _, _ := bytes.Cut(b, []byte("\n"))
	if want := b1[0].AppendJSON(nil); !bytes.Equal(first, want) {
		t.Fatalf("line %s\nwant %s", first, want)
	}
}

func TestNewErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"no path", ""},
		{"path is a file", file},
		{"parent is a file", filepath.Join(file, "sub")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a, err := ndjson.New(dest(tc.path, 0, 0), nil); err == nil {
				a.Close()
				t.Fatal("no error")
			}
		})
	}
}

func TestRotateBySize(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: t0} // constant: every rotation collides on the name
	a := newAdapter(t, dest(dir, 2048, 0), ndjson.WithClock(clk.Now))
	var sent [][]*enrich.Event
	for i := range 12 {
		b := batch(fmt.Sprintf("s%d", i), 3)
		send(t, a, b)
		sent = append(sent, b)
	}
	big := batch("big", 40) // larger than max_size: kept whole in a file of its own
	send(t, a, big)
	sent = append(sent, big)
	send(t, a, batch("last", 1))
	sent = append(sent, batch("last", 1))

	fs := files(t, dir)
	if len(fs) < 4 {
		t.Fatalf("only %d files: %v", len(fs), fs)
	}
	if got, want := allIDs(t, dir), ids(sent...); !slices.Equal(got, want) {
		t.Fatalf("ids across files in name order:\n got %v\nwant %v", got, want)
	}
	stamp := t0.Format("20060102T150405.000Z")
	if filepath.Base(fs[0]) != "events-"+stamp+".ndjson" || filepath.Base(fs[1]) != "events-"+stamp+"_1.ndjson" {
		t.Fatalf("archive names %v", fs)
	}
	for _, f := range fs {
		fi, _ := os.Stat(f)
		if n := readIDs(t, f); fi.Size() > 2048 && !(len(n) == 40 && strings.HasPrefix(n[0], "big-")) {
			t.Errorf("%s: %d bytes > max_size", f, fi.Size())
		}
	}
}

func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)
	clk := &clock{t: start}
	a := newAdapter(t, dest(dir, 0, time.Hour), ndjson.WithClock(clk.Now))

	send(t, a, batch("a", 1))
	clk.Add(40 * time.Minute) // 10:55, same hour
	send(t, a, batch("b", 1))
	if n := len(files(t, dir)); n != 1 {
		t.Fatalf("rotated within the period: %d files", n)
	}
	clk.Add(10 * time.Minute) // 11:05: the file's hour is over
	send(t, a, batch("c", 1))
	clk.Add(3 * time.Hour) // idle hours rotate nothing by themselves
	if n := len(files(t, dir)); n != 2 {
		t.Fatalf("%d files, want 2", n)
	}
	send(t, a, batch("d", 1))

	fs := files(t, dir)
	want := []string{"events-20261123T110500.000Z.ndjson", "events-20261123T140500.000Z.ndjson", ndjson.FileName}
	var got []string
	for _, f := range fs {
		got = append(got, filepath.Base(f))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for i, w := range [][]string{{"a-0", "b-0"}, {"c-0"}, {"d-0"}} {
		if g := readIDs(t, fs[i]); !slices.Equal(g, w) {
			t.Errorf("%s: %v, want %v", fs[i], g, w)
		}
	}
}

func TestConcurrentSends(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: t0}
	a := newAdapter(t, dest(dir, 8<<10, time.Minute), ndjson.WithClock(clk.Now))
	const workers, batches, size = 8, 25, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*batches)
	for w := range workers {
		wg.Go(func() {
			for i := range batches {
				if w == 0 && i%5 == 0 {
					clk.Add(time.Minute) // age rotations race with size rotations
				}
				if _, err := a.Send(context.Background(), batch(fmt.Sprintf("w%d.%d", w, i), size)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := allIDs(t, dir)
	if len(got) != workers*batches*size {
		t.Fatalf("%d lines, want %d", len(got), workers*batches*size)
	}
	// Every batch is contiguous and in order: it went out in one write.
	for i := 0; i < len(got); i += size {
		prefix, _, _ := strings.Cut(got[i], "-")
		for j := range size {
			if got[i+j] != fmt.Sprintf("%s-%d", prefix, j) {
				t.Fatalf("line %d: %s, batch %s interleaved", i+j, got[i+j], prefix)
			}
		}
	}
	if n := len(files(t, dir)); n < 3 {
		t.Fatalf("only %d files: rotation not exercised", n)
	}
}

func TestReopen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mtime   time.Time // of the existing file when the adapter starts
		rotated bool
	}{
		{"same period appends", t0.Add(-time.Minute), false},
		{"earlier period rotates at first write", t0.Add(-25 * time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := &clock{t: t0}
			a := newAdapter(t, dest(dir, 0, 0), ndjson.WithClock(clk.Now))
			send(t, a, batch("old", 2))
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			cur := filepath.Join(dir, ndjson.FileName)
			if err := os.Chtimes(cur, tc.mtime, tc.mtime); err != nil {
				t.Fatal(err)
			}
			b := newAdapter(t, dest(dir, 0, 0), ndjson.WithClock(clk.Now))
			if n := len(files(t, dir)); n != 1 {
				t.Fatalf("opening rotated: %d files", n)
			}
			send(t, b, batch("new", 2))
			fs := files(t, dir)
			if tc.rotated != (len(fs) == 2) {
				t.Fatalf("files %v, rotated want %v", fs, tc.rotated)
			}
			if got, want := allIDs(t, dir), []string{"old-0", "old-1", "new-0", "new-1"}; !slices.Equal(got, want) {
				t.Fatalf("ids %v, want %v", got, want)
			}
		})
	}
}

func TestTornTailTrimmedOnOpen(t *testing.T) {
	line := `{"event_id":"x-0"}` + "\n"
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"partial after whole lines", line + `{"event_id":"x-1","na`, []string{"x-0"}},
		{"only a partial line", `{"event_id":"x-1"`, nil},
		{"partial longer than one read", line + strings.Repeat("y", 10000), []string{"x-0"}},
		{"whole lines kept", line + line, []string{"x-0", "x-0"}},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cur := filepath.Join(dir, ndjson.FileName)
			if err := os.WriteFile(cur, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			a := newAdapter(t, dest(dir, 0, 0))
			if got := readIDs(t, cur); !slices.Equal(got, tc.want) {
				t.Fatalf("after open %v, want %v", got, tc.want)
			}
			send(t, a, batch("n", 1))
			if got, want := readIDs(t, cur), append(slices.Clone(tc.want), "n-0"); !slices.Equal(got, want) {
				t.Fatalf("after send %v, want %v", got, want)
			}
		})
	}
}

// faultyFile writes through to a real file and fails on demand: a write
// stores half its bytes and then reports the failure, like a disk that
// fills up in the middle of a write.
type faultyFile struct {
	*os.File
	f *faults
}

type faults struct {
	mu                     sync.Mutex
	write, sync, truncate  error
	opens, failedTruncates int
}

func (f faultyFile) Write(b []byte) (int, error) {
	f.f.mu.Lock()
	err := f.f.write
	f.f.mu.Unlock()
	if err != nil {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: err}
	}
	return f.File.Write(b)
}

func (f faultyFile) Sync() error {
	f.f.mu.Lock()
	defer f.f.mu.Unlock()
	if f.f.sync != nil {
		return f.f.sync
	}
	return f.File.Sync()
}

func (f faultyFile) Truncate(n int64) error {
	f.f.mu.Lock()
	defer f.f.mu.Unlock()
	if f.f.truncate != nil {
		f.f.failedTruncates++
		return f.f.truncate
	}
	return f.File.Truncate(n)
}

func (f *faults) set(write, sync, truncate error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.write, f.sync, f.truncate = write, sync, truncate
}

func (f *faults) open(path string) (ndjson.File, error) {
	f.mu.Lock()
	f.opens++
	f.mu.Unlock()
	file, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return faultyFile{file, f}, nil
}

func TestFailedWritesLeaveWholeLines(t *testing.T) {
	enospc := syscall.ENOSPC
	for _, tc := range []struct {
		name                  string
		write, sync, truncate error
		wait                  time.Duration
		reopens               int
	}{
		{"disk full", enospc, nil, nil, ndjson.DiskFullWait, 0},
		{"I/O error", syscall.EIO, nil, nil, 0, 0},
		{"fsync fails", nil, syscall.EIO, nil, 0, 0},
		{"disk full and undo fails", enospc, nil, syscall.EIO, ndjson.DiskFullWait, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &faults{}
			a := newAdapter(t, dest(dir, 0, 0), ndjson.WithOpenFile(f.open))
			send(t, a, batch("ok", 2))

			f.set(tc.write, tc.sync, tc.truncate)
			_, err := a.Send(context.Background(), batch("fail", 50))
			var r retryable
			var ra retryAfter
			if !errors.As(err, &r) || !r.Retryable() || !errors.As(err, &ra) {
				t.Fatalf("error %v (%T) is not retryable", err, err)
			}
			if ra.RetryAfter() != tc.wait {
				t.Errorf("RetryAfter %v, want %v", ra.RetryAfter(), tc.wait)
			}
			wantErr := tc.write
			if wantErr == nil {
				wantErr = tc.sync
			}
			if !errors.Is(err, wantErr) {
				t.Errorf("error %v does not wrap %v", err, wantErr)
			}
			if tc.truncate == nil {
				// The file is back to whole lines at once.
				if got := readIDs(t, filepath.Join(dir, ndjson.FileName)); !slices.Equal(got, []string{"ok-0", "ok-1"}) {
					t.Fatalf("after failure %v", got)
				}
			}

			f.set(nil, nil, nil) // space freed
			retry := batch("fail", 50)
			send(t, a, retry)
			want := append([]string{"ok-0", "ok-1"}, ids(retry)...)
			if got := allIDs(t, dir); !slices.Equal(got, want) {
				t.Fatalf("after retry %v\nwant %v", got, want)
			}
			if f.opens != 1+tc.reopens {
				t.Errorf("%d opens, want %d", f.opens, 1+tc.reopens)
			}
		})
	}
}

func TestSendAfterCloseIsRetryable(t *testing.T) {
	a := newAdapter(t, dest(t.TempDir(), 0, 0))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := a.Send(context.Background(), batch("late", 1))
	var r retryable
	if !errors.As(err, &r) || !r.Retryable() || !errors.Is(err, ndjson.ErrClosed) {
		t.Fatalf("error %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSendCancelled(t *testing.T) {
	dir := t.TempDir()
	a := newAdapter(t, dest(dir, 0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Send(ctx, batch("c", 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	if got := readIDs(t, filepath.Join(dir, ndjson.FileName)); len(got) != 0 {
		t.Fatalf("cancelled batch written: %v", got)
	}
}

func BenchmarkSend500(b *testing.B) {
	a, err := ndjson.New(dest(b.TempDir(), 0, 0), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	events := batch("bench", 500)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(events[0].AppendJSON(nil))+1) * int64(len(events)))
	for b.Loop() {
		if _, err := a.Send(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzOpenTrimsTornTail: whatever a crash left in the current file, opening
// keeps exactly the content up to its last newline.
func FuzzOpenTrimsTornTail(f *testing.F) {
	for _, s := range []string{"", "\n", "{}\n{\"a\":", "no newline", "a\nb\nc", strings.Repeat("x", 5000) + "\n" + strings.Repeat("y", 5000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		cur := filepath.Join(dir, ndjson.FileName)
		if err := os.WriteFile(cur, content, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := ndjson.New(dest(dir, 0, 0), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		got, err := os.ReadFile(cur)
		if err != nil {
			t.Fatal(err)
		}
		if want := content[:bytes.LastIndexByte(content, '\n')+1]; !bytes.Equal(got, want) {
			t.Fatalf("kept %q of %q, want %q", got, content, want)
		}
	})
}

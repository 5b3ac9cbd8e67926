// Package ndjson is the file destination: it appends events as
// newline-delimited JSON (one enrich.Event.AppendJSON object per line) to
// <path>/events.ndjson and rotates that file by size and age. It is the
// embedded default destination, readable with any line-oriented tool.
//
// Durability: each Send writes its whole batch with one write call and
// fsyncs before it returns, so a delivered batch survives power loss. A
// crash during a write can leave a partial final line; readers must skip a
// final line without its newline, and the adapter trims it on the next
// start (its batch was never acknowledged, so the delivery core sends it
// again). See docs/destinations/ndjson.md.
package ndjson

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// FileName is the name of the file events are appended to inside the
// destination directory.
const FileName = "events.ndjson"

// Rotation defaults, used when max_size or max_age is zero.
const (
	DefaultMaxSize = 128 << 20
	DefaultMaxAge  = 24 * time.Hour
)

// DiskFullWait is how long delivery waits before retrying after the disk
// filled up: long enough for an operator or logrotate to act, short enough
// that delivery resumes soon after.
const DiskFullWait = 30 * time.Second

// ErrClosed is the cause of the error Send returns after Close.
var ErrClosed = errors.New("ndjson: destination closed")

// File is the part of *os.File the adapter uses. Tests inject failures
// (a full disk) through WithOpenFile.
type File interface {
	io.Writer
	io.ReaderAt
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// Option adjusts an Adapter; the defaults are what production wants.
type Option func(*Adapter)

// WithClock replaces time.Now, which decides rotation by age and names
// rotated files.
func WithClock(now func() time.Time) Option { return func(a *Adapter) { a.now = now } }

// WithOpenFile replaces how the current file is opened (for reading and
// appending, created if missing).
func WithOpenFile(open func(path string) (File, error)) Option {
	return func(a *Adapter) { a.open = open }
}

// Adapter is the ndjson destination. It is safe for concurrent use:
// batches are encoded concurrently and written one at a time.
type Adapter struct {
	name    string
	dir     string
	path    string
	maxSize int64
	maxAge  time.Duration
	now     func() time.Time
	open    func(string) (File, error)
	log     *zap.Logger
	bufs    sync.Pool // *[]byte encode buffers

	mu     sync.Mutex
	f      File  // nil after a failed write could not be undone: reopened by the next Send
	size   int64 // bytes in f, all of them whole lines
	undo   int64 // when >= 0, the size to cut the file back to at the next open
	period time.Time
	closed bool
}

// Limits is the request bound type every adapter returns.
type Limits = status.Limits

// New opens (creating if needed) the directory cfg.Options.Path and its
// current file, so a path that cannot be written stops start-up.
func New(cfg config.Destination, log *zap.Logger, opts ...Option) (*Adapter, error) {
	o := cfg.Options
	if o.Path == "" {
		return nil, fmt.Errorf("ndjson destination %q: path is required", cfg.Name)
	}
	if log == nil {
		log = zap.NewNop()
	}
	a := &Adapter{
		name:    cfg.Name,
		dir:     o.Path,
		path:    filepath.Join(o.Path, FileName),
		maxSize: o.MaxSize.Bytes(),
		maxAge:  o.MaxAge.D(),
		now:     time.Now,
		open:    openOS,
		log:     log.With(zap.String("destination", cfg.Name)),
		undo:    -1,
	}
	if a.maxSize <= 0 {
		a.maxSize = DefaultMaxSize
	}
	if a.maxAge <= 0 {
		a.maxAge = DefaultMaxAge
	}
	for _, opt := range opts {
		opt(a)
	}
	if err := os.MkdirAll(a.dir, 0o750); err != nil {
		return nil, fmt.Errorf("ndjson destination %q: %w", cfg.Name, err)
	}
	if err := a.openLocked(); err != nil {
		return nil, fmt.Errorf("ndjson destination %q: %w", cfg.Name, err)
	}
	return a, nil
}

func openOS(path string) (File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
}

// Name is the configured destination name.
func (a *Adapter) Name() string { return a.name }

// Limits: a file takes batches of any size; batch.* in the config applies.
func (a *Adapter) Limits() Limits { return Limits{} }

// GroupKey puts every event in one group: lines have no grouping.
func (a *Adapter) GroupKey(*enrich.Event) string { return "" }

// Prepare accepts every event: a file has no rules of its own.
func (a *Adapter) Prepare(*enrich.Event) error { return nil }

// SendsStoredJSON tells the delivery core that each line is the event's
// canonical JSON and that no field is read, so events may come as
// stored, without being decoded first.
func (a *Adapter) SendsStoredJSON() bool { return true }

// Send appends batch as one write followed by fsync. On success every
// per-event result is nil; on failure the file is left as it was (whole
// lines only) and err is retryable, with a wait when the disk is full.
func (a *Adapter) Send(ctx context.Context, batch []*enrich.Event) ([]error, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	bp := a.buf()
	defer a.bufs.Put(bp)
	b := (*bp)[:0]
	for _, e := range batch {
		b = e.AppendJSON(b)
		b = append(b, '\n')
	}
	*bp = b

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, status.Retry(ErrClosed)
	}
	if err := a.writeLocked(b); err != nil {
		return nil, classify(err)
	}
	return make([]error, len(batch)), nil
}

func (a *Adapter) buf() *[]byte {
	if v := a.bufs.Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

// writeLocked appends b to the current file, rotating first when b would
// take it past max_size or the clock has left the file's age period.
func (a *Adapter) writeLocked(b []byte) error {
	now := a.now()
	if a.f == nil {
		if err := a.openLocked(); err != nil {
			return err
		}
	}
	period := now.Truncate(a.maxAge)
	if a.size > 0 && (a.size+int64(len(b)) > a.maxSize || period.After(a.period)) {
		if err := a.rotateLocked(now); err != nil {
			return err
		}
	}
	before := a.size
	n, err := a.f.Write(b)
	if err == nil {
		err = a.f.Sync()
	}
	if err != nil {
		// Take back what reached the file so it keeps whole lines only and
		// the retried batch is not stored twice. When that fails too, drop
		// the handle: the next open cuts the file back before writing.
		if terr := a.f.Truncate(before); terr != nil {
			a.log.Warn("ndjson: cannot undo a failed write; reopening", zap.Error(terr))
			_ = a.f.Close()
			a.f, a.undo = nil, before
		}
		return err
	}
	if before == 0 {
		a.period = period
	}
	a.size += int64(n)
	return nil
}

// openLocked opens the current file, cuts off what a failed write left
// (a torn final line after a crash, or a batch whose write could not be
// undone), and takes the file's age period from its modification time: the
// last write happened in the period of every line in it (writes rotate
// when the period changes), so a file left over from an earlier period is
// rotated at the first write.
func (a *Adapter) openLocked() error {
	f, err := a.open(a.path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	size := fi.Size()
	if a.undo >= 0 && a.undo <= size {
		err = f.Truncate(a.undo)
		size = a.undo
	} else {
		size, err = trimTornTail(f, size)
	}
	if err != nil {
		_ = f.Close()
		return err
	}
	a.undo = -1
	if size != fi.Size() {
		a.log.Warn("ndjson: removed the partial end a crash or failed write left",
			zap.String("path", a.path), zap.Int64("bytes", fi.Size()-size))
	}
	a.f, a.size, a.period = f, size, fi.ModTime().Truncate(a.maxAge)
	return nil
}

// trimTornTail cuts the file back to just after its last newline.
func trimTornTail(f File, size int64) (int64, error) {
	buf := make([]byte, 4096)
	for end := size; end > 0; {
		n := min(end, int64(len(buf)))
		chunk := buf[:n]
		if m, err := f.ReadAt(chunk, end-n); err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
			return size, err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			keep := end - n + int64(i) + 1
			if keep == size {
				return size, nil
			}
			return keep, f.Truncate(keep)
		}
		end -= n
	}
	if size == 0 {
		return 0, nil
	}
	return 0, f.Truncate(0)
}

// rotateLocked renames the current file to events-<UTC time>.ndjson and
// opens a fresh one. The name never replaces an existing file: a second
// rotation within the same millisecond gets a _1, _2, … suffix, which still
// sorts after the first.
func (a *Adapter) rotateLocked(now time.Time) error {
	if err := a.f.Close(); err != nil {
		a.log.Warn("ndjson: closing rotated file", zap.Error(err))
	}
	a.f = nil
	stamp := now.UTC().Format("20060102T150405.000Z")
	target := filepath.Join(a.dir, "events-"+stamp+".ndjson")
	for i := 1; ; i++ {
		if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return err
		}
		target = filepath.Join(a.dir, fmt.Sprintf("events-%s_%d.ndjson", stamp, i))
	}
	if err := os.Rename(a.path, target); err != nil {
		return err
	}
	a.syncDir()
	if err := a.openLocked(); err != nil {
		return err
	}
	a.syncDir()
	return nil
}

// syncDir makes a rename or a new file durable. Some file systems refuse
// to fsync a directory; that costs durability of the name only, so it is
// logged, not failed.
func (a *Adapter) syncDir() {
	d, err := os.Open(a.dir)
	if err == nil {
		err = d.Sync()
		_ = d.Close()
	}
	if err != nil {
		a.log.Debug("ndjson: fsync of directory failed", zap.Error(err))
	}
}

// classify turns a local failure into the delivery error: a full disk asks
// for a wait (retrying at once cannot help), anything else is retried with
// backoff.
func classify(err error) error {
	e := status.Retry(err)
	if se, ok := e.(*status.Error); ok && errors.Is(err, syscall.ENOSPC) {
		se.Wait = DiskFullWait
	}
	return e
}

// Close syncs and closes the current file. Send after Close returns a
// retryable error, so events are never lost to a late call.
func (a *Adapter) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.f == nil {
		return nil
	}
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	a.f = nil
	return err
}

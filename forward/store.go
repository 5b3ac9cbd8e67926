package forward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// File layout (one bbolt file, spool.db):
//
//	meta        "version" → layout version
//	events      seq → record (sequence = last seq assigned)
//	pending     seq → 8-byte mask of the record's destinations not done yet
//	              (no entry: all of them; written when the first is done)
//	dests/<d>   "cursor" → last seq d has passed; retry/ seq → retry state
//	dlq/<d>     own seq → dead letter
//	quarantine  own seq → dead letter
//	ids/<hour>  dedup key → 1
var (
	bucketMeta       = []byte("meta")
	bucketEvents     = []byte("events")
	bucketPending    = []byte("pending")
	bucketDests      = []byte("dests")
	bucketDLQ        = []byte("dlq")
	bucketQuarantine = []byte("quarantine")
	bucketIDs        = []byte("ids")
	bucketRetry      = []byte("retry")
	keyVersion       = []byte("version")
	keyCursor        = []byte("cursor")
)

// layoutVersion is the file layout this code writes.
const layoutVersion = 1

// FileName is the spool file inside spool.dir.
const FileName = "spool.db"

// errCorrupt marks a file that failed the start-up check.
var errCorrupt = errors.New("spool file is corrupt")

// openStore opens and checks the file, setting a corrupt one aside once.
func (s *Spool) openStore() error {
	dir := s.cfg.Spool.Dir
	if dir == "" {
		return errors.New("forward: spool.dir is not set")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("forward: spool dir: %w", err)
	}
	s.path = filepath.Join(dir, FileName)
	err := s.tryOpen()
	if err == nil || !errors.Is(err, errCorrupt) {
		return err
	}
	aside := fmt.Sprintf("%s.corrupt-%s", s.path, time.Now().UTC().Format("20060102T150405Z"))
	s.log.Error("SPOOL FILE IS CORRUPT: setting it aside and starting with an empty spool; "+
		"events in it were not delivered and are kept in the renamed file for forensics",
		zap.String("file", s.path), zap.String("renamed_to", aside), zap.Error(err))
	if rerr := os.Rename(s.path, aside); rerr != nil {
		return fmt.Errorf("forward: setting aside corrupt spool %s: %w (original problem: %v)", s.path, rerr, err)
	}
	if err := s.tryOpen(); err != nil {
		return fmt.Errorf("forward: fresh spool after setting aside a corrupt one: %w", err)
	}
	return nil
}

// tryOpen checks the file, opens it and loads its state. Anything that
// says the content is not what this code wrote is errCorrupt; a lock held
// elsewhere is ErrLocked; other failures (permissions) are returned as is.
func (s *Spool) tryOpen() (err error) {
	if fi, serr := os.Stat(s.path); serr == nil && fi.Size() > 0 {
		if err := s.precheck(); err != nil {
			return err
		}
	}
	db, err := s.boltOpen(&bolt.Options{
		Timeout:        s.o.lockTimeout,
		NoSync:         !s.cfg.Spool.Fsync.Always,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Readers (deliverers) then rarely block the writer on a remap.
		InitialMmapSize: 256 << 20,
	})
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errCorrupt, r)
		}
		if err != nil {
			s.db = nil
			_ = db.Close()
		}
	}()
	debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(false)
	if err := prepareFile(db); err != nil {
		return err
	}
	s.db = db
	return s.load()
}

// precheck opens the file read-only and walks every page reachable from
// its root, touching every key and value, in this goroutine. bbolt checks
// pages with assertions that panic, some of them in goroutines of its own
// (the free-page scan of a NoFreelistSync open, Tx.Check), and a read past
// a corrupt offset faults: here both become errCorrupt instead of killing
// the process, so a bad file is set aside rather than crash-looping.
func (s *Spool) precheck() (err error) {
	db, err := s.boltOpen(&bolt.Options{ReadOnly: true, Timeout: s.o.lockTimeout})
	if err != nil {
		return err
	}
	defer db.Close()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errCorrupt, r)
		}
	}()
	debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(false)
	return db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(b, string(name), 0) })
	})
}

// walk visits every key and value of b and its nested buckets, checking
// key order.
func walk(b *bolt.Bucket, path string, depth int) error {
	if depth > 4 {
		return fmt.Errorf("%w: buckets nested too deep at %s", errCorrupt, path)
	}
	var prev []byte
	var sum byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("%w: keys out of order in %s", errCorrupt, path)
		}
		prev = k
		if v == nil {
			nb := b.Bucket(k)
			if nb == nil {
				return fmt.Errorf("%w: dangling bucket in %s", errCorrupt, path)
			}
			if err := walk(nb, path+"/"+string(k), depth+1); err != nil {
				return err
			}
			continue
		}
		for _, x := range v {
			sum += x
		}
	}
	_ = sum
	return nil
}

// boltOpen opens the file, classifying failures.
func (s *Spool) boltOpen(o *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", errCorrupt, r)
		}
	}()
	debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(false)
	db, err = bolt.Open(s.path, 0o640, o)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("forward: %s: %w", s.path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return nil, fmt.Errorf("forward: open spool %s: %w", s.path, err)
}

// prepareFile creates missing buckets and checks the layout version. It
// is the first write transaction, in which bbolt rebuilds the free list
// by walking the file (NoFreelistSync).
func prepareFile(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketEvents, bucketPending, bucketDests, bucketDLQ, bucketQuarantine, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("%w: bucket %s: %v", errCorrupt, name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keyVersion)
		switch {
		case v == nil:
			return meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, layoutVersion))
		case len(v) != 8:
			return fmt.Errorf("%w: layout version", errCorrupt)
		case binary.BigEndian.Uint64(v) > layoutVersion:
			// Newer sidetrack wrote it: refuse rather than set aside a
			// good file after a downgrade.
			return fmt.Errorf("forward: spool layout %d is newer than this sidetrack supports (%d); upgrade sidetrack",
				binary.BigEndian.Uint64(v), layoutVersion)
		}
		return nil
	})
}

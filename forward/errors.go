package forward

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// ErrLocked is returned by Open when another process holds the spool file
// (bbolt's flock): sidetrack is running, so the CLI must go through the
// admin API instead.
var ErrLocked = errors.New("spool is locked by another process (is sidetrack running? use the admin API)")

// ErrDraining is returned by Append and Quarantine once Close began. The
// proxy answers it with 503 (it implements Draining() bool).
var ErrDraining error = drainingError{}

type drainingError struct{}

func (drainingError) Error() string  { return "forward: spool is draining (sidetrack is shutting down)" }
func (drainingError) Draining() bool { return true }

// FullError says the spool cannot take more right now: the spool is at
// spool.max_bytes, or the disk is full. The proxy answers it with 429 and
// Retry-After; nothing was stored.
type FullError struct {
	// Wait is how long the client should wait before retrying.
	Wait time.Duration
	// DiskFull is set when the file system refused the write.
	DiskFull bool
	// Err is the file system's error, if any.
	Err error
}

func (e *FullError) Error() string {
	if e.DiskFull && e.Err != nil {
		return fmt.Sprintf("forward: disk full, retry after %s: %v", e.Wait, e.Err)
	}
	if e.DiskFull {
		return fmt.Sprintf("forward: disk full, retry after %s", e.Wait)
	}
	return fmt.Sprintf("forward: spool full (spool.max_bytes), retry after %s", e.Wait)
}

// RetryAfter is the wait to give the client.
func (e *FullError) RetryAfter() time.Duration { return e.Wait }

// Unwrap returns the file system's error.
func (e *FullError) Unwrap() error { return e.Err }

// isDiskFull reports whether err is the file system running out of room.
// bbolt formats some of its errors with %s, losing the errno, so the
// message is checked too.
func isDiskFull(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, berrors.ErrMaxSizeReached) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EFBIG.Error()) ||
		strings.Contains(msg, syscall.EDQUOT.Error())
}

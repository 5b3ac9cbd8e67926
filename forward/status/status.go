// Package status is the retry table of DESIGN §5, in one place: it turns a
// destination's answer (an HTTP status, a Retry-After, a network error)
// into an error whose methods say what delivery must do. Adapters import
// it; the delivery core reads the methods through interfaces of its own.
package status

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a classified delivery failure.
type Error struct {
	// Code is the HTTP status, or 0 for a network or local failure.
	Code int
	// Wait is the destination's Retry-After, already capped by the caller.
	Wait time.Duration
	// Excerpt is a short, PII-free part of the answer for the DLQ entry.
	Excerpt string
	// Err is the underlying cause, if any.
	Err   error
	class class
}

type class uint8

const (
	classRetry class = iota
	classPermanent
	classPause
	classTooLarge
)

func (e *Error) Error() string {
	var b strings.Builder
	if e.Code != 0 {
		fmt.Fprintf(&b, "HTTP %d", e.Code)
	} else {
		b.WriteString("delivery failed")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Excerpt != "" {
		b.WriteString(": ")
		b.WriteString(e.Excerpt)
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the failure is retried with backoff.
func (e *Error) Retryable() bool { return e.class == classRetry }

// RetryAfter is the wait the destination asked for (0 = none).
func (e *Error) RetryAfter() time.Duration { return e.Wait }

// Permanent reports whether the event goes to the DLQ at once.
func (e *Error) Permanent() bool { return e.class == classPermanent }

// Paused reports whether the destination must pause (401/403).
func (e *Error) Paused() bool { return e.class == classPause }

// TooLarge reports whether the batch must be split (413).
func (e *Error) TooLarge() bool { return e.class == classTooLarge }

// StatusCode is the destination's HTTP status (0 when there was none),
// recorded with a dead letter.
func (e *Error) StatusCode() int { return e.Code }

// ResponseExcerpt is the short, PII-free part of the answer recorded with
// a dead letter.
func (e *Error) ResponseExcerpt() string { return e.Excerpt }

// Pause is a failure that pauses the destination until a probe succeeds:
// credentials refused or revoked by a non-HTTP destination (Kafka SASL or
// ACLs, a Graph API token error in a 400 body).
func Pause(err error) error { return &Error{Err: err, class: classPause} }

// FromHTTP classifies an HTTP answer per the retry table. It returns nil
// for 2xx. retryAfter is the raw Retry-After header (seconds or an
// HTTP-date); excerpt is a short part of the body for the DLQ.
func FromHTTP(code int, retryAfter string, now time.Time, excerpt string) error {
	if code >= 200 && code < 300 {
		return nil
	}
	e := &Error{Code: code, Excerpt: Excerpt(excerpt)}
	switch {
	case code == http.StatusTooManyRequests, code == http.StatusRequestTimeout,
		code == http.StatusTooEarly,
		code >= 500 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported:
		e.class = classRetry
		e.Wait = ParseRetryAfter(retryAfter, now)
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		e.class = classPause
	case code == http.StatusRequestEntityTooLarge:
		e.class = classTooLarge
	default:
		// Other 4xx, 501, 505, and anything outside 2xx-5xx (1xx, 3xx:
		// redirects are never followed to a place the config did not name).
		e.class = classPermanent
	}
	return e
}

// Limits bounds one request to a destination (returned by an adapter's
// Limits method).
type Limits struct {
	MaxEvents int // 0 = no limit of its own (batch.max_events applies)
	MaxBytes  int // encoded size; 0 = no limit of its own
}

// RetryIn is a retryable failure that should wait d before the next try
// (e.g. a full disk), without counting the wait as an attempt.
func RetryIn(err error, d time.Duration) error {
	return &Error{Err: err, Wait: d, class: classRetry}
}

// Network wraps a transport failure (connect, reset, timeout): retryable.
// A cancelled context is returned as is, so shutdown is not a failure.
func Network(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &Error{Err: err, class: classRetry}
}

// Retry is a retryable failure with a cause (e.g. a broker that has not
// acknowledged yet).
func Retry(err error) error { return &Error{Err: err, class: classRetry} }

// Permanent is a failure that retrying cannot fix (a Prepare rejection, an
// event the destination's rules refuse).
func Permanent(err error) error { return &Error{Err: err, class: classPermanent} }

// Permanentf is Permanent with a formatted message.
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// IsTimeout reports whether err is a network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ParseRetryAfter reads a Retry-After value: delta seconds or an HTTP-date.
// It returns 0 when absent, malformed or in the past.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(365*24*3600) {
			n = 365 * 24 * 3600
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}

// Excerpt shortens an answer body for a DLQ entry: at most 256 bytes,
// printable ASCII only (a body may echo anything).
func Excerpt(s string) string {
	const max = 256
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		c := s[i]
		switch {
		case c == '\n' || c == '\r' || c == '\t':
			b.WriteByte(' ')
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		}
	}
	return b.String()
}

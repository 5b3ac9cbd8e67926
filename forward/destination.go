package forward

import (
	"context"
	"time"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/status"
)

// Destination is what the delivery core needs from an adapter (one package
// per destination under forward/). Adapters never import forward: they
// satisfy this interface structurally and report errors through the
// behaviour interfaces below.
//
// Concurrency: Name, Limits, GroupKey and Prepare are called from the
// destination's one delivery goroutine; Send is called from up to
// WithSenders goroutines at once (default 4), so it must be safe for
// concurrent use. The events belong to the delivery core: an adapter must
// not keep them, or strings from them, after Send returns.
type Destination interface {
	// Name is the configured destination name.
	Name() string
	// Limits bounds one request to the destination.
	Limits() Limits
	// GroupKey returns the key of the events that must share a request
	// (e.g. GA4's client id); "" puts every event in one group.
	GroupKey(e *enrich.Event) string
	// Prepare rejects an event before batching (too old, missing a
	// required field). A non-nil error dead-letters the event at once.
	// Spool.Explain also calls it, from request goroutines, for the live
	// trace: it must only read e and the adapter's settings.
	Prepare(e *enrich.Event) error
	// Send delivers batch. It returns one error per event, in order (nil =
	// delivered; a nil slice means all delivered), or a single error for
	// the whole batch as err (then perEvent is ignored). Errors are
	// classified with Retryable, RetryAfter, Permanent, Paused and
	// TooLarge below; an error with none of them is retried. When every
	// event fails with a retryable error, the batch is treated as one
	// failed request (the destination backs off and its cursor waits);
	// otherwise only the failed events are retried, from the retry set.
	// ctx carries the destination's timeout and is cancelled at shutdown
	// (a cancelled send is not an attempt).
	Send(ctx context.Context, batch []*enrich.Event) (perEvent []error, err error)
	// Close releases the adapter's resources after the last Send.
	Close() error
}

// storedJSONSender is implemented by adapters that send each event as its
// canonical JSON (enrich.Event.AppendJSON) and read no other field than
// EventID and Name in GroupKey, Prepare and Send (webhook, ndjson). When
// SendsStoredJSON is true, delivery hands them light events
// (enrich.Event.LoadStoredJSON): the spooled JSON goes out as stored,
// without being decoded and encoded again.
type storedJSONSender interface{ SendsStoredJSON() bool }

// Limits bounds one request to a destination. It is declared in
// forward/status, which adapters import, because an adapter's Limits method
// must return this very type to satisfy Destination.
type Limits = status.Limits

// The behaviour interfaces an adapter's errors may implement. forward
// checks them with errors.As; it never parses error strings.
type (
	// retryable errors are retried with backoff (network errors,
	// timeouts, 408, 425, 429, 5xx except 501/505).
	retryable interface{ Retryable() bool }
	// retryAfter errors carry the wait the destination asked for
	// (Retry-After); the wait is not counted as an attempt.
	retryAfter interface{ RetryAfter() time.Duration }
	// permanent errors dead-letter the event at once (other 4xx, 501,
	// 505, Prepare rejections).
	permanent interface{ Permanent() bool }
	// paused errors (401/403) pause the destination until a probe
	// succeeds; its events stay in its backlog.
	paused interface{ Paused() bool }
	// tooLarge errors (413) split the batch and retry the halves.
	tooLarge interface{ TooLarge() bool }
)

package status

import "time"

// DeadLetter is an event delivery gave up on, as the delivery core hands
// it to an external log's dead-letter queue (the forward process mode keeps
// its DLQs in Kafka, not in the spool). It lives here because the log's
// implementation, like an adapter, must not import forward.
type DeadLetter struct {
	// Seq is the log's own number for the record (LogRecord order).
	Seq uint64
	// Appended is when the edge accepted the event; Dead when delivery
	// gave up on it.
	Appended, Dead time.Time
	// Reason is the fixed-vocabulary cause (rejected, max_attempts, …).
	Reason string
	// Attempts counts the sends that failed; Status is the destination's
	// last HTTP status (0 when none).
	Attempts, Status int
	// Excerpt is the short, PII-free part of the last answer.
	Excerpt string
	// Event is the event encoding (enrich.Event.AppendJSON).
	Event []byte
}

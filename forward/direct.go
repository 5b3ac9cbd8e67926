package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/ndjson"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("forward: sink closed")

// DirectSink writes accepted events straight to the configured ndjson
// destinations before the answer is sent, and quarantined events to
// <spool.dir>/quarantine.ndjson. It is the minimal sink used until the
// durable spool takes over; it releases every event it is given.
type DirectSink struct {
	pool *enrich.EventPool

	mu         sync.Mutex
	closed     bool
	dests      []*ndjson.Writer
	quarantine *ndjson.Writer
	buf        []byte
}

// NewDirectSink opens every ndjson destination of cfg. Other destination
// types need the delivery core and are refused.
func NewDirectSink(cfg *config.Config, pool *enrich.EventPool) (*DirectSink, error) {
	s := &DirectSink{pool: pool}
	for _, d := range cfg.Destinations {
		if d.Type != "ndjson" {
			s.Close()
			return nil, fmt.Errorf("destination %q: type %q is not supported by this build", d.Name, d.Type)
		}
		w, err := ndjson.Open(d.Options.Path)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("destination %q: %w", d.Name, err)
		}
		s.dests = append(s.dests, w)
	}
	qdir := filepath.Join(cfg.Spool.Dir, "quarantine")
	if err := os.MkdirAll(qdir, 0o750); err != nil {
		s.Close()
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	q, err := ndjson.Open(qdir)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	s.quarantine = q
	return s, nil
}

// Append encodes events as NDJSON and writes them to every destination,
// then releases them. On error the caller keeps them.
func (s *DirectSink) Append(_ context.Context, events []*enrich.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	b := s.buf[:0]
	for _, e := range events {
		b = e.AppendJSON(b)
		b = append(b, '\n')
	}
	s.buf = b
	for _, w := range s.dests {
		if err := w.Write(b); err != nil {
			return fmt.Errorf("append: %w", err)
		}
	}
	s.release(events)
	return nil
}

// Quarantine writes {"reason":…,"event":{…}} lines and releases the events.
func (s *DirectSink) Quarantine(_ context.Context, events []*enrich.Event, reasons []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	b := s.buf[:0]
	for i, e := range events {
		b = append(b, `{"reason":`...)
		r := "invalid"
		if i < len(reasons) {
			r = reasons[i]
		}
		b = appendJSONString(b, r)
		b = append(b, `,"event":`...)
		b = e.AppendJSON(b)
		b = append(b, "}\n"...)
	}
	s.buf = b
	if err := s.quarantine.Write(b); err != nil {
		return err
	}
	s.release(events)
	return nil
}

func (s *DirectSink) release(events []*enrich.Event) {
	for _, e := range events {
		s.pool.Put(e)
	}
}

// Close flushes and closes every file. Append after Close returns ErrClosed.
func (s *DirectSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, w := range s.dests {
		errs = append(errs, w.Close())
	}
	if s.quarantine != nil {
		errs = append(errs, s.quarantine.Close())
	}
	return errors.Join(errs...)
}

// appendJSONString appends a JSON string for a reason from the fixed,
// PII-free vocabulary of the pipeline; only quotes and backslashes need
// escaping there, control bytes are dropped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

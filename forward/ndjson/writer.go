package ndjson

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Writer appends encoded events to <dir>/events.ndjson without rotation.
// It serves forward.DirectSink until the delivery core drives Adapter;
// new code uses Adapter. It is safe for concurrent use.
type Writer struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// Open creates dir if needed and opens its events file for appending.
func Open(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("ndjson: %w", err)
	}
	p := filepath.Join(dir, FileName)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("ndjson: %w", err)
	}
	return &Writer{f: f, path: p}, nil
}

// Path returns the file being written.
func (w *Writer) Path() string { return w.path }

// Write appends b, which must hold whole lines, in one write call so that
// concurrent readers never see half a line from this writer.
func (w *Writer) Write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return os.ErrClosed
	}
	_, err := w.f.Write(b)
	return err
}

// Sync flushes the file to stable storage.
func (w *Writer) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return os.ErrClosed
	}
	return w.f.Sync()
}

// Close syncs and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	return err
}

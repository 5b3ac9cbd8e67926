package forward

import (
	"context"
	"errors"
)

// Start starts one deliverer per destination. ctx bounds them as a whole:
// cancelling it stops delivery abruptly (Close is the orderly way). Start
// does nothing for a spool opened without adapters.
func (s *Spool) Start(ctx context.Context) error {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.started {
		return errors.New("forward: spool already started")
	}
	if s.draining.Load() {
		return ErrDraining
	}
	s.started = true
	s.flush = make(chan struct{})
	s.hard = make(chan struct{})
	for _, d := range s.dests {
		if d.dest == nil {
			continue
		}
		x := newDeliverer(s, d)
		s.delivers = append(s.delivers, x)
		s.runWG.Add(1)
		go func() {
			defer s.runWG.Done()
			x.run(s.flush, s.hard)
		}()
	}
	s.watchDone = make(chan struct{})
	go func() {
		defer close(s.watchDone)
		select {
		case <-ctx.Done():
			s.stopHard()
		case <-s.hard:
		}
	}()
	return nil
}

// stopDelivery asks every deliverer to flush, and stops them hard when ctx
// ends; it returns when all have recorded their state.
func (s *Spool) stopDelivery(ctx context.Context) {
	s.runMu.Lock()
	if !s.started || s.stopped {
		s.runMu.Unlock()
		return
	}
	s.stopped = true
	close(s.flush)
	s.runMu.Unlock()
	done := make(chan struct{})
	go func() {
		s.runWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.stopHard()
		<-done
	}
	s.stopHard()
	<-s.watchDone
}

// stopHard ends every deliverer now (sends in flight are cancelled).
func (s *Spool) stopHard() {
	s.hardOnce.Do(func() { close(s.hard) })
}

package ozone

import "context"

// advanced is the checkpoint's OnAdvance: every event up to pos is in Kafka.
func (s *Source) advanced(pos position) { s.cfg.Observer.Committed(pos.id, pos.createdAt) }

// drain waits until the sink called Done for every message it accepted, or the drain timeout passed, so that the
// final save includes them.
func (s *Source) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), s.drainTimeout)
	defer cancel()
	if n := s.cp.Drain(ctx); n > 0 {
		s.log.Warn("stopping with events not acknowledged by Kafka; they will be produced again after a restart", "events", n)
	}
}

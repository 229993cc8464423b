package ozone

import (
	"context"
	"time"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/metrics"
)

// mark is a watermark entry: an event's position and how many messages had been handed to the sink up to and
// including it, so that a committed mark tells how many in-flight slots it frees.
type mark struct {
	pos position
	n   int
}

// The in-flight window counts events read but not yet durable in the cursor file, rather than events not yet
// acknowledged by Kafka: that is what bounds the repeats after a kill -9 to one window. The persister therefore
// saves the cursor as soon as the watermark moves (one fsync per Kafka acknowledgement batch, cheap at Ozone's
// event rates) and only then frees the slots of the events the save covers.

// advanced runs under the watermark's lock each time it moves: it only updates metrics and wakes the persister.
func (s *Source) advanced(m mark) {
	metrics.CursorCommitted.WithLabelValues(sourceLabel).Set(float64(m.pos.id))
	metrics.OzoneLastEvent.WithLabelValues("id").Set(float64(m.pos.id))
	metrics.OzoneLastEvent.WithLabelValues("created_at").Set(float64(m.pos.createdAt.UnixMilli()) / 1000)
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending; it will see this mark
	}
}

// persist saves the committed cursor whenever it moves, until ctx ends, and once more then. A failing save (disk
// full, say) is retried with backoff; meanwhile the window stays full and reading waits, so the source never runs
// ahead of a cursor it cannot keep.
func (s *Source) persist(ctx context.Context) {
	r := s.newRetrier("cursor save")
	var saved mark
	for {
		select {
		case <-ctx.Done():
			if err := s.save(&saved); err != nil {
				s.log.Error("final cursor save failed; the last events will be produced again after a restart", "err", err)
			}
			return
		case <-s.wake:
		}
		if err := s.save(&saved); err != nil {
			if backoff.Sleep(ctx, r.failed(err)) {
				s.poke()
			}
			continue
		}
		r.ok()
	}
}

// save writes the committed mark when it is newer than *saved, then frees the slots it covers.
func (s *Source) save(saved *mark) error {
	m, ok := s.wm.Committed()
	if !ok || m.n == saved.n {
		return nil
	}
	// A zero position comes only from events without a readable createdAt before any other, with no cursor to
	// start from; saving it would mean "start over", so the file keeps its old content and only slots are freed.
	if !m.pos.createdAt.IsZero() {
		if err := s.cfg.Cursor.Save(m.pos.String()); err != nil {
			return err
		}
	}
	for range m.n - saved.n {
		<-s.slots
	}
	*saved = m
	return nil
}

func (s *Source) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drain waits until the sink called Done for every message it accepted, or the drain timeout passed, so that the
// final save includes them.
func (s *Source) drain() {
	deadline := time.Now().Add(s.drainTimeout)
	for s.unacked.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.unacked.Load(); n > 0 {
		s.log.Warn("stopping with events not acknowledged by Kafka; they will be produced again after a restart", "events", n)
	}
}

package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/atkafka/atkafka/sink"
)

// stage is how far the delivery of a frame has fallen back.
type stage uint8

const (
	stageRecords    stage = iota // the frame's own message
	stageDeadLetter              // the whole raw frame, as a dead letter
	stageTruncated               // the start of the raw frame, as a dead letter
)

// finish is the Done of every message: it moves the watermark past the frame and frees its job, or hands a
// failed delivery to the retry goroutine (Done must not block).
func (j *job) finish(err error) {
	s := j.src
	if err != nil {
		j.failure = err
		s.retries <- j // never blocks: it holds as many jobs as exist
		return
	}
	s.obs.Delivered(time.Since(j.received))
	s.cp.Done(&j.msg)
	s.jobs.put(j)
}

// retry redelivers failed frames until ctx ends.
func (s *Source) retry(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.retries:
			s.redeliver(ctx, j)
		}
	}
}

// redeliver handles a message Kafka refused for good (a record too large, a topic it may not write, ...). The
// cursor must not move past a frame Kafka does not hold, so the frame falls back to the dead-letter topic:
// whole first, then truncated to sink.MaxDeadLetterRaw. When even that is refused the source stops with an error:
// the frame stays pending, the saved cursor stays before it, and a restart (after fixing Kafka) retries it.
func (s *Source) redeliver(ctx context.Context, j *job) {
	if errors.Is(j.failure, sink.ErrStopped) {
		// Not this frame's fault (an exactly-once producer fenced by another instance): no dead letter, stop.
		s.fail(j, fmt.Errorf("frame seq %d not delivered: %w", j.seq, j.failure))
		return
	}
	next, ok := j.fallback()
	if !ok {
		s.fail(j, fmt.Errorf("kafka refused frame seq %d (did %s) for good, also as a dead letter: %w; "+
			"the cursor stays before it, so a restart retries it", j.seq, j.did, j.failure))
		return
	}
	j.stage = next
	p := &problem{"produce_failed", j.failure}
	if j.bad != nil {
		p.kind = j.bad.kind
	}
	raw := j.raw
	if next == stageTruncated {
		raw = raw[:sink.MaxDeadLetterRaw]
		p.err = fmt.Errorf("%w (raw truncated from %d to %d bytes)", p.err, len(j.raw), len(raw))
	}
	clear(j.records)
	j.records = j.records[:0]
	s.deadLetter(j, p, raw)
	s.send(ctx, j)
}

// fallback returns the next delivery stage after a failure, if any is left.
func (j *job) fallback() (stage, bool) {
	switch {
	case j.stage == stageRecords && j.bad == nil:
		return stageDeadLetter, true
	case j.stage < stageTruncated && len(j.raw) > sink.MaxDeadLetterRaw:
		return stageTruncated, true
	}
	return 0, false
}

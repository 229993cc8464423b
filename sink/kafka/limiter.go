package kafka

import (
	"context"
	"sync"
)

// limiter bounds the records and bytes in flight. It admits a whole message at once, so that a message is never
// half handed to Kafka when Send gives up on its context.
type limiter struct {
	maxRecords, maxBytes int64

	mu      sync.Mutex
	records int64
	bytes   int64
	// freed is closed and replaced when room is made while someone waits, waking every waiter to check again.
	freed   chan struct{}
	waiting bool
}

func newLimiter(maxRecords, maxBytes int64) *limiter {
	return &limiter{maxRecords: maxRecords, maxBytes: maxBytes, freed: make(chan struct{})}
}

// acquire waits until records and bytes fit, or pass (if not nil) reports true, or ctx ends, or stop is closed.
// What does not fit even alone is let through when nothing is in flight, or it would wait forever. pass is
// called with the limiter's lock held, and is checked again after wake.
func (l *limiter) acquire(ctx context.Context, stop <-chan struct{}, records, bytes int64, pass func() bool) error {
	for {
		l.mu.Lock()
		empty := l.records == 0 && l.bytes == 0
		if empty || (l.records+records <= l.maxRecords && l.bytes+bytes <= l.maxBytes) || (pass != nil && pass()) {
			l.records += records
			l.bytes += bytes
			l.mu.Unlock()
			return nil
		}
		freed := l.freed
		l.waiting = true
		l.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-stop:
			return ErrClosed
		}
	}
}

// release gives back what acquire took.
func (l *limiter) release(records, bytes int64) {
	l.mu.Lock()
	l.records -= records
	l.bytes -= bytes
	l.wakeLocked()
	l.mu.Unlock()
}

// wake makes the waiters check again, for a pass condition that changed.
func (l *limiter) wake() {
	l.mu.Lock()
	l.wakeLocked()
	l.mu.Unlock()
}

func (l *limiter) wakeLocked() {
	if l.waiting {
		close(l.freed)
		l.freed = make(chan struct{})
		l.waiting = false
	}
}

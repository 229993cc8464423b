package server

import (
	"fmt"
	"sync"
	"time"
)

// Advancing returns a readiness check for "the cursor is advancing". An idle source is not a stuck one (a quiet
// Ozone labeler or a small PDS can go minutes without an event), so the check fails only when input is pending
// and the committed position has not moved for longer than window:
//
//   - position reports the latest position read from the source and the position committed (every record up to
//     it acknowledged by Kafka). Input is pending while the two differ.
//   - The check fails once it has seen the same committed position, with input pending, on calls spanning more
//     than window. Any change of the committed position, in either direction (Tap's ids restart from 1), counts
//     as progress and restarts the clock, and so does a call that finds nothing pending.
//
// The check learns from its own calls, so a stall is reported at most one probe interval late, and never before
// window has passed since input was first seen pending. A disconnected source reads nothing and therefore looks
// idle here: pair this check with a "connected" one.
func Advancing(window time.Duration, position func() (read, committed int64)) func() error {
	return newStallTracker(window, time.Now, position).check
}

type stallTracker struct {
	window   time.Duration
	now      func() time.Time
	position func() (int64, int64)

	mu            sync.Mutex
	seen          bool
	lastCommitted int64
	pendingSince  time.Time // zero while nothing is pending
}

func newStallTracker(window time.Duration, now func() time.Time, position func() (int64, int64)) *stallTracker {
	return &stallTracker{window: window, now: now, position: position}
}

func (t *stallTracker) check() error {
	read, committed := t.position()
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	moved := !t.seen || committed != t.lastCommitted
	t.seen, t.lastCommitted = true, committed
	switch {
	case read == committed:
		t.pendingSince = time.Time{}
		return nil
	case moved || t.pendingSince.IsZero():
		t.pendingSince = now
		return nil
	}
	if stalled := now.Sub(t.pendingSince); stalled > t.window {
		return fmt.Errorf("committed position %d has not moved for %s while position %d was read (window %s)",
			committed, stalled.Round(time.Second), read, t.window)
	}
	return nil
}

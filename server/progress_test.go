package server

import (
	"strings"
	"testing"
	"time"
)

func TestAdvancingFailsOnlyWhenPendingInputStalls(t *testing.T) {
	var read, committed int64
	clock := time.Unix(1_700_000_000, 0)
	tr := newStallTracker(time.Minute, func() time.Time { return clock }, func() (int64, int64) { return read, committed })
	step := func(d time.Duration, wantOK bool, what string) {
		t.Helper()
		clock = clock.Add(d)
		if err := tr.check(); (err == nil) != wantOK {
			t.Fatalf("%s: check() = %v, want ok=%v", what, err, wantOK)
		}
	}

	step(0, true, "first call, idle")
	step(time.Hour, true, "idle for an hour: a quiet labeler is not stuck")

	read = 10
	step(0, true, "input just arrived")
	step(59*time.Second, true, "pending, within the window")
	committed = 5
	step(30*time.Second, true, "committed moved: progress restarts the clock")
	step(50*time.Second, true, "still within the window since the last move")
	step(11*time.Second, false, "pending 61s without progress")

	committed = 10
	step(time.Second, true, "caught up")

	read, committed = 3, 2 // Tap's ids restart from 1: a backwards move is progress too
	step(time.Second, true, "moved backwards")
	step(2*time.Minute, false, "stuck after the restart")
}

func TestAdvancingMessage(t *testing.T) {
	tr := newStallTracker(time.Second, time.Now, func() (int64, int64) { return 9, 4 })
	tr.pendingSince, tr.seen, tr.lastCommitted = time.Now().Add(-time.Minute), true, 4
	err := tr.check()
	if err == nil || !strings.Contains(err.Error(), "committed position 4 has not moved for 1m0s while position 9 was read") {
		t.Fatalf("check() = %v", err)
	}
}

package backoff

import (
	"context"
	"testing"
	"time"
)

func TestPolicyGrowsAndCaps(t *testing.T) {
	p := New(100*time.Millisecond, time.Second)
	bounds := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, hi := range bounds {
		hi *= time.Millisecond
		if d := p.Next(); d < hi/2 || d > hi {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, hi/2, hi)
		}
	}
	p.Reset()
	if d := p.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestTransientStatus(t *testing.T) {
	for code, want := range map[int]bool{200: false, 400: false, 401: false, 404: false, 408: true, 410: false,
		429: true, 500: true, 502: true, 503: true} {
		if got := TransientStatus(code); got != want {
			t.Errorf("TransientStatus(%d) = %v", code, got)
		}
	}
}

func TestSleepStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep ignored a cancelled context")
	}
}

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

func TestSleepStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep ignored a cancelled context")
	}
}

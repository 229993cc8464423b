package kafka

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(10, 100)
	stop := make(chan struct{})
	ctx := context.Background()
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}

	if err := l.acquire(ctx, stop, 50, 5000, nil); err != nil {
		t.Fatalf("an oversized message with nothing in flight must pass: %v", err)
	}
	if err := l.acquire(short(), stop, 1, 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire over the limit = %v, want it to wait", err)
	}
	l.release(50, 5000)

	if err := l.acquire(ctx, stop, 6, 60, nil); err != nil {
		t.Fatal(err)
	}
	got := make(chan error)
	go func() { got <- l.acquire(ctx, stop, 6, 10, nil) }()
	select {
	case err := <-got:
		t.Fatalf("acquire returned %v while 6+6 records exceed 10", err)
	case <-time.After(20 * time.Millisecond):
	}
	l.release(3, 30)
	if err := <-got; err != nil {
		t.Fatalf("acquire after release: %v", err)
	}

	go func() { got <- l.acquire(ctx, stop, 5, 5, nil) }()
	close(stop)
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after stop = %v, want ErrClosed", err)
	}
}

package checkpoint

import (
	"context"
	"sync"
)

// InFlight counts the messages handed to a sink and not yet settled (delivered, failed, or given up), so that a
// shutdown waits for Kafka's acknowledgements without polling. Every source drains through one: a Checkpoint's,
// or Tap's own, whose acks need no cursor. The zero value is ready; it is safe for concurrent use.
type InFlight struct {
	mu      sync.Mutex
	n       int
	settled chan struct{} // closed when n drops; nil while no Wait is waiting
}

// Add counts one more message in flight.
func (f *InFlight) Add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

// Settle counts one message out of flight.
func (f *InFlight) Settle() {
	f.mu.Lock()
	f.n--
	if f.settled != nil {
		close(f.settled)
		f.settled = nil
	}
	f.mu.Unlock()
}

// Wait waits until no message is in flight, or ctx ends, and returns how many still are.
func (f *InFlight) Wait(ctx context.Context) int {
	for {
		f.mu.Lock()
		n := f.n
		if n <= 0 {
			f.mu.Unlock()
			return 0
		}
		if f.settled == nil {
			f.settled = make(chan struct{})
		}
		settled := f.settled
		f.mu.Unlock()
		select {
		case <-settled:
		case <-ctx.Done():
			return n
		}
	}
}

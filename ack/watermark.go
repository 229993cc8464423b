// Package ack turns out-of-order delivery acknowledgements into an in-order commit point.
//
// Kafka acknowledges records of different partitions in any order, but a source cursor (a relay seq, an Ozone
// event) may only move past a position once everything before it is delivered too. A Watermark records the
// positions in the order the source read them and reports the newest one below which nothing is pending.
package ack

import "sync"

// Ticket identifies one position added to a Watermark.
type Ticket uint64

// Watermark tracks pending positions in source order. It is safe for concurrent use.
type Watermark[P any] struct {
	mu        sync.Mutex
	base      Ticket // ticket of pending[0]
	pending   []entry[P]
	committed P
	has       bool
	onAdvance func(P)
}

type entry[P any] struct {
	pos  P
	done bool
}

// NewWatermark returns an empty Watermark. onAdvance, if not nil, is called with the new commit point each time
// it moves, while the Watermark's lock is held: it must be quick and must not call back into the Watermark.
func NewWatermark[P any](onAdvance func(P)) *Watermark[P] {
	return &Watermark[P]{onAdvance: onAdvance}
}

// Add records pos as read and pending. Positions must be added in source order.
func (w *Watermark[P]) Add(pos P) Ticket {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, entry[P]{pos: pos})
	return w.base + Ticket(len(w.pending)-1)
}

// Done marks the position of t as delivered and advances the commit point over every delivered position at the
// head of the queue. Calling Done twice for one ticket, or with a ticket from another Watermark, panics: either
// would silently move a cursor past undelivered data.
func (w *Watermark[P]) Done(t Ticket) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := int(t - w.base)
	if t < w.base || i >= len(w.pending) || w.pending[i].done {
		panic("ack: Done called twice or with an unknown ticket")
	}
	w.pending[i].done = true
	n := 0
	for n < len(w.pending) && w.pending[n].done {
		n++
	}
	if n == 0 {
		return
	}
	w.committed, w.has = w.pending[n-1].pos, true
	// Shift rather than re-slice so the backing array does not grow without bound over a long run.
	copy(w.pending, w.pending[n:])
	clear(w.pending[len(w.pending)-n:])
	w.pending = w.pending[:len(w.pending)-n]
	w.base += Ticket(n)
	if w.onAdvance != nil {
		w.onAdvance(w.committed)
	}
}

// Committed returns the newest position such that it and every position added before it are done. ok is false
// while no position has been committed yet.
func (w *Watermark[P]) Committed() (pos P, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.committed, w.has
}

// Pending returns how many positions are added and not yet committed.
func (w *Watermark[P]) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

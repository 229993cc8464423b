package ack

import (
	"math/rand/v2"
	"sync"
	"testing"
)

func TestWatermarkInOrder(t *testing.T) {
	w := NewWatermark[int](nil)
	if _, ok := w.Committed(); ok {
		t.Fatal("empty watermark reports a commit point")
	}
	a, b, c := w.Add(10), w.Add(11), w.Add(12)
	w.Done(b)
	if _, ok := w.Committed(); ok {
		t.Fatal("committed past a pending position")
	}
	w.Done(a)
	if p, _ := w.Committed(); p != 11 {
		t.Fatalf("committed %d, want 11", p)
	}
	w.Done(c)
	if p, _ := w.Committed(); p != 12 || w.Pending() != 0 {
		t.Fatalf("committed %d pending %d, want 12 and 0", p, w.Pending())
	}
}

func TestWatermarkDoubleDonePanics(t *testing.T) {
	w := NewWatermark[int](nil)
	tk := w.Add(1)
	w.Done(tk)
	defer func() {
		if recover() == nil {
			t.Fatal("second Done did not panic")
		}
	}()
	w.Done(tk)
}

// Concurrent, shuffled acknowledgements: the commit point never passes a pending position and ends at the last.
func TestWatermarkConcurrent(t *testing.T) {
	const n = 20000
	var mu sync.Mutex
	doneSet := make([]bool, n)
	w := NewWatermark[int](func(p int) {
		mu.Lock()
		defer mu.Unlock()
		for i := 0; i <= p; i++ {
			if !doneSet[i] {
				t.Errorf("commit point %d passes pending position %d", p, i)
				return
			}
		}
	})
	tickets := make([]Ticket, n)
	for i := range n {
		tickets[i] = w.Add(i)
	}
	order := rand.Perm(n)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for _, i := range order[g*n/4 : (g+1)*n/4] {
				mu.Lock()
				doneSet[i] = true
				mu.Unlock()
				w.Done(tickets[i])
			}
		})
	}
	wg.Wait()
	if p, ok := w.Committed(); !ok || p != n-1 {
		t.Fatalf("committed %d, want %d", p, n-1)
	}
}

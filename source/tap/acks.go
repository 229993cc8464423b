package tap

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// ackWriteTimeout bounds writing one batch of acks: a Tap that stops reading is treated as a dead connection
// rather than left to hold the writer forever.
const ackWriteTimeout = 30 * time.Second

// ackQueue holds the ids whose acks are due on one connection. push never blocks, so sink callbacks can call it
// from any goroutine, and so that acks never wait for the reader, the workers or anything else than the socket.
// Its length is bounded by the events in flight, which the worker queues and the sink's limits bound.
type ackQueue struct {
	mu     sync.Mutex
	ids    []uint64
	closed bool
	wake   chan struct{} // capacity 1: "ids is not empty, or the queue closed"
}

func newAckQueue() *ackQueue { return &ackQueue{wake: make(chan struct{}, 1)} }

// push queues id, reporting false when the queue is closed (its connection is gone).
func (q *ackQueue) push(id uint64) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.ids = append(q.ids, id)
	q.mu.Unlock()
	q.signal()
	return true
}

// close makes later pushes fail; the writer still sends what is queued when it is told to flush.
func (q *ackQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *ackQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take swaps the queued ids for buf (emptied), so that the writer and the pushers trade two slices instead of
// allocating, and reports whether the queue is closed.
func (q *ackQueue) take(buf []uint64) ([]uint64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := q.ids
	q.ids = buf[:0]
	return ids, q.closed
}

// ackWriter writes a connection's acks, the only goroutine writing to the websocket.
type ackWriter struct {
	conn     *websocket.Conn
	queue    *ackQueue
	progress func(lastID uint64, n int) // called after each batch written
	obs      Observer
	buf      []byte
}

// run writes acks until the queue is closed and drained, or a write fails. Tap reads one JSON value per
// message, so each ack is its own message; a batch is all the acks queued since the last one, written back to
// back without waiting for anything.
func (w *ackWriter) run(ctx context.Context) error {
	var ids []uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.queue.wake:
		}
		var closed bool
		ids, closed = w.queue.take(ids)
		if err := w.write(ctx, ids); err != nil {
			return err
		}
		if closed {
			return nil
		}
	}
}

func (w *ackWriter) write(ctx context.Context, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ackWriteTimeout)
	defer cancel()
	for i, id := range ids {
		w.buf = append(w.buf[:0], `{"type":"ack","id":`...)
		w.buf = append(strconv.AppendUint(w.buf, id, 10), '}')
		if err := w.conn.Write(ctx, websocket.MessageText, w.buf); err != nil {
			w.obs.Acks(acksOK, i)
			w.obs.Acks(acksDisconnected, len(ids)-i)
			return err
		}
	}
	w.obs.Acks(acksOK, len(ids))
	w.progress(ids[len(ids)-1], len(ids))
	return nil
}

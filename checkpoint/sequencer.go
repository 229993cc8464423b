package checkpoint

import (
	"context"
	"sync"

	"github.com/atkafka/atkafka/sink"
)

// sequencer hands a sink.Committer (through its decorators) the messages of a run in Position order. A source's workers finish messages
// in any order (a frame waiting for its account's metadata is passed by other accounts' frames), so each message
// is held until every earlier one was sent; whichever caller completes the run of consecutive positions sends
// them all. The source's own in-flight bound caps what is held.
type sequencer struct {
	sink    sink.Sink
	abandon func(*sink.Message)

	mu      sync.Mutex
	held    map[uint64]*sink.Message
	next    uint64 // the Position sent next
	sending bool   // a caller is sending held messages: it will also send the ones added meanwhile
	err     error  // the sink failed: nothing more is sent
}

// send holds msg until its turn and sends what became consecutive. A message whose Position was sent already is
// a delivery that failed coming back (the Committer waits for it before the later ones): it goes straight through.
func (q *sequencer) send(ctx context.Context, msg *sink.Message) error {
	q.mu.Lock()
	switch {
	case q.err != nil:
		q.mu.Unlock()
		return q.err
	case msg.Position < q.next:
		q.mu.Unlock()
		return q.sink.Send(ctx, msg)
	}
	q.held[msg.Position] = msg
	if q.sending {
		q.mu.Unlock()
		return nil
	}
	q.sending = true
	for {
		m := q.held[q.next]
		if m == nil {
			q.sending = false
			q.mu.Unlock()
			return nil
		}
		delete(q.held, q.next)
		q.next++
		q.mu.Unlock()
		if err := q.sink.Send(ctx, m); err != nil {
			return q.fail(msg, m, err)
		}
		q.mu.Lock()
	}
}

// fail stops the sequencer after the sink refused m, which the caller holding msg was sending. The caller learns
// of its own msg from the error (or, sent before m, gets its Done); every other message not sent is abandoned,
// since no one else would learn that it never reached the sink.
func (q *sequencer) fail(msg, m *sink.Message, err error) error {
	q.mu.Lock()
	q.err, q.sending = err, false
	unsent := []*sink.Message{m}
	for pos, h := range q.held {
		unsent = append(unsent, h)
		delete(q.held, pos)
	}
	q.mu.Unlock()
	for _, h := range unsent {
		if h != msg {
			q.abandon(h)
		}
	}
	if msg.Position < m.Position {
		return nil
	}
	return err
}

package kafka

import (
	"context"
	"fmt"

	"github.com/atkafka/atkafka/sink"
)

// Send holds msg until every message of a lower Position was received, then produces it in the open
// transaction; msg.Done runs after that transaction committed, or with an error when one of msg's records failed
// for good (the source may send it again, with the same Position) or the producer stopped for good (the error
// wraps sink.ErrStopped). Send blocks while the in-flight limits are reached, except for the message at the
// next Position, which is always let in so that the held ones can move. It fails when ctx ends, after Close, or
// after a fatal error; msg.Done is not called then. The records must not be modified until Done.
func (p *TxnProducer) Send(ctx context.Context, msg *sink.Message) error {
	p.mu.Lock()
	err := p.refuseLocked(msg)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	records, bytes := int64(len(msg.Records)), messageBytes(msg)
	// A stopped producer lets every waiting Send in, to refuse it below.
	pass := func() bool { return msg.Position == p.next.Load() || p.fatal.Load() != nil }
	if err := p.limit.acquire(ctx, p.stop, records, bytes, pass); err != nil {
		return err
	}
	p.mu.Lock()
	if err = p.refuseLocked(msg); err == nil {
		p.buf[msg.Position] = msg
	}
	p.mu.Unlock()
	if err != nil {
		p.limit.release(records, bytes)
		return err
	}
	p.gauges.addMessage(msg, 1)
	p.wake()
	return nil
}

// refuseLocked says why msg may not be held: the producer stopped or is closing, or msg's Position was sent
// before. p.mu is held.
func (p *TxnProducer) refuseLocked(msg *sink.Message) error {
	next := p.next.Load()
	switch {
	case p.fatal.Load() != nil:
		return *p.fatal.Load()
	case p.closing:
		return ErrClosed
	case msg.Position < next || p.buf[msg.Position] != nil:
		return fmt.Errorf("message position %d sent twice (next expected %d)", msg.Position, next)
	}
	return nil
}

// wake makes the loop look for ready messages.
func (p *TxnProducer) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// release forgets msgs, which left the producer (Done is about to run), and frees their room.
func (p *TxnProducer) release(msgs []*sink.Message) {
	var records, bytes int64
	for _, m := range msgs {
		records += int64(len(m.Records))
		bytes += messageBytes(m)
		p.gauges.addMessage(m, -1)
	}
	p.limit.release(records, bytes)
}

// ready adds to t the messages that can be produced now: those at next, next+1, ... that were received, until t
// holds MaxRecords or MaxBytes.
func (p *TxnProducer) ready(t *txn) {
	p.mu.Lock()
	n, next := len(t.msgs), p.next.Load()
	for m := p.buf[next]; m != nil && t.records < p.tc.MaxRecords && t.bytes < p.tc.MaxBytes; m = p.buf[next] {
		delete(p.buf, next)
		t.msgs = append(t.msgs, m)
		t.records += len(m.Records)
		t.bytes += messageBytes(m)
		next++
	}
	p.next.Store(next)
	p.mu.Unlock()
	if len(t.msgs) > n {
		p.limit.wake() // the message now at next may enter
	}
}

// requeue makes msgs, which follow next, wait in the buffer again.
func (p *TxnProducer) requeue(next uint64, msgs []*sink.Message) {
	p.mu.Lock()
	p.next.Store(next)
	for _, m := range msgs {
		p.buf[m.Position] = m
	}
	p.mu.Unlock()
	p.limit.wake()
}

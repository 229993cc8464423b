// Package sink defines what every source hands to Kafka: messages made of records, each message
// acknowledged once as a whole so that the source owning the cursor can move it only after delivery.
package sink

import (
	"context"
	"errors"
)

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record.
type Record struct {
	// Topic overrides the sink's output topic (the dead-letter topic, for example). Empty means the output topic.
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
}

// Message is the set of records made from one unit of source input (a relay frame, a Tap event, an Ozone event).
// A message with no records (everything filtered) is still sent, so that its acknowledgement keeps the source's
// cursor moving in order.
type Message struct {
	Records []Record
	// Done is called exactly once, from a sink goroutine, after Kafka acknowledged every record (err == nil) or
	// after a record failed for good (the first such error). It must not block for long.
	Done func(err error)

	// Mark is the message's place in its source's checkpoint, set by package checkpoint (and only there): a
	// Committer needs it, other sinks ignore it.
	Mark
}

// Mark is a message's place in its source's read order, with the cursor that its delivery makes durable.
type Mark struct {
	// Position is the message's ordinal in its source run's read order, contiguous from 0 for the run's first
	// message. A message Done failed is sent again with the same Position (as a dead letter, say).
	Position uint64
	// Cursor is the source's cursor value once this message and every one before it are delivered; empty when
	// the message does not move the cursor (nothing was read before it yet).
	Cursor string
}

// ErrStopped is wrapped by the Done and Send errors of a sink that stopped for good, such as a transactional
// producer fenced by another instance with its transactional id: it will deliver nothing more, so a source must
// stop rather than retry or dead-letter.
var ErrStopped = errors.New("sink stopped for good")

// Sink delivers messages to Kafka.
type Sink interface {
	// Send queues msg. It blocks while the sink's in-flight limits are reached, which is how backpressure reaches
	// the sources, and returns an error only when ctx ends or the sink is closed; in that case msg.Done is not
	// called.
	Send(ctx context.Context, msg *Message) error
}

// Committer is an exactly-once sink: it writes each message's Mark.Cursor to Kafka in the same transaction as
// the records before it, so that the cursor and the records are durable together. It must receive one source
// run's messages in Position order with their Marks, which package checkpoint guarantees: a source hands its
// messages to a checkpoint.Checkpoint, never to a Committer directly, and a source without an ordered cursor
// (Tap) refuses one. A decorator in front of a Committer must keep the order and the Marks, and have Unwrap.
type Committer interface {
	Sink
	// CommitsCursor marks the sink as one that stores the cursor itself; it does nothing.
	CommitsCursor()
}

// CommitsCursor reports whether s is a Committer, or a decorator (one with Unwrap() Sink, such as a router) in
// front of one: its messages then reach a sink that commits their cursor.
func CommitsCursor(s Sink) bool {
	for s != nil {
		if _, ok := s.(Committer); ok {
			return true
		}
		d, ok := s.(interface{ Unwrap() Sink })
		if !ok {
			return false
		}
		s = d.Unwrap()
	}
	return false
}

// Func adapts a function to the Sink interface.
type Func func(ctx context.Context, msg *Message) error

// Send calls f.
func (f Func) Send(ctx context.Context, msg *Message) error { return f(ctx, msg) }

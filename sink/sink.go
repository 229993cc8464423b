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

	// Position and Cursor are for transactional sinks (exactly-once), which commit records and the source cursor
	// together and so must know both; at-least-once sinks ignore them.
	//
	// Position is the message's ordinal in its source's read order: the ack.Ticket the source got from its
	// Watermark, contiguous from 0 for the first message of the source's run. A message Done failed is sent again
	// with the same Position (as a dead letter, say), and the sink holds back every later one until it is.
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

// Func adapts a function to the Sink interface.
type Func func(ctx context.Context, msg *Message) error

// Send calls f.
func (f Func) Send(ctx context.Context, msg *Message) error { return f(ctx, msg) }

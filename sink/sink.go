// Package sink defines what every source hands to Kafka: messages made of records, each message
// acknowledged once as a whole so that the source owning the cursor can move it only after delivery.
package sink

import "context"

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
}

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

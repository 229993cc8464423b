// Package sinktest is the in-memory sink of the source tests: it keeps what it was sent and acknowledges it as a
// real sink does (from another goroutine), or holds the acknowledgements for the test to give.
package sinktest

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink"
)

// Record is a delivered record as tests see it: copied before its Done, since sources reuse their buffers after.
type Record struct {
	Topic   string
	Key     string
	Value   []byte
	Headers map[string]string
}

// Header returns the value of the header k ("" when absent).
func (r Record) Header(k string) string { return r.Headers[k] }

// Sink is a sink.Sink in memory. The zero value delivers every message as it is sent (Records keeps the order of
// the Sends) and calls its Done from another goroutine.
type Sink struct {
	// Fail, if set, decides the Done error of each delivery: a message it fails keeps no records. Set it before
	// the first Send.
	Fail func(msg *sink.Message) error

	mu      sync.Mutex
	msgs    []*sink.Message
	hold    bool
	held    []*sink.Message
	records []Record
	changed chan struct{} // closed when a message arrives; nil while no one waits
}

var _ sink.Sink = (*Sink)(nil)

// Holding returns a Sink that holds every Done until Ack or Release.
func Holding() *Sink { return &Sink{hold: true} }

// Send keeps msg and delivers it, unless the sink holds its deliveries. It fails only when ctx ended.
func (s *Sink) Send(ctx context.Context, msg *sink.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, msg)
	hold := s.hold
	if hold {
		s.held = append(s.held, msg)
	}
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
	if !hold {
		err := s.verdict(msg) // now, so that Records keeps the order of the Sends
		go msg.Done(err)
	}
	return nil
}

// Hold keeps the Done of the messages sent from now on until Ack or Release.
func (s *Sink) Hold() {
	s.mu.Lock()
	s.hold = true
	s.mu.Unlock()
}

// Release stops holding and delivers every message still held.
func (s *Sink) Release() {
	s.mu.Lock()
	held := s.held
	s.held, s.hold = nil, false
	s.mu.Unlock()
	for _, m := range held {
		m.Done(s.verdict(m))
	}
}

// Ack delivers msg now (Done with Fail's verdict), in the caller's goroutine.
func (s *Sink) Ack(msg *sink.Message) {
	s.mu.Lock()
	s.held = slices.DeleteFunc(s.held, func(m *sink.Message) bool { return m == msg })
	s.mu.Unlock()
	msg.Done(s.verdict(msg))
}

// verdict decides msg's delivery (Fail) and keeps its records when it is delivered.
func (s *Sink) verdict(msg *sink.Message) error {
	var err error
	if s.Fail != nil {
		err = s.Fail(msg)
	}
	if err == nil {
		s.mu.Lock()
		for _, r := range msg.Records {
			s.records = append(s.records, Copy(r))
		}
		s.mu.Unlock()
	}
	return err
}

// Copy returns r as tests see it, owning its bytes.
func Copy(r sink.Record) Record {
	c := Record{Topic: r.Topic, Key: string(r.Key), Value: bytes.Clone(r.Value), Headers: map[string]string{}}
	for _, h := range r.Headers {
		c.Headers[h.Key] = string(h.Value)
	}
	return c
}

// Messages returns every message sent, delivered or not, in the order they came. A source may reuse a message
// after its Done: read only what a test knows to be still valid.
func (s *Sink) Messages() []*sink.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Records returns copies of the delivered records, in delivery order: the order of the Sends, unless held.
func (s *Sink) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// Topic returns the delivered records of topic ("" is the sink's output topic).
func (s *Sink) Topic(topic string) []Record {
	var out []Record
	for _, r := range s.Records() {
		if r.Topic == topic {
			out = append(out, r)
		}
	}
	return out
}

// WaitMessages waits up to 10 s for n messages to be sent and returns all sent so far; the test fails otherwise.
func (s *Sink) WaitMessages(t testing.TB, n int) []*sink.Message {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.msgs)
		if got >= n {
			defer s.mu.Unlock()
			return slices.Clone(s.msgs)
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("sink got %d of %d messages", got, n)
		}
	}
}

package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

// acks records every Done call of the messages it made, to check each ran exactly once.
type acks struct {
	mu    sync.Mutex
	calls map[int]int
	errs  map[int]error
	all   sync.WaitGroup
}

func newAcks() *acks { return &acks{calls: map[int]int{}, errs: map[int]error{}} }

// message returns message id with one record per value, keyed by id.
func (a *acks) message(id int, topic string, values ...string) *sink.Message {
	a.all.Add(1)
	m := &sink.Message{Done: func(err error) {
		a.mu.Lock()
		a.calls[id]++
		if err != nil {
			a.errs[id] = err
		}
		first := a.calls[id] == 1
		a.mu.Unlock()
		if first {
			a.all.Done()
		}
	}}
	for _, v := range values {
		m.Records = append(m.Records, sink.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", id), Value: []byte(v)})
	}
	return m
}

// wait waits for every message's Done and checks that each ran once; it returns the errors by message id.
func (a *acks) wait(t *testing.T, timeout time.Duration) map[int]error {
	t.Helper()
	done := make(chan struct{})
	go func() { a.all.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		a.mu.Lock()
		defer a.mu.Unlock()
		t.Fatalf("only %d messages acknowledged within %s", len(a.calls), timeout)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, n := range a.calls {
		if n != 1 {
			t.Errorf("message %d: Done called %d times", id, n)
		}
	}
	return a.errs
}

func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t, slog.LevelInfo) }

// newProducer starts a Producer for the test and closes it at the end.
func newProducer(t *testing.T, cfg Config) *Producer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	cfg.CreateTopic = true
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func send(t *testing.T, p *Producer, msg *sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Send(ctx, msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

// counter is an Observer that keeps the counts for the test to read.
type counter struct{ testenv.Counts }

func (c *counter) Produced(status string, n int) { c.Add("produced/"+status, n) }

func (c *counter) InFlight(topic string) func(records, bytes int64) {
	return func(records, _ int64) { c.Add("in_flight/"+topic, int(records)) }
}

func (c *counter) Transaction(status string) { c.Add("txn/"+status, 1) }

// producedN, inFlight and transactions read the counts.
func (c *counter) producedN(status string) int    { return c.Get("produced/" + status) }
func (c *counter) inFlight(topic string) int64    { return int64(c.Get("in_flight/" + topic)) }
func (c *counter) transactions(status string) int { return c.Get("txn/" + status) }

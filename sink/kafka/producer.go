// Package kafka is the Kafka sink: a franz-go producer that delivers sink messages, calls each message's Done once
// Kafka acknowledged all of its records, and turns a slow or absent broker into backpressure on the sources.
package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/sink"
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("kafka sink closed")

// Producer is a sink.Sink writing to Kafka. It is safe for concurrent use.
type Producer struct {
	cfg   Config
	cl    *kgo.Client
	log   *slog.Logger
	limit *limiter

	// mu is held shared by Send while it queues a message and exclusively by Close to set closed, so that no record
	// reaches the client after Close started flushing.
	mu sync.RWMutex
	// closed also turns the warning for each failed message into one count at Close, where they all fail at once.
	closed atomic.Bool
	// stop is closed by Close to wake Sends waiting for room.
	stop chan struct{}
	// pending counts the messages whose Done has not run yet; Close waits for it.
	pending sync.WaitGroup
	failed  atomic.Int64
}

var _ sink.Sink = (*Producer)(nil)

// New validates cfg, connects to the brokers, checks that they are reachable and accept the credentials, and
// creates (or, with CreateTopic off, checks) the topics. Each check is bounded by cfg.ConnectTimeout, so a wrong
// address or password fails start-up with a clear error instead of hanging.
func New(ctx context.Context, cfg Config) (*Producer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	opts, err := cfg.kgoOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	p := &Producer{
		cfg:   cfg,
		cl:    cl,
		log:   cfg.Logger,
		limit: newLimiter(int64(cfg.MaxInFlightRecords), cfg.MaxInFlightBytes),
		stop:  make(chan struct{}),
	}
	if err := p.connect(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	p.log.Info("connected to Kafka", "config", cfg)
	return p, nil
}

// Send queues every record of msg and returns; msg.Done runs once Kafka acknowledged them all, or with the first
// error of a record that failed for good. It blocks while the in-flight limits are reached. It fails only when ctx
// ends or the producer is closed while it waits, and then msg.Done is not called and no record of msg was queued.
// The records' Key, Value and Headers must not be modified until Done.
func (p *Producer) Send(ctx context.Context, msg *sink.Message) error {
	records, bytes := int64(len(msg.Records)), messageBytes(msg)
	if err := p.limit.acquire(ctx, p.stop, records, bytes); err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		p.limit.release(records, bytes)
		return ErrClosed
	}
	p.pending.Add(1)
	d := &delivery{done: msg.Done}
	if records == 0 {
		// Nothing to wait for, but Done still comes from a sink goroutine as the sink.Message contract says.
		go p.finish(d)
		return nil
	}
	d.left.Store(records)
	// Send's ctx only bounds the wait above: once queued, a record is Kafka's to deliver, and a cancelled
	// context would make kgo drop records the source thinks are on their way.
	qctx := context.WithoutCancel(ctx)
	for i := range msg.Records {
		p.produce(qctx, d, &msg.Records[i])
	}
	return nil
}

// delivery tracks one message's records until the last acknowledgement.
type delivery struct {
	done  func(error)
	left  atomic.Int64
	first atomic.Pointer[error]
}

func (p *Producer) produce(ctx context.Context, d *delivery, r *sink.Record) {
	topic := cmp.Or(r.Topic, p.cfg.Topic)
	size := recordBytes(r)
	inflight(topic, 1, size)
	rec := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: kgoHeaders(r.Headers)}
	p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		inflight(topic, -1, -size)
		p.limit.release(1, size)
		if err != nil {
			metrics.ProducedEvents.WithLabelValues("error").Inc()
			err = fmt.Errorf("producing to Kafka topic %s: %w", topic, err)
			d.first.CompareAndSwap(nil, &err)
		} else {
			metrics.ProducedEvents.WithLabelValues("ok").Inc()
		}
		if d.left.Add(-1) == 0 {
			p.finish(d)
		}
	})
}

// finish calls Done with the message's first error, if any.
func (p *Producer) finish(d *delivery) {
	defer p.pending.Done()
	var err error
	if e := d.first.Load(); e != nil {
		err = *e
		p.failed.Add(1)
		if !p.closed.Load() {
			p.log.Warn("Kafka did not accept a message", "error", err)
		}
	}
	if d.done != nil {
		d.done(err)
	}
}

func inflight(topic string, records, bytes int64) {
	metrics.InFlightRecords.WithLabelValues(topic).Add(float64(records))
	metrics.InFlightBytes.WithLabelValues(topic).Add(float64(bytes))
}

func kgoHeaders(hs []sink.Header) []kgo.RecordHeader {
	if len(hs) == 0 {
		return nil
	}
	out := make([]kgo.RecordHeader, len(hs))
	for i, h := range hs {
		out[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	return out
}

// recordBytes counts what a record holds in memory while in flight, as kgo does for its own buffer limit.
func recordBytes(r *sink.Record) int64 {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

func messageBytes(msg *sink.Message) int64 {
	var n int64
	for i := range msg.Records {
		n += recordBytes(&msg.Records[i])
	}
	return n
}

// Close stops accepting messages, waits up to the flush timeout (or until ctx ends) for in-flight records, then
// closes the client. Messages not delivered by then get Done with an error, so Close returns only after every
// Done ran; the error says that some were not delivered. Sends still waiting for room return ErrClosed.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	first := p.closed.CompareAndSwap(false, true)
	p.mu.Unlock()
	if !first {
		return nil
	}
	close(p.stop)

	ctx, cancel := context.WithTimeout(ctx, p.cfg.FlushTimeout)
	defer cancel()
	flushErr := p.cl.Flush(ctx)
	// Closing fails whatever the flush could not deliver, which runs the remaining promises and so every Done.
	p.cl.Close()
	p.pending.Wait()
	if flushErr != nil {
		p.log.Warn("closed Kafka producer before every record was delivered", "error", flushErr, "failed_messages", p.failed.Load())
		return fmt.Errorf("closing Kafka producer: undelivered records failed: %w", flushErr)
	}
	p.log.Info("closed Kafka producer", "failed_messages", p.failed.Load())
	return nil
}

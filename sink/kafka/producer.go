// Package kafka is the Kafka sink: a franz-go producer that delivers sink messages, calls each message's Done once
// Kafka acknowledged all of its records, and turns a slow or absent broker into backpressure on the sources.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

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
	// clusterID is the cluster's id from its metadata, read once at start-up.
	clusterID string

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

	// promise is onRecord, bound once so that producing a record allocates no closure.
	promise func(*kgo.Record, error)
	gauges  *topicSet
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
	opts, err := cfg.ProducerOpts()
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
	p.promise = p.onRecord
	p.gauges = newTopicSet(cfg)
	if err := p.connect(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	p.log.Info("connected to Kafka", "config", cfg, "kafka_cluster", p.clusterID)
	return p, nil
}

// ClusterID returns the id of the Kafka cluster the producer connected to ("" when the brokers report none):
// what a source's cursor is bound to, since it counts this cluster's acknowledgements.
func (p *Producer) ClusterID() string { return p.clusterID }

// Send queues every record of msg and returns; msg.Done runs once Kafka acknowledged them all, or with the first
// error of a record that failed for good. It blocks while the in-flight limits are reached. It fails only when ctx
// ends or the producer is closed while it waits, and then msg.Done is not called and no record of msg was queued.
// The records' Key, Value and Headers must not be modified until Done.
func (p *Producer) Send(ctx context.Context, msg *sink.Message) error {
	records, bytes := int64(len(msg.Records)), messageBytes(msg)
	if err := p.limit.acquire(ctx, p.stop, records, bytes, nil); err != nil {
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
	for i := range msg.Records {
		p.produce(d, &msg.Records[i])
	}
	return nil
}

// delivery tracks one message's records until the last acknowledgement.
type delivery struct {
	done  func(error)
	left  atomic.Int64
	first atomic.Pointer[error]
}

// inlineHeaders is how many headers a record carries without an allocation of their own: the relay source
// sets at most four.
const inlineHeaders = 4

// pending is one record handed to kgo. The kgo.Record is its first field, so the promise, which gets that record
// back, finds the rest without a closure per record; and with the headers inline, queuing a record costs one
// pooled object instead of three allocations.
type pending struct {
	rec     kgo.Record // first: see recordPending (a compile-time check keeps it there)
	headers [inlineHeaders]kgo.RecordHeader
	d       *delivery
	size    int64
	topic   *topicMetrics
}

var pendingPool = sync.Pool{New: func() any { return new(pending) }}

// recordPending returns the pending a record handed to kgo belongs to.
func recordPending(r *kgo.Record) *pending {
	return (*pending)(unsafe.Pointer(r)) // r is &pending.rec, the first field
}

// recordPending's cast needs rec at offset 0 of pending: moving it fails to compile here ([N]struct{} is not
// [0]struct{}), instead of corrupting memory at run time.
var _ [0]struct{} = [unsafe.Offsetof(pending{}.rec)]struct{}{}

// topicMetrics holds a topic's in-flight counter from Observer.InFlight, resolved once instead of by label per
// record.
type topicMetrics struct {
	name     string
	inFlight func(records, bytes int64)
}

// topicSet holds the metrics of a producer's topics.
type topicSet struct {
	obs   Observer
	main  *topicMetrics
	other sync.Map // topic name → *topicMetrics
}

func newTopicSet(cfg Config) *topicSet {
	s := &topicSet{obs: cfg.Observer}
	s.main = s.newTopicMetrics(cfg.Topic)
	for _, t := range cfg.ExtraTopics {
		s.other.Store(t, s.newTopicMetrics(t))
	}
	return s
}

// get returns the metrics of a record's topic ("" for the output topic): those of the configured topics were
// resolved up front, others (records naming a topic the configuration did not) are resolved and kept on first
// use.
func (s *topicSet) get(topic string) *topicMetrics {
	if topic == "" || topic == s.main.name {
		return s.main
	}
	if m, ok := s.other.Load(topic); ok {
		return m.(*topicMetrics)
	}
	m, _ := s.other.LoadOrStore(topic, s.newTopicMetrics(topic))
	return m.(*topicMetrics)
}

// addMessage adds msg's records, times sign, to the in-flight gauges of their topics.
func (s *topicSet) addMessage(msg *sink.Message, sign int64) {
	for i := range msg.Records {
		r := &msg.Records[i]
		s.get(r.Topic).inFlight(sign, sign*recordBytes(r))
	}
}

func (s *topicSet) newTopicMetrics(topic string) *topicMetrics {
	return &topicMetrics{name: topic, inFlight: s.obs.InFlight(topic)}
}

func (p *Producer) produce(d *delivery, r *sink.Record) {
	pr := pendingPool.Get().(*pending)
	pr.d, pr.size, pr.topic = d, recordBytes(r), p.gauges.get(r.Topic)
	pr.topic.inFlight(1, pr.size)
	pr.rec = kgo.Record{Topic: pr.topic.name, Key: r.Key, Value: r.Value}
	if len(r.Headers) > 0 {
		hs := pr.headers[:0]
		if len(r.Headers) > inlineHeaders {
			hs = make([]kgo.RecordHeader, 0, len(r.Headers))
		}
		for _, h := range r.Headers {
			hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		pr.rec.Headers = hs
	}
	// Send's ctx only bounds the wait for room: once queued, a record is Kafka's to deliver, and a cancelled
	// context would make kgo drop records the source thinks are on their way.
	p.cl.Produce(context.Background(), &pr.rec, p.promise)
}

// onRecord is kgo's promise for every record, bound once as p.promise.
func (p *Producer) onRecord(r *kgo.Record, err error) {
	pr := recordPending(r)
	d, size, tm := pr.d, pr.size, pr.topic
	// kgo is done with the record once its promise runs: the pending goes back to the pool, without pointers
	// into the caller's buffers.
	*pr = pending{}
	pendingPool.Put(pr)
	tm.inFlight(-1, -size)
	p.limit.release(1, size)
	if err != nil {
		p.cfg.Observer.Produced(producedError, 1)
		err = fmt.Errorf("producing to Kafka topic %s: %w", tm.name, err)
		d.first.CompareAndSwap(nil, &err)
	} else {
		p.cfg.Observer.Produced(producedOK, 1)
	}
	if d.left.Add(-1) == 0 {
		p.finish(d)
	}
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

// Ping asks the cluster for its metadata once, for readiness checks: it fails while no broker answers.
func (p *Producer) Ping(ctx context.Context) error { return p.cl.Ping(ctx) }

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

package kafka

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/sink"
)

// TxnConfig configures the exactly-once parts of a TxnProducer.
type TxnConfig struct {
	// TransactionalID identifies the producer to Kafka across restarts. A second producer with the same id fences
	// the first: only one instance may write a source's records and cursor. Required.
	TransactionalID string
	// CursorTopic receives the source cursor, one record per transaction, in the same transaction as the records
	// it covers. It is created compacted, with one partition, when missing (and Config.CreateTopic is set).
	// Required.
	CursorTopic string
	// CursorKey keys the cursor records: the source's identity, so that several sources can share CursorTopic.
	// Required.
	CursorKey string
	// MaxRecords and MaxBytes bound one transaction; default half of Config.MaxInFlightRecords and
	// Config.MaxInFlightBytes, so that Sends keep being admitted while a transaction commits.
	MaxRecords int
	MaxBytes   int64
	// AbortTimeout bounds how long aborting a failed transaction is retried while Kafka does not answer; the
	// producer stops after that. Default DefaultAbortTimeout.
	AbortTimeout time.Duration
}

// DefaultAbortTimeout is TxnConfig.AbortTimeout's default: longer than the transaction timeout (kgo's 40 s), after
// which Kafka aborts the transaction itself, so further retries could only find it gone.
const DefaultAbortTimeout = time.Minute

// TxnProducer is the exactly-once sink: it produces messages strictly in Position order inside Kafka
// transactions, each of which also writes the Cursor of its last message to the cursor topic, and calls Done only
// after the transaction committed. A crash at any point leaves either both the records and their cursor or
// neither, so a restart that resumes from the Cursor neither loses nor repeats anything for read_committed
// consumers. It is safe for concurrent use.
//
// Kafka allows one transaction in flight per producer; its size is ours. A transaction takes every message that
// became ready while the previous one committed (up to MaxRecords and MaxBytes) and commits as soon as Kafka
// acknowledged their records: transactions grow with the backlog, the next begins as soon as the previous
// committed, and no timer adds latency at live rates.
type TxnProducer struct {
	cfg Config
	tc  TxnConfig
	cl  *kgo.Client
	log *slog.Logger
	// nonce tells this instance's transactions from an earlier instance's in the cursor topic.
	nonce   string
	cursors *CursorStore
	adm     *kadm.Client
	// clusterID is the cluster's id from its metadata, read once at start-up.
	clusterID string

	// limit counts the messages held (buffered or in the open transaction) until their Done.
	limit  *limiter
	gauges *topicSet
	// mu guards buf and closing, and orders the changes of next.
	mu sync.Mutex
	// buf holds messages received and not yet produced, by Position.
	buf map[uint64]*sink.Message
	// next is the Position produced next. It changes under mu, and is read without it by the Sends waiting for
	// room, which the message at next may always take.
	next    atomic.Uint64
	closing bool
	// fatal is the error that stopped the producer for good.
	fatal atomic.Pointer[error]

	kick     chan struct{} // a message arrived: the loop has something to produce
	stop     chan struct{} // closed by Close
	loopCtx  context.Context
	cancel   context.CancelFunc // ends the loop's Kafka calls when Close runs out of time
	loopDone chan struct{}
	// closeErr is what the loop leaves for Close: messages it could not commit.
	closeErr error
	// abortFailures counts the failed abort attempts since the last abort that worked: an outage logs one warning.
	abortFailures int
}

var _ sink.Sink = (*TxnProducer)(nil)

// NewTxn validates the configurations, connects, creates (or checks) the output, extra and cursor topics, and
// initialises the transactional producer id, which fences any earlier instance with the same TransactionalID and
// aborts whatever transaction it left open. Load the Cursor next to know where the source resumes.
func NewTxn(ctx context.Context, cfg Config, tc TxnConfig) (*TxnProducer, error) {
	cfg = cfg.withDefaults()
	tc.MaxRecords = cmp.Or(tc.MaxRecords, max(1, cfg.MaxInFlightRecords/2))
	tc.MaxBytes = cmp.Or(tc.MaxBytes, max(1, cfg.MaxInFlightBytes/2))
	tc.AbortTimeout = cmp.Or(tc.AbortTimeout, DefaultAbortTimeout)
	var errs []error
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	if cfg.Acks != "all" {
		errs = append(errs, fmt.Errorf("exactly-once needs acks all, not %s", cfg.Acks))
	}
	if tc.TransactionalID == "" || tc.CursorTopic == "" || tc.CursorKey == "" {
		errs = append(errs, errors.New("exactly-once needs a transactional id, a cursor topic and a cursor key"))
	}
	if tc.MaxRecords < 0 || tc.MaxBytes < 0 || tc.AbortTimeout < 0 {
		errs = append(errs, errors.New("negative records or bytes per transaction, or abort timeout"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts, err := cfg.ProducerOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, kgo.TransactionalID(tc.TransactionalID))...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	p := &TxnProducer{
		cfg: cfg, tc: tc, cl: cl, log: cfg.Logger.With("transactional_id", tc.TransactionalID),
		nonce: hex.EncodeToString(nonce[:]), cursors: NewCursorStore(cfg, tc.CursorTopic, tc.CursorKey), adm: kadm.NewClient(cl),
		limit: newLimiter(int64(cfg.MaxInFlightRecords), cfg.MaxInFlightBytes), gauges: newTopicSet(cfg),
		buf:  map[uint64]*sink.Message{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), loopDone: make(chan struct{}),
	}
	if err := p.connect(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	p.loopCtx, p.cancel = context.WithCancel(context.Background())
	go p.loop()
	p.log.Info("connected to Kafka (exactly-once)", "config", cfg, "kafka_cluster", p.clusterID, "cursor_topic", tc.CursorTopic,
		"cursor_key", tc.CursorKey, "max_records", tc.MaxRecords, "max_bytes", tc.MaxBytes)
	return p, nil
}

// connect checks the brokers and topics as Producer does, adds the cursor topic and loads the producer id.
func (p *TxnProducer) connect(ctx context.Context) error {
	pr := &Producer{cfg: p.cfg, cl: p.cl, log: p.log}
	if err := pr.connect(ctx); err != nil {
		return err
	}
	p.clusterID = pr.clusterID
	p.cursors.cluster = pr.clusterID
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	if err := p.cursors.ensure(ctx, pr, p.adm); err != nil {
		return err
	}
	if _, _, err := p.cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("initialising Kafka transactional id %s: %w", p.tc.TransactionalID, err)
	}
	return nil
}

// txn is the open transaction: its messages in Position order, and the record failures of the current attempt.
type txn struct {
	msgs    []*sink.Message
	records int
	bytes   int64
	open    bool // BeginTransaction was called and not ended

	mu     sync.Mutex
	failed map[*sink.Message]error // the first record error of each message, this attempt
	other  error                   // the cursor record's error
}

func (t *txn) recordFailed(m *sink.Message, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m == nil {
		t.other = cmp.Or(t.other, err)
		return
	}
	if t.failed[m] == nil {
		t.failed[m] = err
	}
}

// loop owns the client's transactions: it produces the messages that are ready and commits them at once, while
// Sends keep buffering messages for the next transaction.
func (p *TxnProducer) loop() {
	defer close(p.loopDone)
	t := &txn{failed: map[*sink.Message]error{}}
	for closing := false; ; {
		if !closing {
			select {
			case <-p.kick:
			case <-p.stop:
				closing = true
			}
		}
		if err := p.produceReady(t); err != nil {
			p.die(t, err)
			return
		}
		// A transaction whose messages carry no cursor (those read before the source had a position) waits for
		// one that does: committed alone, they would be read and produced again after a restart.
		if t.cursor() == "" {
			if closing {
				p.failAll(t, ErrClosed)
				return
			}
			continue
		}
		committed, err := p.commit(t)
		if err != nil {
			if errors.Is(err, sink.ErrStopped) {
				p.die(t, err)
			} else {
				p.closeErr = err
				p.failAll(t, err)
			}
			return
		}
		p.acknowledge(committed)
		p.settle()
		p.wake() // what arrived during the commit begins the next transaction; closing, the loop goes on until none did
	}
}

// produceReady produces the messages that became ready into the open transaction, beginning one if needed.
func (p *TxnProducer) produceReady(t *txn) error {
	n := len(t.msgs)
	p.ready(t)
	if len(t.msgs) == n {
		return nil
	}
	if err := p.begin(t); err != nil {
		return err
	}
	for _, m := range t.msgs[n:] {
		p.produceMessage(t, m)
	}
	return nil
}

func (p *TxnProducer) begin(t *txn) error {
	if t.open {
		return nil
	}
	if err := p.cl.BeginTransaction(); err != nil {
		return p.fatalError(err)
	}
	t.open = true
	return nil
}

// produceMessage produces m's records into the open transaction.
func (p *TxnProducer) produceMessage(t *txn, m *sink.Message) {
	for i := range m.Records {
		r := &m.Records[i]
		rec := &kgo.Record{Topic: cmp.Or(r.Topic, p.cfg.Topic), Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		p.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			if err != nil {
				t.recordFailed(m, err)
			}
		})
	}
}

// commit ends the open transaction with the cursor of its last message, retrying (abort, produce again) until it
// commits, and returns the messages it committed, for acknowledge. A message whose record Kafka refuses for good
// is taken out and handed back with Done(err); the messages after it go back to the buffer, to follow it when the
// source sends it again. It returns an error wrapping sink.ErrStopped when the producer cannot go on (fenced),
// or the loop's context error when Close ran out of time.
func (p *TxnProducer) commit(t *txn) ([]*sink.Message, error) {
	bo := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		id := p.nonce + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		err := p.tryCommit(t, id)
		if err == nil {
			p.cfg.Observer.Transaction(txnCommitted)
			msgs := t.msgs
			p.reset(t)
			return msgs, nil
		}
		if p.loopCtx.Err() != nil {
			return nil, fmt.Errorf("closing before the transaction committed: %w", err)
		}
		if isFenced(err) {
			return nil, p.fatalError(err)
		}
		if bo.Attempt() == 0 {
			p.log.Warn("Kafka transaction failed; aborting and producing it again", "err", err, "messages", len(t.msgs), "records", t.records)
		}
		if err := p.abort(t); err != nil {
			return nil, err
		}
		if p.returnRefused(t) && len(t.msgs) == 0 {
			return nil, nil
		}
		if !backoff.Sleep(p.loopCtx, bo.Next()) {
			return nil, fmt.Errorf("closing before the transaction committed: %w", context.Cause(p.loopCtx))
		}
		if err := p.begin(t); err != nil {
			return nil, err
		}
		for _, m := range t.msgs {
			p.produceMessage(t, m)
		}
	}
}

// settleFor bounds settle: the broker's own retry backoff (add.partitions.to.txn.retry.backoff.ms, 20 ms by
// default), past which waiting saves nothing.
const settleFor = 20 * time.Millisecond

// settle waits until Kafka completed the commit that just returned, for up to settleFor. EndTxn answers once the
// commit is decided; the markers are written after that, and a produce of the next transaction arriving before
// they are is held back by the broker for its retry backoff, which took most of a transaction's time in a
// catch-up. Where transactions cannot be described, it does not wait.
func (p *TxnProducer) settle() {
	ctx, cancel := context.WithTimeout(p.loopCtx, settleFor)
	defer cancel()
	for {
		described, err := p.adm.DescribeTransactions(ctx, p.tc.TransactionalID)
		if err != nil || described[p.tc.TransactionalID].State != "PrepareCommit" || !backoff.Sleep(ctx, 500*time.Microsecond) {
			return
		}
	}
}

// acknowledge releases committed messages and calls their Done.
func (p *TxnProducer) acknowledge(msgs []*sink.Message) {
	if len(msgs) == 0 {
		return
	}
	var records int
	for _, m := range msgs {
		records += len(m.Records)
	}
	p.cfg.Observer.Produced(producedOK, records)
	p.release(msgs)
	for _, m := range msgs {
		if m.Done != nil {
			m.Done(nil)
		}
	}
}

// tryCommit adds the cursor record, flushes the transaction's records and commits. The cursor record goes out
// with the others, under one flush: if any record fails, the transaction is aborted, cursor included. When the
// commit itself failed, its outcome may be unknown: the transaction is then aborted (which settles it) and the
// cursor topic tells whether it had committed after all, in which case tryCommit returns nil.
func (p *TxnProducer) tryCommit(t *txn, id string) error {
	ctx := p.loopCtx
	cursor := t.cursor()
	if cursor != "" {
		rec := &kgo.Record{Topic: p.tc.CursorTopic, Key: []byte(p.tc.CursorKey), Value: []byte(cursor),
			Headers: []kgo.RecordHeader{{Key: txnHeader, Value: []byte(id)}}}
		p.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			if err != nil {
				t.recordFailed(nil, err)
			}
		})
	}
	if err := p.cl.Flush(ctx); err != nil {
		return err
	}
	if err := t.firstError(); err != nil {
		return err
	}
	err := p.cl.EndTransaction(ctx, kgo.TryCommit)
	if err == nil {
		t.open = false
		return nil
	}
	if cursor == "" || errors.Is(err, kerr.OperationNotAttempted) || isFenced(err) || ctx.Err() != nil {
		return err
	}
	// The commit was sent and failed: settle the transaction, then look.
	if aerr := p.abort(t); aerr != nil {
		return errors.Join(err, aerr)
	}
	_, header, ok, lerr := p.cursors.last(ctx)
	if lerr == nil && ok && header == id {
		p.log.Warn("Kafka reported a failed commit, but the transaction had committed", "err", err)
		return nil
	}
	return errors.Join(err, lerr)
}

// cursor is the newest Cursor of the transaction's messages: the source cursor once it committed.
func (t *txn) cursor() string {
	for i := len(t.msgs) - 1; i >= 0; i-- {
		if c := t.msgs[i].Cursor; c != "" {
			return c
		}
	}
	return ""
}

func (t *txn) firstError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.other != nil {
		return t.other
	}
	for _, m := range t.msgs {
		if err := t.failed[m]; err != nil {
			return err
		}
	}
	return nil
}

// abort ends the open transaction with an abort, retrying while Kafka does not answer, for up to AbortTimeout:
// after that the transaction's state is unknown and the producer stops (a restart initialises the transactional
// id again, which aborts it).
func (p *TxnProducer) abort(t *txn) error {
	if !t.open {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.loopCtx, p.tc.AbortTimeout)
	defer cancel()
	bo := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		err := p.cl.AbortBufferedRecords(ctx)
		if err == nil {
			err = p.cl.EndTransaction(ctx, kgo.TryAbort)
		}
		if err == nil {
			t.open = false
			p.cfg.Observer.Transaction(txnAborted)
			if p.abortFailures > 0 {
				p.log.Info("aborted the Kafka transaction", "failed_attempts", p.abortFailures)
				p.abortFailures = 0
			}
			return nil
		}
		if isFenced(err) || errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.InvalidProducerIDMapping) {
			// kgo recovers from these itself where it can (transactions before KIP-890); still failing, they are final.
			return p.fatalError(err)
		}
		// One line per outage: the retries log at debug level.
		p.abortFailures++
		level := slog.LevelDebug
		if p.abortFailures == 1 {
			level = slog.LevelWarn
		}
		p.log.Log(ctx, level, "aborting the Kafka transaction failed; retrying", "err", err, "attempt", p.abortFailures)
		if !backoff.Sleep(ctx, bo.Next()) {
			if p.loopCtx.Err() != nil {
				return fmt.Errorf("closing before the transaction was aborted: %w", err)
			}
			return p.halt(fmt.Errorf("could not abort the Kafka transaction of transactional id %q within %s: %w "+
				"(a restart aborts it)", p.tc.TransactionalID, p.tc.AbortTimeout, err))
		}
	}
}

// returnRefused hands back the first message of the aborted transaction whose record Kafka refused for good, and
// puts the messages after it back in the buffer. It reports whether it did.
func (p *TxnProducer) returnRefused(t *txn) bool {
	t.mu.Lock()
	i, err := -1, error(nil)
	for j, m := range t.msgs {
		if e := t.failed[m]; e != nil && RefusedForGood(e) {
			i, err = j, e
			break
		}
	}
	clear(t.failed)
	t.other = nil
	t.mu.Unlock()
	if i < 0 {
		return false
	}
	refused := t.msgs[i]
	p.requeue(refused.Position, t.msgs[i+1:])
	t.msgs = t.msgs[:i]
	t.records, t.bytes = 0, 0
	for _, m := range t.msgs {
		t.records += len(m.Records)
		t.bytes += messageBytes(m)
	}
	p.cfg.Observer.Produced(producedError, 1)
	p.release([]*sink.Message{refused})
	p.log.Warn("Kafka refused a message for good; handing it back to the source", "position", refused.Position, "err", err)
	if refused.Done != nil {
		refused.Done(fmt.Errorf("producing to Kafka: %w", err))
	}
	return true
}

// RefusedForGood tells the record errors that retrying the same record cannot fix (too large, not allowed…) from
// those of the transaction or the connection.
func RefusedForGood(err error) bool {
	for _, e := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
		kerr.TopicAuthorizationFailed, kerr.InvalidTopicException, kerr.PolicyViolation, kerr.InvalidRequiredAcks} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// isFenced reports whether err means another producer took the transactional id, or this one may not use it.
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// fatalError stops the producer with err, an error Kafka gives a producer whose transactional id another
// instance took over or that may not use it.
func (p *TxnProducer) fatalError(err error) error {
	if errors.Is(err, sink.ErrStopped) {
		return err
	}
	return p.halt(fmt.Errorf("kafka transactional id %q: %w (another atkafka instance with the same transactional id "+
		"took over, or this one may not use it)", p.tc.TransactionalID, err))
}

// halt records err as the producer's end and returns it wrapped in sink.ErrStopped.
func (p *TxnProducer) halt(err error) error {
	err = fmt.Errorf("%w: %w; this instance stops", sink.ErrStopped, err)
	if p.fatal.CompareAndSwap(nil, &err) {
		p.limit.wake() // the Sends waiting for room return it
	}
	return err
}

func (p *TxnProducer) reset(t *txn) {
	t.msgs, t.records, t.bytes = nil, 0, 0
	t.mu.Lock()
	clear(t.failed)
	t.other = nil
	t.mu.Unlock()
}

// die stops the producer for good: every message held fails with err.
func (p *TxnProducer) die(t *txn, err error) {
	err = p.fatalError(err)
	p.log.Error("exactly-once Kafka producer stopped", "err", err)
	p.failAll(t, err)
}

// failAll calls Done(err) for every message held: those of the open transaction and those buffered.
func (p *TxnProducer) failAll(t *txn, err error) {
	// Stopped for good, the producer may no longer end a transaction; a restart aborts it.
	if t.open && !errors.Is(err, sink.ErrStopped) {
		_ = p.abort(t)
	}
	msgs := t.msgs
	p.reset(t)
	p.mu.Lock()
	for pos, m := range p.buf {
		msgs = append(msgs, m)
		delete(p.buf, pos)
	}
	p.mu.Unlock()
	if len(msgs) == 0 {
		return
	}
	p.cfg.Observer.Produced(producedError, len(msgs))
	p.release(msgs)
	for _, m := range msgs {
		if m.Done != nil {
			m.Done(err)
		}
	}
}

// Ping asks the cluster for its metadata once, for readiness checks: it fails while no broker answers.
func (p *TxnProducer) Ping(ctx context.Context) error { return p.cl.Ping(ctx) }

// Close stops accepting messages, commits what was received in order, waits up to the flush timeout (or until
// ctx ends) for that, then closes the client. Messages not committed by then get Done with an error, so Close
// returns only after every Done ran. The error says why some were not committed, and is the fatal error when the
// producer was fenced.
func (p *TxnProducer) Close(ctx context.Context) error {
	p.mu.Lock()
	first := !p.closing
	p.closing = true
	p.mu.Unlock()
	if !first {
		return nil
	}
	close(p.stop)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.FlushTimeout)
	defer cancel()
	select {
	case <-p.loopDone:
	case <-ctx.Done():
		p.cancel()
		<-p.loopDone
	}
	p.cancel()
	p.cl.Close()
	switch fatal := p.fatal.Load(); {
	case fatal != nil:
		return *fatal
	case p.closeErr != nil:
		p.log.Warn("closed exactly-once Kafka producer before every message was committed", "err", p.closeErr)
		return fmt.Errorf("closing Kafka producer: %w", p.closeErr)
	}
	p.log.Info("closed exactly-once Kafka producer")
	return nil
}

// ClusterID returns the id of the Kafka cluster the producer connected to; see Producer.ClusterID.
func (p *TxnProducer) ClusterID() string { return p.clusterID }

// Cursor returns the cursor.Store a source resumes from in exactly-once mode: this producer's key in its cursor
// topic. Unlike a cursor file it needs no binding to its cluster (cursor.ForCluster): the cursor topic is a topic
// of the very cluster whose transactions it records, so a run against another cluster reads that cluster's.
func (p *TxnProducer) Cursor() *CursorStore { return p.cursors }

package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/cursor"
)

// txnHeader carries the id of the transaction on its cursor record, so that a commit whose outcome Kafka left
// unconfirmed can be looked up instead of guessed (guessing wrong either loses or duplicates the batch).
const txnHeader = "atkafka-txn"

// CursorStore is the cursor.Store of exactly-once mode: the newest cursor committed to a Kafka cursor topic under
// one key (the source's identity), read with read_committed isolation. A TxnProducer writes it, one record per
// transaction, so Save has nothing to do.
type CursorStore struct {
	cfg        Config
	topic, key string
	// cluster names the cluster in String, once the producer connected (it is the producer's).
	cluster string
}

var _ cursor.Store = (*CursorStore)(nil)

// NewCursorStore returns the cursor of key in topic, read through cfg's brokers and security settings.
func NewCursorStore(cfg Config, topic, key string) *CursorStore {
	return &CursorStore{cfg: cfg.withDefaults(), topic: topic, key: key}
}

// Load returns the newest committed cursor value of the key; ok is false when none was ever committed. The value
// is final once the transactional id that writes it was initialised (NewTxn does that), which aborted whatever
// transaction an earlier instance left open.
func (s *CursorStore) Load() (value string, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), max(s.cfg.ConnectTimeout, 30*time.Second))
	defer cancel()
	// A cursor topic NewTxn just created may not be known to every broker yet: that, and leader moves, pass.
	bo := backoff.New(50*time.Millisecond, time.Second)
	for {
		value, _, ok, err = s.last(ctx)
		if err == nil || !kerr.IsRetriable(err) || !backoff.Sleep(ctx, bo.Next()) {
			return value, ok, err
		}
	}
}

// Save does nothing: the transaction that delivered the records committed their cursor with them.
func (s *CursorStore) Save(string) error { return nil }

// String says where the cursor is kept, for logs and error messages.
func (s *CursorStore) String() string {
	return fmt.Sprintf("Kafka topic %s, key %s, of cluster %s", s.topic, s.key, s.cluster)
}

// ensure creates the cursor topic, compacted with one partition, when cfg.CreateTopic is set, or checks that it
// exists; pr and adm are the connecting producer's.
func (s *CursorStore) ensure(ctx context.Context, pr *Producer, adm *kadm.Client) error {
	if !s.cfg.CreateTopic {
		return pr.checkTopics(ctx, adm, []string{s.topic})
	}
	compact := "compact"
	resp, err := adm.CreateTopic(ctx, 1, orBrokerDefault(s.cfg.ReplicationFactor), map[string]*string{"cleanup.policy": &compact}, s.topic)
	switch {
	case err == nil && resp.Err == nil:
		pr.log.Info("created Kafka cursor topic", "topic", s.topic)
		pr.waitForLeaders(ctx, adm, []string{s.topic})
	case errors.Is(cmp.Or(err, resp.Err), kerr.TopicAlreadyExists):
	default:
		return fmt.Errorf("creating Kafka cursor topic %s: %w %s", s.topic, cmp.Or(err, resp.Err), resp.ErrMessage)
	}
	return nil
}

// last reads the tail of every partition of the cursor topic below its last stable offset, widening the tail
// until a record of the key shows up or the partition's start is reached. It returns the newest record's value
// and the id of the transaction that wrote it.
func (s *CursorStore) last(ctx context.Context) (value, txnID string, ok bool, err error) {
	opts, err := s.cfg.ConnectOpts()
	if err != nil {
		return "", "", false, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return "", "", false, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, s.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return "", "", false, fmt.Errorf("listing the offsets of cursor topic %s: %w", s.topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, s.topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return "", "", false, fmt.Errorf("listing the offsets of cursor topic %s: %w", s.topic, err)
	}
	var best *kgo.Record
	for partition, end := range ends[s.topic] {
		start, _ := starts.Lookup(s.topic, partition)
		rec, err := s.lastOfKey(ctx, partition, start.Offset, end.Offset)
		if err != nil {
			return "", "", false, err
		}
		if rec != nil && (best == nil || rec.Timestamp.After(best.Timestamp)) {
			best = rec
		}
	}
	if best == nil {
		return "", "", false, nil
	}
	for _, h := range best.Headers {
		if h.Key == txnHeader {
			txnID = string(h.Value)
		}
	}
	return string(best.Value), txnID, true, nil
}

// lastOfKey returns the last committed record of the key in partition below end (a last stable offset).
func (s *CursorStore) lastOfKey(ctx context.Context, partition int32, start, end int64) (*kgo.Record, error) {
	for window := int64(64); ; window *= 8 {
		from := max(start, end-window)
		if from >= end {
			return nil, nil
		}
		rec, err := s.scan(ctx, partition, from, end)
		if err != nil || rec != nil || from == start {
			return rec, err
		}
	}
}

// scan reads partition from from to end with read_committed isolation, keeping control records so that the
// offset just below end is always seen (it is a commit or abort marker, or a record outside transactions), and
// returns the last record of the key.
func (s *CursorStore) scan(ctx context.Context, partition int32, from, end int64) (*kgo.Record, error) {
	opts, err := s.cfg.ConnectOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.topic: {partition: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var last *kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading cursor topic %s partition %d from %d to %d: %w", s.topic, partition, from, end, err)
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return nil, fmt.Errorf("reading cursor topic %s: %w", s.topic, errs[0].Err)
		}
		for _, r := range fs.Records() {
			if r.Offset >= end {
				return last, nil
			}
			if !r.Attrs.IsControl() && string(r.Key) == s.key {
				last = r
			}
			if r.Offset == end-1 {
				return last, nil
			}
		}
	}
}

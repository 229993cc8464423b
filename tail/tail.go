// Package tail is `atkafka tail`: a Kafka consumer for humans that prints what atkafka writes, one line per
// event, or the raw values with JSON. It reads every partition directly, without a consumer group, so it commits
// no offsets and never takes partitions away from real consumers of the topic.
//
// A summary line is
//
//	TIME ACTION DID [COLLECTION/RKEY] [DETAIL...]
//
// for example
//
//	2024-01-01T12:00:00.000Z create   did:plc:abc app.bsky.feed.post/3k2a "Hello world"
//	2024-01-01T12:00:01.000Z identity did:plc:abc handle=alice.test
//	2024-01-01T12:00:02.000Z ozone#takedown did:plc:abc id=42 by=did:plc:mod "spam"
//
// It understands the standard event shapes, the Osprey envelopes around them (shown as the inner event), and
// Ozone's modEventView; a value of any other shape (a dead-letter record, say) is shown as partition, offset, key
// and the start of the value, so nothing read is hidden.
package tail

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/atkafka/atkafka/sink/kafka"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures Run. Brokers and Topic are required.
type Config struct {
	Brokers []string
	Topic   string
	// JSON prints each record's value as it is, one per line, instead of a summary.
	JSON bool
	// Collection keeps operations (and Ozone events about records) of this collection only. A trailing ".*"
	// matches a namespace: "app.bsky.feed.*".
	Collection string
	// DID keeps events of this repository only: the event's DID, or the subject's for Ozone events.
	DID string
	// FromBeginning reads each partition from its start. Otherwise only records written from now on are shown.
	FromBeginning bool
	// Out receives the lines. Default os.Stdout.
	Out io.Writer
	// Opts are further client options, such as TLS and SASL; the CLI passes sink/kafka's Config.ConnectOpts so
	// that tail connects exactly as the producer does.
	Opts []kgo.Opt
	// ConnectTimeout bounds the start-up check that the brokers answer, so that a wrong address fails with a
	// message instead of a silent wait. Default kafka.DefaultConnectTimeout, as for the producer.
	ConnectTimeout time.Duration
	// Logger receives state changes (waiting for the topic, fetch errors). Default slog.Default().
	Logger *slog.Logger
}

// Run prints the topic's records until ctx ends, then returns nil. It fails when the brokers cannot be reached
// at start-up or the output cannot be written. A topic that does not exist yet is waited for.
func Run(ctx context.Context, cfg Config) error {
	if len(cfg.Brokers) == 0 || cfg.Topic == "" {
		return errors.New("tail: brokers and topic are required")
	}
	out := cfg.Out
	if out == nil {
		out = os.Stdout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}

	// Reading from "the records after now" by timestamp rather than from the end offsets keeps records written
	// while the client is still looking up those offsets, and starts partitions created later at their start.
	start := kgo.NewOffset().AfterMilli(time.Now().UnixMilli())
	if cfg.FromBeginning {
		start = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(start),
		// A human is watching: deliver what arrived within a quarter second rather than wait for fuller batches.
		kgo.FetchMaxWait(250 * time.Millisecond),
	}
	cl, err := kgo.NewClient(append(opts, cfg.Opts...)...)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	defer cl.Close()

	if err := checkTopic(ctx, cl, cfg, log); err != nil {
		return err
	}

	p := printer{cfg: cfg, w: bufio.NewWriter(out)}
	var lastErr string
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		for _, fe := range fetches.Errors() {
			// Logged once per distinct error: the client retries by itself, and a human needs to know, not to scroll.
			if msg := fe.Err.Error(); msg != lastErr {
				lastErr = msg
				log.Warn("tail: fetch error, retrying", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
			}
		}
		var werr error
		fetches.EachRecord(func(r *kgo.Record) {
			if werr == nil {
				werr = p.print(r)
			}
		})
		if werr == nil {
			werr = p.w.Flush()
		}
		if werr != nil {
			return fmt.Errorf("tail: writing output: %w", werr)
		}
	}
}

// checkTopic turns an unreachable broker or a failed authentication into an error now, and says so when the topic
// does not exist yet (atkafka creates it on its first start).
func checkTopic(ctx context.Context, cl *kgo.Client, cfg Config, log *slog.Logger) error {
	timeout := cmp.Or(cfg.ConnectTimeout, kafka.DefaultConnectTimeout)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := kafka.Ping(cctx, cl, log)
	var topics kadm.TopicDetails
	if err == nil {
		topics, err = kadm.NewClient(cl).ListTopics(cctx, cfg.Topic)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("tail: no answer from %s within %s: %w", strings.Join(cfg.Brokers, ","), timeout, err)
	}
	if !topics.Has(cfg.Topic) {
		log.Warn("tail: topic does not exist yet; waiting for it to be created", "topic", cfg.Topic)
	}
	return nil
}

type printer struct {
	cfg Config
	w   *bufio.Writer
	buf []byte
}

func (p *printer) print(r *kgo.Record) error {
	var l line
	known := false
	if !p.cfg.JSON || p.filtering() { // raw output with no filter has no use for the summary
		l, known = summarize(r.Value)
		if !p.keep(&l, known) {
			return nil
		}
	}
	b := p.buf[:0]
	switch {
	case p.cfg.JSON:
		b = append(b, r.Value...)
	case known:
		b = l.appendTo(b, r.Timestamp)
	default:
		b = appendRaw(b, r)
	}
	p.buf = append(b, '\n')
	_, err := p.w.Write(p.buf)
	return err
}

func (p *printer) filtering() bool { return p.cfg.DID != "" || p.cfg.Collection != "" }

// keep applies the filters. A value of unknown shape passes only when no filter is set: nothing in it can match.
func (p *printer) keep(l *line, known bool) bool {
	if !p.filtering() {
		return true
	}
	if !known || (p.cfg.DID != "" && l.did != p.cfg.DID) {
		return false
	}
	if p.cfg.Collection == "" {
		return true
	}
	c := l.collection()
	if ns, ok := strings.CutSuffix(p.cfg.Collection, ".*"); ok {
		return strings.HasPrefix(c, ns+".")
	}
	return c == p.cfg.Collection
}

// timeLayout matches the timestamps atkafka writes, for lines that take the Kafka record's time instead.
const timeLayout = "2006-01-02T15:04:05.000Z"

// actionWidth aligns the columns after the action for the usual standard events.
const actionWidth = len("identity")

func (l *line) appendTo(b []byte, recordTime time.Time) []byte {
	if l.time != "" {
		b = append(b, l.time...)
	} else {
		// #info carries no time of its own.
		b = recordTime.UTC().AppendFormat(b, timeLayout)
	}
	b = append(b, ' ')
	b = append(b, l.action...)
	for i := len(l.action); i < actionWidth; i++ {
		b = append(b, ' ')
	}
	for _, f := range append([]string{l.did, l.path}, l.detail...) {
		if f != "" {
			b = append(b, ' ')
			b = append(b, f...)
		}
	}
	return b
}

// maxRaw is how much of an unrecognised value a summary line shows.
const maxRaw = 120

func appendRaw(b []byte, r *kgo.Record) []byte {
	b = r.Timestamp.UTC().AppendFormat(b, timeLayout)
	b = append(b, " ?        partition="...)
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, " offset="...)
	b = strconv.AppendInt(b, r.Offset, 10)
	b = append(b, " key="...)
	b = strconv.AppendQuote(b, string(r.Key))
	v := r.Value
	if len(v) > maxRaw {
		v = v[:maxRaw]
	}
	b = append(b, " value="...)
	b = strconv.AppendQuote(b, string(v))
	if len(r.Value) > maxRaw {
		b = append(b, "…"...)
	}
	return b
}

package labels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/checkpoint"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/source/stream"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/frame"
)

// labeler is one labeler's stream: its reader, its sender and its cursor.
type labeler struct {
	s    *Source
	cfg  Labeler
	name string
	log  *slog.Logger

	// cp orders the frames' positions, saves the cursor and drains; made by openCheckpoint once the store is known.
	cp    *checkpoint.Checkpoint[int64]
	queue chan *batch
	// committed is the seq up to which Kafka holds everything: the start until a frame was acknowledged, so that
	// readiness can ask before Run opened the checkpoint.
	committed atomic.Int64

	// Reader-goroutine state.
	lastSeq int64 // newest seq read: what a reconnect resumes after (noCursor: the tip)
	read    atomic.Int64
	reads   atomic.Int64
	stalled atomic.Bool

	// lastVerifyWarn is when the sender last logged a --verify-labels log failure at warn level.
	lastVerifyWarn time.Time

	connected atomic.Bool
	// The labeler's measurements, from Config.Observer, resolved once.
	readSeq, committedSeq func(seq int64)
	up                    func(bool)
	lag                   func(time.Duration)
}

func newLabeler(s *Source, l Labeler) *labeler {
	name := l.Name()
	obs := s.cfg.Observer
	read, committed := obs.Cursor(name)
	return &labeler{s: s, cfg: l, name: name, log: s.cfg.Logger.With("source", source, "labeler", name),
		queue: make(chan *batch, s.cfg.MaxInFlight), readSeq: read, committedSeq: committed, up: obs.Connected(name),
		lag: obs.Lag(name)}
}

// Name implements Status.
func (l *labeler) Name() string { return l.name }

// Connected implements Status.
func (l *labeler) Connected() bool { return l.connected.Load() }

// Progress implements Status.
func (l *labeler) Progress() (read, committed int64) { return l.read.Load(), l.committed.Load() }

// Stalled reports whether the reader waits for room in the queue (Kafka is behind), for stream.Keepalive.
func (l *labeler) Stalled() bool { return l.stalled.Load() }

// Reads counts the messages read, for stream.Keepalive.
func (l *labeler) Reads() int64 { return l.reads.Load() }

// batch is one frame on its way from the reader to Kafka.
type batch struct {
	l        *labeler
	raw      []byte // the websocket message; frame aliases it
	received time.Time
	frame    frame.Frame
	pos      int64 // the frame's watermark position: its seq, or the previous one for frames without a usable seq
	seq      int64 // its own seq, 0 when unknown (logs, dead letters)
	bad      *problem
	// pend carries each label's subject through the pipeline's lookups; ready closes once all are resolved.
	pend    []transform.Pending
	waiting atomic.Int32
	ready   chan struct{}

	msg  sink.Message
	vals []string // values of the labels in msg, counted once Kafka has them
	lag  time.Time
	dead bool // msg is the frame as a dead letter: a refusal now stops the source
}

// problem is why a frame, or a label of it, could not become a record.
type problem struct {
	kind string // bounded: a metric label and the dead letter's reason
	err  error
}

// run reads the labeler until ctx ends or the source fails, then drains and saves the cursor.
func (l *labeler) run(ctx context.Context) error {
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	l.cp.Start()
	sent := make(chan struct{})
	go func() { defer close(sent); l.send(workCtx) }()

	l.log.Info("labeler starting", "cursor", stream.DescribeCursor(l.lastSeq), "cursor_store", l.cp.Describe())
	l.readLoop(ctx)
	close(l.queue)
	l.drain(sent, stopWork)
	err := l.cp.Close()
	l.log.Info("labeler stopped", "cursor", l.committed.Load(), "err", err)
	if err != nil {
		return fmt.Errorf("labeler %s: %w", l.name, err)
	}
	return nil
}

// readLoop connects and reads until ctx ends or a fatal error, which stops the whole source (Run reports it),
// reconnecting with capped exponential backoff whenever the connection drops.
func (l *labeler) readLoop(ctx context.Context) {
	policy := backoff.New(stream.ReconnectBase, stream.ReconnectMax)
	for {
		err := l.session(ctx, policy)
		if ctx.Err() != nil {
			return
		}
		var fatal fatalError
		if errors.As(err, &fatal) {
			l.s.fail(fatal.error)
			return
		}
		reason := "network"
		var d *stream.Drop
		if errors.As(err, &d) {
			reason = d.Reason
		}
		l.s.cfg.Observer.Reconnect(l.name, reason)
		delay := policy.Next()
		level := slog.LevelDebug // one line per outage: retries of the same outage log at debug level
		if policy.Attempt() == 1 {
			level = slog.LevelWarn
		}
		l.log.Log(ctx, level, "labeler connection lost; reconnecting", "reason", reason, "err", err,
			"cursor", stream.DescribeCursor(l.lastSeq), "retry_in", delay.Round(time.Millisecond), "attempt", policy.Attempt())
		backoff.Sleep(ctx, delay)
	}
}

// endpoint is the subscribeLabels URL to connect to now, resuming after the newest frame read. A labeler given
// by DID is resolved again each time.
func (l *labeler) endpoint(ctx context.Context) (string, error) {
	host := l.cfg.Host
	if l.cfg.DID != "" {
		rctx, cancel := context.WithTimeout(ctx, keyTimeout)
		ep, err := l.s.cfg.Directory.LabelerEndpoint(rctx, l.cfg.DID)
		cancel()
		if err != nil {
			return "", err
		}
		host = ep
	}
	u, err := stream.URL("labeler endpoint", host, subscribePath)
	if err != nil {
		return "", err
	}
	if l.lastSeq != noCursor {
		u.RawQuery = url.Values{"cursor": {strconv.FormatInt(l.lastSeq, 10)}}.Encode()
	}
	return u.String(), nil
}

// session runs one connection until it drops.
func (l *labeler) session(ctx context.Context, policy *backoff.Policy) error {
	u, err := l.endpoint(ctx)
	if err != nil {
		return &stream.Drop{Reason: "resolve", Err: err}
	}
	conn, err := stream.Dial(ctx, u)
	if err != nil {
		return &stream.Drop{Reason: "dial", Err: err}
	}
	defer conn.CloseNow()
	l.connected.Store(true)
	l.up(true)
	defer func() { l.connected.Store(false); l.up(false) }()
	l.log.Info("connected to labeler", "url", u, "after_attempts", policy.Attempt())

	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go stream.Keepalive(sctx, conn, l, stop)
	// Reads get a context that never ends, and the session's end closes the connection instead.
	defer context.AfterFunc(sctx, func() { conn.CloseNow() })()
	rctx := context.WithoutCancel(sctx)
	for {
		b, err := l.readMessage(rctx, conn)
		if err != nil {
			return &stream.Drop{Reason: stream.CloseReason(sctx, err), Err: err}
		}
		if err := l.handle(sctx, b); err != nil {
			return err
		}
		policy.Reset()
	}
}

func (l *labeler) readMessage(ctx context.Context, conn *websocket.Conn) (*batch, error) {
	typ, r, err := conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	b := &batch{l: l, received: time.Now()}
	l.reads.Add(1)
	raw, truncated, err := stream.ReadLimited(r, nil, l.s.cfg.MaxFrameBytes)
	if err != nil {
		return nil, err
	}
	b.raw = raw
	switch {
	case typ != websocket.MessageBinary:
		b.bad = &problem{"not_binary", errors.New("text message on a binary stream")}
	case truncated > 0:
		b.bad = &problem{"too_large", fmt.Errorf("message of %d bytes exceeds the %d byte limit; raw holds its start",
			len(raw)+truncated, l.s.cfg.MaxFrameBytes)}
	}
	return b, nil
}

// handle decodes b, starts its subjects' lookups and queues it for the sender. Error frames end the session.
func (l *labeler) handle(ctx context.Context, b *batch) error {
	if b.bad == nil {
		if err := b.frame.Decode(b.raw); err != nil {
			b.bad = &problem{"decode", err}
		}
	}
	b.pos = l.lastSeq
	if b.bad != nil {
		l.s.cfg.Observer.DecodeError(b.bad.kind)
		return l.enqueue(ctx, b)
	}
	switch b.frame.Kind {
	case frame.KindError:
		return l.errorFrame(&b.frame.Error)
	case frame.KindInfo:
		l.info(&b.frame.Info)
	case frame.KindLabels:
		b.seq = b.frame.Labels.Seq
		b.pos = l.position(b.seq)
	default:
		l.s.cfg.Observer.SourceEvent("unknown_type")
		b.bad = &problem{"unknown_type", fmt.Errorf("message type %q on a labels stream", b.frame.Type)}
	}
	return l.enqueue(ctx, b)
}

// position checks seq against the previous one and returns the frame's watermark position, which never goes
// back: a labeler replaying older frames cannot move the cursor backwards.
func (l *labeler) position(seq int64) int64 {
	last := l.lastSeq
	if seq <= last {
		l.s.cfg.Observer.SourceEvent("seq_regression")
		l.log.Warn("seq went backwards: the labeler replayed frames", "previous", last, "seq", seq)
		return last
	}
	l.lastSeq = seq
	l.read.Store(seq)
	l.readSeq(seq)
	return seq
}

// enqueue starts the lookups of b's subjects and hands b to the sender, waiting while MaxInFlight frames are
// queued (Kafka is behind): the labeler is not read meanwhile.
func (l *labeler) enqueue(ctx context.Context, b *batch) error {
	b.ready = make(chan struct{})
	p := l.s.cfg.Pipeline
	var labels []frame.Label
	if b.bad == nil && b.frame.Kind == frame.KindLabels {
		labels = b.frame.Labels.Labels
	}
	b.pend = make([]transform.Pending, len(labels))
	b.waiting.Store(int32(len(labels)) + 1)
	deadline := p.Deadline(b.received)
	for i := range labels {
		pe := &b.pend[i]
		pe.Ready = b.resolved
		if did, err := subjectDID(labels[i].URI); err == nil {
			pe.DID, pe.Deadline = did, deadline
		}
		p.Prepare(pe)
	}
	b.resolved()
	select {
	case l.queue <- b:
		return nil
	default:
	}
	l.stalled.Store(true)
	defer l.stalled.Store(false)
	select {
	case l.queue <- b:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// resolved counts down b's lookups (plus one for enqueue itself) and marks it ready at zero.
func (b *batch) resolved() {
	if b.waiting.Add(-1) == 0 {
		close(b.ready)
	}
}

// errorFrame turns an error frame into the error that ends the session.
func (l *labeler) errorFrame(e *frame.ErrorFrame) error {
	name, msg := string(e.Error), string(e.Message)
	if name == "FutureCursor" {
		l.s.cfg.Observer.SourceEvent("future_cursor")
		return fatalError{fmt.Errorf("labeler %s rejected cursor %d as ahead of its newest label (FutureCursor: %s): "+
			"the labeler was reset or is not the one this cursor came from; restart with --labeler-cursor live to start "+
			"at its tip, or --labeler-cursor N with a seq it has (the saved cursor is in %s)",
			l.name, l.lastSeq, msg, l.cp.Describe())}
	}
	l.s.cfg.Observer.SourceEvent("error_frame")
	return &stream.Drop{Reason: "error_frame", Err: fmt.Errorf("labeler error frame %q: %s", name, msg)}
}

// info logs and counts an #info frame; it carries no label, so it makes no record.
func (l *labeler) info(in *frame.Info) {
	if string(in.Name) == "OutdatedCursor" {
		l.s.cfg.Observer.SourceEvent("outdated_cursor")
		l.log.Warn("labeler says the cursor is older than what it keeps: labels between it and the oldest it has are lost",
			"cursor", l.lastSeq, "message", string(in.Message))
		return
	}
	l.s.cfg.Observer.SourceEvent("info")
	l.log.Info("labeler info message", "name", string(in.Name), "message", string(in.Message))
}

// send renders and sends the queued frames in read order until the queue is closed. Once ctx ends (the
// shutdown timeout passed) it takes the rest without sending: those frames are read again after a restart.
func (l *labeler) send(ctx context.Context) {
	var w worker
	for b := range l.queue {
		if ctx.Err() != nil {
			continue
		}
		select {
		case <-b.ready:
		case <-ctx.Done():
			continue
		}
		b.msg = sink.Message{Done: b.finish}
		_ = l.cp.Add(context.Background(), &b.msg, b.pos) // no window: the queue bounds the frames in flight
		if !w.build(ctx, b) {
			l.cp.Abandon(&b.msg) // shutting down: the frame stays before the cursor
			continue
		}
		l.deliver(ctx, b)
	}
}

// deliver hands b's message to the sink. If ctx ended the frame stays pending, and is read again after a
// restart; any other refusal means the sink is gone.
func (l *labeler) deliver(ctx context.Context, b *batch) {
	if err := l.cp.Send(ctx, &b.msg); err != nil {
		l.cp.Abandon(&b.msg)
		if ctx.Err() == nil {
			l.s.fail(fmt.Errorf("labeler %s: sink refused the message of seq %d: %w", l.name, b.seq, err))
		}
	}
}

// finish is the Done of every message. A refused message is sent again as the frame's dead letter (same
// Position, so an exactly-once sink keeps its order); a refused dead letter stops the source, with the cursor
// before the frame.
func (b *batch) finish(err error) {
	l := b.l
	if err == nil {
		for _, v := range b.vals {
			l.s.cfg.Observer.Produced(l.name, v)
		}
		if !b.lag.IsZero() {
			l.lag(time.Since(b.lag))
		}
		l.s.cfg.Observer.Delivered(time.Since(b.received))
		l.cp.Done(&b.msg)
		return
	}
	if b.dead || errors.Is(err, sink.ErrStopped) {
		l.cp.Abandon(&b.msg)
		l.s.fail(fmt.Errorf("labeler %s: kafka refused the frame of seq %d for good, also as a dead letter: %w; "+
			"the cursor stays before it, so a restart retries it", l.name, b.seq, err))
		return
	}
	// Done must not block: the dead letter is sent from a goroutine of its own.
	go func() {
		b.dead, b.vals = true, nil
		b.msg.Records = []sink.Record{l.deadLetterRecord("produce_failed", err, "", b.seq, b.raw)}
		l.s.cfg.Observer.DeadLettered("produce_failed")
		l.deliver(context.Background(), b)
	}()
}

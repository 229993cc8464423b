// Package relay is the relay source: a com.atproto.sync.subscribeRepos client that turns every firehose frame
// into Kafka records without losing any, across disconnects, broker outages and crashes.
//
// One reader goroutine reads frames, decodes their envelope and hands each to one of a fixed set of workers,
// chosen by the frame's DID so that a DID's frames keep their order while different DIDs run in parallel. A
// worker turns the frame into one sink.Message (all its records, or none when everything was filtered) and
// sends it. The cursor is a watermark over the frames in read order: it moves past a frame only once Kafka
// acknowledged that frame's message and every one before it, and that is what the cursor file stores. A crash
// therefore re-reads at most what was in flight, and never skips anything.
//
// Input that cannot become records (undecodable frames, commits whose record blocks are missing) is written raw
// to the dead-letter topic as that frame's message, so the cursor still only moves past what Kafka holds. A
// frame whose seq cannot be read takes the previous frame's position: it cannot move the cursor, but the cursor
// cannot pass it either until its dead letter is acknowledged.
//
// When Kafka refuses a frame's records for good (Done with an error: a record too large, a topic it may not
// write), the frame is written to the dead-letter topic instead, whole, then truncated to 256 KiB. If that is
// refused too, Run stops with an error naming the frame: the cursor stays before it, and a restart retries it.
// Nothing is ever acknowledged that Kafka does not hold.
//
// Memory is bounded by Config.MaxInFlight: the reader takes a pooled job (message buffer, decoded frame, rendered
// records) for every frame and stops reading while none is free, which is how a slow or absent broker pauses
// the relay instead of growing a backlog in memory. Nothing is allocated per frame beyond the strings handed to
// the pipeline.
//
// Shutdown (Run's context ends) stops reading, lets the workers send what was queued, waits up to
// Config.ShutdownTimeout for Kafka's acknowledgements and saves the cursor. A kill at any moment loses nothing:
// the saved cursor is at most a second behind the acknowledged frames, and a restart re-reads what was in
// flight.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atkafka/atkafka/checkpoint"
	"github.com/atkafka/atkafka/cursor"
)

// saveInterval is how often the committed cursor is written to disk: a crash re-reads at most this much more
// than was in flight.
const saveInterval = time.Second

// label is the source label of every metric this package sets.
const label = "relay"

// Source reads a relay firehose into a sink. Create it with New and start it with Run.
type Source struct {
	cfg Config
	url *url.URL
	log *slog.Logger

	// cp orders the frames' positions, saves the cursor (Config.Cursor, or the cursor file) and drains.
	cp   *checkpoint.Checkpoint[int64]
	jobs *pool
	// preparing counts the frames dispatched and not yet queued on a worker (waiting for their metadata).
	preparing sync.WaitGroup
	queues    []chan *job
	// retries receives jobs whose delivery failed, for the retry goroutine; it holds as many as there are jobs.
	retries chan *job

	started   atomic.Bool
	connected atomic.Bool
	progress  atomic.Int64 // Unix nanoseconds when the committed cursor last moved
	committed atomic.Int64
	// stopRead ends the read loop with a fatal error; set by Run.
	stopRead context.CancelCauseFunc

	// Reader-goroutine state.
	lastSeq int64 // the newest position read: the cursor a reconnect resumes from (noCursor: the tip)
	reads   atomic.Int64
	stalled atomic.Bool // the reader waits for a free job (backpressure)
	gaps    rateLimitedLog

	// obs is cfg.Observer, at hand on the per-frame paths.
	obs Observer
}

// New validates cfg and prepares a Source. It creates cfg.DataDir when missing but connects to nothing.
func New(cfg Config) (*Source, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u, _ := subscribeURL(cfg.Host) // validated above
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("relay data dir: %w", err)
	}
	s := &Source{
		cfg:     cfg,
		url:     u,
		log:     cfg.Logger.With("source", label, "relay", u.Host),
		queues:  make([]chan *job, cfg.Workers),
		retries: make(chan *job, cfg.MaxInFlight),
		obs:     cfg.Observer,
	}
	store := cfg.Cursor
	if store == nil {
		store = cursor.NewFile(cursorPath(cfg.DataDir, u))
	}
	s.gaps.every = 10 * time.Second
	s.cp = checkpoint.New(checkpoint.Config[int64]{Sink: cfg.Sink, Store: store, Cursor: seqCursor, SaveEvery: saveInterval,
		OnAdvance: s.advance, Logger: s.log})
	s.jobs = newPool(s, cfg.MaxInFlight)
	for i := range s.queues {
		// A queue can hold every job, so the reader never waits on one busy worker while others idle.
		s.queues[i] = make(chan *job, cfg.MaxInFlight)
	}
	return s, nil
}

// CursorPath returns where the committed cursor is kept: the cursor file's path, unless Config.Cursor said
// otherwise.
func (s *Source) CursorPath() string { return s.cp.Describe() }

// Connected reports whether the source is connected to the relay right now.
func (s *Source) Connected() bool { return s.connected.Load() }

// LastProgress returns when the committed cursor last moved (zero before it ever did): readiness checks use it
// to tell a stalled pipeline from a quiet one.
func (s *Source) LastProgress() time.Time {
	if ns := s.progress.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// advance is the watermark's callback: every frame up to pos is in Kafka.
func (s *Source) advance(pos int64) {
	if pos > s.committed.Load() {
		s.committed.Store(pos)
		s.progress.Store(time.Now().UnixNano())
		s.obs.Committed(pos)
	}
}

// seqCursor is the stored cursor of a position: its seq, none before the first frame with one.
func seqCursor(seq int64) (string, bool) {
	return strconv.FormatInt(seq, 10), seq > 0
}

// fatalError ends Run instead of reconnecting.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// fail stops the source with err. The frame that caused it, j's, stays pending, so the cursor never moves past
// it and a restart reads it again.
func (s *Source) fail(j *job, err error) {
	s.cp.Abandon(&j.msg)
	s.stopRead(fatalError{err})
}

// Run reads the relay until ctx ends or a fatal error, reconnecting whenever the relay goes away. After ctx ends
// it stops reading, waits up to Config.ShutdownTimeout for what was read to be acknowledged, saves the cursor
// and returns nil. It returns an error only for what retrying cannot fix: a cursor the relay says is in the
// future, a record Kafka refused even as a dead letter, or a cursor file that cannot be read or written. Run may
// be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("relay: Run called more than once")
	}
	start, err := s.startPosition()
	if err != nil {
		return err
	}
	s.lastSeq = start
	s.committed.Store(max(start, 0))
	s.cp.Resume(start)

	readCtx, stopRead := context.WithCancelCause(ctx)
	defer stopRead(nil)
	s.stopRead = stopRead
	// Workers and the checkpoint outlive ctx: they finish what was read before shutting down.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	s.cp.Start()

	var workers, retrier sync.WaitGroup
	for _, q := range s.queues {
		workers.Go(func() { s.work(workCtx, q) })
	}
	retrier.Go(func() { s.retry(workCtx) })

	s.log.Info("relay source starting", "url", s.url.Redacted(), "cursor", describeCursor(start), "cursor_file", s.CursorPath())
	err = s.read(readCtx)
	// Frames still waiting for their metadata are queued by their deadline at the latest; the queues close after.
	s.preparing.Wait()
	for _, q := range s.queues {
		close(q)
	}
	s.drain(&workers, stopWork)
	retrier.Wait()
	err = errors.Join(err, s.cp.Close())
	s.log.Info("relay source stopped", "cursor", s.committed.Load(), "in_flight", s.jobs.inFlight(), "err", err)
	return err
}

// startPosition is the seq the first connection resumes after, noCursor for the tip.
func (s *Source) startPosition() (int64, error) {
	seq, fromFile, _ := parseStartCursor(s.cfg.StartCursor) // validated by New
	if !fromFile {
		return seq, nil
	}
	v, ok, err := s.cp.Load()
	if err != nil || !ok {
		return noCursor, err
	}
	seq, err = strconv.ParseInt(v, 10, 64)
	if err != nil || seq < 0 {
		return 0, fmt.Errorf("cursor file %s holds %q, not a relay seq: fix or remove it, or start with --cursor live", s.CursorPath(), v)
	}
	return seq, nil
}

func describeCursor(seq int64) string {
	if seq == noCursor {
		return StartLive
	}
	return strconv.FormatInt(seq, 10)
}

// drain waits, up to the shutdown timeout, for the workers to send what was queued and for Kafka to acknowledge
// it, then stops the workers. Frames still pending after that are simply read again by the next run.
func (s *Source) drain(workers *sync.WaitGroup, stopWork context.CancelFunc) {
	defer stopWork()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	sent := make(chan struct{})
	go func() { workers.Wait(); close(sent) }()
	select {
	case <-sent:
	case <-ctx.Done():
		stopWork() // unblocks Sends waiting for a broker that is not coming back in time
		<-sent
	}
	if n := s.cp.Drain(ctx); n > 0 {
		s.log.Warn("shutdown timeout: frames not acknowledged will be read again after a restart",
			"in_flight", n, "timeout", s.cfg.ShutdownTimeout)
	}
}

// rateLimitedLog lets a repeated condition log once per interval, counting what it suppressed.
type rateLimitedLog struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many occurrences were not logged since the last line.
func (r *rateLimitedLog) allow(now time.Time) (ok bool, suppressed int) {
	if now.Sub(r.last) < r.every {
		r.suppressed++
		return false, 0
	}
	r.last, suppressed, r.suppressed = now, r.suppressed, 0
	return true, suppressed
}

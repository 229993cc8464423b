// Package labels is the labels source: a com.atproto.label.subscribeLabels client for one or more labelers that
// turns every label into a Kafka record without losing any, across disconnects, broker outages and crashes.
//
// Each labeler runs on its own: a reader goroutine that (re)connects with backoff, decodes frames and starts the
// eventMetadata lookups of their subjects, and a sender goroutine that, in read order, renders each frame's labels
// (verifying them when asked) and sends them as one sink.Message. A labeler that is down, slow or broken holds up
// no other. Each labeler has a cursor of its own, the seq of its stream, which moves past a frame only once Kafka
// acknowledged that frame's records and every one before it (a checkpoint.Checkpoint per labeler).
//
// Frames are sent in read order per labeler, so a subject's labels, keyed by its DID, reach their partition in
// the labeler's order: a negation never overtakes the label it negates.
//
// Input that cannot become records (an undecodable frame, a label missing a required field or with a uri that is
// neither a DID nor an AT-URI, a label failing strict verification) is written to the dead-letter topic, raw,
// with the reason; the frame's other labels are produced as usual.
package labels

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/source/stream"
)

// source is the source label of the shared metrics (dead letters, decode errors, source events).
const source = "labels"

// Source subscribes to labelers and produces their labels. Create it with New and start it with Run.
type Source struct {
	cfg      Config
	labelers []*labeler
	started  atomic.Bool
	// stop ends Run with a fatal error (a FutureCursor, a record Kafka refused even as a dead letter).
	stop context.CancelCauseFunc
}

// New validates cfg and prepares a Source. It creates cfg.DataDir when missing but connects to nothing.
func New(cfg Config) (*Source, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Cursor == nil {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("labels data dir: %w", err)
		}
	}
	s := &Source{cfg: cfg}
	for _, l := range cfg.Labelers {
		s.labelers = append(s.labelers, newLabeler(s, l))
	}
	return s, nil
}

// Status is what /readyz asks of one labeler.
type Status interface {
	// Name is the labeler's DID or host.
	Name() string
	// Connected reports whether its stream is connected right now.
	Connected() bool
	// Progress returns the newest seq read and the one up to which Kafka acknowledged everything.
	Progress() (read, committed int64)
}

// Labelers returns the status of each labeler, in Config order.
func (s *Source) Labelers() []Status {
	out := make([]Status, len(s.labelers))
	for i, l := range s.labelers {
		out[i] = l
	}
	return out
}

// fatalError ends Run instead of reconnecting.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// Run reads every labeler until ctx ends or a fatal error. After ctx ends each labeler stops reading, waits up to
// Config.ShutdownTimeout for what it read to be acknowledged and saves its cursor; Run then returns nil. It returns
// an error only for what retrying cannot fix: a cursor a labeler says is in the future, a record Kafka refused
// even as a dead letter, or a cursor that cannot be read or written. Run may be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("labels: Run called more than once")
	}
	for _, l := range s.labelers {
		if err := l.open(); err != nil {
			return err
		}
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	s.stop = stop
	errs := make([]error, len(s.labelers))
	var wg sync.WaitGroup
	for i, l := range s.labelers {
		wg.Go(func() { errs[i] = l.run(runCtx) })
	}
	wg.Wait()
	var fatal fatalError
	if errors.As(context.Cause(runCtx), &fatal) {
		errs = append(errs, fatal.error)
	}
	return errors.Join(errs...)
}

// fail stops every labeler with err: what caused it stays unacknowledged, so no cursor moves past it.
func (s *Source) fail(err error) { s.stop(fatalError{err}) }

// open loads the labeler's starting position.
func (l *labeler) open() error {
	store, err := l.store()
	if err != nil {
		return err
	}
	start, fromStore, _ := stream.ParseStartCursor(l.s.cfg.StartCursor) // validated by New
	if fromStore {
		v, ok, err := store.Load()
		if err != nil {
			return fmt.Errorf("labeler %s: %w", l.name, err)
		}
		if ok {
			if start, err = strconv.ParseInt(v, 10, 64); err != nil || start < 0 {
				return fmt.Errorf("labeler %s: cursor %s holds %q, not a seq: fix or remove it, or start with --labeler-cursor live",
					l.name, cursor.Describe(store), v)
			}
		}
	}
	l.lastSeq = start
	// Read and committed start equal: a labeler with nothing new to say is idle, not stalled.
	l.read.Store(start)
	l.openCheckpoint(store, start)
	l.readSeq(start)
	return nil
}

func (l *labeler) store() (cursor.Store, error) {
	if l.s.cfg.Cursor == nil {
		return cursor.NewFile(CursorFile(l.s.cfg.DataDir, l.cfg)), nil
	}
	return l.s.cfg.Cursor(l.cfg)
}

// sink is where the labeler's messages go: its own (Config.SinkOf) or the source's.
func (l *labeler) sink() sink.Sink {
	if l.s.cfg.SinkOf != nil {
		return l.s.cfg.SinkOf(l.cfg)
	}
	return l.s.cfg.Sink
}

// drain waits, up to the shutdown timeout, for the sender to send what was queued and for Kafka to acknowledge
// it; then stopWork ends what still waits. Frames still pending are read again by the next run.
func (l *labeler) drain(sent <-chan struct{}, stopWork context.CancelFunc) {
	defer stopWork()
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.ShutdownTimeout)
	defer cancel()
	select {
	case <-sent:
	case <-ctx.Done():
		stopWork()
		<-sent
	}
	if n := l.cp.Drain(ctx); n > 0 {
		l.log.Warn("shutdown timeout: frames not acknowledged will be read again after a restart",
			"in_flight", n, "timeout", l.s.cfg.ShutdownTimeout)
	}
}

// Package checkpoint is the one path from a source's deliveries to its durable cursor.
//
// Every source with a cursor (relay, Ozone) reads units in order, hands each to the sink as one message, and may
// move its cursor past a unit only once Kafka acknowledged it and every unit read before it. A Checkpoint owns
// that for one source run: the positions in read order (an ack.Watermark), the cursor store, when to save, the
// in-flight window that bounds how far reading runs ahead of the saved cursor, and the shutdown drain. Sources
// give it their messages; it stamps each with its sink.Mark (Position and Cursor) and passes it on.
//
// An exactly-once sink (sink.Committer) stores the cursor with the records itself: it then gets the messages in
// Position order, whatever order the source's workers finished them in, and the Checkpoint saves nothing (the
// store is only read at start-up).
package checkpoint

import (
	"context"
	"log/slog"
	"time"

	"github.com/atkafka/atkafka/ack"
	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/cursor"
	"github.com/atkafka/atkafka/sink"
)

// Config configures a Checkpoint. Sink, Store and Cursor are required.
type Config[P any] struct {
	// Sink receives the messages. A sink.Committer (or a decorator in front of one: sink.CommitsCursor) stores the
	// cursor itself and gets them in Position order.
	Sink sink.Sink
	// Store keeps the cursor: saved by the Checkpoint, or only loaded when Sink is a sink.Committer.
	Store cursor.Store
	// Cursor is the stored form of a position; ok is false for a position that is no cursor (nothing read yet),
	// which is never saved.
	Cursor func(pos P) (value string, ok bool)
	// SaveEvery is how often the committed cursor is saved when it moved; 0 saves each time it moves.
	SaveEvery time.Duration
	// Window, when positive, bounds the positions added and not yet saved: Add waits for room. A kill then repeats
	// at most a window. 0 leaves the bound to the source.
	Window int
	// OnAdvance, if not nil, is called with each new commit point (every message up to it delivered), under the
	// watermark's lock: it must be quick.
	OnAdvance func(pos P)
	// Logger receives save failures. Default slog.Default().
	Logger *slog.Logger
}

// Checkpoint is the cursor bookkeeping of one source run. Create it with New, call Start before the first Add and
// Close after the last Done. Add is for the source's reading goroutine; the rest is safe for concurrent use.
type Checkpoint[P any] struct {
	cfg       Config[P]
	committer bool
	wm        *ack.Watermark[entry[P]]
	seq       *sequencer // exactly-once only

	moved chan struct{} // capacity 1: the watermark moved since the saver last looked
	slots chan struct{} // the window: one per position added and not yet saved; nil without a window

	inFlight InFlight // messages added and neither delivered nor abandoned

	added ack.Ticket // the ticket of the next Add
	// start is where the run resumed (Resume), the cursor to keep until the first commit point.
	start    P
	hasStart bool

	stopSaver context.CancelFunc
	saverDone chan error
}

// entry is a watermark position with its ticket, which tells the saver how many positions a commit covers.
type entry[P any] struct {
	pos    P
	ticket ack.Ticket
}

// New returns a Checkpoint for one source run.
func New[P any](cfg Config[P]) *Checkpoint[P] {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Checkpoint[P]{cfg: cfg, moved: make(chan struct{}, 1)}
	if sink.CommitsCursor(cfg.Sink) {
		c.committer = true
		c.seq = &sequencer{sink: cfg.Sink, held: map[uint64]*sink.Message{}, abandon: c.Abandon}
	}
	if cfg.Window > 0 {
		c.slots = make(chan struct{}, cfg.Window)
	}
	c.wm = ack.NewWatermark(func(e entry[P]) {
		if cfg.OnAdvance != nil {
			cfg.OnAdvance(e.pos)
		}
		c.poke() // a wake-up already pending will see this commit point too
	})
	return c
}

// Load returns the stored cursor; ok is false when none was ever saved.
func (c *Checkpoint[P]) Load() (value string, ok bool, err error) { return c.cfg.Store.Load() }

// Describe names where the cursor is kept, for logs and error messages.
func (c *Checkpoint[P]) Describe() string { return cursor.Describe(c.cfg.Store) }

// Resume sets the position the run starts after, saved as the cursor until a message is delivered: a run started
// at an explicit cursor makes it the stored one. Call it before Start, if at all.
func (c *Checkpoint[P]) Resume(pos P) { c.start, c.hasStart = pos, true }

// Start starts saving the committed cursor (SaveEvery) until Close.
func (c *Checkpoint[P]) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.stopSaver, c.saverDone = cancel, make(chan error, 1)
	go func() { c.saverDone <- c.saver(ctx) }()
}

// Add records pos as the next position read and stamps msg with its Mark. With a Window it first waits for
// room, failing only when ctx ends. Positions must be added in read order, from one goroutine.
func (c *Checkpoint[P]) Add(ctx context.Context, msg *sink.Message, pos P) error {
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	c.inFlight.Add()
	// Tickets count from 0 in the order of Add, so the entry can carry its own: the saver needs it.
	msg.Mark = sink.Mark{Position: uint64(c.wm.Add(entry[P]{pos: pos, ticket: c.added}))}
	c.added++
	if v, ok := c.cfg.Cursor(pos); ok {
		msg.Cursor = v
	}
	return nil
}

// Send hands msg, stamped by Add, to the sink: directly, or for a sink.Committer in Position order (messages
// that come early are held until the ones before them were sent). It fails as sink.Send does, and then msg.Done
// is not called; for a Committer, a message held when the sink failed is abandoned (see Abandon).
func (c *Checkpoint[P]) Send(ctx context.Context, msg *sink.Message) error {
	if c.seq != nil {
		return c.seq.send(ctx, msg)
	}
	return c.cfg.Sink.Send(ctx, msg)
}

// Done records that Kafka acknowledged msg: the cursor may move past it.
func (c *Checkpoint[P]) Done(msg *sink.Message) {
	c.wm.Done(ack.Ticket(msg.Position))
	c.inFlight.Settle()
}

// Abandon records that msg will not be delivered in this run (the sink refused it for good, or stopped): it
// stays pending, so the cursor never passes it and a restart reads it again, but Drain no longer waits for it.
func (c *Checkpoint[P]) Abandon(*sink.Message) { c.inFlight.Settle() }

// Drain waits until every message added was delivered or abandoned, or ctx ends, and returns how many were
// neither: those are read again after a restart.
func (c *Checkpoint[P]) Drain(ctx context.Context) int { return c.inFlight.Wait(ctx) }

// Committed returns the newest position such that it and every position added before it were delivered; ok is
// false while there is none.
func (c *Checkpoint[P]) Committed() (pos P, ok bool) {
	e, ok := c.wm.Committed()
	return e.pos, ok
}

// Close stops the saver after a final save, whose error it returns: call it after Drain, so that the final save
// includes what was delivered during the drain.
func (c *Checkpoint[P]) Close() error {
	c.stopSaver()
	return <-c.saverDone
}

// saver saves the committed cursor as Config.SaveEvery says until ctx ends, and once more then. A failed save is
// logged and retried with backoff; meanwhile a Window stays full and reading waits, so the source never runs far
// ahead of a cursor it cannot keep.
func (c *Checkpoint[P]) saver(ctx context.Context) error {
	var tick <-chan time.Time
	if c.cfg.SaveEvery > 0 {
		t := time.NewTicker(c.cfg.SaveEvery)
		defer t.Stop()
		tick = t.C
	}
	moved := c.moved
	if tick != nil {
		moved = nil
	}
	var last saved
	bo := backoff.New(500*time.Millisecond, 30*time.Second)
	for {
		select {
		case <-ctx.Done():
			err := c.save(&last)
			if err != nil {
				c.cfg.Logger.Error("final cursor save failed; what was delivered since the last save is read again after a restart",
					"cursor_store", c.Describe(), "err", err)
			}
			return err
		case <-tick:
		case <-moved:
		}
		if err := c.save(&last); err != nil {
			if bo.Attempt() == 0 { // one line per outage
				c.cfg.Logger.Error("cursor not saved; retrying with backoff", "cursor_store", c.Describe(), "err", err)
			}
			if backoff.Sleep(ctx, bo.Next()) {
				c.poke()
			}
			continue
		}
		if bo.Attempt() > 0 {
			c.cfg.Logger.Info("cursor saved again", "cursor_store", c.Describe(), "failed_attempts", bo.Attempt())
			bo.Reset()
		}
	}
}

// saved is what the saver last saved.
type saved struct {
	covered uint64 // positions the save covered: its ticket + 1 (0: the Resume position)
	value   string
}

// save saves the committed cursor when it moved since last, then frees the window's slots it covers. A Committer
// stored the cursor already, in the transaction that delivered the records.
func (c *Checkpoint[P]) save(last *saved) error {
	pos, covered, ok := c.start, uint64(0), c.hasStart
	if e, committed := c.wm.Committed(); committed {
		pos, covered, ok = e.pos, uint64(e.ticket)+1, true
	}
	if !ok {
		return nil
	}
	if v, ok := c.cfg.Cursor(pos); ok && !c.committer && v != last.value {
		if err := c.cfg.Store.Save(v); err != nil {
			return err
		}
		last.value = v
	}
	if c.slots != nil {
		for range covered - last.covered {
			<-c.slots
		}
	}
	last.covered = covered
	return nil
}

// poke makes the saver look again.
func (c *Checkpoint[P]) poke() {
	select {
	case c.moved <- struct{}{}:
	default:
	}
}

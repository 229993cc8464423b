package tap

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/checkpoint"
)

// session is one websocket connection to Tap with its reader, workers and ack writer. Acks belong to the session:
// Tap's ids mean nothing on another connection, so when the session ends, acks still pending are dropped.
type session struct {
	src    *Source
	conn   *websocket.Conn
	acks   *ackQueue
	seed   maphash.Seed
	queues []chan *job
	// slots bounds the events read and not yet handled by a worker (Config.MaxInFlight): once all are taken the
	// reader stops reading and Tap's writes wait, which is the backpressure we want. Acks do not take one.
	slots chan struct{}
	// stopping is closed when the reader must stop handing events to workers.
	stopping chan struct{}
	// inflight counts the messages handed to the sink whose Done has not run yet.
	inflight checkpoint.InFlight
	// active is set once the first message arrived, telling Run that the connection worked and backoff can reset.
	active atomic.Bool
}

func newSession(src *Source, conn *websocket.Conn) *session {
	ss := &session{
		src:      src,
		conn:     conn,
		acks:     newAckQueue(),
		seed:     maphash.MakeSeed(),
		queues:   make([]chan *job, src.cfg.Workers),
		slots:    make(chan struct{}, src.cfg.MaxInFlight),
		stopping: make(chan struct{}),
	}
	for i := range ss.queues {
		// A queue can hold every event in flight, so that a job made ready never waits for its worker.
		ss.queues[i] = make(chan *job, src.cfg.MaxInFlight)
	}
	return ss
}

// connError says why a connection ended, as the reason label of atkafka_reconnects.
type connError struct {
	reason string // dial, read or write
	err    error
}

func (e *connError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// run serves the connection until ctx ends (graceful: it returns nil after sending the acks it could) or the
// connection fails (it returns why).
func (ss *session) run(ctx context.Context) error {
	// The connection's own context is never ctx: coder/websocket closes the connection when a read or write
	// context ends, and a graceful stop must keep writing acks after ctx ended.
	connCtx, closeConn := context.WithCancel(context.Background())
	defer closeConn()
	workCtx, stopWork := context.WithCancel(connCtx)
	defer stopWork()

	failed := make(chan error, 2) // one each from the reader and the writer, so neither blocks
	var reader, workers sync.WaitGroup
	reader.Go(func() { failed <- &connError{"read", ss.read(connCtx)} })
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := ss.writer().run(connCtx); err != nil {
			failed <- &connError{"write", err}
		}
	}()
	for _, q := range ss.queues {
		workers.Go(func() { ss.work(workCtx, q) })
	}

	var err error
	select {
	case <-ctx.Done():
		// Stop taking events, let Kafka acknowledge what the sink holds, send those acks, then close.
		close(ss.stopping)
		stopWork()
		workers.Wait()
		ss.drain()
		ss.acks.close()
		<-writerDone
		_ = ss.conn.Close(websocket.StatusNormalClosure, "atkafka stopping")
	case err = <-failed:
		// The connection is gone: nothing more can be acked on it.
		close(ss.stopping)
		closeConn()
		workers.Wait()
		ss.acks.close()
		<-writerDone
		ss.dropPending()
	}
	closeConn()
	_ = ss.conn.CloseNow()
	reader.Wait()
	return err
}

// drain waits, up to DrainTimeout, for Kafka to acknowledge what the workers handed to the sink, so that a
// graceful stop acks it instead of leaving Tap to resend it.
func (ss *session) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), ss.src.cfg.DrainTimeout)
	defer cancel()
	if n := ss.inflight.Wait(ctx); n > 0 {
		ss.src.log.Warn("stopping before Kafka acknowledged every event; Tap will send those again",
			"events", n, "timeout", ss.src.cfg.DrainTimeout)
	}
}

// dropPending counts the acks that were queued but can no longer be sent.
func (ss *session) dropPending() {
	ids, _ := ss.acks.take(nil)
	ss.src.obs.Acks(acksDisconnected, len(ids))
}

// ack queues id for the writer, or counts it dropped when the connection is gone.
func (ss *session) ack(id uint64) {
	if ss.src.cfg.DisableAcks {
		ss.src.progress(id, 1)
		return
	}
	if !ss.acks.push(id) {
		ss.src.obs.Acks(acksDisconnected, 1)
	}
}

func (ss *session) writer() *ackWriter {
	return &ackWriter{conn: ss.conn, queue: ss.acks, progress: ss.src.progress, obs: ss.src.obs}
}

// read reads messages until the connection fails, handing them to workers until stopping is closed and
// discarding them after (so that the close handshake still gets through).
func (ss *session) read(ctx context.Context) error {
	for {
		_, data, err := ss.conn.Read(ctx)
		if err != nil {
			return err
		}
		ss.active.Store(true)
		j := decode(data, time.Now())
		if j.hasID {
			ss.src.obs.Read(j.id)
			ss.src.read.Add(1)
		}
		ss.dispatch(j)
	}
}

// dispatch takes a slot for j, waiting while none is free, and starts the lookups it needs; once they are done
// (or its deadline passed) j goes to its DID's worker. Events of one DID keep their order, and one waiting for
// its account's metadata holds back no other DID's. Nothing is dispatched once the session stops.
func (ss *session) dispatch(j *job) {
	select {
	case <-ss.stopping: // checked first: select picks at random among ready cases
		return
	default:
	}
	select {
	case ss.slots <- struct{}{}:
	case <-ss.stopping:
		return
	}
	p := ss.src.cfg.Pipeline
	j.pend.Ready = func() { ss.queues[maphash.String(ss.seed, j.did)%uint64(len(ss.queues))] <- j }
	if j.ev != nil {
		j.pend.DID, j.pend.Deadline, j.pend.Invalidate = j.did, p.Deadline(j.received), j.ev.invalidation()
	}
	p.Prepare(&j.pend)
}

// work handles one worker's jobs in order until ctx ends; what is still queued then is left for Tap to resend.
func (ss *session) work(ctx context.Context, q <-chan *job) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-q:
			if ctx.Err() != nil {
				return
			}
			ss.handle(ctx, j)
			<-ss.slots
		}
	}
}

// errPermanent marks dial failures retrying cannot fix (wrong password, Tap in webhook mode).
var errPermanent = errors.New("tap refused the connection")

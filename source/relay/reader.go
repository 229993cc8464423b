package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/source/stream"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/frame"
)

// read connects to the relay and reads from it until ctx ends (nil) or a fatal error (returned), reconnecting
// with capped exponential backoff whenever the connection drops.
func (s *Source) read(ctx context.Context) error {
	policy := backoff.New(stream.ReconnectBase, stream.ReconnectMax)
	for {
		err := s.session(ctx, policy)
		if ctx.Err() != nil {
			var fatal fatalError
			if errors.As(context.Cause(ctx), &fatal) {
				return fatal.error
			}
			return nil
		}
		var fatal fatalError
		if errors.As(err, &fatal) {
			return fatal.error
		}
		reason := "network"
		var d *stream.Drop
		if errors.As(err, &d) {
			reason = d.Reason
		}
		s.obs.Reconnect(reason)
		delay := policy.Next()
		// One line per outage: retries of the same outage log at debug level.
		level := slogLevel(policy.Attempt() == 1)
		s.log.Log(ctx, level, "relay connection lost; reconnecting", "reason", reason, "err", err,
			"cursor", describeCursor(s.lastSeq), "retry_in", delay.Round(time.Millisecond), "attempt", policy.Attempt())
		backoff.Sleep(ctx, delay)
	}
}

// session runs one connection until it drops.
func (s *Source) session(ctx context.Context, policy *backoff.Policy) error {
	u := s.connectURL()
	conn, err := stream.Dial(ctx, u)
	if err != nil {
		return &stream.Drop{Reason: "dial", Err: err}
	}
	defer conn.CloseNow()
	s.connected.Store(true)
	defer s.connected.Store(false)
	s.log.Info("connected to relay", "cursor", describeCursor(s.lastSeq), "after_attempts", policy.Attempt())

	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go stream.Keepalive(sctx, conn, activity{s}, stop)
	// Reads get a context that never ends, and the session's end closes the connection instead: a cancellable
	// context costs a timer registration per message inside the websocket library.
	defer context.AfterFunc(sctx, func() { conn.CloseNow() })()
	rctx := context.WithoutCancel(sctx)
	for {
		j, err := s.nextJob(sctx)
		if err != nil {
			return err
		}
		if err := s.readMessage(rctx, conn, j); err != nil {
			s.jobs.put(j)
			return &stream.Drop{Reason: stream.CloseReason(sctx, err), Err: err}
		}
		if err := s.handle(j); err != nil {
			return err
		}
		policy.Reset()
	}
}

// connectURL is the subscribeRepos URL resuming after the newest frame read.
func (s *Source) connectURL() string {
	u := *s.url
	if s.lastSeq != noCursor {
		q := u.Query()
		q.Set("cursor", strconv.FormatInt(s.lastSeq, 10))
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// activity tells stream.Keepalive what the reader does.
type activity struct{ s *Source }

func (a activity) Stalled() bool { return a.s.stalled.Load() }
func (a activity) Reads() int64  { return a.s.reads.Load() }

// nextJob waits for a free job: while none is free, Kafka is behind and the relay is not read.
func (s *Source) nextJob(ctx context.Context) (*job, error) {
	select {
	case j := <-s.jobs.free:
		return j, nil
	default:
	}
	s.stalled.Store(true)
	defer s.stalled.Store(false)
	select {
	case j := <-s.jobs.free:
		return j, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// readMessage reads the next websocket message into j.
func (s *Source) readMessage(ctx context.Context, conn *websocket.Conn, j *job) error {
	typ, r, err := conn.Reader(ctx)
	if err != nil {
		return err
	}
	j.received = time.Now()
	s.reads.Add(1)
	if j.raw, j.truncated, err = stream.ReadLimited(r, j.raw[:0], s.cfg.MaxFrameBytes); err != nil {
		return err
	}
	if typ != websocket.MessageBinary {
		j.bad = &problem{"not_binary", errors.New("text message on a binary stream")}
	}
	return nil
}

// handle decodes the frame in j and dispatches it to its worker. Error frames end the session.
func (s *Source) handle(j *job) error {
	switch {
	case j.bad != nil:
	case j.truncated > 0:
		j.bad = &problem{"too_large", fmt.Errorf("message of %d bytes exceeds the %d byte limit; raw holds its start",
			len(j.raw)+j.truncated, s.cfg.MaxFrameBytes)}
	default:
		if err := j.frame.Decode(j.raw); err != nil {
			j.bad = &problem{"decode", err}
		}
	}
	if j.bad != nil {
		s.obs.DecodeError(j.bad.kind)
		seq, did := peek(j.raw)
		j.seq, j.did = seq, did
		// A broken frame's seq is trusted only where it is the one expected next: garbage must not move the
		// cursor. Otherwise it takes the previous position, which it holds until its dead letter is acked.
		pos := s.lastSeq
		if seq == s.lastSeq+1 && s.lastSeq > 0 {
			pos = s.position(seq)
		}
		s.dispatch(j, max(pos, 0))
		return nil
	}
	switch j.frame.Kind {
	case frame.KindError:
		err := s.errorFrame(&j.frame.Error)
		s.jobs.put(j)
		return err
	case frame.KindUnknown, frame.KindLabels:
		// A valid envelope of a type this build does not know (or a labeler's, on a relay stream): keep it raw
		// rather than lose it.
		s.obs.SourceEvent("unknown_type")
		j.seq, j.did = peek(j.raw)
		j.bad = &problem{"unknown_type", fmt.Errorf("unknown message type %q", j.frame.Type)}
	case frame.KindInfo:
		s.info(&j.frame.Info)
	default:
		j.seq, j.did = envelope(&j.frame)
	}
	pos := s.lastSeq
	if j.seq > 0 {
		pos = s.position(j.seq)
	}
	s.dispatch(j, max(pos, 0))
	return nil
}

// envelope returns the seq and DID of a decoded event frame.
func envelope(f *frame.Frame) (seq int64, did []byte) {
	switch f.Kind {
	case frame.KindCommit:
		return f.Commit.Seq, f.Commit.Repo
	case frame.KindSync:
		return f.Sync.Seq, f.Sync.DID
	case frame.KindIdentity:
		return f.Identity.Seq, f.Identity.DID
	case frame.KindAccount:
		return f.Account.Seq, f.Account.DID
	}
	return 0, nil
}

// peek reads what it can of a frame that failed to decode: its seq and DID, for the dead letter and the logs.
// It stops at the first malformed item.
func peek(msg []byte) (seq int64, did []byte) {
	d := dagcbor.NewDecoder(msg)
	if d.Skip() != nil { // the header
		return 0, nil
	}
	n, err := d.MapHeader()
	if err != nil {
		return 0, nil
	}
	for range n {
		k, err := d.Text()
		if err != nil {
			return seq, did
		}
		switch string(k) {
		case "seq":
			if seq, err = d.Int(); err != nil {
				return 0, did
			}
		case "repo", "did":
			if did, err = d.Text(); err != nil {
				return seq, nil
			}
		default:
			if d.Skip() != nil {
				return seq, did
			}
		}
	}
	return seq, did
}

// position checks seq against the previous one and returns the watermark position of its frame. The position
// never goes back, so a relay replaying older events cannot move the cursor backwards.
func (s *Source) position(seq int64) int64 {
	last := s.lastSeq
	switch {
	case last <= 0 || seq == last+1: // nothing to compare with yet, or the expected next seq
	case seq > last+1:
		s.obs.SourceEvent("seq_gap")
		s.logSeqAnomaly("seq gap: events missing from the relay stream", last, seq)
	default:
		s.obs.SourceEvent("seq_regression")
		s.logSeqAnomaly("seq went backwards: relay replayed events", last, seq)
		return last
	}
	s.lastSeq = seq
	s.obs.Read(seq)
	return seq
}

func (s *Source) logSeqAnomaly(msg string, last, seq int64) {
	if ok, suppressed := s.gaps.allow(time.Now()); ok {
		s.log.Warn(msg, "previous", last, "seq", seq, "similar_not_logged", suppressed)
	}
}

// dispatch records j's position in the checkpoint, in read order, so that the cursor passes no frame still
// waiting for its metadata or its worker. It then starts the lookups the frame needs and, once they are done (or
// its deadline passed), queues it on the worker owning its DID (j.ready). Frames of one DID stay in read order; a
// frame waiting for its account's metadata holds back no other DID's frames. Queues hold every job, so this never
// blocks.
func (s *Source) dispatch(j *job, pos int64) {
	_ = s.cp.Add(context.Background(), &j.msg, pos) // no window: the job pool bounds the frames in flight
	pe := &j.pend
	pe.DID, pe.Deadline, pe.Invalidate = "", time.Time{}, 0
	if j.bad == nil && j.did != nil {
		pe.DID = string(j.did)
		pe.Deadline = s.cfg.Pipeline.Deadline(j.received)
		pe.Invalidate = invalidation(&j.frame)
	}
	s.preparing.Add(1)
	s.cfg.Pipeline.Prepare(pe)
}

// ready queues a prepared job on its worker.
func (j *job) ready() {
	j.src.queues[shard(j.did, len(j.src.queues))] <- j
	j.src.preparing.Done()
}

// invalidation says what a frame changes of its account's cached metadata.
func invalidation(f *frame.Frame) transform.Invalidation {
	switch f.Kind {
	case frame.KindIdentity:
		return transform.IdentityChanged
	case frame.KindCommit:
		for i := range f.Commit.Ops {
			if coll, _, _ := bytes.Cut(f.Commit.Ops[i].Path, []byte{'/'}); string(coll) == transform.ProfileCollection {
				return transform.ProfileChanged
			}
		}
	}
	return 0
}

// shard maps a DID to a worker (FNV-1a): the same DID always lands on the same worker, which keeps its order.
func shard(did []byte, n int) int {
	h := uint64(14695981039346656037)
	for _, c := range did {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return int(h % uint64(n))
}

// errorFrame turns a relay error frame into the error that ends the session.
func (s *Source) errorFrame(e *frame.ErrorFrame) error {
	name, msg := string(e.Error), string(e.Message)
	switch name {
	case "FutureCursor":
		s.obs.SourceEvent("future_cursor")
		return fatalError{fmt.Errorf("relay %s rejected cursor %d as ahead of its newest event (FutureCursor: %s): "+
			"the relay was reset or is not the one this cursor came from; restart with --cursor live to start at its "+
			"tip, or --cursor N with a seq it has (the saved cursor is in %s)", s.url.Host, s.lastSeq, msg, s.CursorPath())}
	case "ConsumerTooSlow":
		s.obs.SourceEvent("consumer_too_slow")
		return &stream.Drop{Reason: "consumer_too_slow", Err: fmt.Errorf("relay error frame ConsumerTooSlow: %s", msg)}
	}
	s.obs.SourceEvent("error_frame")
	return &stream.Drop{Reason: "error_frame", Err: fmt.Errorf("relay error frame %q: %s", name, msg)}
}

// info handles an #info frame's side effects; the frame itself becomes a record like any event.
func (s *Source) info(in *frame.Info) {
	if string(in.Name) == "OutdatedCursor" {
		s.obs.SourceEvent("outdated_cursor")
		s.log.Warn("relay says the cursor is older than its backlog: events between it and the oldest it keeps are lost",
			"cursor", s.lastSeq, "message", string(in.Message))
		return
	}
	s.obs.SourceEvent("info")
	s.log.Info("relay info message", "name", string(in.Name), "message", string(in.Message))
}

// slogLevel is Warn for the first occurrence of a condition and Debug for its repeats.
func slogLevel(first bool) slog.Level {
	if first {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

package relay

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/frame"
)

// Header keys and the constant values the records carry.
const (
	headerSeq        = "seq"
	headerRev        = "rev"
	headerCollection = "collection"
	headerAction     = "action"
)

var actionValues = [...][]byte{frame.ActionCreate: []byte("create"), frame.ActionUpdate: []byte("update"), frame.ActionDelete: []byte("delete")}

// unknownKey keys records that belong to no DID (#info), as consumers of the existing bridge expect.
var unknownKey = []byte("<unknown>")

// lagEvery is how often a worker updates the lag gauge: parsing a timestamp per frame would be waste.
const lagEvery = 100 * time.Millisecond

// worker turns frames into messages. Its scratch memory is reused from frame to frame; what a sent message
// points into belongs to the job instead.
type worker struct {
	s *Source
	p *transform.Pipeline

	records frame.Records
	// kept is the commit being rendered with only the ops the collection filter keeps; keptOps its reused memory.
	kept    frame.Commit
	keptOps []frame.Op
	ops     []format.Operation
	keep    []bool // keep[i]: ops[i] passed the collection filter
	events  []format.Event
	recs    []byte // record JSON of the current frame
	// opHeaders[i] holds the collection and action header values of ops[i].
	opHeaders [][2][]byte
	meta      []byte // rendered eventMetadata of the current frame
	lastLag   time.Time
}

// work builds and sends the messages of the frames queued for one worker, in order, until q is closed.
func (s *Source) work(ctx context.Context, q <-chan *job) {
	w := &worker{s: s, p: s.cfg.Pipeline}
	for j := range q {
		w.build(ctx, j)
		s.send(ctx, j)
	}
}

// send hands j's message to the sink. If ctx ended the frame stays pending, and is read again after a
// restart; any other refusal means the sink is gone, which no retry of ours fixes.
func (s *Source) send(ctx context.Context, j *job) {
	j.msg.Records = j.records
	if err := s.cp.Send(ctx, &j.msg); err != nil && ctx.Err() == nil {
		s.fail(j, fmt.Errorf("sink refused the message of frame seq %d: %w", j.seq, err))
	}
}

// build fills j.records: the frame's records, a dead letter, or nothing when everything was filtered.
func (w *worker) build(ctx context.Context, j *job) {
	if j.bad != nil {
		w.s.deadLetter(j, j.bad, j.raw)
		return
	}
	f := &j.frame
	var (
		ev  format.Event
		rev []byte
		bad *problem
	)
	switch f.Kind {
	case frame.KindCommit:
		w.commit(ctx, j)
		return
	case frame.KindSync:
		if !w.verified(ctx, j) {
			return
		}
		ev, bad = w.sync(&f.Sync)
		rev = f.Sync.Rev
	case frame.KindIdentity:
		id := &f.Identity
		ev = format.Event{DID: string(id.DID), Timestamp: string(id.Time),
			Identity: &format.Identity{Seq: id.Seq, Handle: string(id.Handle)}}
	case frame.KindAccount:
		a := &f.Account
		ev = format.Event{DID: string(a.DID), Timestamp: string(a.Time),
			Account: &format.Account{Active: a.Active, Seq: a.Seq, Status: string(a.Status)}}
	case frame.KindInfo:
		ev = format.Event{Info: &format.Info{Name: string(f.Info.Name), Message: optString(f.Info.Message)}}
	}
	if bad != nil {
		w.s.obs.DecodeError(bad.kind)
		w.s.deadLetter(j, bad, j.raw)
		return
	}
	if !w.p.KeepAccount(ev.DID, &j.pend.Meta) {
		return
	}
	w.observeLag(ev.Timestamp)
	ev.Metadata = w.metadata(j, 1)
	seq := j.appendSeq()
	w.emit(j, &ev, seq, rev, nil)
}

// sync builds a #sync event; its commit CID is the root of its CAR.
func (w *worker) sync(sy *frame.Sync) (format.Event, *problem) {
	commit, err := sy.CommitCID()
	if err != nil {
		return format.Event{}, &problem{"bad_car", err}
	}
	return format.Event{DID: string(sy.DID), Timestamp: string(sy.Time),
		Sync: &format.Sync{Seq: sy.Seq, Rev: string(sy.Rev), Commit: commit.String()}}, nil
}

// commit emits one record per op that passes the filters. Ops that cannot be rendered (a record missing from
// the CAR, a record that is not valid atproto data) do not hold back the others: the frame's message carries the
// good records plus one dead letter with the raw frame.
func (w *worker) commit(ctx context.Context, j *job) {
	c := &j.frame.Commit
	did := j.pend.DID // made when the frame was read
	if !w.p.KeepAccount(did, &j.pend.Meta) {
		return // before touching the CAR: filtered accounts cost no decoding
	}
	ts := string(c.Time)
	if !w.verified(ctx, j) {
		return
	}
	w.ops, w.keep, w.events, w.recs, w.opHeaders = w.ops[:0], w.keep[:0], w.events[:0], w.recs[:0], w.opHeaders[:0]
	// Ops of collections the filter drops are observed but never transcoded: only the others go to Records.
	w.kept = *c
	w.kept.Ops = w.keptOps[:0]
	for i := range c.Ops {
		op := &c.Ops[i]
		// Without collection rules every op is kept, and its strings are made once, by render. A bad path is
		// kept too: Records reports it.
		if collection, rkey, ok := bytes.Cut(op.Path, []byte{'/'}); ok && w.p.Collections != nil {
			if coll := string(collection); !w.p.KeepCollection(coll) {
				o := format.Operation{Action: op.Action.String(), Collection: coll, Rkey: string(rkey)}
				if op.CID != nil {
					o.CID = op.CID.String()
				}
				w.addOp(o, false, collection, op.Action)
				continue
			}
		}
		w.kept.Ops = append(w.kept.Ops, *op)
	}
	w.keptOps = w.kept.Ops
	bad := w.render(c)
	kept := 0
	for i := range w.ops {
		w.events = append(w.events, format.Event{DID: did, Timestamp: ts, Operation: &w.ops[i]})
		if w.keep[i] {
			kept++
		}
	}
	var meta []byte
	if kept > 0 {
		meta = w.metadata(j, kept) // once per commit
		w.observeLag(ts)
	}
	seq := j.appendSeq()
	for i := range w.events {
		if !w.keep[i] {
			continue
		}
		w.events[i].Metadata = meta
		w.emit(j, &w.events[i], seq, c.Rev, &w.opHeaders[i])
	}
	if bad != nil {
		w.s.deadLetter(j, bad, j.raw)
	}
}

// verified runs Config.Verifier on a #commit or #sync frame, dead-lettering the frame when it is rejected, and
// reports whether the frame may be rendered.
func (w *worker) verified(ctx context.Context, j *job) bool {
	v := w.s.cfg.Verifier
	if v == nil {
		return true
	}
	d := dagcbor.NewDecoder(j.raw)
	if d.Skip() != nil { // the header: cannot fail, the frame decoded
		return true
	}
	check := v.Commit
	if j.frame.Kind == frame.KindSync {
		check = v.Sync
	}
	if !j.pend.Deadline.IsZero() {
		// The account's key was looked up before the frame was ready, within its deadline; a key that was not
		// known by then (a PLC outage, the rate budget spent) must not be waited for here, where other
		// accounts' frames queue behind this one. Fetching a rotated key still gets what is left of it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, j.pend.Deadline)
		defer cancel()
	}
	err := check(ctx, d.Remaining())
	if err == nil {
		return true
	}
	reason := "verify_failed"
	var r interface{ DeadLetterReason() string }
	if errors.As(err, &r) {
		reason = r.DeadLetterReason()
	}
	w.s.deadLetter(j, &problem{reason, err}, j.raw)
	return false
}

// render transcodes the ops in w.kept into w.ops, returning the first problem: the ops it cannot render are
// left out and the frame is dead-lettered besides.
func (w *worker) render(c *frame.Commit) (bad *problem) {
	for rec, err := range w.records.Ops(&w.kept) {
		if err != nil {
			p := &problem{opProblem(err, c.TooBig), err}
			w.s.obs.DecodeError(p.kind)
			bad = cmp.Or(bad, p)
			continue
		}
		// One allocation for the op's three strings.
		strs := string(rec.Collection) + string(rec.RKey) + string(rec.CID)
		nc, nr := len(rec.Collection), len(rec.Collection)+len(rec.RKey)
		o := format.Operation{Action: rec.Action.String(), Collection: strs[:nc], Rkey: strs[nc:nr]}
		if rec.Record != nil {
			// The records' buffer is reused on the next op, and every op is observed before any is rendered.
			start := len(w.recs)
			w.recs = append(w.recs, rec.Record...)
			o.Record, o.CID = w.recs[start:len(w.recs):len(w.recs)], strs[nr:]
		}
		w.addOp(o, true, rec.Collection, rec.Action)
	}
	return bad
}

// opProblem names the dead-letter reason of an op the records renderer refused.
func opProblem(err error, tooBig bool) string {
	switch {
	case errors.Is(err, frame.ErrRecordMissing) && tooBig:
		return "too_big" // deprecated relay behaviour: the blocks were left out on purpose
	case errors.Is(err, frame.ErrRecordMissing):
		return "missing_block"
	case errors.Is(err, frame.ErrInvalidCAR):
		return "bad_car"
	case errors.Is(err, frame.ErrInvalidRecord):
		return "record_decode"
	}
	return "bad_op"
}

// addOp appends an operation and its header values. collection aliases the frame's message.
func (w *worker) addOp(o format.Operation, keep bool, collection []byte, action frame.Action) {
	w.ops, w.keep = append(w.ops, o), append(w.keep, keep)
	w.opHeaders = append(w.opHeaders, [2][]byte{collection, actionValues[action]})
}

// metadata renders the frame's eventMetadata, for its records, into the worker's buffer, nil when there is
// none (enrichment off, no DID). It is valid until the next call: emit copies it into each record's value.
func (w *worker) metadata(j *job, records int) []byte {
	w.meta = w.p.AppendMetadata(w.meta[:0], &j.pend, records)
	if len(w.meta) == 0 {
		return nil
	}
	return w.meta
}

// emit renders ev into j's buffers and appends its record. opHeader holds the collection and action header
// values of an operation, nil for other events.
func (w *worker) emit(j *job, ev *format.Event, seq, rev []byte, opHeader *[2][]byte) {
	start := len(j.values)
	j.values = w.p.AppendValue(j.values, ev)
	value := j.values[start:len(j.values):len(j.values)]

	h := len(j.headers)
	if seq != nil {
		j.headers = append(j.headers, sink.Header{Key: headerSeq, Value: seq})
	}
	if rev != nil {
		j.headers = append(j.headers, sink.Header{Key: headerRev, Value: rev})
	}
	if opHeader != nil {
		j.headers = append(j.headers, sink.Header{Key: headerCollection, Value: opHeader[0]},
			sink.Header{Key: headerAction, Value: opHeader[1]})
	}
	key := unknownKey
	if j.did != nil {
		key = j.did
	}
	// Slices of j.values and j.headers stay valid when later appends reallocate: the old arrays are never written
	// again, and the garbage collector keeps them while referenced.
	j.records = append(j.records, sink.Record{Key: key, Value: value, Headers: j.headers[h:len(j.headers):len(j.headers)]})
}

// appendSeq renders the frame's seq header value into j's buffer; nil for #info, which has no seq.
func (j *job) appendSeq() []byte {
	if j.seq == 0 {
		return nil
	}
	start := len(j.values)
	j.values = strconv.AppendInt(j.values, j.seq, 10)
	return j.values[start:len(j.values):len(j.values)]
}

// observeLag updates the lag gauge from an event time, at most every lagEvery per worker.
func (w *worker) observeLag(ts string) {
	now := time.Now()
	if ts == "" || now.Sub(w.lastLag) < lagEvery {
		return
	}
	w.lastLag = now
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		w.s.obs.Lag(now.Sub(t))
	}
}

// deadLetter appends a dead-letter record holding raw to j's message, counts it and logs it.
func (s *Source) deadLetter(j *job, p *problem, raw []byte) {
	s.obs.DeadLettered(p.kind)
	s.log.Warn("frame written to the dead-letter topic", "reason", p.kind, "seq", j.seq, "did", string(j.did), "err", p.err)
	dl := sink.DeadLetter{Source: label, Reason: p.kind, Err: p.err, DID: string(j.did), Seq: j.seq, Raw: raw}
	j.records = append(j.records, dl.Record(s.cfg.DeadLetterTopic))
}

func optString(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

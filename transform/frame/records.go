package frame

import (
	"bytes"
	"errors"
	"fmt"
	"iter"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// Errors reported by [Records.Ops], to be told apart with errors.Is. Each means the commit cannot be turned
// into records faithfully: the caller dead-letters it rather than dropping it.
var (
	// ErrInvalidCAR: the commit's blocks are not a valid CARv1.
	ErrInvalidCAR = errors.New("invalid CAR")
	// ErrRecordMissing: a create or update names a record whose block is not in the commit's CAR.
	ErrRecordMissing = errors.New("record bytes missing")
	// ErrInvalidRecord: the record block is not a valid atproto record (see dagcbor.AppendJSON).
	ErrInvalidRecord = errors.New("invalid record")
	// ErrInvalidOp: the op's path is not "<collection>/<rkey>", or a create or update has no CID.
	ErrInvalidOp = errors.New("invalid op")
)

// RecordOp is one op of a commit, ready to be formatted. Its slices alias the frame's message or the
// Records' buffer: they are valid until the next iteration.
type RecordOp struct {
	Action     Action
	Path       []byte // "<collection>/<rkey>"
	Collection []byte
	RKey       []byte
	CID        []byte // text form of the record's CID ("bafyrei..."); nil for deletes
	Record     []byte // the record in the atproto JSON data model; nil for deletes
}

// Records renders the ops of commits with their records, finding each record in the commit's CAR by CID
// (no MST walk) and transcoding it straight to JSON. It reuses its memory across commits; it is not safe for
// concurrent use.
type Records struct {
	car dagcbor.CAR
	buf []byte
}

// Ops yields every op of c in order. An op that cannot be rendered is yielded with an error wrapping one of
// ErrRecordMissing, ErrInvalidRecord or ErrInvalidOp (with the fields that could be read) and iteration goes
// on; a commit whose CAR cannot be read yields a single error wrapping ErrInvalidCAR.
func (r *Records) Ops(c *Commit) iter.Seq2[RecordOp, error] {
	return func(yield func(RecordOp, error) bool) {
		if err := r.car.Parse(c.Blocks); err != nil {
			yield(RecordOp{}, fmt.Errorf("%w: %v", ErrInvalidCAR, err))
			return
		}
		for i := range c.Ops {
			rec, err := r.render(&c.Ops[i])
			if err != nil {
				err = fmt.Errorf("op %d (%s %s): %w", i, c.Ops[i].Action, c.Ops[i].Path, err)
			}
			if !yield(rec, err) {
				return
			}
		}
	}
}

func (r *Records) render(op *Op) (RecordOp, error) {
	rec := RecordOp{Action: op.Action, Path: op.Path}
	slash := bytes.IndexByte(op.Path, '/')
	if slash <= 0 || slash == len(op.Path)-1 || bytes.IndexByte(op.Path[slash+1:], '/') >= 0 {
		return rec, fmt.Errorf("%w: path is not <collection>/<rkey>", ErrInvalidOp)
	}
	rec.Collection, rec.RKey = op.Path[:slash], op.Path[slash+1:]
	if op.Action == ActionDelete {
		return rec, nil
	}
	if op.CID == nil {
		return rec, fmt.Errorf("%w: %s without a CID", ErrInvalidOp, op.Action)
	}
	r.buf = op.CID.AppendString(r.buf[:0])
	cidEnd := len(r.buf)
	block, ok := r.car.BlockByLink(op.CID)
	if !ok {
		rec.CID = r.buf[:cidEnd]
		return rec, fmt.Errorf("%w: %s not in the commit's blocks", ErrRecordMissing, rec.CID)
	}
	if d := dagcbor.NewDecoder(block); d.Peek() != dagcbor.KindMap {
		rec.CID = r.buf[:cidEnd]
		return rec, fmt.Errorf("%w: not a map", ErrInvalidRecord)
	}
	var err error
	r.buf, err = dagcbor.AppendJSON(r.buf, block)
	// Slice after appending: the append may have moved the buffer.
	rec.CID = r.buf[:cidEnd:cidEnd]
	if err != nil {
		return rec, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	rec.Record = r.buf[cidEnd:]
	return rec, nil
}

// CommitCID returns the CID of the signed commit a #sync event points at: the first root of its CAR.
func (s *Sync) CommitCID() (dagcbor.Link, error) {
	var car dagcbor.CAR
	if err := car.Parse(s.Blocks); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCAR, err)
	}
	if len(car.Roots()) == 0 {
		return nil, fmt.Errorf("%w: no root", ErrInvalidCAR)
	}
	return car.Roots()[0], nil
}

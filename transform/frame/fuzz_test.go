package frame_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/atkafka/atkafka/transform/frame"
)

// FuzzDecode feeds arbitrary messages through the whole hot path: frame decoding, then for commits the CAR
// index and the record transcoder. Nothing may panic, and every record error must be one of the kinds the
// caller dead-letters.
func FuzzDecode(f *testing.F) {
	for _, msg := range loadFrames(f) {
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var fr frame.Frame
		var recs frame.Records
		if err := fr.Decode(msg); err != nil || fr.Kind != frame.KindCommit {
			return
		}
		for op, err := range recs.Ops(&fr.Commit) {
			switch {
			case err == nil:
				if op.Record != nil && !json.Valid(op.Record) {
					t.Fatalf("invalid JSON record %q", op.Record)
				}
			case errors.Is(err, frame.ErrInvalidCAR), errors.Is(err, frame.ErrRecordMissing),
				errors.Is(err, frame.ErrInvalidRecord), errors.Is(err, frame.ErrInvalidOp):
			default:
				t.Fatalf("unclassified error: %v", err)
			}
		}
	})
}

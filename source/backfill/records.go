package backfill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/transform"
	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/verify"
)

// records checks the repository and produces every record it holds. A structural failure is found before any
// record is produced: the MST is walked once to check it (cheap next to rendering), then again to produce.
func (r *runner) records(ctx context.Context, cl client, w *Work, pend *transform.Pending, b []byte) *failure {
	car, err := dagcbor.ParseCAR(b)
	if err != nil {
		return permanent("malformed_car", err)
	}
	commit, err := verify.RepoCommit(car, w.DID)
	if err != nil {
		return permanent("malformed_car", err)
	}
	if v := r.cfg.Verifier; v != nil {
		if err := v.Repo(ctx, commit); err != nil {
			var ve *verify.Error
			if errors.As(err, &ve) {
				return permanent(ve.DeadLetterReason(), err)
			}
			return permanent("verify", err)
		}
	}
	root := dagcbor.Link(commit.Data.Bytes())
	if commit.Data == cid.Undef {
		return permanent("malformed_car", errors.New("commit without an MST root"))
	}
	n := 0
	err = walkMST(car, root, func(key []byte, value dagcbor.Link) error {
		if _, ok := car.BlockByLink(value); !ok {
			return fmt.Errorf("record %s (%s) missing from the CAR", key, value)
		}
		n++
		return nil
	})
	if err != nil {
		return permanent("malformed_car", err)
	}
	p := r.cfg.Pipeline
	received := time.Now()
	var meta []byte
	if p.Metadata() {
		meta = p.AppendMetadata(nil, pend, n)
	}
	live := false
	rev := []byte(commit.Rev)
	did := []byte(w.DID)
	var buf []byte
	produced := 0
	_ = walkMST(car, root, func(key []byte, value dagcbor.Link) error {
		collection, rkey, ok := splitKey(key)
		if !ok || !p.KeepCollection(collection) {
			return nil
		}
		block, _ := car.BlockByLink(value)
		var err error
		if buf, err = dagcbor.AppendJSON(buf[:0], block); err != nil {
			dl := sink.DeadLetter{Source: "backfill", Reason: "decode", Err: fmt.Errorf("%s/%s: %w", collection, rkey, err), DID: w.DID, Raw: block}
			r.emit(ctx, cl, dl.Record(r.cfg.DeadLetterTopic))
			r.cfg.Observer.DeadLettered("decode")
			return nil
		}
		ev := &format.Event{DID: w.DID, Metadata: meta, Live: &live, Operation: &format.Operation{
			Action: "create", Collection: collection, Rkey: rkey, CID: value.String(), Record: buf}}
		ev.Timestamp = format.RecordTime(buf, rkey, received).UTC().Format(format.TimeFormat)
		// Sized once: growing the value by doubling cost more than rendering it.
		out := p.AppendValue(make([]byte, 0, 256+len(meta)+2*len(buf)), ev)
		r.emit(ctx, cl, sink.Record{Key: did, Value: out, Headers: []sink.Header{
			{Key: "did", Value: did}, {Key: "rev", Value: rev}, {Key: "collection", Value: []byte(collection)},
			{Key: "rkey", Value: []byte(rkey)}, {Key: "live", Value: []byte("false")}, {Key: BackfillHeader, Value: []byte("true")},
		}})
		produced++
		return nil
	})
	r.cfg.Observer.Produced(produced)
	r.cfg.Observer.Repo("loaded")
	return nil
}

// splitKey splits an MST key into collection and rkey.
func splitKey(key []byte) (collection, rkey string, ok bool) {
	for i, c := range key {
		if c == '/' {
			return string(key[:i]), string(key[i+1:]), i > 0 && i < len(key)-1
		}
	}
	return "", "", false
}

// emit produces one record of the batch.
func (r *runner) emit(ctx context.Context, cl client, rec sink.Record) {
	topic := cmp.Or(rec.Topic, r.cfg.OutputTopic)
	kr := &kgo.Record{Topic: topic, Key: rec.Key, Value: rec.Value, Headers: make([]kgo.RecordHeader, len(rec.Headers))}
	for i, h := range rec.Headers {
		kr.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	cl.produce(ctx, kr, func(_ *kgo.Record, err error) {
		if err != nil {
			r.mu.Lock()
			r.produceErr = cmp.Or(r.produceErr, err)
			if kafka.RefusedForGood(err) && len(r.refused) < 10_000 {
				r.refused[string(kr.Key)] = err
			}
			r.mu.Unlock()
		}
	})
}

package backfill

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
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

// scratch is the reusable working memory of records: the CAR's index and the leaves the check walk found.
type scratch struct {
	car    dagcbor.CAR
	leaves []leaf
	keys   []byte // the leaves' keys, one after the other
}

// leaf is one MST entry: its key ends at scratch.keys[end], where the next one starts, and its record is block
// car.At(block).
type leaf struct{ end, block uint32 }

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// checkedRepo is a downloaded repository whose structure was checked: every record its MST names is in the CAR.
// Its CAR index and leaves live in pooled scratch memory until release.
type checkedRepo struct {
	s    *scratch
	rev  string
	root dagcbor.Link
	// listed: s.leaves holds every leaf. Past MemoryLimit of list (~100k records) it stops growing and the MST is
	// walked a second time to produce instead.
	listed bool
}

// check parses a repository and checks it before any of its records is produced, so that a broken one fails whole.
// The MST is walked once, keeping each leaf's key and block (~40 bytes a record, ~10 % of the CAR), and the
// records are produced from that list.
func (r *runner) check(ctx context.Context, w *Work, b []byte) (_ *checkedRepo, f *failure) {
	s := scratches.Get().(*scratch)
	defer func() {
		if f != nil {
			s.release()
		}
	}()
	car := &s.car
	if err := car.Parse(b); err != nil {
		return nil, permanent("malformed_car", err)
	}
	commit, err := verify.RepoCommit(car, w.DID)
	if err != nil {
		return nil, permanent("malformed_car", err)
	}
	if v := r.cfg.Verifier; v != nil {
		if err := v.Repo(ctx, commit); err != nil {
			var ve *verify.Error
			if errors.As(err, &ve) {
				return nil, permanent(ve.DeadLetterReason(), err)
			}
			return nil, permanent("verify", err)
		}
	}
	if commit.Data == cid.Undef {
		return nil, permanent("malformed_car", errors.New("commit without an MST root"))
	}
	root := dagcbor.Link(commit.Data.Bytes())
	keep := true
	err = walkMST(car, root, func(key []byte, value dagcbor.Link) error {
		i, ok := car.IndexByLink(value)
		if !ok {
			return fmt.Errorf("record %s (%s) missing from the CAR", key, value)
		}
		if keep {
			s.keys = append(s.keys, key...)
			s.leaves = append(s.leaves, leaf{end: uint32(len(s.keys)), block: uint32(i)})
			keep = int64(len(s.keys)+8*len(s.leaves)) <= r.cfg.MemoryLimit
		}
		return nil
	})
	if err != nil {
		return nil, permanent("malformed_car", err)
	}
	return &checkedRepo{s: s, rev: commit.Rev, root: root, listed: keep}, nil
}

// release gives the scratch memory back; the repository's records are no longer needed.
func (c *checkedRepo) release() { c.s.release() }

// each calls f for every record whose key comes after after, in key order, until f returns an error.
func (c *checkedRepo) each(after []byte, f func(key []byte, value dagcbor.Link, block []byte) error) error {
	car := &c.s.car
	if !c.listed {
		return walkMST(car, c.root, func(key []byte, value dagcbor.Link) error {
			if bytes.Compare(key, after) <= 0 {
				return nil
			}
			block, _ := car.BlockByLink(value)
			return f(key, value, block)
		})
	}
	start := uint32(0)
	for _, l := range c.s.leaves {
		key := c.s.keys[start:l.end]
		start = l.end
		if bytes.Compare(key, after) <= 0 {
			continue
		}
		value, block := car.At(int(l.block))
		if err := f(key, value, block); err != nil {
			return err
		}
	}
	return nil
}

// errSplit stops a repository's records when its transaction's producing time is over.
var errSplit = errors.New("transaction time over")

// records produces every record of a checked repository after w.After, in key order, until deadline: then the
// rest is put back in the work topic, to load from where this stopped in a later transaction.
func (r *runner) records(ctx context.Context, cl client, w *Work, pend *transform.Pending, repo *checkedRepo, deadline time.Time) {
	p := r.cfg.Pipeline
	received := time.Now()
	var meta []byte
	if p.Metadata() {
		meta = pend.Meta.AppendJSON(nil)
	}
	live := false
	rev := []byte(repo.rev)
	did := []byte(w.DID)
	var buf, last []byte
	op := format.Operation{Action: "create"}
	ev := format.Event{DID: w.DID, Metadata: meta, Live: &live, Operation: &op}
	walked, produced := 0, 0
	err := repo.each([]byte(w.After), func(key []byte, value dagcbor.Link, block []byte) error {
		if walked > 0 && walked%checkEvery == 0 && time.Now().After(deadline) {
			return errSplit
		}
		walked++
		last = append(last[:0], key...)
		collection, rkey, ok := splitKey(key)
		if !ok || !p.KeepCollection(collection) {
			return nil
		}
		var err error
		if buf, err = dagcbor.AppendJSON(buf[:0], block); err != nil {
			dl := sink.DeadLetter{Source: "backfill", Reason: "decode", Err: fmt.Errorf("%s/%s: %w", collection, rkey, err), DID: w.DID, Raw: block}
			r.emit(ctx, cl, dl.Record(r.cfg.DeadLetterTopic))
			r.cfg.Observer.DeadLettered("decode")
			return nil
		}
		op.Collection, op.Rkey, op.CID, op.Record = collection, rkey, value.String(), buf
		ev.Timestamp = format.RecordTime(buf, rkey, received).UTC().Format(format.TimeFormat)
		o := r.outRecord(did)
		// Sized for the JSON value (its envelope holds ~300 bytes, the DID and the key twice; an Osprey one may grow
		// it, once: the pooled buffer keeps its size), then the key, which the collection and rkey headers point into.
		if need := 320 + 2*len(did) + 3*len(key) + len(meta) + len(buf); cap(o.buf) < need {
			o.buf = make([]byte, 0, need)
		}
		o.buf = p.AppendValue(o.buf[:0], &ev)
		end := len(o.buf)
		o.buf = append(o.buf, key...)
		o.Value = o.buf[:end]
		o.headers = [...]kgo.RecordHeader{{Key: "did", Value: did}, {Key: "rev", Value: rev},
			{Key: "collection", Value: o.buf[end : end+len(collection)]}, {Key: "rkey", Value: o.buf[end+len(collection)+1:]},
			{Key: "live", Value: falseValue}, {Key: BackfillHeader, Value: trueValue}}
		o.Headers = o.headers[:]
		cl.produce(ctx, &o.Record, o.promise)
		produced++
		return nil
	})
	p.CountMissing(pend, produced)
	r.cfg.Observer.Produced(produced)
	if err == errSplit {
		rest := *w
		rest.After = string(last)
		r.emit(ctx, cl, sink.Record{Topic: r.cfg.WorkTopic, Key: did, Value: rest.encode()})
		r.cfg.Observer.Repo("split")
		return
	}
	r.cfg.Observer.Repo("loaded")
}

// release pools s again unless a large repository grew it.
func (s *scratch) release() {
	s.leaves, s.keys = s.leaves[:0], s.keys[:0]
	if cap(s.keys) <= 1<<20 {
		scratches.Put(s)
	}
}

// splitKey splits an MST key into collection and rkey.
func splitKey(key []byte) (collection, rkey string, ok bool) {
	for i, c := range key {
		if c == '/' {
			k := string(key) // one allocation for both
			return k[:i], k[i+1:], i > 0 && i < len(key)-1
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
	cl.produce(ctx, kr, func(_ *kgo.Record, err error) { r.produceFailed(kr.Key, err) })
}

// produceFailed notes a produce promise's error, if any.
func (r *runner) produceFailed(key []byte, err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	r.produceErr = cmp.Or(r.produceErr, err)
	if kafka.RefusedForGood(err) && len(r.refused) < 10_000 {
		r.refused[string(key)] = err
	}
	r.mu.Unlock()
}

// Header values of every repository record; franz-go does not modify them.
var falseValue, trueValue = []byte("false"), []byte("true")

// outRecord is one repository record produced, its headers and its value (followed by its key) in one pooled
// object. It goes back to the pool in its promise: franz-go reads neither record nor buffers after it (a batch
// is encoded under its lock, which failing or aborting it takes, clearing its records, before the promises run),
// and the promise is called once, whether the record was acknowledged, refused or aborted.
type outRecord struct {
	kgo.Record
	headers [6]kgo.RecordHeader
	buf     []byte
	r       *runner
	promise func(*kgo.Record, error) // made once, with the outRecord
}

var outRecords sync.Pool

// outRecord returns a pooled record for the output topic keyed by did; its promise puts it back.
func (r *runner) outRecord(did []byte) *outRecord {
	o, _ := outRecords.Get().(*outRecord)
	if o == nil {
		o = new(outRecord)
		o.promise = func(_ *kgo.Record, err error) {
			o.r.produceFailed(o.Key, err)
			if cap(o.buf) <= 64<<10 { // a rare large record's buffer goes back to the GC
				outRecords.Put(o)
			}
		}
	}
	o.r = r
	// Every field franz-go sets (timestamp, partition, offset, context) starts zero again.
	o.Record = kgo.Record{Topic: r.cfg.OutputTopic, Key: did}
	return o
}

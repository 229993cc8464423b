package labels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/frame"
)

// Header keys of label records.
const (
	headerSeq     = "seq"
	headerLabeler = "labeler"
)

// maxVal is the lexicon's limit on a label value, in bytes.
const maxVal = 128

// worker is the sender's scratch state.
type worker struct {
	ev format.Event
}

// build fills b.msg.Records: a record per label, a dead letter per label that cannot be one, or the whole frame
// as a dead letter when it is unreadable. It returns false when ctx ended while a label waited for its key: the
// frame is then not sent, and read again after a restart.
func (w *worker) build(ctx context.Context, b *batch) bool {
	l := b.l
	if b.bad != nil {
		l.deadLetter(b, b.bad, "", b.raw)
		return true
	}
	if b.frame.Kind != frame.KindLabels {
		return true // #info: counted and logged when read; its empty message keeps the cursor's order
	}
	seq := strconv.AppendInt(nil, b.seq, 10)
	for i := range b.frame.Labels.Labels {
		lb := &b.frame.Labels.Labels[i]
		did, p := check(lb)
		if p == nil && l.s.cfg.Verify != VerifyOff {
			if r := l.verify(ctx, lb); r != nil {
				if ctx.Err() != nil {
					return false
				}
				if l.s.cfg.Verify == VerifyStrict {
					p = &problem{"verify_" + r.kind, r.err}
				} else {
					// A labeler whose labels all fail would log each: warn once a minute, the rest at debug level.
					level := slog.LevelDebug
					if time.Since(l.lastVerifyWarn) > time.Minute {
						level, l.lastVerifyWarn = slog.LevelWarn, time.Now()
					}
					l.log.Log(ctx, level, "label failed verification; produced anyway (--verify-labels log)", "result", r.kind,
						"seq", b.seq, "uri", string(lb.URI), "val", string(lb.Val), "err", r.err)
				}
			}
		}
		if p != nil {
			l.deadLetter(b, p, did, lb.Raw)
			continue
		}
		w.ev = format.Event{DID: did, Timestamp: string(lb.Cts), Label: &format.Label{
			Labeler: l.name, Seq: b.seq, Ver: lb.Ver, Src: string(lb.Src), URI: string(lb.URI), CID: string(lb.CID),
			Val: string(lb.Val), Neg: lb.Neg, Cts: string(lb.Cts), Exp: string(lb.Exp)}}
		if l.s.cfg.IncludeSig {
			w.ev.Label.Sig = lb.Sig
		}
		pl := l.s.cfg.Pipeline
		w.ev.Metadata = pl.AppendMetadata(nil, &b.pend[i], 1)
		b.msg.Records = append(b.msg.Records, sink.Record{Key: []byte(did), Value: pl.AppendValue(nil, &w.ev),
			Headers: []sink.Header{{Key: headerSeq, Value: seq}, {Key: headerLabeler, Value: []byte(l.name)}}})
		b.vals = append(b.vals, w.ev.Label.Val)
		if t, err := time.Parse(time.RFC3339Nano, w.ev.Timestamp); err == nil {
			b.lag = t
		}
	}
	return true
}

// deadLetter adds raw (the frame, or one label's encoding) to b's message as a dead letter, and logs it.
func (l *labeler) deadLetter(b *batch, p *problem, did string, raw []byte) {
	l.s.cfg.Observer.DeadLettered(p.kind)
	l.log.Warn("labels input dead-lettered", "reason", p.kind, "seq", b.seq, "did", did, "err", p.err)
	b.msg.Records = append(b.msg.Records, l.deadLetterRecord(p.kind, p.err, did, b.seq, raw))
}

// deadLetterRecord renders a dead letter of this labeler, its raw input cut to sink.MaxDeadLetterRaw at once:
// labels frames are a few hundred bytes, so a bigger one is broken anyway, and a dead letter Kafka refuses would
// stop the source on every restart.
func (l *labeler) deadLetterRecord(reason string, err error, did string, seq int64, raw []byte) sink.Record {
	err = fmt.Errorf("labeler %s: %w", l.name, err)
	if len(raw) > sink.MaxDeadLetterRaw {
		err = fmt.Errorf("%w (raw truncated from %d to %d bytes)", err, len(raw), sink.MaxDeadLetterRaw)
		raw = raw[:sink.MaxDeadLetterRaw]
	}
	dl := sink.DeadLetter{Source: source, Reason: reason, Err: err, DID: did, Seq: seq, Raw: raw}
	return dl.Record(l.s.cfg.DeadLetterTopic)
}

// check reports why lb cannot become a record, if it cannot, and else its subject's DID.
func check(lb *frame.Label) (string, *problem) {
	did, uriErr := subjectDID(lb.URI) // the dead letter of a label with a subject is keyed by it
	if lb.Err != nil {
		return did, &problem{"bad_field", lb.Err}
	}
	for _, f := range []struct {
		name string
		v    []byte
	}{{"src", lb.Src}, {"uri", lb.URI}, {"val", lb.Val}, {"cts", lb.Cts}} {
		if len(f.v) == 0 {
			return did, &problem{"missing_field", fmt.Errorf("label without %q", f.name)}
		}
	}
	if uriErr != nil {
		return "", &problem{"bad_uri", uriErr}
	}
	// What the record promises its consumers (schema/label-event.json): a DID src, a value within the lexicon's
	// 128 bytes, RFC 3339 times.
	if _, err := syntax.ParseDID(string(lb.Src)); err != nil {
		return did, &problem{"bad_field", fmt.Errorf("src: %w", err)}
	}
	if len(lb.Val) > maxVal {
		return did, &problem{"bad_field", fmt.Errorf("val of %d bytes exceeds the lexicon's %d", len(lb.Val), maxVal)}
	}
	for _, ts := range [][]byte{lb.Cts, lb.Exp} {
		if _, err := syntax.ParseDatetime(string(ts)); len(ts) > 0 && err != nil {
			return did, &problem{"bad_field", err}
		}
	}
	return did, nil
}

// subjectDID is the account a label is about: uri itself when it is a DID, else the DID authority of its AT-URI.
// Labels are keyed by it, so that an account's labels, and those of its records, stay in order in one partition.
func subjectDID(uri []byte) (string, error) {
	s := string(uri)
	if did, err := syntax.ParseDID(s); err == nil {
		return did.String(), nil
	}
	at, err := syntax.ParseATURI(s)
	if err != nil {
		return "", fmt.Errorf("label uri %q is neither a DID nor an AT-URI", s)
	}
	did, err := at.Authority().AsDID()
	if err != nil {
		return "", errors.New("label uri " + strconv.Quote(s) + " names its repository by handle, not by DID")
	}
	return did.String(), nil
}
